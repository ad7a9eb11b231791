"""The GPU check (`python -m bench.gpu_check`) in its --smoke mode: every code path of it on this
machine's CPU (or GPU) with a tiny model, so that the script that runs on a GPU node cannot rot.
It starts a local Ray cluster of its own for its pipeline run and must end it itself."""

import os
import shutil
import sys
import tempfile
import time

import pytest
from helpers.owned_processes import OwnedProcess, session_members
from helpers.paths import ROOT

SECTIONS = ("Machine", "Parity", "Host syncs", "Matmul peak", "Encoder", "Decoder", "Pipeline", "Skipped or failed")


@pytest.mark.cluster
def test_gpu_check_smoke_writes_every_section_and_passes(tmp_path):
    out = tmp_path / "gpu_smoke.md"
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    # Ray's state in a directory of the test's own (short, for Ray's socket paths).
    ray_tmp = tempfile.mkdtemp(prefix="rt", dir="/tmp")
    env.update(PYTHONPATH=ROOT, RAY_TMPDIR=ray_tmp)
    check = OwnedProcess([sys.executable, "-m", "bench.gpu_check", "--smoke", "--out", str(out)], env=env, cwd=ROOT)
    try:
        deadline = time.time() + 240
        while check.process.poll() is None and time.time() < deadline:
            time.sleep(0.5)
        output = check.output_tail(20_000)
        assert check.process.returncode == 0, output
        # The script's ray.shutdown ended the cluster it started: nothing of its session outlives it.
        deadline = time.time() + 20
        while session_members(check.session_id) and time.time() < deadline:
            time.sleep(0.5)
        assert not session_members(check.session_id), output
    finally:
        check.stop()
        shutil.rmtree(ray_tmp, ignore_errors=True)
    report = out.read_text()
    for section in SECTIONS:
        assert f"\n## {section}\n" in report, section
    assert "parity: passed" in report
    assert "Result: **passed**" in report
    assert "\n- nothing\n" in report  # nothing skipped for the budget, nothing failed
    assert "| 1 x 0 | 2 | ok | " in report  # the pipeline run (2 batches at once) finished, closing check passed
    assert "compiled | 2 |" in report and "error: " not in report  # every measurement ran


def test_empty_masks_zeroes_every_mask_logit_and_nothing_else():
    """--pipeline-masks empty: the decoder's hypernetworks give 0 for every mask logit (one run
    per mask), while the encoder and the IoU head still compute what they did."""
    import torch

    from bench.gpu_check.inputs import empty_masks
    from bench.gpu_check.settings import smoke_config
    from samhq_core.random_weights import random_model

    model = random_model(smoke_config(), seed=0)
    pixels = torch.randn(1, 3, 64, 64)
    boxes = torch.tensor([[[4.0, 6.0, 40.0, 50.0], [10.0, 2.0, 60.0, 30.0]]])
    with torch.inference_mode():
        before = model(pixel_values=pixels, input_boxes=boxes, multimask_output=False)
        after = empty_masks(model)(pixel_values=pixels, input_boxes=boxes, multimask_output=False)
    assert before.pred_masks.abs().amax() > 0.1
    assert torch.count_nonzero(after.pred_masks) == 0
    assert torch.equal(after.iou_scores, before.iou_scores)
