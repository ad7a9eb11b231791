"""Masks as polygons (pipeline.masks.polygons): COCO polygons rasterised back with pycocotools,
as COCO tools do; YOLO-seg label lines drawn back by Ultralytics' rule (its label pipeline:
float32 parsing, resampling, truncation, `cv2.fillPoly`; measured against Ultralytics itself
in bench/ultralytics_fidelity.py)."""

import numpy as np
import pytest
from helpers.ultralytics_rule import ultralytics_masks
from pycocotools import mask as mask_utils

from pipeline.exports.yolo import label_line
from pipeline.masks import polygons
from samhq_core.training.synthetic import make_scene

H, W = 60, 70


def rasterise(polys, height=H, width=W):
    """Polygons (flat x, y lists) → the bool mask pycocotools draws of them."""
    rles = mask_utils.frPyObjects([[float(v) for v in p] for p in polys], height, width)
    return mask_utils.decode(mask_utils.merge(rles)).astype(bool)


def yolo_round_trip(mask, simplify=0.0):
    """The mask as YOLO-seg writes it (one label line), drawn back by Ultralytics' rule."""
    h, w = mask.shape
    return ultralytics_masks([label_line(0, polygons.fillpoly_polygon(mask, simplify), h, w)], h, w)[0]


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
    drawn = yolo_round_trip(mask)
    if len(polygons.components(mask)) == 1:  # one part, holes included: exact, 1-px structures too
        np.testing.assert_array_equal(drawn, mask)
    else:  # every pixel, plus the bridges' pixels between the parts
        assert (drawn >= mask).all() and (drawn & ~mask).sum() <= 0.2 * mask.sum(), (drawn & ~mask).sum()


def test_a_bridge_between_parts_draws_one_line_of_pixels():
    """Two squares (pixels 5..19, and x 40..59, y 30..49), 21 pixels apart in x: the bridge
    from the larger one's corner (40, 30) runs diagonally to (19, 9), on the edge of the
    smaller one, then along that edge to its corner (19, 5), and fillPoly draws the 20 pixels
    of the diagonal between the squares, no more: the fewest a line between them can have."""
    mask = masks()["two components"]
    drawn = yolo_round_trip(mask)
    extra = {(int(x), int(y)) for y, x in np.argwhere(drawn & ~mask)}
    assert extra == {(19 + k, 9 + k) for k in range(1, 21)}


def test_parts_and_holes_follow_opencvs_hierarchy():
    parts = {name: polygons.components(m) for name, m in masks().items()}
    assert [len(p.holes) for p in parts["two holes"]] == [2]
    assert sorted(len(p.holes) for p in parts["island in a hole"]) == [0, 1]
    assert [len(p.holes) for p in parts["two components"]] == [0, 0]
    frame = parts["frame"][0]  # rings on the pixel edges: the frame's corners exactly
    assert sorted(map(tuple, frame.outer)) == [(5, 5), (5, 50), (50, 5), (50, 50)]
    assert sorted(map(tuple, frame.holes[0])) == [(10, 10), (10, 45), (45, 10), (45, 45)]
    assert polygons.components(np.zeros((H, W), bool)) == []
    assert polygons.fillpoly_polygon(np.zeros((H, W), bool)).shape == (0, 2)
    centres = polygons.components(masks()["frame"], outline=polygons.CENTRES)[0]  # the boundary pixels' centres
    assert sorted(map(tuple, centres.outer.tolist())) == [(5, 5), (5, 49), (49, 5), (49, 49)]
    # Around the hole, the pixels 4-adjacent to it: its corner pixels' diagonal neighbours are not.
    assert sorted(map(tuple, centres.holes[0].tolist())) == [(9, 10), (9, 44), (10, 9), (10, 45), (44, 9), (44, 45),
                                                              (45, 10), (45, 44)]


def test_simplification():
    ring = masks()["ring"]
    exact, simplified = polygons.fillpoly_polygon(ring), polygons.fillpoly_polygon(ring, simplify=1.0)
    assert len(simplified) < len(exact) / 2
    assert iou(yolo_round_trip(ring, simplify=1.0), ring) > 0.9
    # On the pixel edges, half a pixel only drops staircase corners: every pixel centre stays on its side.
    for name, mask in masks().items():
        coco = polygons.coco_polygons(mask, simplify=0.5)
        if coco is not None:
            np.testing.assert_array_equal(rasterise(coco), mask, name)
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="--simplify"):
            polygons.components(ring, simplify=bad)


def test_synthetic_scenes_at_iou_098():
    """The synthetic scenes' exact masks (every kind: rings and frames with holes, wires,
    twigs, strokes): COCO polygons rasterised back by pycocotools, and each scene's YOLO-seg
    label file drawn back by Ultralytics' rule, masks of one part exactly."""
    rng = np.random.default_rng(7)
    kinds_seen, worst = set(), {0.0: 1.0, 0.5: 1.0}
    one_part, several = [], []
    for _ in range(40):
        scene = make_scene(rng, 128, 128)
        lines = [label_line(0, polygons.fillpoly_polygon(mask), 128, 128) for mask in scene.masks]
        for mask, kind, drawn in zip(scene.masks, scene.kinds, ultralytics_masks(lines, 128, 128), strict=True):
            kinds_seen.add(kind)
            for simplify in worst:
                coco = polygons.coco_polygons(mask, simplify)
                if coco is not None:
                    worst[simplify] = min(worst[simplify], iou(rasterise(coco, 128, 128), mask))
            (one_part if len(polygons.components(mask)) == 1 else several).append(iou(drawn, mask))
    assert {"ring", "frame", "wire"} <= kinds_seen
    assert worst[0.0] == 1.0
    assert worst[0.5] >= 0.98, worst
    assert min(one_part) == 1.0, sorted(one_part)[:5]
    assert np.mean(several) >= 0.9, np.mean(several)


def test_an_odd_vertex_count_keeps_points_off_the_middle_of_diagonal_steps():
    """Every polygon has an odd number of vertices: with an even one, Ultralytics' resampling
    puts points halfway along diagonal steps, which truncate off the outline."""
    rng = np.random.default_rng(7)
    for _ in range(10):
        for mask in make_scene(rng, 128, 128).masks:
            assert len(polygons.fillpoly_polygon(mask)) % 2 == 1
    # A staircase of diagonal steps whose even vertex count puts a point on a halfway point.
    mask = np.zeros((H, W), bool)
    for k in range(20):
        mask[10 + k, 10:40 - k] = True
    polygon = polygons.fillpoly_polygon(mask)
    np.testing.assert_array_equal(ultralytics_masks([label_line(0, polygon, H, W)], H, W)[0], mask)
