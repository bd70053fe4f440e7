"""Helpers the package shares: HU facts (:mod:`.hu`), voxel geometry (:mod:`.geometry`) and binary masks
(:mod:`.masks`)."""

from fusionlungnet_monai.utils.geometry import (
    as_slices,
    axial_dims,
    bounding_box,
    from_slices,
    head_foot_axis,
    lps_orientation,
    planewise_copy,
    replace_in_box,
    slab_index,
)
from fusionlungnet_monai.utils.hu import (
    AIR_HU,
    DEFAULT_HU_WINDOW,
    EIGHT_BIT_SUFFIXES,
    HU_AIR_CHECK,
    LUNG_HU_THRESHOLD,
    NONFINITE_META,
    OUTSIDE_AIR_HU,
    ROOM_AIR_HU,
    PICTURE_META,
    compact_hu,
    is_eight_bit,
    is_hu_image,
    source_suffix,
)
from fusionlungnet_monai.utils.masks import (
    binary_view,
    component_sizes,
    enclosed_background,
    fill_holes_2d,
    in_plane_structure,
    label_components,
    lung_like_components,
    median3x3_below,
)

__all__ = [
    "AIR_HU", "DEFAULT_HU_WINDOW", "EIGHT_BIT_SUFFIXES", "HU_AIR_CHECK", "LUNG_HU_THRESHOLD", "NONFINITE_META",
    "OUTSIDE_AIR_HU", "PICTURE_META", "ROOM_AIR_HU", "as_slices", "axial_dims", "binary_view", "bounding_box", "compact_hu",
    "component_sizes", "enclosed_background", "fill_holes_2d", "from_slices", "head_foot_axis", "in_plane_structure",
    "is_eight_bit", "is_hu_image", "label_components", "lps_orientation", "lung_like_components", "median3x3_below",
    "planewise_copy", "replace_in_box", "slab_index", "source_suffix",
]
