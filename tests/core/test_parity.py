"""Numerical parity with the official SAM-HQ implementation (fp32, max abs error <= 1e-3)."""

import numpy as np
import pytest
import torch
from helpers.models import Pair

from samhq_core import MaskSource, SamHQModel, SamHQProcessor

TOL = 1e-3


def official_decode(model, features, interm, points=None, labels=None, boxes=None, masks=None,
                    multimask=False, hq_token_only=False):
    """The official mask decoder on one image's prompts: (P, 1, s, s) logits, (P, 1) IoU."""
    sparse, dense = model.prompt_encoder(
        points=None if points is None else (points, labels), boxes=boxes, masks=masks
    )
    return model.mask_decoder(
        image_embeddings=features, image_pe=model.prompt_encoder.get_dense_pe(),
        sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
        multimask_output=multimask, hq_token_only=hq_token_only, interm_embeddings=interm,
    )


def official_candidates(model, features, interm, points=None, labels=None, boxes=None, masks=None):
    """All three multimask candidates the official HQ decoder would choose from, each with the
    HQ mask added, sorted by predicted IoU: (P, 3, s, s), (P, 3)."""
    sparse, dense = model.prompt_encoder(points=None if points is None else (points, labels), boxes=boxes, masks=masks)
    decoder = model.mask_decoder
    hq_features = decoder.embedding_encoder(features) + decoder.compress_vit_feat(interm[0].permute(0, 3, 1, 2))
    all_masks, iou = decoder.predict_masks(features, model.prompt_encoder.get_dense_pe(), sparse, dense, hq_features)
    candidates = all_masks[:, 1:4] + all_masks[:, 4:5]
    iou, order = iou[:, 1:4].sort(dim=1, descending=True, stable=True)
    return candidates.gather(1, order[..., None, None].expand_as(candidates)), iou


def random_prompts(case, num_images, grid_size, gen):
    """Prompts in the model's input frame for a named case, batched over images."""
    size = grid_size * 16

    def boxes(n):
        xy = torch.rand(num_images, n, 2, generator=gen) * size * 0.6
        wh = torch.rand(num_images, n, 2, generator=gen) * size * 0.4 + 1
        return torch.cat([xy, xy + wh], dim=-1)

    def points(n_prompts, n_points):
        coords = torch.rand(num_images, n_prompts, n_points, 2, generator=gen) * size
        labels = torch.randint(0, 2, (num_images, n_prompts, n_points), generator=gen)
        return coords, labels

    prompts = {}
    if case == "one_box":
        prompts["input_boxes"] = boxes(1)
    elif case == "many_boxes":
        prompts["input_boxes"] = boxes(7)
    elif case == "points":
        prompts["input_points"], prompts["input_labels"] = points(3, 4)
        prompts["input_labels"][..., 0] = 0  # at least one negative point per prompt
    elif case == "ragged_points":
        prompts["input_points"], prompts["input_labels"] = points(3, 3)
        prompts["input_labels"][:, 0, 1:] = -1  # prompt 0 has 1 point, prompt 1 has 3
        prompts["input_labels"][:, 2, 2:] = -1
    elif case == "box_and_points":
        prompts["input_boxes"] = boxes(4)
        prompts["input_points"], prompts["input_labels"] = points(4, 2)
    elif case == "masks":
        prompts["input_boxes"] = boxes(3)
        prompts["input_masks"] = torch.randn(num_images, 3, 4 * grid_size, 4 * grid_size, generator=gen) * 4
    elif case == "mask_only":
        prompts["input_masks"] = torch.randn(num_images, 2, 4 * grid_size, 4 * grid_size, generator=gen) * 4
    return prompts


def assert_matches_official(pair, case, multimask, hq_token_only, num_images=1, seed=0):
    gen = torch.Generator().manual_seed(seed)
    size = pair.ours.config.vision_config.image_size
    pixel_values = torch.randn(num_images, 3, size, size, generator=gen)
    with torch.no_grad():
        prompts = random_prompts(case, num_images, size // 16, gen)
        source = MaskSource.HQ_ONLY if hq_token_only else MaskSource.SAM_PLUS_HQ
        ours = pair.ours(pixel_values=pixel_values, multimask_output=multimask, mask_source=source,
                         prompt_chunk_size=3, **prompts)
        features, interm = pair.official.image_encoder(pixel_values)
        for b in range(num_images):
            args = dict(
                points=prompts.get("input_points", [None] * num_images)[b],
                labels=prompts.get("input_labels", [None] * num_images)[b],
                boxes=prompts.get("input_boxes", [None] * num_images)[b],
                masks=None if "input_masks" not in prompts else prompts["input_masks"][b][:, None],
            )
            interm_b = [interm[0][b : b + 1]]
            ref_masks, ref_iou = official_decode(pair.official, features[b : b + 1], interm_b, multimask=multimask,
                                                 hq_token_only=hq_token_only, **args)
            got_masks, got_iou = ours.pred_masks[b], ours.iou_scores[b]
            assert (got_masks[:, :1] - ref_masks).abs().max() <= TOL
            assert (got_iou[:, :1] - ref_iou).abs().max() <= TOL
            if multimask and not hq_token_only:
                cand_masks, cand_iou = official_candidates(pair.official, features[b : b + 1], interm_b, **args)
                assert got_masks.shape[1] == 3
                assert (got_masks - cand_masks).abs().max() <= TOL
                assert (got_iou - cand_iou).abs().max() <= TOL
            else:
                assert got_masks.shape[1] == 1
    # Random weights give logits of order 10-100: the tolerance is tight relative to them.
    assert ours.pred_masks.abs().max() > 1.0


CASES = ["one_box", "many_boxes", "points", "ragged_points", "box_and_points", "masks", "mask_only"]


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("multimask", [False, True])
@pytest.mark.parametrize("hq_token_only", [False, True])
def test_vit_matches_official(vit_pair, case, multimask, hq_token_only):
    assert_matches_official(vit_pair, case, multimask, hq_token_only, num_images=2)


@pytest.mark.slow  # the official TinyViT at 1024 px
@pytest.mark.parametrize("case", ["many_boxes", "ragged_points", "box_and_points", "masks"])
@pytest.mark.parametrize("multimask,hq_token_only", [(False, False), (True, False), (True, True)])
def test_tiny_matches_official(tiny_pair, case, multimask, hq_token_only):
    assert_matches_official(tiny_pair, case, multimask, hq_token_only)


@pytest.mark.parametrize("pair_name", ["vit_pair", pytest.param("tiny_pair", marks=pytest.mark.slow)])
def test_encoder_matches_official(pair_name, request):
    pair = request.getfixturevalue(pair_name)
    size = pair.ours.config.vision_config.image_size
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ref_embed, ref_interm = pair.official.image_encoder(x)
        embed, early = pair.ours.get_image_embeddings(x)
    assert (embed - ref_embed).abs().max() <= TOL
    assert (early - ref_interm[0]).abs().max() <= TOL


@pytest.mark.parametrize("multimask", [False, True])
def test_baseline_sam_matches_official(sam_pair, multimask):
    """A plain SAM checkpoint (no HQ weights) loads as SAM; multimask candidates come sorted."""
    assert not sam_pair.ours.config.mask_decoder_config.hq
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(1, 3, 256, 256, generator=gen)
    prompts = random_prompts("box_and_points", 1, 16, gen)
    with torch.no_grad():
        ours = sam_pair.ours(pixel_values=x, multimask_output=multimask, **prompts)
        features, interm = sam_pair.official.image_encoder(x)
        ref_masks, ref_iou = official_decode(
            sam_pair.official, features, interm, points=prompts["input_points"][0], labels=prompts["input_labels"][0],
            boxes=prompts["input_boxes"][0], multimask=multimask,
        )
    if multimask:
        ref_iou, order = ref_iou.sort(dim=1, descending=True, stable=True)
        ref_masks = ref_masks.gather(1, order[..., None, None].expand_as(ref_masks))
    assert (ours.pred_masks[0] - ref_masks).abs().max() <= TOL
    assert (ours.iou_scores[0] - ref_iou).abs().max() <= TOL
    with pytest.raises(ValueError, match="hq_only needs an HQ checkpoint"):
        sam_pair.ours(pixel_values=x, mask_source=MaskSource.HQ_ONLY, **prompts)


@pytest.mark.slow  # the official TinyViT at 1024 px
def test_hf_layout_round_trip_matches_official(vit_pair, tiny_pair, tmp_path):
    """save_pretrained → from_pretrained (HF layout) keeps every weight, and the official outputs."""
    for name, pair in (("vit", vit_pair), ("tiny", tiny_pair)):
        pair.ours.save_pretrained(str(tmp_path / name))
        reloaded = SamHQModel.from_pretrained(str(tmp_path / name))
        assert reloaded.config == pair.ours.config
        for key, value in pair.ours.state_dict().items():
            assert torch.equal(reloaded.state_dict()[key], value), key
        assert_matches_official(Pair(pair.official, reloaded, pair.pth), "box_and_points", True, False)


def test_end_to_end_matches_official_predictor(vit_pair):
    """Raw odd-sized, non-square image → post-processed masks, against SamPredictor."""
    from helpers import official

    rng = np.random.default_rng(7)
    image = rng.integers(0, 256, (301, 203, 3), dtype=np.uint8)
    box = np.array([20.5, 30.0, 150.0, 260.0])
    point = np.array([[90.0, 140.0]])
    predictor = official.SamPredictor(vit_pair.official)
    predictor.set_image(image)
    with torch.no_grad():
        ref_logits, ref_iou, ref_low = predictor.predict(
            point_coords=point, point_labels=np.array([1]), box=box, multimask_output=True, return_logits=True
        )
    processor = SamHQProcessor(image_size=256)
    inputs = processor(image, input_points=[[point.tolist()]], input_boxes=[[box.tolist()]])
    with torch.no_grad():
        out = vit_pair.ours(pixel_values=inputs["pixel_values"], input_points=inputs["input_points"],
                            input_labels=inputs["input_labels"], input_boxes=inputs["input_boxes"])
    logits = processor.post_process_masks(out.pred_masks, inputs["original_sizes"], inputs["reshaped_input_sizes"],
                                          binarize=False)[0]
    assert logits.shape == (1, 3, 301, 203)
    assert np.abs(logits[0, :1].numpy() - ref_logits).max() <= TOL
    assert np.abs(out.iou_scores[0, 0, :1].numpy() - ref_iou).max() <= TOL
    assert np.abs(out.pred_masks[0, 0, :1].numpy() - ref_low).max() <= TOL
    masks = processor.post_process_masks(out.pred_masks, inputs["original_sizes"], inputs["reshaped_input_sizes"])[0]
    agree = (masks[0, 0].numpy() == (ref_logits[0] > 0)).mean()
    assert agree > 0.999
