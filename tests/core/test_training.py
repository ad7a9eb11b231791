"""Training utilities: losses, the coarse-mask generator, the phases' freezing, resuming a
phase from its saved state, the SAM-only mask source."""

import numpy as np
import pytest
import torch

from samhq_core import MaskSource, SamHQConfig, SamHQModel
from samhq_core.training.demo_model import demo_config, prefetched_batches, synthetic_batches
from samhq_core.training.losses import mask_iou, mask_loss, point_sampled_mask_loss
from samhq_core.training.recipe import (
    HQ_PARAMETER_PREFIXES,
    PhaseTrainer,
    batch_loss,
    set_trainable,
    train_phase,
)
from samhq_core.training.synthetic import coarsen


def test_mask_loss_prefers_the_right_mask():
    target = torch.zeros(2, 16, 16)
    target[:, 4:12, 4:12] = 1
    right = (target * 2 - 1) * 10
    assert mask_loss(right, target) < 0.01 < mask_loss(-right, target)
    assert mask_iou(right, target).tolist() == [1.0, 1.0]
    assert mask_iou(-right, target).tolist() == [0.0, 0.0]
    half = right.clone()
    half[:, 4:8] = -10  # 32 of 64 pixels missed
    assert mask_iou(half, target).tolist() == [0.5, 0.5]


def test_point_sampled_loss_lands_on_uncertain_pixels():
    """Logits 16 x 16, targets 64 x 64: confident and right everywhere but a ring of
    undecided logits on the boundary. The point-sampled loss, which puts three quarters of
    its points where |logit| is smallest, weighs that ring far more than the dense loss."""
    torch.manual_seed(0)
    target = torch.zeros(2, 64, 64)
    target[:, 16:48, 16:48] = 1
    logits = torch.full((2, 16, 16), -10.0)
    logits[:, 4:12, 4:12] = 10.0
    undecided = logits.clone()
    undecided[:, 3:13, 3:13][:, [0, -1]] = 0.0
    undecided[:, 3:13, [3, 12]] = 0.0
    dense = mask_loss(torch.nn.functional.interpolate(undecided[:, None], (64, 64), mode="bilinear")[:, 0], target)
    sampled = point_sampled_mask_loss(undecided, target, num_points=256)
    assert sampled > 2 * dense
    assert point_sampled_mask_loss(logits, target, num_points=256) < 0.5 * sampled
    assert point_sampled_mask_loss(-logits, target, num_points=256) > 1.0


def test_coarsen_keeps_blocks_by_coverage():
    mask = np.zeros((16, 16), bool)
    mask[0:8, 0:2] = True  # 2/8 of block (0, 0): kept at 0.25 coverage
    mask[8:16, 8:9] = True  # 1/8 of block (1, 1): dropped
    coarse = coarsen(mask, cell=8, coverage=0.25)
    assert coarse[0:8, 0:8].all() and not coarse[8:, 8:].any() and not coarse[0:8, 8:].any()
    assert coarsen(np.ones((10, 13), bool), cell=8).shape == (10, 13)


def test_synthetic_batches_coarsen_targets_on_the_given_grid():
    exact, coarse = next(synthetic_batches(5, 2, 256, None)), next(synthetic_batches(5, 2, 256, coarse_cell=4))
    torch.testing.assert_close(exact.pixel_values, coarse.pixel_values)
    for fine, blocky in zip(exact.targets, coarse.targets, strict=True):
        expected = np.array([coarsen(m, 4) for m in fine.numpy() > 0.5])
        np.testing.assert_array_equal(blocky.numpy() > 0.5, expected)
        assert (blocky != fine).any()


def test_prefetched_batches_are_the_same_batches_in_the_same_order():
    args = dict(seed=7, batch_size=2, image_size=256, coarse_cell=4)
    inline, prefetched = synthetic_batches(**args), prefetched_batches(**args)
    for _ in range(3):
        expected, got = next(inline), next(prefetched)
        torch.testing.assert_close(got.pixel_values, expected.pixel_values, rtol=0, atol=0)
        for name in ("boxes", "targets"):
            for a, b in zip(getattr(got, name), getattr(expected, name), strict=True):
                torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_sam_only_is_plain_sam_with_the_same_weights():
    torch.manual_seed(0)
    model = SamHQModel(demo_config()).eval()
    plain_config = SamHQConfig.from_dict({**model.config.to_dict(), "mask_decoder_config": {
        **model.config.to_dict()["mask_decoder_config"], "hq": False}})
    plain = SamHQModel(plain_config).eval()
    state = {k: v for k, v in model.state_dict().items() if not k.startswith(HQ_PARAMETER_PREFIXES)}
    plain.load_state_dict(state)
    pixels, boxes = torch.randn(1, 3, 256, 256), torch.tensor([[[10.0, 20, 120, 200], [50, 50, 60, 90]]])
    with torch.no_grad():
        for multimask in (False, True):
            ours = model(pixel_values=pixels, input_boxes=boxes, multimask_output=multimask,
                         mask_source=MaskSource.SAM_ONLY)
            reference = plain(pixel_values=pixels, input_boxes=boxes, multimask_output=multimask)
            torch.testing.assert_close(ours.pred_masks, reference.pred_masks)
            with_hq = model(pixel_values=pixels, input_boxes=boxes, multimask_output=multimask)
            assert (with_hq.pred_masks - ours.pred_masks).abs().max() > 1e-3
    with pytest.raises(ValueError, match="mask_source must be one of sam_plus_hq, hq_only, sam_only, got 'hq'"):
        model(pixel_values=pixels, input_boxes=boxes, mask_source="hq")


@pytest.mark.parametrize("phase", ["sam", "hq", "decoder"])
def test_each_phase_trains_exactly_its_parameters(phase):
    torch.manual_seed(0)
    model = SamHQModel(demo_config())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    batches = synthetic_batches(0, 2, 256, coarse_cell=8 if phase == "sam" else None)
    records = train_phase(model, phase, batches, steps=2, lr=1e-3, warmup_steps=1, log_every=1, log=lambda message: None)
    assert [r["step"] for r in records] == [1, 2] and all(np.isfinite(r["loss"]) for r in records)
    for name, value in model.state_dict().items():
        changed = not torch.equal(value, before[name])
        hq = name.startswith(HQ_PARAMETER_PREFIXES)
        if phase == "hq":
            assert changed == hq, name
        elif phase == "decoder":
            assert not changed or name.startswith("mask_decoder."), name
        else:
            assert not (hq and changed), name
    trained = [n for n, v in model.state_dict().items() if not torch.equal(v, before[n])]
    assert len(trained) > (10 if phase == "sam" else 5)
    if phase == "decoder":  # SAM's decoder trains too, not only the HQ parameters
        assert any(n.startswith("mask_decoder.transformer.") for n in trained)
        assert not all(n.startswith(HQ_PARAMETER_PREFIXES) for n in trained)
    assert all(p.requires_grad for p in model.parameters())  # unfrozen again afterwards


@pytest.mark.parametrize("phase", ["hq", "decoder"])
def test_a_resumed_trainer_continues_where_it_stopped(phase):
    """Two steps, saved, two more: a new trainer loaded from the saved state and given the
    same two batches ends with the same parameters as the one that went on."""
    source = synthetic_batches(5, 2, 256, coarse_cell=None)
    batches = [next(source) for _ in range(4)]
    torch.manual_seed(0)
    start = SamHQModel(demo_config()).state_dict()
    models = [SamHQModel(demo_config()) for _ in range(2)]
    for model in models:
        model.load_state_dict(start)
    first = PhaseTrainer(models[0], phase, steps=4, lr=1e-3, warmup_steps=1)
    for batch in batches[:2]:
        first.train_step(batch)
    saved = first.state_dict()
    resumed = PhaseTrainer(models[1], phase, steps=4, lr=1e-3, warmup_steps=1)
    resumed.load_state_dict(saved)
    assert resumed.step == 2
    for trainer in (first, resumed):
        torch.manual_seed(1)  # the loss samples its points at random
        for batch in batches[2:]:
            trainer.train_step(batch)
        trainer.finish()
    for (name, a), b in zip(models[0].state_dict().items(), models[1].state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert not torch.equal(models[0].state_dict()[first.names[0]], start[first.names[0]])
    with pytest.raises(ValueError, match="the saved state is of phase"):
        PhaseTrainer(SamHQModel(demo_config()), "sam", steps=4, lr=1e-3).load_state_dict(saved)


def test_hq_phase_needs_an_hq_model():
    config = demo_config()
    config.mask_decoder_config.hq = False
    with pytest.raises(ValueError, match="plain SAM"):
        set_trainable(SamHQModel(config), "hq")
    with pytest.raises(ValueError, match="phase"):
        set_trainable(SamHQModel(config), "all")


def test_batch_loss_targets_follow_the_phase():
    """The "sam" phase fits SAM's own mask and the IoU head; "hq" only the HQ token's mask."""
    torch.manual_seed(0)
    model = SamHQModel(demo_config())
    batch = next(synthetic_batches(3, 2, 256, coarse_cell=None))
    sam, hq = batch_loss(model, "sam", batch), batch_loss(model, "hq", batch)
    assert sam["iou_loss"] > 0 and hq["iou_loss"] == 0
    assert not torch.isclose(sam["mask_loss"], hq["mask_loss"])
    assert sam["loss"].requires_grad and hq["loss"].requires_grad
