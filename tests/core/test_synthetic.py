"""Synthetic scenes: exact, disjoint masks of every object kind, boxes around them."""

import numpy as np

from samhq_core.training.synthetic import KINDS, make_scene, tight_box


def test_scenes_are_reproducible_and_masks_exact():
    a = make_scene(np.random.default_rng(3), 128, 160)
    b = make_scene(np.random.default_rng(3), 128, 160)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.masks, b.masks)
    assert a.image.shape == (128, 160, 3) and a.image.dtype == np.uint8
    assert a.masks.shape[1:] == (128, 160) and len(a.masks) == len(a.boxes) == len(a.kinds) >= 1


def test_masks_are_disjoint_visible_regions_with_jittered_boxes():
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(60):
        scene = make_scene(rng, 96, 96, box_jitter=0.0)
        assert (scene.masks.sum(axis=0) <= 1).all()  # later objects occlude earlier ones
        assert (scene.masks.sum(axis=(1, 2)) >= 30).all()
        for mask, box in zip(scene.masks, scene.boxes, strict=True):
            assert np.array_equal(box, tight_box(mask))
        seen.update(scene.kinds)
    assert seen == set(KINDS)
    jittered = make_scene(np.random.default_rng(1), 96, 96, box_jitter=0.1)
    exact = np.array([tight_box(m) for m in jittered.masks])
    assert not np.array_equal(jittered.boxes, exact)
    assert (jittered.boxes[:, 2:] >= jittered.boxes[:, :2]).all()


def _erode(mask: np.ndarray, times: int) -> np.ndarray:
    """`times` erosions by a 3 x 3 square."""
    h, w = mask.shape
    for _ in range(times):
        padded = np.pad(mask, 1)
        mask = np.logical_and.reduce([padded[dy : dy + h, dx : dx + w] for dy in range(3) for dx in range(3)])
    return mask


def test_thin_structures_are_thin_but_not_below_the_mask_grid():
    """Wires, twigs and strokes are 4 to 7 px wide: one erosion (2 px off the width) leaves
    a core, which 1-2 px hairlines would not have; four erosions leave almost nothing but
    joints, while filled shapes keep much of their area."""
    rng = np.random.default_rng(5)
    thin_kinds = {"wire", "twig", "strokes"}
    seen = set()
    for _ in range(80):
        scene = make_scene(rng, 256, 256, max_objects=1)
        if not scene.kinds:
            continue
        kind, mask = scene.kinds[0], scene.masks[0]
        if kind in thin_kinds:
            assert _erode(mask, 1).sum() > 0.2 * mask.sum(), kind
            assert _erode(mask, 4).sum() < 0.05 * mask.sum(), kind
        elif kind == "ellipse":
            assert _erode(mask, 4).sum() > 0.3 * mask.sum()
        seen.add(kind)
    assert thin_kinds | {"ellipse"} <= seen
