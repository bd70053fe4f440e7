"""Pictures mapped back to HU (PictureToHU, estimate_picture_window) and HU rendered as pictures (RandCTWindow), on
real chest CT slices (LIDC-IDRI) rendered through the windows viewers export with."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from fusionlungnet_monai.transforms import (CTIntensityNormalize, PictureToHU, PictureToHUd, RandCTWindowd,
                                            estimate_picture_window, render_window)

DATA = Path(__file__).parent / "data" / "lidc_idri_slabs"


@pytest.fixture(scope="module")
def real_slices():
    from fusionlungnet_monai.data import load_ct_lps

    return [load_ct_lps(DATA / c)[0][:, :, 5].astype(np.float32) for c in ("LIDC-IDRI-0002", "LIDC-IDRI-0003")]


WINDOWS = {"lung": dict(width=1500, level=-600), "inverted": dict(width=1500, level=-600, invert=True),
           "mediastinal": dict(width=400, level=40), "wide": dict(width=4096, level=1024),
           "gamma0.5": dict(width=1500, level=-600, gamma=0.5), "gamma2": dict(width=1500, level=-600, gamma=2.0),
           "jpeg30": dict(width=1500, level=-600, jpeg_quality=30), "noise8": dict(width=1500, level=-600, noise=8),
           # a clipped window read inverted only from its flat ends; noise spreading the clipped lungs; padding
           # kept by a wide window, spread by JPEG's ringing
           "mediastinal_inverted": dict(width=400, level=40, invert=True),
           "mediastinal_noise8": dict(width=400, level=40, noise=8),
           "full_jpeg60_inverted": dict(width=3000, level=-700, jpeg_quality=60, invert=True)}


@pytest.mark.parametrize("window", sorted(WINDOWS))
def test_real_slices_map_back_to_lung_and_tissue(real_slices, window):
    """Through every window, the estimated HU puts lung and tissue on the same side of -320 HU as the true HU on
    at least 98 % of the pixels (96 % with noise at a clipped end), and inverted pictures are detected (and only they)."""
    for hu in real_slices:
        pic = render_window(hu, rng=np.random.default_rng(0), **WINDOWS[window]).astype(np.float32)
        est = estimate_picture_window(pic)
        assert est["inverted"] == window.endswith("inverted")
        out = PictureToHU(only_pictures=False)(pic[None])[0]
        agree = ((np.asarray(out) < -320) == (hu < -320)).mean()
        # noise of 8 grey levels at a mediastinal window's clipped end moves some fat (-100 HU) to it
        assert agree > (0.96 if window == "mediastinal_noise8" else 0.98), (window, agree, est)


def test_clipped_mediastinal_window_is_said(real_slices):
    est = estimate_picture_window(render_window(real_slices[0], 400, 40).astype(np.float32))
    assert est["clipped_low"] and not est["trusted"]
    assert abs(est["hu_at_0"] - (-160)) < 40 and abs(est["hu_at_255"] - 240) < 60  # W400/L40 is -160..240


def test_polarity_as_told(real_slices):
    pic = render_window(real_slices[1], 1500, -600, invert=True).astype(np.float32)
    assert estimate_picture_window(pic, "normal")["inverted"] is False
    assert estimate_picture_window(pic, "inverted")["polarity"] == "given"
    with pytest.raises(ValueError, match="polarity"):
        PictureToHU(polarity="upside-down")


def test_pictures_only_and_meta(real_slices):
    """Only picture sources are mapped; the estimate rides in the meta, and the intensity step then reads HU."""
    hu = MetaTensor(torch.from_numpy(real_slices[0][None]), meta={"filename_or_obj": "ct.nii.gz"})
    assert PictureToHUd("image")({"image": hu})["image"] is hu
    pic = render_window(real_slices[0], 1500, -600)
    img = MetaTensor(torch.from_numpy(pic[None].copy()), meta={"filename_or_obj": "slice.png"})
    out = PictureToHUd("image")({"image": img})["image"]
    assert "picture_window" in out.meta and not CTIntensityNormalize().is_eight_bit(out)
    assert float(out.min()) < -900 and out.dtype == torch.float32


def test_random_window_is_seeded_and_keeps_lungs(real_slices):
    from fusionlungnet_monai.transforms import RandCTWindow

    hu = torch.from_numpy(real_slices[0][None])
    a = RandCTWindowd("image", prob=1.0).set_random_state(3)({"image": hu})["image"]
    b = RandCTWindowd("image", prob=1.0).set_random_state(3)({"image": hu})["image"]
    assert torch.equal(a, b) and a.shape == hu.shape and not torch.equal(a, hu)
    assert RandCTWindowd("image", prob=0.0)({"image": hu})["image"] is hu
    w = RandCTWindow(prob=1.0)
    w.randomize()
    w.params = {"width": 1500.0, "level": -600.0, "gamma": 1.0, "invert": True, "jpeg_quality": 50, "noise": 4.0}
    out = w(hu, randomize=False)
    assert ((out[0].numpy() < -320) == (real_slices[0] < -320)).mean() > 0.98


@pytest.mark.parametrize("window", ["inverted", "mediastinal", "wide", "mediastinal_inverted"])
def test_predict_real_picture_through_any_window(real_slices, window, tmp_path):
    """``fusionlungnet predict``'s Predictor (shipped weights) on a real LIDC-IDRI slice exported as a PNG through
    a window the network was never trained on: the mask matches the classical HU segmentation of the true HU
    (IoU > 0.95 with the HU boundary refinement on the estimated HU; 0.00-0.79 before pictures were mapped to HU,
    0.93-0.94 without the refinement), and the report states the estimate and the refinement."""
    from PIL import Image

    from fusionlungnet_monai.classical import classical_lung_mask
    from fusionlungnet_monai.predict import Predictor

    hu = real_slices[1]
    path = tmp_path / "slice.png"
    Image.fromarray(np.ascontiguousarray(render_window(hu, **WINDOWS[window]).T)).save(path)
    res = Predictor(progress=False).predict(path, tmp_path / "out")
    assert res.ok, res.error
    mask = np.asarray(Image.open(tmp_path / "out" / "lungmask.png")).T > 0
    ref = classical_lung_mask(hu, (0.82, 0.82)) > 0
    assert (mask & ref).sum() / (mask | ref).sum() > 0.95
    est = res.report["picture_window"]
    assert est["inverted"] == window.endswith("inverted")
    assert est["method"] == "peaks" and res.report["hu_boundary_refinement"] is True
    assert any("inverted picture" in w for w in res.report["warnings"]) == window.endswith("inverted")


def test_cli_polarity_as_told(real_slices, tmp_path):
    """``--picture-polarity normal`` on an inverted export: read as told, no inversion warning; a bad value is one
    usage line."""
    from PIL import Image

    from fusionlungnet_monai.cli import main

    path = tmp_path / "slice.png"
    Image.fromarray(np.ascontiguousarray(render_window(real_slices[1], 1500, -600, invert=True).T)).save(path)
    assert main(["predict", str(path), str(tmp_path / "out"), "--picture-polarity", "normal", "--no-progress"]) == 0
    import json

    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["picture_window"]["polarity"] == "given" and not report["picture_window"]["inverted"]
    assert not any("inverted picture" in w for w in report["warnings"])
    with pytest.raises(SystemExit) as e:
        main(["predict", str(path), str(tmp_path / "o2"), "--picture-polarity", "sideways"])
    assert e.value.code == 2


def test_training_chain_renders_pictures_between_hu_and_network_steps(real_slices, tmp_path):
    """train.json's training chain renders the cached HU slice as a picture (picture_augmentation) after the field
    of view and before the paper's intensity steps; at prob 1 every draw is a picture mapped back, its lungs where
    the HU path puts them; at prob 0 the chain is validation's; the label is never touched."""
    import nibabel as nib
    from monai.bundle import ConfigParser
    from monai.transforms import Compose

    hu = real_slices[1]
    nib.save(nib.Nifti1Image(hu[..., None].astype(np.int16), np.diag([0.8, 0.8, 1.0, 1.0])), tmp_path / "img.nii.gz")
    lung = (hu < -320).astype(np.uint8)
    nib.save(nib.Nifti1Image(lung[..., None], np.diag([0.8, 0.8, 1.0, 1.0])), tmp_path / "lab.nii.gz")
    item = {"image": str(tmp_path / "img.nii.gz"), "label": str(tmp_path / "lab.nii.gz")}

    def chain(prob):
        parser = ConfigParser()
        parser.read_config(Path(__file__).parents[1] / "bundle" / "configs" / "train.json")
        parser["picture_augmentation"]["prob"] = prob
        parser["spatial_size"] = [96, 96]
        return parser.get_parsed_content("train#preprocessing"), parser.get_parsed_content("validate#preprocessing")

    train, validate = chain(1.0)
    names = [type(t).__name__ for t in train.transforms]
    at = names.index("RandCTWindowd")
    assert names.index("FieldOfViewPadd") < at < names.index("CTIntensityNormalized")
    train.set_random_state(0)
    cached = Compose(train.transforms[:at])(item)  # what CacheDataset keeps: HU
    true_lung = cached["image"][0] < -320
    for _ in range(6):
        drawn = train.transforms[at](cached)
        assert not torch.equal(drawn["image"], cached["image"])  # every draw a picture at prob 1
        agree = ((drawn["image"][0] < -320) == true_lung).float().mean()
        assert agree > 0.75, (float(agree), train.transforms[at].window.params)
        assert drawn["label"] is cached["label"]
    out, ref = train(item), validate(item)
    assert out["image"].shape == ref["image"].shape == (1, 96, 96)
    train0, _ = chain(0.0)
    assert all(train0.transforms[at](cached)["image"] is cached["image"] for _ in range(3))  # prob 0: HU only


def test_hu_steps_trust_peak_estimates_only(real_slices):
    """The HU post-processing (``is_hu_image``: refinement) runs on a picture mapped from its air and tissue peaks,
    not on one whose window the percentile fallback guessed (a picture without the two peaks)."""
    from fusionlungnet_monai.utils import is_hu_image

    pic = MetaTensor(torch.as_tensor(render_window(real_slices[0], 1500, -600)[None]),
                     meta={"filename_or_obj": "slice.png"})
    assert is_hu_image(PictureToHU()(pic))
    flat = np.random.default_rng(0).integers(100, 110, (64, 64)).astype(np.uint8)  # grey noise: no two peaks
    mapped = PictureToHU()(MetaTensor(torch.as_tensor(flat[None]), meta={"filename_or_obj": "flat.png"}))
    assert json.loads(mapped.meta["picture_window"])["method"] == "percentiles"
    assert not is_hu_image(mapped)


def test_picture_second_opinion_rules(real_slices):
    """The picture's second opinion on a real slice's HU: the classical mask itself passes every rule; lung plus the
    air around the body, a mask on the mediastinum, and a lung cut into pieces each say "check this case"."""
    from scipy import ndimage

    from fusionlungnet_monai.classical import classical_lung_mask
    from fusionlungnet_monai.outputs import picture_second_opinion

    hu = real_slices[1]
    lung = classical_lung_mask(hu, (0.82, 0.82)) > 0
    summary, second, warn = picture_second_opinion(lung, hu)
    assert not warn and summary["lungs"] in (1, 2) and summary["dice_with_classical"] > 0.98, summary
    assert summary["mean_hu"] < -700 and summary["outside_body"] == 0.0
    outside = np.zeros_like(lung)
    outside[:, :40] = hu[:, :40] < -900  # the room air along one edge
    _, _, warn = picture_second_opinion(lung | outside, hu)
    assert any("outside the body outline" in w for w in warn), warn
    tissue = ndimage.binary_erosion((hu > -100) & ~ndimage.binary_dilation(lung, iterations=5), iterations=3)
    tissue &= ndimage.binary_fill_holes(lung | ndimage.binary_closing(lung, iterations=40))  # the mediastinum
    _, _, warn = picture_second_opinion(tissue, hu)
    assert any("soft tissue rather than lung" in w for w in warn) and any("Dice" in w for w in warn), warn
    pieces = lung.copy()
    pieces[::40] = False  # cut into bands
    pieces = ndimage.binary_opening(pieces, iterations=2)
    _, _, warn = picture_second_opinion(pieces, hu)
    assert any("pieces" in w for w in warn), warn
    _, second, _ = picture_second_opinion(lung, hu, trusted_hu=False)  # the percentile fallback: no classical mask
    assert second is None


def test_predict_says_check_this_case_on_a_picture_segmented_wrong(real_slices, tmp_path):
    """An inverted real slice told to be normal (``--picture-polarity normal``) is segmented wrong: the report's
    second opinion says "check this case" and the QC picture is written; read right, it says nothing."""
    from PIL import Image

    from fusionlungnet_monai.predict import Predictor

    path = tmp_path / "inverted.png"
    Image.fromarray(np.ascontiguousarray(render_window(real_slices[1], **WINDOWS["inverted"]).T)).save(path)
    wrong = Predictor(progress=False, picture_polarity="normal").predict(path, tmp_path / "wrong")
    assert wrong.ok and any(w.startswith("check this case") for w in wrong.report["warnings"]), wrong.report
    assert (tmp_path / "wrong" / "qc.png").exists()
    right = Predictor(progress=False).predict(path, tmp_path / "right")
    assert not any(w.startswith("check this case") for w in right.report["warnings"]), right.report["warnings"]
    assert right.report["second_opinion"]["dice_with_classical"] > 0.95


def test_palette_pictures_are_read_by_their_colours(real_slices, tmp_path):
    """A real slice saved as a 64-colour grey palette PNG gives the mask of its grey twin (0.3.13 read the palette
    indices as grey: an empty mask); a palette PNG with a transparent colour is refused in one line, as RGBA with
    transparency is; a label mask stored with a few coloured palette entries is still read by its indices."""
    from PIL import Image

    from fusionlungnet_monai.data import InputError, LoadCTImage
    from fusionlungnet_monai.predict import Predictor

    grey = Image.fromarray(np.ascontiguousarray(render_window(real_slices[1], **WINDOWS["lung"]).T))
    palette = grey.quantize(64)
    assert palette.mode == "P" and len(palette.getcolors()) <= 64
    grey.save(tmp_path / "grey.png")
    palette.save(tmp_path / "palette.png")
    with Predictor(progress=False) as p:
        masks = {}
        for name in ("grey", "palette"):
            res = p.predict(tmp_path / f"{name}.png", tmp_path / name)
            assert res.ok, res.error
            masks[name] = np.asarray(Image.open(tmp_path / name / "lungmask.png")) > 0
    a, b = masks["grey"], masks["palette"]
    assert a.sum() > 1000 and 2 * (a & b).sum() / (a.sum() + b.sum()) > 0.98

    see_through = palette.copy()
    see_through.info["transparency"] = 0
    see_through.save(tmp_path / "transparent.png", transparency=0)
    with pytest.raises(InputError, match="transparency not supported"):
        LoadCTImage(image_only=True)(str(tmp_path / "transparent.png"))
    res = Predictor(progress=False).predict(tmp_path / "transparent.png", tmp_path / "t")
    assert not res.ok and "transparency not supported" in res.error

    labels = Image.fromarray((np.asarray(grey) < 60).astype(np.uint8), mode="L").convert("P")
    labels.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)  # index 1 shown red: a label mask
    labels.save(tmp_path / "labels.png")
    read = np.asarray(LoadCTImage(image_only=True)(str(tmp_path / "labels.png")))
    assert set(np.unique(read).tolist()) == {0, 1}


def test_photos_are_said_not_to_look_like_ct(real_slices, tmp_path):
    """Photos (scikit-image's, shipped with it: no download) come out with a "check this case" warning or an empty
    mask, never as a plain result (0.3.13: a photo came out 44 % lung without a word); a colour photo is named as
    one. A real slice exported grey, as RGB, or as a JPEG is not."""
    import skimage.data
    from PIL import Image

    from fusionlungnet_monai.predict import Predictor

    grey = np.ascontiguousarray(render_window(real_slices[1], **WINDOWS["lung"]).T)
    Image.fromarray(grey).convert("RGB").save(tmp_path / "ct_rgb.jpg", quality=85)
    with Predictor(progress=False) as p:
        ct = p.predict(tmp_path / "ct_rgb.jpg", tmp_path / "ct")
        assert ct.ok and not any(w.startswith("check this case") for w in ct.report["warnings"]), ct.report["warnings"]
        for name in ("astronaut", "coffee", "chelsea", "camera", "rocket"):
            photo = getattr(skimage.data, name)()
            Image.fromarray(photo).save(tmp_path / f"{name}.png")
            res = p.predict(tmp_path / f"{name}.png", tmp_path / name)
            warnings = res.report["warnings"]
            assert res.ok and any(w.startswith(("check this case", "empty mask")) for w in warnings), (name, warnings)
            assert any("a colour picture" in w for w in warnings) == (photo.ndim == 3), (name, warnings)
