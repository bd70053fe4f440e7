"""Orientation safety: the same CT stored with different axis orders/directions gives the same lung mask.

The bundle reorients every volume to the training orientation (LPS voxel order, ``Orientationd``) before the 2D
network and inverts that on the way out, so each mask comes back in its own file's geometry. Mapping each mask back
to the reference storage must give the reference mask (Dice >= 0.999).
"""

from __future__ import annotations

import numpy as np
import pytest

from conftest import BUNDLE

# storage variants of an LPS-ordered array: which voxel axes are flipped
VARIANTS = {"LPS": (), "LAS": (1,), "RAS": (0, 1), "RPS": (0,), "LPI": (2,), "RAI": (0, 1, 2)}


def _flipped_affine_lps(spacing, origin, shape, axes):
    """Voxel-to-LPS affine of an LPS-ordered array after flipping ``axes``."""
    aff = np.diag([*spacing, 1.0])
    aff[:3, 3] = origin
    for a in axes:
        aff[:3, 3] = aff[:3, 3] + aff[:3, a] * (shape[a] - 1)
        aff[:3, a] = -aff[:3, a]
    return aff


def _write(kind, path, arr, aff_lps):
    if kind == "nifti":
        import nibabel as nib

        ras = np.diag([-1.0, -1.0, 1.0, 1.0]) @ aff_lps
        nib.save(nib.Nifti1Image(arr, ras), str(path))
    elif kind == "dicom":  # a CT series whose ImageOrientationPatient/ImagePositionPatient carry the flips
        import pydicom

        from fusionlungnet_monai.phantom.writers import write_dicom_series

        spacing = np.linalg.norm(aff_lps[:3, :3], axis=0)
        files = write_dicom_series(np.zeros(arr.shape, np.int16), spacing, aff_lps[:3, 3], path,
                                   patient_id=path.name)
        stored = np.clip(np.rint(arr.astype(np.float32) + 1024.0), -32768, 32767).astype(np.int16)
        cos = aff_lps[:3, :3] / spacing
        for k, f in enumerate(files):
            ds = pydicom.dcmread(str(f))
            ds.ImageOrientationPatient = [f"{v:g}" for v in (*cos[:, 0], *cos[:, 1])]
            ds.ImagePositionPatient = [f"{v:.4f}" for v in aff_lps[:3, :3] @ [0, 0, k] + aff_lps[:3, 3]]
            ds.PixelData = np.ascontiguousarray(stored[:, :, k].T).tobytes()
            ds.save_as(str(f))
    else:  # MetaImage through ITK: direction cosines carry the flips
        import itk

        img = itk.image_from_array(np.ascontiguousarray(arr.transpose(2, 1, 0)))
        spacing = np.linalg.norm(aff_lps[:3, :3], axis=0)
        img.SetSpacing([float(s) for s in spacing])
        img.SetOrigin([float(v) for v in aff_lps[:3, 3]])
        img.SetDirection(itk.matrix_from_array(np.ascontiguousarray(aff_lps[:3, :3] / spacing)))
        itk.imwrite(img, str(path))


def _dice(a, b):
    a, b = a > 0, b > 0
    return 2.0 * (a & b).sum() / max(a.sum() + b.sum(), 1)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["nifti", "mha", "dicom"])
def test_same_ct_any_storage_gives_the_same_mask(kind, trained, tmp_path):
    from monai.transforms import Orientation

    from fusionlungnet_monai.phantom import make_phantom
    from fusionlungnet_monai.workflow import infer_tensors, load_inference_workflow

    ph = make_phantom(8, size=128, seed=5)
    files = {}
    for name, axes in VARIANTS.items():
        if kind == "dicom" and 2 in axes:
            continue  # a DICOM series has no stored slice order: the reader sorts slices by position
        arr = np.flip(ph.image, axes).copy() if axes else ph.image
        path = tmp_path / (f"{name}.{'nii.gz' if kind == 'nifti' else 'mha'}" if kind != "dicom" else name)
        _write(kind, path, arr, _flipped_affine_lps(ph.spacing, ph.origin, ph.image.shape, axes))
        files[name] = path
    wf = load_inference_workflow(BUNDLE, {"ckpt_path": str(trained / "models" / "model.pt"), "spatial_size": [64, 64],
                                          "bundle_root": str(trained), "input": []}, save=False)
    preds = {}
    for name, path in files.items():
        out = infer_tensors(wf, [path])[0]["pred"]
        assert tuple(out.shape[1:]) == ph.image.shape, "the mask comes back in the file's own grid"
        # back to the LPS storage through the mask's own affine (a DICOM series with one in-plane axis flipped is
        # left-handed: the reader also orders its slices along -z)
        preds[name] = np.asarray(Orientation(axcodes="LPS", labels=None)(out)[0])
    ref = preds["LPS"]
    assert ref.sum() > 0, "the trained model finds lung"
    for name, m in preds.items():
        assert _dice(m, ref) >= 0.999, f"{kind} stored {name}: Dice {_dice(m, ref):.4f} against LPS storage"


def test_inference_config_reorients_before_the_network():
    from monai.bundle import ConfigParser

    p = ConfigParser()
    p.read_config(str(BUNDLE / "configs" / "inference.json"))
    p["bundle_root"] = str(BUNDLE)
    pre = p.get_parsed_content("preprocessing")
    names = list(pre.named)
    assert names.index("orient") < names.index("resize")
    assert pre.named["orient"].ornt_transform.axcodes == "LPS"


def test_train_evaluate_and_inference_take_one_preprocessing():
    """The chain (field-of-view padding, then the paper's intensity, resize, median, dynamic threshold, artifact
    removal) is the same in training, evaluation, volume training and inference: same transforms, same parameters,
    artifact threshold given once in HU; a setting changed by id changes every one of them."""
    from monai.bundle import ConfigParser

    def chain(files, key, **over):
        p = ConfigParser()
        p.read_config([str(BUNDLE / "configs" / f) for f in files])
        p.update({"bundle_root": str(BUNDLE), **over})
        out = []
        for t in p.get_parsed_content(key).transforms:
            name = type(t).__name__
            if name == "FieldOfViewPadd":
                out.append((name, (t.padder.min_fov, t.padder.square, t.padder.cut_fill_hu)))
            elif name == "CTIntensityNormalized":
                out.append((name, tuple(t.transform.hu_window)))
            elif name == "Resized":
                out.append((name, tuple(t.resizer.spatial_size)[:2]))
            elif name == "MedianFilterd":
                out.append((name, t.transform.radius))
            elif name == "DynamicThresholdd":
                tr = t.transform
                out.append((name, (tr.window, tr.k, tr.alpha, tr.beta)))
            elif name == "ArtifactRemovald":
                out.append((name, round(float(t.remover.threshold), 6)))
        return out

    infer = chain(["inference.json"], "preprocessing")
    assert [n for n, _ in infer] == ["FieldOfViewPadd", "CTIntensityNormalized", "Resized", "MedianFilterd",
                                     "DynamicThresholdd", "ArtifactRemovald"]
    assert dict(infer)["ArtifactRemovald"] == round((-537 + 1024) / 1624, 6)
    assert chain(["train.json"], "validate#preprocessing") == infer
    assert chain(["train.json"], "train#preprocessing") == infer  # its augmentation aside
    assert chain(["train.json", "evaluate.json"], "validate#preprocessing") == infer
    assert chain(["train.json", "train_volumes.json"], "validate#preprocessing") == infer
    assert chain(["inference.json", "inference_2d.json"], "preprocessing") == infer
    changed = {"preprocessing#alpha": 1.5, "preprocessing#median_radius": 2}
    assert chain(["train.json"], "validate#preprocessing", **changed) == chain(["inference.json"], "preprocessing",
                                                                               **changed) != infer


# storage with the axes permuted: (stored axis order of the LPS array, name); the slices of a series are the last axis
PERMUTED = {"coronal": (0, 2, 1), "sagittal": (1, 2, 0)}


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["dicom", "nifti"])
def test_coronal_and_sagittal_storage_gives_the_axial_mask(kind, tmp_path):
    """A chest CT stored as coronal or sagittal slices goes through ``Predictor`` (shipped weights, axial slabs of
    16 planes cut along the head-foot axis, the 3D steps, the second opinion) to the mask of its axial storage."""
    from monai.transforms import Orientation

    from fusionlungnet_monai.phantom import make_chest_phantom
    from fusionlungnet_monai.predict import Predictor
    from fusionlungnet_monai.utils import head_foot_axis

    ph = make_chest_phantom(3, num_slices=40, size=96)
    aff = ph.affine_lps
    stored = {"axial": tmp_path / ("axial" if kind == "dicom" else "axial.nii.gz")}
    _write(kind, stored["axial"], ph.image, aff)
    for name, perm in PERMUTED.items():
        if kind == "dicom" and name == "sagittal":
            continue  # one permuted DICOM storage is enough for the reader
        stored[name] = tmp_path / (name if kind == "dicom" else f"{name}.nii.gz")
        _write(kind, stored[name], ph.image.transpose(perm).copy(), aff[:, [*perm, 3]])
    masks, reports = {}, {}
    with Predictor(slab_slices=16, progress=False) as pred:
        for name, path in stored.items():
            image, mask, info = pred.segment(path)
            assert tuple(mask.shape) == tuple(image.shape), "the mask comes back in the file's own grid"
            assert head_foot_axis(image.affine) == (2 if name == "axial" else list(PERMUTED[name]).index(2))
            masks[name] = np.asarray(Orientation(axcodes="LPS", labels=None)(mask[None])[0])
            reports[name] = pred.predict(path, tmp_path / f"out_{name}")
    ref = masks["axial"]
    assert ref.sum() > 1000, "the shipped model finds lung"
    for name, m in masks.items():
        assert m.shape == ref.shape
        assert _dice(m, ref) >= 0.999, f"{kind} stored {name}: Dice {_dice(m, ref):.4f} against axial storage"
    axial = reports.pop("axial").report["second_opinion"]
    for name, res in reports.items():
        assert res.ok, res.error
        report = res.report
        assert any("coronal/sagittal" in w or "reformatted" in w for w in report["warnings"])
        # the classical segmentation runs on the same axial view of the CT (its airway step from the head down)
        assert abs(report["second_opinion"]["dice_with_network"] - axial["dice_with_network"]) < 0.01
        assert abs(report["second_opinion"]["classical_ml"] - axial["classical_ml"]) < 0.01 * axial["classical_ml"]


@pytest.mark.parametrize("variant", ["RAS", "LAS", "LPI", "coronal"])
def test_the_qc_picture_is_the_same_for_any_storage(variant, tmp_path):
    """The report's QC picture (CLI ``qc.png``, bundle ``<name>_qc.png``) shows radiological views whatever order the
    file stores its voxels in (before 0.3.13 a NIfTI stored RAS came out mirrored, a coronal one with its views
    swapped); the volumes are the same too."""
    from PIL import Image

    from fusionlungnet_monai.outputs import describe_lungs
    from fusionlungnet_monai.phantom import make_chest_phantom

    ph = make_chest_phantom(3, num_slices=40, size=128)
    ct, mask = np.asarray(ph.image), np.asarray(ph.mask).astype(np.uint8)
    aff = np.asarray(ph.affine_ras, dtype=float)  # LPS voxel order, as ITK reads DICOM
    if variant == "coronal":  # voxel axes y and z swapped
        swap = np.eye(4)[[0, 2, 1, 3]]
        ct2, mask2, aff2 = np.swapaxes(ct, 1, 2), np.swapaxes(mask, 1, 2), aff @ swap
    else:
        ct2, mask2, aff2 = ct, mask, aff
        for a in VARIANTS[variant]:
            flip = np.eye(4)
            flip[a, a], flip[a, 3] = -1, ct.shape[a] - 1
            ct2, mask2, aff2 = np.flip(ct2, a), np.flip(mask2, a), aff2 @ flip
    ref = describe_lungs(mask, ct, aff, tmp_path / "ref.png", second=True)
    got = describe_lungs(np.ascontiguousarray(mask2), np.ascontiguousarray(ct2), aff2, tmp_path / "got.png",
                         second=True)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "got.png")), np.asarray(Image.open(tmp_path / "ref.png")))
    assert got["volumes_ml"] == ref["volumes_ml"] and got["second_opinion"] == ref["second_opinion"]
