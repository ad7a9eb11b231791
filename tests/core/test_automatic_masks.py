"""samhq_core.automatic against the official SAM-HQ automatic mask generator
(segment_anything_hq 0.3), whose box NMS here is tests/helpers/official.py's transcription of
torchvision's CPU kernel (bench/automatic_masks.py --verify repeats the comparison with the real
torchvision: bench/results/automatic_masks_torchvision.md).

Models: the demo model (models/samhq-demo-synthetic) against its official twin (the official
prompt encoder, decoder, preprocessing and generator around samhq_core's image encoder,
bench/automatic_masks.py's `official_twin`): the same masks, bit for bit, in the same order. And
fully official models with random weights (conftest's vit_pair and sam_pair): all of a grid's
masks (thresholds and NMS off, since random masks are alike), which may differ by a pixel.
The demo model was trained on boxes only: points get low predicted IoUs, so both sides run with
the thresholds of `DEMO_THRESHOLDS` and multimask_output=False."""

import inspect
import sys

import numpy as np
import pytest
import torch
from helpers import official
from helpers.paths import ROOT

from samhq_core import SamHQModel
from samhq_core.automatic import SamHQAutomaticMaskGenerator, batched_nms, grid, mask_boxes, nms, rle, small_regions
from samhq_core.automatic import crops as crops_module
from samhq_core.automatic.nms import nms_per_segment

sys.path.insert(0, ROOT)  # bench/ (the official twin of the demo model is the benchmark's too)
from bench.automatic_masks import DEMO, DEMO_THRESHOLDS, compare, official_twin, scenes

amg = official.segment_anything_hq.utils.amg
MIN_MASKS = 5  # what the demo scenes must yield, for the comparison to mean something


@pytest.fixture(scope="module")
def demo():
    model = SamHQModel.from_pretrained(DEMO).eval()
    return model, official_twin(model, official.segment_anything_hq)


def generate_both(official_model, ours, image, multimask, **params):
    with torch.inference_mode():
        expected = official.SamAutomaticMaskGenerator(official_model, **params).generate(image, multimask)
    return expected, SamHQAutomaticMaskGenerator(ours, **params).generate(image, multimask)


def random_boxes(n, gen, fractional):
    corner = torch.randint(0, 60, (n, 2), generator=gen).float()
    boxes = torch.cat([corner, corner + torch.randint(0, 40, (n, 2), generator=gen).float()], dim=1)
    return boxes + torch.rand(n, 4, generator=gen) * 3 if fractional else boxes


@pytest.mark.parametrize("n", [0, 1, 7, 60, 250, 1100])
def test_batched_nms_matches_the_reference(n):
    """Tied and distinct scores, 1 and 3 categories, several thresholds; 1,100 boxes take
    torchvision's other path (one NMS per category, then a sort)."""
    gen = torch.Generator().manual_seed(n)
    for trial in range(4 if n < 1000 else 1):
        boxes = random_boxes(n, gen, fractional=trial % 2 == 1)
        scores = torch.randint(0, 4, (n,), generator=gen).float() if trial < 2 else torch.rand(n, generator=gen)
        for categories in (1, 3):
            idxs = torch.randint(0, categories, (n,), generator=gen)
            for threshold in (0.0, 0.5, 0.7, 0.95):
                assert torch.equal(batched_nms(boxes, scores, idxs, threshold),
                                   official.reference_batched_nms(boxes, scores, idxs, threshold)), (trial, threshold)
    if n:
        assert torch.equal(nms(boxes, scores, 0.5), official.reference_nms(boxes, scores, 0.5))


def test_nms_per_segment_is_nms_of_each_segment():
    gen = torch.Generator().manual_seed(1)
    sizes = [0, 40, 1, 1050, 25]
    boxes = random_boxes(sum(sizes), gen, fractional=False)
    scores = torch.randint(0, 3, (sum(sizes),), generator=gen).float()
    start = 0
    for size, kept in zip(sizes, nms_per_segment(boxes, scores, sizes, 0.6), strict=True):
        part = slice(start, start + size)
        expected = official.reference_batched_nms(boxes[part], scores[part], torch.zeros(size, dtype=torch.long), 0.6)
        assert torch.equal(kept, expected + start)
        start += size


def test_grids_and_crops_match_the_official():
    for n in (1, 2, 7, 32):
        assert np.array_equal(grid.point_grid(n), amg.build_point_grid(n))
    ours = grid.layer_point_grids(32, 2, 2)
    assert all(np.array_equal(a, b) for a, b in zip(ours, amg.build_all_layer_point_grids(32, 2, 2), strict=True))
    for size in ((256, 256), (480, 640), (1001, 333)):
        for layers in (0, 1, 2):
            boxes, layer_of = crops_module.crop_boxes(size, layers, 512 / 1500)
            assert ([list(b) for b in boxes], layer_of) == amg.generate_crop_boxes(size, layers, 512 / 1500)


def test_boxes_run_lengths_and_clean_up_match_the_official():
    gen = torch.Generator().manual_seed(0)
    height, width = 23, 31
    for trial in range(60):
        x0, y0 = int(torch.randint(0, width - 1, (1,), generator=gen)), int(torch.randint(0, height - 1, (1,), generator=gen))
        x1 = width if trial % 3 == 0 else int(torch.randint(x0 + 1, width + 1, (1,), generator=gen))
        y1 = height if trial % 4 == 0 else int(torch.randint(y0 + 1, height + 1, (1,), generator=gen))
        if trial % 5 == 0:
            x0, y0, x1, y1 = 0, 0, width, height
        masks = torch.rand(4, y1 - y0, x1 - x0, generator=gen) < (0.05, 0.5, 0.95)[trial % 3]
        masks[0], masks[1] = True, False
        box = (x0, y0, x1, y1)
        full = amg.uncrop_masks(masks, list(box), height, width)
        for counts, expected, mask in zip(rle.masks_to_rle(masks, box, (height, width)), amg.mask_to_rle_pytorch(full),
                                          full, strict=True):
            assert counts.tolist() == expected["counts"]
            assert np.array_equal(rle.rle_to_mask(counts, (height, width)), mask.numpy())
            assert rle.rle_area(counts) == amg.area_from_rle(expected)
            assert rle.coco_rle(counts, (height, width)) == amg.coco_encode_rle(expected)
            for area in (3, 40):
                for ours, mode in ((small_regions.fill_small_holes, "holes"), (small_regions.remove_small_islands, "islands")):
                    got, expected_mask = ours(mask.numpy(), area), amg.remove_small_regions(mask.numpy(), area, mode)
                    assert got[1] == expected_mask[1] and np.array_equal(got[0], expected_mask[0])
        boxes = mask_boxes.mask_boxes(masks)
        assert torch.equal(boxes, amg.batched_mask_to_box(masks))
        assert torch.equal(mask_boxes.cut_by_crop_edge(boxes, box, (height, width), 4.0),
                           amg.is_box_near_crop_edge(boxes, list(box), [0, 0, width, height], 4.0))


DEMO_CONFIGS = [{"crop_n_layers": 0}, {"crop_n_layers": 1, "min_mask_region_area": 60}]


@pytest.mark.parametrize("config", DEMO_CONFIGS, ids=["whole_image", "crops_and_clean_up"])
def test_demo_model_matches_the_official_generator(demo, config):
    ours, twin = demo
    for image in scenes(2, 256, seed=7):
        params = dict(points_per_side=12, crop_n_points_downscale_factor=2, **DEMO_THRESHOLDS, **config)
        expected, got = generate_both(twin, ours, image, False, **params)
        result = compare(expected, got)
        assert result["official"] >= MIN_MASKS, result
        assert result["official"] == result["ours"] == result["matched"] == result["exact"], result
        assert result["same_order_and_fields"] and result["max_score_diff"] < 1e-5, result


@pytest.mark.slow
@pytest.mark.parametrize("config", [{"crop_n_layers": 1}, {"crop_n_layers": 0, "min_mask_region_area": 100},
                                    {"crop_n_layers": 2, "crop_n_points_downscale_factor": 2, "min_mask_region_area": 30}],
                         ids=["crops", "clean_up", "two_crop_layers"])
def test_demo_model_matches_the_official_generator_on_more_scenes(demo, config):
    ours, twin = demo
    for image in scenes(3, 256, seed=11):
        params = dict(points_per_side=16, **DEMO_THRESHOLDS, **config)
        result = compare(*generate_both(twin, ours, image, False, **params))
        assert result["official"] >= MIN_MASKS, result
        assert result["official"] == result["ours"] == result["matched"] == result["exact"], result
        assert result["same_order_and_fields"], result


@pytest.mark.parametrize("output_mode", ["uncompressed_rle", "coco_rle"])
def test_output_modes_match_the_official(demo, output_mode):
    ours, twin = demo
    image = scenes(1, 256, seed=7)[0]
    expected, got = generate_both(twin, ours, image, False, points_per_side=12, output_mode=output_mode,
                                  **DEMO_THRESHOLDS)
    assert len(got) >= MIN_MASKS and [g["segmentation"] for g in got] == [e["segmentation"] for e in expected]


@pytest.mark.parametrize("pair_name, masks_per_point", [("vit_pair", 1), ("sam_pair", 3)])
def test_random_official_models_match(pair_name, masks_per_point, request):
    """Fully official models (encoder included): HQ keeps the best of 3 masks per point, plain
    SAM all 3. Thresholds and NMS off, so that the whole grid's masks are compared."""
    pair = request.getfixturevalue(pair_name)
    image = scenes(1, 256, seed=3)[0]
    off = {"pred_iou_thresh": 0.0, "stability_score_thresh": 0.0, "box_nms_thresh": 1.0, "crop_nms_thresh": 1.0}
    for config in ({"crop_n_layers": 0}, {"crop_n_layers": 1, "crop_n_points_downscale_factor": 2,
                                          "min_mask_region_area": 60}):
        result = compare(*generate_both(pair.official.eval(), pair.ours.eval(), image, True, points_per_side=6,
                                        **off, **config))
        assert result["official"] == result["ours"] == result["matched"] >= 36 * masks_per_point, result
        assert result["min_iou"] >= 0.99 and result["max_score_diff"] < 1e-3, result


def test_a_batch_of_images_gives_what_each_image_gives(demo):
    ours, _ = demo
    images = scenes(3, 256, seed=5)
    images[1] = images[1][:200, :160]  # images of different sizes in one batch
    generator = SamHQAutomaticMaskGenerator(ours, points_per_side=8, crop_n_layers=1, points_per_batch=50,
                                            output_mode="uncompressed_rle", **DEMO_THRESHOLDS)
    one_by_one = [generator.generate(image, multimask_output=False) for image in images]
    assert generator.generate_batch(images, multimask_output=False) == one_by_one
    assert sum(len(records) for records in one_by_one) >= MIN_MASKS


def test_invalid_parameters_are_refused(sam_pair):
    model = sam_pair.ours
    for kwargs in ({"points_per_side": None}, {"point_grids": [grid.point_grid(4)]}, {"output_mode": "png"},
                   {"points_per_batch": 0}, {"mask_source": "hq_only"},
                   {"points_per_side": None, "point_grids": [grid.point_grid(4)], "crop_n_layers": 1}):
        with pytest.raises(ValueError):
            SamHQAutomaticMaskGenerator(model, **kwargs)


def test_public_functions_are_documented():
    from test_docstrings import offenders

    import samhq_core.automatic as package
    modules = [package, crops_module, grid, mask_boxes, rle, small_regions, *(
        sys.modules[f"samhq_core.automatic.{name}"] for name in ("nms", "candidates", "cleanup", "prepare", "records",
                                                                 "generator"))]
    functions = []
    for module in modules:
        for name, attr in vars(module).items():
            if name.startswith("_") or getattr(attr, "__module__", None) != module.__name__:
                continue
            if inspect.isfunction(attr):
                functions.append(attr)
            elif inspect.isclass(attr):
                functions += [m for n, m in vars(attr).items() if inspect.isfunction(m) and not n.startswith("_")]
                functions += [m.fget for m in vars(attr).values() if isinstance(m, property)]
                functions += [m.__func__ for m in vars(attr).values() if isinstance(m, classmethod)]
    assert len(functions) > 20 and not offenders(functions)


def test_a_crop_given_with_its_embeddings_is_not_encoded_again(demo, monkeypatch):
    """A caller that already encoded the whole image (for its prompts) hands the embeddings
    over: the generator encodes only the other crops and finds the same masks."""
    ours, _ = demo
    generator = SamHQAutomaticMaskGenerator(ours, points_per_side=12, crop_n_layers=1, crop_n_points_downscale_factor=2,
                                            output_mode="uncompressed_rle", **DEMO_THRESHOLDS)
    prepared = generator.prepare(scenes(1, 256, seed=7)[0])
    expected = generator.generate_prepared([prepared], multimask_output=False)[0]
    whole = prepared.crops[0]
    with torch.inference_mode():
        embeddings, intermediate = ours.get_image_embeddings(generator.processor.model_input(
            torch.from_numpy(whole.resized))[None])
    whole.embeddings = (embeddings[0], intermediate[0])
    encoded = []
    encode = ours.get_image_embeddings
    monkeypatch.setattr(ours, "get_image_embeddings", lambda pixels: encoded.append(len(pixels)) or encode(pixels))
    found = generator.generate_prepared([prepared], multimask_output=False)[0]
    assert sum(encoded) == len(prepared.crops) - 1 == 4  # layer 1's crops, not the whole image
    assert len(found) >= MIN_MASKS and found == expected
