"""The model stage in process: its compiled path (`model.compile: true`) against its eager
path (same masks, scores within 1e-4 in fp32, with image and box counts that need padding
to their buckets), and batches run concurrently from threads (as Ray Data runs them with
`compute.concurrent_batches_per_actor`)."""

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pyarrow as pa
import pytest
import torch
from helpers.pipeline_data import png_bytes

from pipeline.config import ModelConfig, StorageConfig
from pipeline.schema import (
    BOX_ERRORS,
    BOXES,
    CROP_HW,
    CROP_PIXELS,
    EVERYTHING,
    IMAGE_SIZE,
    MASK_INPUTS,
    PIXELS,
    POINT_LABELS,
    POINTS,
    PROMPT_KINDS,
    RESIZED_HW,
)
from pipeline.stages.model import ModelUDF
from samhq_core import SamHQModel, SamHQProcessor
from samhq_core.processor import bucket_size, pad_to_bucket
from samhq_core.random_weights import perturb, smallest_config


def test_counts_are_padded_to_powers_of_two_with_real_entries():
    assert [bucket_size(n) for n in (1, 2, 3, 4, 5, 9, 64, 65)] == [1, 2, 4, 4, 8, 16, 64, 128]
    boxes = torch.arange(12.0).view(1, 3, 4)
    padded = pad_to_bucket(boxes, dim=1)
    assert padded.shape == (1, 4, 4)
    assert torch.equal(padded[:, :3], boxes) and torch.equal(padded[:, 3], boxes[:, 2])


def _decoded_batch(processor: SamHQProcessor) -> pa.Table:
    """Three images (padded to the batch size, 4) with 3, 4 and 4 boxes (11, padded to 16), as the
    decode stage hands them to the model stage."""
    import io

    from PIL import Image

    columns = {PIXELS: [], RESIZED_HW: [], BOXES: [], POINTS: [], POINT_LABELS: [], MASK_INPUTS: [], IMAGE_SIZE: [],
               BOX_ERRORS: [], PROMPT_KINDS: [], EVERYTHING: [], CROP_PIXELS: [], CROP_HW: []}
    for seed, num_boxes in enumerate((3, 4, 4)):
        image = Image.open(io.BytesIO(png_bytes(48, 80, seed)))
        resized, _ = processor.resize_image(image)
        h, w = resized.shape[:2]
        generator = np.random.default_rng(seed)
        corners = generator.uniform(0, [80, 48], size=(num_boxes, 2, 2))
        boxes = np.concatenate([corners.min(axis=1), corners.max(axis=1) + 4], axis=1).astype(np.float32)
        columns[PIXELS].append(resized.tobytes())
        columns[RESIZED_HW].append([h, w])
        columns[BOXES].append(processor.scale_boxes(boxes, (48, 80)).reshape(-1).tolist())
        columns[POINTS].append([[]] * num_boxes)
        columns[POINT_LABELS].append([[]] * num_boxes)
        columns[MASK_INPUTS].append([None] * num_boxes)
        columns[IMAGE_SIZE].append([48, 80])
        columns[BOX_ERRORS].append([None] * num_boxes)
        columns[PROMPT_KINDS].append(["box"] * num_boxes)
        columns[EVERYTHING].append(False)
        columns[CROP_PIXELS].append([])
        columns[CROP_HW].append([])
    return pa.table(columns)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> str:
    torch.manual_seed(0)
    model = SamHQModel(smallest_config()).eval()
    perturb(model, 3)
    path = str(tmp_path_factory.mktemp("compiled") / "model")
    model.save_pretrained(path)
    return path


@pytest.mark.slow
def test_compiled_model_stage_matches_eager(checkpoint):
    eager = ModelUDF(ModelConfig(checkpoint=checkpoint), StorageConfig(), image_size=64)
    compiled = ModelUDF(ModelConfig(checkpoint=checkpoint, compile=True), StorageConfig(), image_size=64, batch_size=4)
    batch = _decoded_batch(eager.processor)
    expected, got = eager.process(batch), compiled.process(batch)
    assert [len(r.run_lengths) for r in got] == [3, 4, 4], got
    for want, have in zip(expected, got, strict=True):
        assert have.error is None and want.error is None
        np.testing.assert_allclose(have.iou_scores, want.iou_scores, atol=1e-4)
        np.testing.assert_allclose(have.stability_scores, want.stability_scores, atol=1e-4)
        assert have.mask_areas == pytest.approx(want.mask_areas, abs=2)
        same = [np.array_equal(a, b) for a, b in zip(have.run_lengths, want.run_lengths, strict=True)]
        assert sum(same) >= len(same) - 1, same  # a logit at the threshold may flip a pixel


def test_concurrent_batches_take_turns_on_the_model_and_match_one_at_a_time(checkpoint):
    udf = ModelUDF(ModelConfig(checkpoint=checkpoint), StorageConfig(), image_size=64, concurrent_batches=2)
    batch = _decoded_batch(udf.processor)
    batches = [batch, batch.slice(1), batch.slice(0, 1), batch.slice(2)]
    expected = [udf.process(b) for b in batches]
    counter, inside, most = threading.Lock(), 0, 0

    def counted(model_call):
        def call(*args, **kwargs):
            nonlocal inside, most
            with counter:
                inside += 1
                most = max(most, inside)
            try:
                time.sleep(0.05)  # time for another thread to come in, were the calls not taking turns
                return model_call(*args, **kwargs)
            finally:
                with counter:
                    inside -= 1
        return call

    udf.encode, udf.decode = counted(udf.encode), counted(udf.decode)
    with ThreadPoolExecutor(len(batches)) as pool:
        results = list(pool.map(udf.process, batches))
    assert most == 1
    for want, have in zip(expected, results, strict=True):
        assert [r.error for r in have] == [None] * len(want)
        for a, b in zip(want, have, strict=True):
            assert a.iou_scores == b.iou_scores and a.mask_areas == b.mask_areas
            assert all(np.array_equal(x, y) for x, y in zip(a.run_lengths, b.run_lengths, strict=True))
