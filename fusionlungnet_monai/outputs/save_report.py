"""The bundle's ``post#report``: a case's lung volumes, warnings and QC picture written beside its mask."""

from __future__ import annotations

import logging
import os
from typing import Hashable, Mapping

import numpy as np
from monai.config import KeysCollection
from monai.data import FolderLayout
from monai.transforms import MapTransform
from monai.utils import ImageMetaKey, convert_to_numpy

from fusionlungnet_monai.data.readers import SPACING_UNKNOWN
from fusionlungnet_monai.data.series import select_ct_series
from fusionlungnet_monai.outputs.report import describe_lungs, write_json
from fusionlungnet_monai.utils.hu import NONFINITE_META
from fusionlungnet_monai.version import __version__

__all__ = ["SaveLungReportd"]

logger = logging.getLogger(__name__)


class SaveLungReportd(MapTransform):
    """Write each case's lung report beside its mask, as ``fusionlungnet predict`` writes its ``report.json`` and
    ``qc.png``: ``<name>_report.json`` with the lung volumes in mL (total, right, left), the voxel size and the
    warnings of :func:`describe_lungs`, and ``<name>_qc.png`` (axial, coronal and sagittal views with the mask's
    outline). Names follow ``SaveImaged``'s (the input's name, ``output_dir``, ``separate_folder``); the volume and
    each warning are also logged.

    Args:
        keys: the lung mask (``"pred"``: binary, channel first, on the CT's grid, as ``post#fill_holes`` leaves it).
        hu_key: the CT in HU on the same grid (:class:`~fusionlungnet_monai.transforms.KeepHUd`'s copy).
        output_dir: folder of the files (created).
        separate_folder: one sub-folder per input, as ``SaveImaged``'s.
        second_opinion: also run the classical 3D HU segmentation and report its agreement (Dice, a "check this case"
            warning below :data:`~fusionlungnet_monai.outputs.SECOND_OPINION_DICE`, its outline in cyan).
        qc: write the QC picture.
        allow_missing_keys: don't raise for missing keys.

    Raises:
        KeyError: when ``hu_key`` is missing.
    """

    def __init__(self, keys: KeysCollection = "pred", hu_key: str = "image_hu", output_dir: str | os.PathLike = "./",
                 separate_folder: bool = True, second_opinion: bool = False, qc: bool = True,
                 allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.hu_key, self.second_opinion, self.qc = hu_key, second_opinion, qc
        self.layouts = {postfix: FolderLayout(str(output_dir), postfix=postfix, extension=ext, parent=separate_folder,
                                              makedirs=True) for postfix, ext in (("report", ".json"), ("qc", ".png"))}

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            mask, hu = d[key], d[self.hu_key]
            name = str(getattr(mask, "meta", {}).get(ImageMetaKey.FILENAME_OR_OBJ, "case"))
            m, ct = convert_to_numpy(mask)[0], convert_to_numpy(hu)[0]  # channel first; views of CPU tensors
            qc = str(self.layouts["qc"].filename(subject=name)) if self.qc else None
            unknown = any(getattr(t, "meta", {}).get(SPACING_UNKNOWN) for t in (mask, hu))
            nonfinite = np.ravel(np.asarray(convert_to_numpy(getattr(hu, "meta", {}).get(NONFINITE_META) or (0, 0)),
                                            dtype=np.int64))[:2]  # [NaN, inf] of the input, collated or not
            lungs = describe_lungs(m, ct.reshape(m.shape), convert_to_numpy(mask.affine), qc,
                                   second=self.second_opinion, spacing_known=not unknown, nonfinite=nonfinite)
            if os.path.isdir(name):  # the series' own warnings (several series, irregular spacing ...), as the CLI's
                picked, uid = select_ct_series(name, quiet=True), getattr(hu, "meta", {}).get("0020|000e")
                if uid and str(uid) != picked.uid:  # the config's series_uid picked another one
                    picked = select_ct_series(name, str(uid), quiet=True)
                lungs["warnings"] = picked.warnings + lungs["warnings"]
            path = write_json({"input": name, "version": __version__, **lungs},
                              self.layouts["report"].filename(subject=name))
            v = lungs["volumes_ml"]
            side = f" (right {v['right_ml']:.0f}, left {v['left_ml']:.0f})" if v["right_ml"] is not None else ""
            logger.info("%s: lungs %.0f mL%s -> %s", name, v["total_ml"], side, path)
            for w in lungs["warnings"]:
                logger.warning("%s: %s", name, w)
        return d
