"""post#invert (SlabwiseInvertd): MONAI's Invertd a slab at a time, each slab refined and thresholded before the next,
gives Invertd's mask on the whole volume, in any storage order, without the whole volume at the CT's grid in float."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser
from monai.data import MetaTensor
from monai.transforms import Compose, Invertd, Resized

from conftest import BUNDLE
from fusionlungnet_monai.transforms import SlabwiseInvertd


def _parser(**over) -> ConfigParser:
    p = ConfigParser()
    p.read_config(str(BUNDLE / "configs" / "inference.json"))
    p.update({"bundle_root": str(BUNDLE), "spatial_size": [32, 32], "preprocessing#min_fov_mm": 60, **over})
    return p


def _chest(shape=(40, 34, 37), seed=0) -> np.ndarray:
    """HU volume in LPS voxel order: body at +40 with two lungs at -850 whose size changes along the slices,
    outside air at -1000, noise."""
    rng = np.random.default_rng(seed)
    x, y, z = np.meshgrid(*(np.linspace(-1, 1, s) for s in shape), indexing="ij")
    body = (x / 0.9) ** 2 + (y / 0.8) ** 2 <= 1
    r = 0.25 + 0.1 * np.cos(2 * z)
    lungs = (((np.abs(x) - 0.45) / r) ** 2 + (y / 0.55) ** 2 <= 1) & body
    hu = np.where(body, 40.0, -1000.0)
    hu[lungs] = -850.0
    return (hu + rng.normal(0, 30, shape)).astype(np.int16)


def _stored(hu: np.ndarray, flips=(), perm=(0, 1, 2)) -> MetaTensor:
    """The LPS volume stored another way: voxel axes flipped, then permuted; the affine (MONAI's RAS) follows."""
    aff = np.diag([-0.9, -1.1, 2.5, 1.0])  # LPS order, RAS world
    aff[:3, 3] = (10.0, -20.0, 30.0)
    arr = hu
    for a in flips:
        arr = np.flip(arr, a)
        aff[:3, 3] += aff[:3, a] * (hu.shape[a] - 1)
        aff[:3, a] = -aff[:3, a]
    arr = np.ascontiguousarray(arr.transpose(perm))
    aff[:, :3] = aff[:, list(perm)]
    return MetaTensor(torch.as_tensor(arr), affine=torch.as_tensor(aff), meta={"filename_or_obj": "chest.nii.gz", "original_channel_dim": "no_channel"})


def _with_pred(pre, image: MetaTensor) -> dict:
    """The preprocessed item with a probability-like ``pred`` on the network grid (high where the image is dark,
    with an uncertain band for the refinement to re-decide)."""
    d = pre({"image": image})
    d["pred"] = MetaTensor(torch.clamp((0.6 - d["image"].as_tensor()) * 2.0, 0, 1), affine=d["image"].affine)
    return d


def _whole(pre, post, d: dict) -> MetaTensor:
    d = Invertd("pred", pre, orig_keys="image", nearest_interp=False, to_tensor=True)(dict(d))
    for t in post:
        d = t(d)
    return d["pred"]


def _spied(invert: SlabwiseInvertd, d: dict) -> tuple[MetaTensor, list]:
    """``invert(d)["pred"]``, and the shape of what each of its ``Invertd`` calls returned."""
    calls, inverse = [], Invertd.__call__

    def spy(self, data):
        out = inverse(self, data)
        calls.append(tuple(out[self.keys[0]].shape))
        return out

    Invertd.__call__ = spy
    try:
        return invert(d)["pred"], calls
    finally:
        Invertd.__call__ = inverse


STORAGE = {"LPS": ((), (0, 1, 2)), "RAS": ((0, 1), (0, 1, 2)), "LPI": ((2,), (0, 1, 2)),
           "sagittal": ((), (2, 0, 1)), "coronal, flipped": ((2,), (0, 2, 1)), "all flipped, reversed": ((0, 1, 2), (2, 1, 0))}


@pytest.mark.parametrize("storage", list(STORAGE))
def test_slabwise_invert_gives_invertds_mask_in_any_storage_order(storage):
    p = _parser()
    pre, post = p.get_parsed_content("preprocessing"), [p.get_parsed_content("post#refine")]
    d = _with_pred(pre, _stored(_chest(), *STORAGE[storage]))
    ref = _whole(pre, post, d)
    invert = SlabwiseInvertd("pred", pre, orig_keys="image", slab_transforms=post, slab_keys=["image_hu"],
                             slab_slices=8, nearest_interp=False)
    got, calls = _spied(invert, dict(d))
    assert ref.dtype == got.dtype == torch.uint8 and 0 < int(ref.sum()) < ref.numel()
    assert torch.equal(got.as_tensor(), ref.as_tensor())
    np.testing.assert_allclose(np.asarray(got.affine), np.asarray(ref.affine), atol=1e-6)
    np.testing.assert_allclose(np.asarray(got.affine), np.asarray(d["image_hu"].affine), atol=1e-6)
    assert got.meta["filename_or_obj"] == "chest.nii.gz"
    # 37 slices in slabs of 8: five inversions, none of the whole volume
    assert len(calls) == 5 and sorted(sorted(c)[1] for c in calls) == [5, 8, 8, 8, 8]


def test_slabwise_invert_inverts_at_once_what_it_cannot_cut():
    """One slab (no more slices than ``slab_slices``), a 2D picture, no orientation step, and a traced transform that
    changes the number of slices: the same mask as Invertd on the whole image."""
    p = _parser()
    pre, post = p.get_parsed_content("preprocessing"), [p.get_parsed_content("post#refine")]
    d = _with_pred(pre, _stored(_chest((40, 34, 6))))
    one = SlabwiseInvertd("pred", pre, orig_keys="image", slab_transforms=post, slab_keys=["image_hu"],
                          nearest_interp=False)
    assert torch.equal(one(dict(d))["pred"], _whole(pre, post, d))

    unoriented = _parser(**{"preprocessing#disabled": ["orient"]})
    pre_u = unoriented.get_parsed_content("preprocessing")
    for storage, slabs in (("LPI", 5), ("coronal, flipped", 1)):  # network slices axial or not (no reorientation)
        d = _with_pred(pre_u, _stored(_chest(), *STORAGE[storage]))
        invert = SlabwiseInvertd("pred", pre_u, orig_keys="image", slab_transforms=post, slab_keys=["image_hu"],
                                 slab_slices=8, nearest_interp=False)
        got, calls = _spied(invert, dict(d))
        assert len(calls) == slabs and torch.equal(got, _whole(pre_u, post, d))
        np.testing.assert_allclose(np.asarray(got.affine), np.asarray(d["image_hu"].affine), atol=1e-6)

    pre_z = Compose([Resized("image", spatial_size=[32, 32, 20], mode="bilinear") if isinstance(t, Resized) else t
                     for t in pre.transforms])
    d = _with_pred(pre_z, _stored(_chest()))
    got = SlabwiseInvertd("pred", pre_z, orig_keys="image", slab_transforms=post, slab_keys=["image_hu"],
                          slab_slices=8, nearest_interp=False)(dict(d))["pred"]
    assert got.shape == (1, 40, 34, 37) and torch.equal(got, _whole(pre_z, post, d))

    pictures = ConfigParser()
    pictures.read_config([str(BUNDLE / "configs" / f) for f in ("inference.json", "inference_2d.json")])
    pictures.update({"bundle_root": str(BUNDLE), "spatial_size": [32, 32], "refine_boundary": False,
                     "body_mask": False})
    pre_2d, threshold = pictures.get_parsed_content("preprocessing"), pictures.get_parsed_content("post#threshold")
    picture = torch.as_tensor((_chest()[..., 5] > -500) * 200, dtype=torch.uint8)
    d = pre_2d({"image": MetaTensor(picture, meta={"original_channel_dim": "no_channel"})})
    d["pred"] = MetaTensor(torch.clamp(1.0 - d["image"].as_tensor(), 0, 1), affine=d["image"].affine)
    got = SlabwiseInvertd("pred", pre_2d, orig_keys="image", slab_transforms=[threshold],
                          nearest_interp=False)(dict(d))["pred"]
    assert got.shape == (1, 40, 34) and torch.equal(got, _whole(pre_2d, [threshold], d))


def test_slabwise_invert_needs_a_slab_of_at_least_one_slice():
    with pytest.raises(ValueError, match="slab_slices"):
        SlabwiseInvertd("pred", Compose([]), slab_slices=0)


def test_inference_config_inverts_slab_by_slab_with_refinement_or_threshold():
    """post#invert takes post#refine (or post#threshold when refinement is off) and post#body to each slab; the
    volume steps come after it, on the whole uint8 mask."""
    p = _parser()
    post = p.get_parsed_content("postprocessing").transforms
    names = [type(t).__name__ for t in post]
    assert names[:3] == ["Activationsd", "SlabwiseInvertd", "RemoveAirwaysd"]
    invert = p.get_parsed_content("post#invert")
    assert [type(t).__name__ for t in invert.slab_transforms] == ["HUBoundaryRefined", "RemoveOutsideBodyd"]
    assert invert.slab_slices == p["invert_slab_slices"] and invert.slab_keys == ("image_hu",)
    off = _parser(refine_boundary=False).get_parsed_content("post#invert")
    assert [type(t).__name__ for t in off.slab_transforms] == ["AsDiscreted", "RemoveOutsideBodyd"]
    bare = _parser(refine_boundary=False, body_mask=False).get_parsed_content("post#invert")
    assert [type(t).__name__ for t in bare.slab_transforms] == ["AsDiscreted"]
