"""Masks as polygons (pipeline.polygons), rasterised back with pycocotools, as COCO tools do."""

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from pipeline.masks import polygons
from samhq_core.training.synthetic import make_scene

H, W = 60, 70


def rasterise(polys, height=H, width=W):
    """Polygons (flat x, y lists) → the bool mask pycocotools draws of them."""
    rles = mask_utils.frPyObjects([[float(v) for v in p] for p in polys], height, width)
    return mask_utils.decode(mask_utils.merge(rles)).astype(bool)


def iou(a, b):
    return (a & b).sum() / max((a | b).sum(), 1)


def masks():
    yy, xx = np.mgrid[:H, :W]
    d2 = (yy - 30) ** 2 + (xx - 35) ** 2
    out = {"ring": (d2 <= 20**2) & (d2 > 8**2), "disk": d2 <= 17**2}
    m = np.zeros((H, W), bool)
    m[5:50, 5:50], m[10:45, 10:45] = True, False
    out["frame"] = m
    m = np.zeros((H, W), bool)
    m[5:50, 5:60], m[10:20, 10:20], m[30:40, 30:50] = True, False, False
    out["two holes"] = m
    m = np.zeros((H, W), bool)
    m[5:20, 5:20], m[30:50, 40:60] = True, True
    out["two components"] = m
    m = out["frame"].copy()
    m[20:30, 20:30] = True
    out["island in a hole"] = m
    m = np.zeros((H, W), bool)
    m[10, 3:65], m[3:55, 30] = True, True
    out["1-px cross"] = m
    m = np.zeros((H, W), bool)
    m[range(5, 55), range(5, 55)] = True
    out["1-px diagonal"] = m
    m = np.zeros((H, W), bool)
    m[7, 7] = True
    out["one pixel"] = m
    m = np.zeros((H, W), bool)
    m[0:H, 0:10] = True
    out["touching the border"] = m
    out["noise"] = np.random.default_rng(0).random((H, W)) < 0.3
    return out


HOLES = {"ring", "frame", "two holes", "island in a hole", "noise"}


@pytest.mark.parametrize("name", list(masks()))
def test_polygons_rasterise_back_to_the_mask(name):
    mask = masks()[name]
    coco = polygons.coco_polygons(mask)
    if name in HOLES:
        assert coco is None  # COCO polygons cannot hold holes: the export keeps the RLE
    else:
        assert all(len(p) >= 6 and len(p) % 2 == 0 for p in coco)
        np.testing.assert_array_equal(rasterise(coco), mask)
    # One polygon with bridges keeps the holes and every part: exact, 1-px structures included.
    single = polygons.single_polygon(mask)
    np.testing.assert_array_equal(rasterise([single.ravel()]), mask)


def test_parts_and_holes_follow_opencvs_hierarchy():
    parts = {name: polygons.components(m) for name, m in masks().items()}
    assert [len(p.holes) for p in parts["two holes"]] == [2]
    assert sorted(len(p.holes) for p in parts["island in a hole"]) == [0, 1]
    assert [len(p.holes) for p in parts["two components"]] == [0, 0]
    frame = parts["frame"][0]  # rings on the pixel edges: the frame's corners exactly
    assert sorted(map(tuple, frame.outer)) == [(5, 5), (5, 50), (50, 5), (50, 50)]
    assert sorted(map(tuple, frame.holes[0])) == [(10, 10), (10, 45), (45, 10), (45, 45)]
    assert polygons.components(np.zeros((H, W), bool)) == []
    assert polygons.single_polygon(np.zeros((H, W), bool)).shape == (0, 2)


def test_simplification():
    ring = masks()["ring"]
    exact, simplified = polygons.single_polygon(ring), polygons.single_polygon(ring, simplify=1.0)
    assert len(simplified) < len(exact) / 2
    assert iou(rasterise([simplified.ravel()]), ring) > 0.9
    # Half a pixel only drops staircase corners: every pixel centre stays on its side.
    for name, mask in masks().items():
        np.testing.assert_array_equal(rasterise([polygons.single_polygon(mask, simplify=0.5).ravel()]), mask, name)
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="--simplify"):
            polygons.components(ring, simplify=bad)


def test_synthetic_scenes_at_iou_098():
    """The synthetic scenes' exact masks (every kind: rings and frames with holes, wires,
    twigs, strokes), rasterised back from the polygons."""
    rng = np.random.default_rng(7)
    kinds_seen, worst = set(), {0.0: 1.0, 0.5: 1.0}
    for _ in range(12):
        scene = make_scene(rng, 128, 128)
        for mask, kind in zip(scene.masks, scene.kinds, strict=True):
            kinds_seen.add(kind)
            for simplify in worst:
                coco = polygons.coco_polygons(mask, simplify)
                if coco is not None:
                    worst[simplify] = min(worst[simplify], iou(rasterise(coco, 128, 128), mask))
                single = polygons.single_polygon(mask, simplify)
                worst[simplify] = min(worst[simplify], iou(rasterise([single.ravel()], 128, 128), mask))
    assert {"ring", "frame"} <= kinds_seen
    assert worst[0.0] == 1.0
    assert worst[0.5] >= 0.98, worst
