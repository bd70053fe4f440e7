"""The bundle's configs keep one definition of everything: the preprocessing chain and its settings live in
``LungCTPreprocessing``, the threshold in ``MASK_THRESHOLD`` (``LogitsToMaskd``), the metric handlers in
``metric_handlers``; no config repeats them, and nothing is addressed by its position in a list."""

import inspect
import json
import re

import pytest
from monai.bundle import ConfigParser

from conftest import BUNDLE
from fusionlungnet_monai.transforms import LungCTPreprocessing

CONFIGS = sorted(p for p in (BUNDLE / "configs").glob("*.json") if p.name != "metadata.json")
# the chain's own steps: a config that names one of them writes a piece of the chain again
CHAIN_TARGETS = {"LoadCTImaged", "CheckPaird", "EnsureChannelFirstd", "SqueezeSingleSliced", "PictureToHUd", "KeepHUd",
                 "Orientationd", "FieldOfViewPadd", "CTIntensityNormalized", "Resized", "MedianFilterd",
                 "DynamicThresholdd", "ArtifactRemovald", "BinarizeMaskd", "EnsureTyped"}
# LungCTPreprocessing's settings; the others (keys, volume, spatial_size, in_channels, series_uid, ...) wire it into
# a config: the network's input size and channels, the DICOM series, the device
WIRING = {"self", "image_key", "label_key", "volume", "spatial_size", "in_channels", "load", "series_uid",
          "load_dtype", "keep_hu", "hu_key", "device", "disabled"}
SETTINGS = set(inspect.signature(LungCTPreprocessing).parameters) - WIRING
OLD_NAMES = {"dynamic_threshold", "pre"}  # ids of the chain's copies before 0.3.14


def _config(path):
    return json.loads(path.read_text())


def _walk(node, where=""):
    """Every (id, value) pair of a config, nested ones included."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield f"{where}#{k}" if where else k, v
            yield from _walk(v, f"{where}#{k}" if where else k)
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield f"{where}#{i}", v
            yield from _walk(v, f"{where}#{i}")


def test_the_chain_settings_are_the_known_ones():
    assert SETTINGS == {"hu_window", "median_radius", "threshold_window", "threshold_k", "alpha", "beta",
                        "artifact_threshold_hu", "min_fov_mm", "fov_cut_fill_hu", "orientation", "picture_polarity"}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_no_config_repeats_the_chain_its_settings_the_threshold_or_the_metrics(path):
    config = _config(path)
    top = {k.split("#")[0] for k in config}
    assert not top & (SETTINGS | OLD_NAMES), f"{path.name} sets chain settings at the top: {sorted(top & SETTINGS)}"
    for key, value in _walk(config):
        if isinstance(value, dict) and "_target_" in value:
            name = value["_target_"].split(".")[-1]
            assert name not in CHAIN_TARGETS, f"{path.name}: {key} writes the chain's step {name} again"
            assert name != "SegmentationMetricHandler", f"{path.name}: {key}: metric handlers come from metric_handlers"
            if name == "AsDiscreted":
                assert not isinstance(value.get("threshold"), (int, float)), f"{path.name}: {key}: a literal threshold"
            if name == "LungCTPreprocessing":
                assert not set(value) & SETTINGS, f"{path.name}: {key} copies chain settings {set(value) & SETTINGS}"
        if isinstance(value, str):
            # no handler or step picked by its place in a list: @x#handlers[: -2], @x#transforms[3], x#handlers#2
            assert not re.search(r"@[\w#]+\s*\[\s*[-:\d]", value), f"{path.name}: {key} indexes a list: {value}"
            assert not re.search(r"@[\w#]*#\d", value), f"{path.name}: {key} refers to a list entry: {value}"
    for key in config:  # an override file's ids
        assert not re.search(r"#\d", key), f"{path.name}: {key} addresses a list entry"
    text = path.read_text()
    assert "Activationsd" not in text or path.name == "inference.json"  # inference: sigmoid before the inverse


def test_overrides_of_chain_settings_work_for_every_config():
    """A chain setting given by id (``--preprocessing#alpha``) reaches the step in training and inference alike; an
    unknown step name in ``disabled`` is one clear error."""
    for files in (["inference.json"], ["train.json"], ["train.json", "train_volumes.json"]):
        p = ConfigParser()
        p.read_config([str(BUNDLE / "configs" / f) for f in files])
        p.update({"bundle_root": str(BUNDLE), "preprocessing#alpha": 1.7, "preprocessing#disabled": ["median"]})
        pre = p.get_parsed_content("preprocessing")
        assert pre.named["dynamic_threshold"].transform.alpha == 1.7 and "median" not in pre.named
    with pytest.raises(ValueError, match="unknown steps \\['medain'\\]"):
        LungCTPreprocessing(disabled=["medain"])


def test_the_documented_defaults_are_the_chain_defaults():
    """inference.json's ``_comment_preprocessing`` lists the chain's defaults for readers of the config: they are
    ``LungCTPreprocessing``'s own."""
    comment = _config(BUNDLE / "configs" / "inference.json")["_comment_preprocessing"]
    listed = comment.split("Defaults: ", 1)[1].rstrip(".")
    found = {}
    for part in re.findall(r"(\w+) (\[[^\]]*\]|\"[^\"]*\"|-?[\d.]+)", listed):
        found[part[0]] = json.loads(part[1])
    defaults = {k: v.default for k, v in inspect.signature(LungCTPreprocessing).parameters.items() if k in SETTINGS}
    assert set(found) == SETTINGS
    for name, value in found.items():
        want = defaults[name]
        assert (list(want) if isinstance(want, tuple) else want) == value, name
