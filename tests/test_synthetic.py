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


def test_thin_structures_are_thin():
    """Wires and twigs are a few pixels wide: most of their pixels touch the background."""
    rng = np.random.default_rng(5)
    for _ in range(40):
        scene = make_scene(rng, 128, 128, max_objects=1)
        if scene.kinds and scene.kinds[0] in ("wire", "twig"):
            mask = scene.masks[0]
            interior = mask[1:-1, 1:-1] & mask[:-2, 1:-1] & mask[2:, 1:-1] & mask[1:-1, :-2] & mask[1:-1, 2:]
            assert interior.sum() < 0.5 * mask.sum()
            return
    raise AssertionError("no thin structure drawn in 40 scenes")
