"""Processor and model API: image handling, prompt formats, embeddings reuse, bad input."""

import io

import numpy as np
import pytest
import torch
from PIL import Image

from samhq_core import SamHQConfig, SamHQProcessor
from samhq_core.processor import to_rgb_array


@pytest.fixture(scope="module")
def processor():
    return SamHQProcessor(image_size=256)


def _rgb(h=40, w=60, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize("mode", ["L", "LA", "RGBA", "P", "CMYK", "I;16", "1"])
def test_pil_modes_become_rgb(mode):
    rgb = Image.fromarray(_rgb())
    if mode == "I;16":
        gray = np.asarray(rgb.convert("L")).astype(np.uint16) * 257
        image = Image.fromarray(gray)
        assert image.mode == "I;16"
        expected = np.repeat(np.asarray(rgb.convert("L"))[..., None], 3, axis=-1)
    else:
        image = rgb.convert(mode)
        expected = np.asarray(image.convert("RGB"))
    out = to_rgb_array(image)
    assert out.dtype == np.uint8 and out.shape == (40, 60, 3)
    np.testing.assert_array_equal(out, expected)


def test_exif_orientation_is_applied():
    image = Image.fromarray(_rgb(40, 60))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", exif=exif)
    loaded = Image.open(io.BytesIO(buffer.getvalue()))
    assert to_rgb_array(loaded).shape == (60, 40, 3)


def test_arrays_and_tensors():
    rgb = _rgb()
    np.testing.assert_array_equal(to_rgb_array(torch.from_numpy(rgb).permute(2, 0, 1)), rgb)
    np.testing.assert_array_equal(to_rgb_array(rgb.astype(np.float32) / 255.0), rgb)
    np.testing.assert_array_equal(to_rgb_array(rgb.astype(np.uint16) * 257), rgb)
    gray = rgb[..., 0]
    np.testing.assert_array_equal(to_rgb_array(gray), np.stack([gray] * 3, -1))
    np.testing.assert_array_equal(to_rgb_array(np.dstack([rgb, gray])), rgb)
    with pytest.raises(ValueError, match="NaN"):
        to_rgb_array(np.full((4, 4, 3), np.nan))
    with pytest.raises(ValueError, match="empty"):
        to_rgb_array(np.zeros((0, 4, 3), np.uint8))
    with pytest.raises(ValueError, match="unsupported image type"):
        to_rgb_array("image.png")


def test_processor_rescales_prompts_and_pads(processor):
    out = processor(
        [_rgb(100, 50), _rgb(64, 128)],
        input_points=[[[[10, 20]], [[0, 0], [49, 99]]], [[[5, 5], [6, 6]], [[1, 2]]]],
        input_labels=[[[1], [0, 1]], [[1, 1], [0]]],
        input_boxes=[[[0, 0, 50, 100], [10, 10, 20, 20]], [[0, 0, 128, 64], [1, 1, 2, 2]]],
    )
    assert out["pixel_values"].shape == (2, 3, 256, 256)
    assert out["original_sizes"].tolist() == [[100, 50], [64, 128]]
    assert out["reshaped_input_sizes"].tolist() == [[256, 128], [128, 256]]
    assert out["input_points"].shape == (2, 2, 2, 2)
    assert out["input_points"][0, 1, 1].tolist() == pytest.approx([49 * 128 / 50, 99 * 256 / 100])
    assert out["input_labels"].tolist() == [[[1, -1], [0, 1]], [[1, 1], [0, -1]]]
    assert out["input_boxes"][1, 0].tolist() == [0, 0, 256, 128]
    # padding is zero after normalisation, beyond the resized image
    assert out["pixel_values"][0, :, :, 128:].abs().max() == 0
    assert out["pixel_values"][1, :, 128:, :].abs().max() == 0


def test_input_masks_at_image_size_are_resized(processor):
    mask = np.zeros((100, 50), np.float32)
    mask[:50] = 1.0
    out = processor(_rgb(100, 50), input_boxes=[[[0, 0, 10, 10]]], input_masks=[[mask]])
    low_res = out["input_masks"][0, 0]
    assert low_res.shape == (64, 64)
    assert low_res[:30, :30].min() == 1.0 and low_res[34:, :32].max() == 0.0
    assert low_res[:, 32:].abs().max() == 0  # padding
    same = processor(_rgb(100, 50), input_boxes=[[[0, 0, 10, 10]]], segmentation_maps=[[low_res.numpy()]])
    assert torch.equal(same["input_masks"][0, 0], low_res)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(input_boxes=[[[10, 10, 5, 20]]]), "x2 < x1"),
        (dict(input_boxes=[[[float("nan"), 0, 5, 5]]]), "NaN"),
        (dict(input_boxes=[[]]), "empty"),
        (dict(input_boxes=[[[0, 0, 1, 1]], [[0, 0, 1, 1]]]), "2 images"),
        (dict(input_points=[[[[1, 1]]]], input_labels=[[[1, 0]]]), "1 points but 2 labels"),
        (dict(input_labels=[[[1]]]), "without input_points"),
        (dict(input_boxes=[[[0, 0, 1, 1]]], input_masks=[[np.zeros((7, 7))]]), r"shape \(7, 7\)"),
    ],
)
def test_processor_rejects_bad_prompts(processor, kwargs, match):
    with pytest.raises(ValueError, match=match):
        processor([_rgb()], **kwargs)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        # the commonest mistake: one image's boxes without the per-image list (was: one box read 4 times)
        (dict(input_boxes=[[10, 20, 50, 60]]), "input_boxes: expected per image, a list of [x1, y1, x2, y2] boxes, 3 "
         "levels: [[[x1, y1, x2, y2], ...], ...]; got 2 levels: [[10, 20, 50, 60]]; for one image's boxes, wrap them "
         "in one more list"),
        (dict(input_boxes=[[[[10, 20, 50, 60]]]]), "input_boxes: expected per image, a list of [x1, y1, x2, y2] "
         "boxes, 3 levels: [[[x1, y1, x2, y2], ...], ...]; got 4 levels: [[[[10, 20, 50, 60]]]]"),
        (dict(input_boxes=[[[10, 20, 50]]]), "input_boxes: image 0, box 0 has 3 values ([10, 20, 50]); expected "
         "[x1, y1, x2, y2]"),
        (dict(input_boxes=[[["a", 1, 2, 3]]]), "input_boxes: image 0, box 0 holds 'a' (str); coordinates must be "
         "numbers"),
        (dict(input_boxes=[[[0, 0, 5, 5], [70, 0, 90, 10]]]), "input_boxes: image 0, box 1 (70, 0, 90, 10) lies "
         "entirely outside the 60 x 40 image (width x height); coordinates are pixels of the original image, x first"),
        (dict(input_points=[[45, 30]]), "input_points: expected per image, per prompt, a list of [x, y] points, 4 "
         "levels: [[[[x, y], ...], ...], ...] (or 3 levels, one prompt per image: [[[x, y], ...], ...]); got 2 "
         "levels: [[45, 30]]"),
        (dict(input_points=[[[[[1, 2]]]]]), "got 5 levels: [[[[[1, 2]]]]]"),
        (dict(input_points=[[[1, 2, 3]]]), "input_points: image 0, prompt 0, point 0 has 3 values ([1, 2, 3]); "
         "expected [x, y]"),
        (dict(input_points=[[[[5, 5], [61, 20]]]]), "input_points: image 0, prompt 0, point 1 (61, 20) lies outside "
         "the 60 x 40 image (width x height)"),
        (dict(input_points=[[[[5, 5]]]], input_labels=[[[2]]]), "input_labels: image 0, prompt 0, label 0 is 2; "
         "labels are 1 (foreground), 0 (background) or -1 (padding)"),
        (dict(input_points=[[[[5, 5]]]], input_labels=[[1]]), "input_labels: image 0, prompt 0 is 1, where a list is "
         "expected"),
    ],
)
def test_processor_names_wrong_shapes(processor, kwargs, message):
    with pytest.raises(ValueError) as info:
        processor([_rgb()], **kwargs)
    assert message in str(info.value), str(info.value)


def test_points_and_boxes_at_the_border_are_accepted(processor):
    """A box may reach past the image (detectors' boxes do); points on the border are inside."""
    out = processor([_rgb()], input_boxes=[[[-5, -5, 70, 50]]], input_points=[[[[0, 0], [60, 40]]]])
    assert out["input_boxes"].shape == (1, 1, 4) and out["input_points"].shape == (1, 1, 2, 2)


def test_processor_for_a_checkpoint(vit_pair, tmp_path):
    assert SamHQProcessor.from_pretrained(vit_pair.pth).image_size == 256
    assert SamHQProcessor.for_model(vit_pair.ours).image_size == 256
    vit_pair.ours.save_pretrained(str(tmp_path / "hf"))
    assert SamHQProcessor.from_pretrained(str(tmp_path / "hf")).image_size == 256


def test_mask_prompts_may_require_grad(processor, vit_pair):
    """An earlier output's logits, still attached to the graph, are a valid mask prompt."""
    model = vit_pair.ours
    inputs = processor(_rgb(), input_boxes=[[[5, 5, 40, 30]]])
    previous = model(**inputs, multimask_output=False).pred_masks[0, :, 0]
    assert previous.requires_grad
    again = processor(_rgb(), input_boxes=[[[5, 5, 40, 30]]], input_masks=[list(previous)])
    assert torch.equal(again["input_masks"][0], previous.detach())


def test_processor_rejects_ragged_prompt_counts(processor):
    with pytest.raises(ValueError, match="same number of prompts"):
        processor([_rgb(), _rgb()], input_boxes=[[[0, 0, 1, 1]], [[0, 0, 1, 1], [0, 0, 2, 2]]])


def test_embeddings_reuse_gives_identical_masks(vit_pair, processor):
    inputs = processor(_rgb(90, 70), input_boxes=[[[5, 5, 40, 60], [10, 0, 69, 89]]])
    model = vit_pair.ours
    with torch.no_grad():
        direct = model(**inputs)
        embeddings, intermediate = model.get_image_embeddings(inputs["pixel_values"])
        reused = model(image_embeddings=embeddings, intermediate_embeddings=intermediate,
                       input_boxes=inputs["input_boxes"])
    assert torch.equal(direct.pred_masks, reused.pred_masks)
    assert torch.equal(direct.iou_scores, reused.iou_scores)


def test_prompt_chunking_does_not_change_results(vit_pair):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, 3, 256, 256, generator=gen)
    boxes = torch.sort(torch.rand(1, 9, 2, 2, generator=gen) * 255, dim=2).values.reshape(1, 9, 4)
    with torch.no_grad():
        whole = vit_pair.ours(pixel_values=x, input_boxes=boxes, prompt_chunk_size=64)
        chunked = vit_pair.ours(pixel_values=x, input_boxes=boxes, prompt_chunk_size=2)
    assert (whole.pred_masks - chunked.pred_masks).abs().max() <= 1e-3  # batch-size-dependent kernels


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(), "no prompts"),
        (dict(input_boxes=torch.zeros(1, 0, 4)), "empty"),
        (dict(input_boxes=torch.zeros(2, 1, 4)), r"batch=1"),
        (dict(input_boxes=torch.tensor([[[5.0, 0, 1, 1]]])), "x2 >= x1"),
        (dict(input_boxes=torch.tensor([[[float("inf"), 0, 1, 1]]])), "NaN or infinite"),
        (dict(input_points=torch.zeros(1, 1, 2, 2), input_labels=torch.tensor([[[1, 3]]])), "input_labels must be"),
        (dict(input_points=torch.zeros(1, 1, 2, 2), input_labels=torch.ones(1, 1, 3)), r"input_labels must be \(1, 1, 2\)"),
        (dict(input_points=torch.zeros(1, 2, 1, 2), input_boxes=torch.zeros(1, 3, 4)), "disagree"),
        (dict(input_boxes=torch.zeros(1, 1, 4), input_masks=torch.zeros(1, 1, 32, 32)), "input_masks must be"),
        (dict(input_boxes=torch.zeros(1, 1, 4), prompt_chunk_size=0), "prompt_chunk_size"),
    ],
)
def test_model_rejects_bad_prompts(vit_pair, kwargs, match):
    x = torch.zeros(1, 3, 256, 256)
    with pytest.raises(ValueError, match=match):
        vit_pair.ours(pixel_values=x, **kwargs)


def test_model_rejects_bad_images(vit_pair):
    with pytest.raises(ValueError, match=r"pixel_values must be \(batch, 3, 256, 256\)"):
        vit_pair.ours(pixel_values=torch.zeros(1, 3, 1024, 1024), input_boxes=torch.zeros(1, 1, 4))
    with pytest.raises(ValueError, match="exactly one"):
        vit_pair.ours(input_boxes=torch.zeros(1, 1, 4))
    with pytest.raises(ValueError, match="intermediate_embeddings"):
        vit_pair.ours(image_embeddings=torch.zeros(1, 256, 16, 16), input_boxes=torch.zeros(1, 1, 4))


def test_config_validation_and_json(tmp_path):
    config = SamHQConfig.from_variant("vit_l")
    config.save(str(tmp_path / "config.json"))
    assert SamHQConfig.load(str(tmp_path / "config.json")) == config
    with pytest.raises(ValueError, match="unknown variant"):
        SamHQConfig.from_variant("vit_x")
    data = config.to_dict()
    data["vision_config"]["bogus"] = 1
    data["mask_decoder_config"]["vit_dim"] = 7
    with pytest.raises(ValueError, match="bogus"):
        SamHQConfig.from_dict(data)
    del data["vision_config"]["bogus"]
    with pytest.raises(ValueError, match="vit_dim"):
        SamHQConfig.from_dict(data)
    # Keys that SAM's architecture fixes are checked, not silently ignored.
    data = config.to_dict()
    data["vision_config"]["num_pos_feats"] = 64
    data["prompt_encoder_config"]["num_point_embeddings"] = 5
    with pytest.raises(ValueError, match=r"num_pos_feats \(64\) must be half .*num_point_embeddings \(5\) must be 4"):
        SamHQConfig.from_dict(data)


def test_bf16_autocast_is_dtype_clean(vit_pair):
    """Under bf16 autocast the model runs end to end, returns fp32 outputs, and its masks stay
    close to fp32 (the prompt encoder stays in fp32)."""
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(1, 3, 256, 256, generator=gen)
    boxes = torch.tensor([[[20.0, 30.0, 200.0, 220.0], [0.0, 0.0, 100.0, 90.0]]])
    points = torch.tensor([[[[60.0, 70.0]], [[10.0, 20.0]]]])
    with torch.no_grad():
        reference = vit_pair.ours(pixel_values=x, input_boxes=boxes, input_points=points)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            fast = vit_pair.ours(pixel_values=x, input_boxes=boxes, input_points=points)
    assert fast.pred_masks.dtype == torch.float32 and fast.iou_scores.dtype == torch.float32
    a, b = reference.pred_masks > 0, fast.pred_masks > 0
    iou = (a & b).sum() / (a | b).sum()
    assert iou > 0.9


def test_hq_parameters_train(vit_pair):
    """Gradients reach exactly the HQ parameters when the rest is frozen (the paper's recipe)."""
    from samhq_core.modeling.sam_hq import SamHQModel

    model = SamHQModel(vit_pair.ours.config)
    model.load_state_dict(vit_pair.ours.state_dict())
    hq_names = ("hf_token", "hf_mlp", "compress_vit_feat", "embedding_encoder", "embedding_maskfeature")
    for name, param in model.named_parameters():
        param.requires_grad = any(key in name for key in hq_names)
    x = torch.randn(1, 3, 256, 256, generator=torch.Generator().manual_seed(0))
    out = model(pixel_values=x, input_boxes=torch.tensor([[[10.0, 20.0, 120.0, 200.0]]]), multimask_output=False)
    out.pred_masks.sigmoid().mean().backward()
    grads = {name: p.grad for name, p in model.named_parameters() if p.requires_grad}
    assert grads and all(g is not None and g.abs().sum() > 0 for g in grads.values())
    assert all(p.grad is None for p in model.parameters() if not p.requires_grad)


@pytest.mark.parametrize("variant,size", [("vit_tiny", 512), ("vit_b", 512)])
def test_reduced_input_sizes(variant, size):
    """Smaller inputs than 1024 build and run for both encoder families."""
    config = SamHQConfig.from_variant(variant, image_size=size)
    if variant == "vit_b":
        config = SamHQConfig.from_variant(variant, image_size=size, num_hidden_layers=2, global_attn_indexes=[1])
    from samhq_core import SamHQModel

    model = SamHQModel(config).eval()
    with torch.no_grad():
        out = model(pixel_values=torch.randn(1, 3, size, size), input_boxes=torch.tensor([[[0.0, 0.0, 50.0, 60.0]]]))
    assert out.pred_masks.shape == (1, 1, 3, size // 4, size // 4)


def test_resizing_a_pil_image_gives_the_array_paths_pixels():
    """resize_image's PIL path (no array round trip) against the array path it replaces, for
    every mode the decode stage meets and an EXIF-rotated JPEG."""
    from samhq_core.processor import resize_longest_side

    processor = SamHQProcessor(64)
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 256, (37, 90, 3), dtype=np.uint8))
    for image in (rgb, rgb.convert("L"), rgb.convert("RGBA"), rgb.convert("P"), _rotated_jpeg(rgb)):
        got, size = processor.resize_image(image)
        array = to_rgb_array(image)
        np.testing.assert_array_equal(got, resize_longest_side(array, 64))
        assert size == array.shape[:2]
    assert processor.resize_image(_rotated_jpeg(rgb))[1] == (90, 37)


def _rotated_jpeg(image: Image.Image) -> Image.Image:
    """`image` as a JPEG whose EXIF says it is rotated by 90 degrees (decoded: w and h swap)."""
    buffer = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6
    image.save(buffer, "JPEG", exif=exif)
    return Image.open(io.BytesIO(buffer.getvalue()))


def test_draft_decodes_large_jpegs_reduced_but_reports_their_own_size():
    processor = SamHQProcessor(64)
    flat = Image.new("RGB", (300, 70), "red")
    buffer = io.BytesIO()
    flat.save(buffer, "JPEG")
    image = Image.open(io.BytesIO(buffer.getvalue()))
    resized, size = processor.resize_image(image, draft=True)
    assert image.size == (75, 18)  # decoded at 1/4: 1/8 would be narrower than 64
    assert size == (70, 300) and resized.shape == (15, 64, 3)
    exact = processor.resize_image(Image.open(io.BytesIO(buffer.getvalue())))[0]
    assert np.abs(resized.astype(int) - exact).mean() < 2  # a flat colour survives the DCT reduction

    rotated = _rotated_jpeg(Image.new("RGB", (300, 70), "blue"))
    resized, size = processor.resize_image(rotated, draft=True)
    assert size == (300, 70) and resized.shape == (64, 15, 3)


def test_images_longer_than_twice_the_input_size_to_one_keep_a_row():
    """Official rounding would make a 5000 x 1 image 0 pixels high, which no resize takes."""
    resized, size = SamHQProcessor(1024).resize_image(Image.new("RGB", (5000, 1)))
    assert resized.shape == (1, 1024, 3) and size == (1, 5000)
