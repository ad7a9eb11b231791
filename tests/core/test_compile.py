"""The model path the pipeline runs is sync-free and compilable: dynamo traces the public
`get_image_embeddings` and `forward` (from embeddings, with box, point and mask prompts) as one
graph each, without a break; the eager forward still checks prompt values; and boxes of several
images decoded together give each image's own result. (Compiled results against eager ones:
tests/pipeline/test_model_stage.py.)"""

import pytest
import torch

from samhq_core import MaskSource, SamHQModel
from samhq_core.random_weights import perturb, smallest_config


@pytest.fixture(scope="module")
def model() -> SamHQModel:
    torch.manual_seed(0)
    model = SamHQModel(smallest_config()).eval()
    perturb(model, 0)
    return model


def _prompts(batch: int, prompts: int):
    generator = torch.Generator().manual_seed(1)
    corners = torch.rand(batch, prompts, 2, 2, generator=generator) * 64
    boxes = torch.cat([corners.min(dim=2).values, corners.max(dim=2).values], dim=-1)  # (B, P, 4) xyxy
    points = torch.rand(batch, prompts, 3, 2, generator=generator) * 64
    labels = torch.tensor([1, 0, -1]).expand(batch, prompts, 3)
    masks = torch.randn(batch, prompts, 16, 16, generator=generator)
    return {"boxes": dict(input_boxes=boxes), "points": dict(input_points=points, input_labels=labels),
            "boxes and masks": dict(input_boxes=boxes, input_masks=masks),
            "all three": dict(input_boxes=boxes, input_points=points, input_labels=labels, input_masks=masks)}


@pytest.mark.slow
@torch.inference_mode()
def test_the_model_path_traces_without_graph_breaks(model):
    pixels = torch.randn(2, 3, 64, 64)
    torch._dynamo.reset()
    explained = torch._dynamo.explain(model.get_image_embeddings)(pixels)
    assert (explained.graph_count, explained.graph_break_count) == (1, 0), explained.break_reasons
    embeddings, intermediate = model.get_image_embeddings(pixels)
    for name, prompts in _prompts(2, 3).items():
        torch._dynamo.reset()
        explained = torch._dynamo.explain(model)(image_embeddings=embeddings, intermediate_embeddings=intermediate,
                                                 multimask_output=False, **prompts)
        assert (explained.graph_count, explained.graph_break_count) == (1, 0), (name, explained.break_reasons)


@torch.inference_mode()
def test_eager_forward_still_checks_prompt_values(model):
    embeddings, intermediate = model.get_image_embeddings(torch.randn(1, 3, 64, 64))
    with pytest.raises(ValueError, match="NaN or infinite"):
        model(image_embeddings=embeddings, intermediate_embeddings=intermediate,
              input_boxes=torch.tensor([[[0.0, 0.0, float("nan"), 4.0]]]))
    with pytest.raises(ValueError, match="x2 >= x1"):
        model(image_embeddings=embeddings, intermediate_embeddings=intermediate,
              input_boxes=torch.tensor([[[9.0, 0.0, 4.0, 4.0]]]))


@pytest.mark.parametrize("mask_source", [MaskSource.SAM_PLUS_HQ, MaskSource.HQ_ONLY])
@torch.inference_mode()
def test_boxes_of_several_images_decode_together_as_each_alone(model, mask_source):
    embeddings, intermediate = model.get_image_embeddings(torch.randn(3, 3, 64, 64))
    boxes = _prompts(3, 4)["boxes"]["input_boxes"]
    counts = [1, 4, 2]  # chunks of 3 cross image boundaries
    flat = torch.cat([boxes[b, :n] for b, n in enumerate(counts)])
    index = torch.repeat_interleave(torch.arange(3), torch.tensor(counts))
    masks, scores = model.decode_flat(embeddings, intermediate, index, boxes=flat, multimask_output=False,
                                      mask_source=mask_source, prompt_chunk_size=3)
    start = 0
    for b, n in enumerate(counts):
        alone = model.decode_prompts(embeddings[b : b + 1], intermediate[b : b + 1], input_boxes=boxes[b : b + 1, :n],
                                     multimask_output=False, mask_source=mask_source)
        torch.testing.assert_close(masks[start : start + n], alone.pred_masks[0], atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(scores[start : start + n], alone.iou_scores[0], atol=1e-5, rtol=1e-5)
        start += n
