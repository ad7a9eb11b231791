"""Automatic mask generation ("segment everything") on the CPU: samhq_core's
SamHQAutomaticMaskGenerator against the official SAM-HQ generator (segment_anything_hq 0.3's
SamAutomaticMaskGenerator), on the same weights and images, in the same run.

Weights: the demo model (models/samhq-demo-synthetic: TinyViT, 256 px input, decoder of width
128). The official code has no TinyViT of that width, so its model is the demo model's twin:
the official prompt encoder, HQ mask decoder, `Sam` wrapper, preprocessing and generator, with
the demo's weights, around samhq_core's image encoder (wrapped to the official encoders'
interface); the encoder's own parity is tests/core/test_parity.py's. `--verify` also runs a
fully official model: a reduced official ViT (256 px) with random weights, loaded into
samhq_core from the `.pth` it was saved to. The demo model was trained on boxes only, so points
give low predicted IoUs: both sides run with pred_iou_thresh 0.3 and stability_score_thresh
0.5 (DEMO_THRESHOLDS), and multimask_output=False.

Images: synthetic scenes (`samhq_core.training.synthetic.make_scene`), --side x --side pixels.

The official generator imports torchvision's batched_nms: with torchvision installed (e.g.
/work/ultra_venv, torch 2.14.1 + torchvision 0.29.1, with segment-anything-hq, timm and
safetensors installed --no-deps), it runs with the real one; otherwise with
tests/helpers/official.py's stand-in, a one-box-at-a-time Python transcription of torchvision's
CPU kernel, which is slow: the timing report says which one ran, and only a run with the real
torchvision gives a fair ratio.

Modes:
- timing (default) → bench/results/automatic_masks.md: images/s of the official generator
  (one image at a time, as it works), of ours one image at a time and of ours on all images
  at once (`generate_batch`), per configuration, median over --repeats rounds that alternate
  the three; masks per image and their match (counts, min IoU of one-to-one matched masks).
- --verify → bench/results/automatic_masks_torchvision.md (needs the real torchvision): our
  `batched_nms` against torchvision.ops.batched_nms on random boxes (ties, categories, both of
  torchvision's code paths), then the official generator with the real torchvision against
  ours, on the demo twin and on the random official ViT, HQ and plain SAM, crop layers 0 and
  1, with and without the small-region clean-up, all three output modes.

Usage:
  PYTHONPATH=. /work/ultra_venv/bin/python -m bench.automatic_masks [--images 4] [--repeats 2]
  PYTHONPATH=. /work/ultra_venv/bin/python -m bench.automatic_masks --verify
"""

import argparse
import importlib
import os
import sys
import tempfile
import time
from statistics import median
from typing import Any, Callable, Dict, List, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from bench.common.machine import contention, cpu_counters, machine_at_end
from samhq_core import SamHQModel
from samhq_core.automatic import SamHQAutomaticMaskGenerator, batched_nms
from samhq_core.random_weights import perturb
from samhq_core.training.synthetic import make_scene

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO = os.path.join(ROOT, "models", "samhq-demo-synthetic")
RESULTS = os.path.join(ROOT, "bench", "results")
DEMO_THRESHOLDS = {"pred_iou_thresh": 0.3, "stability_score_thresh": 0.5}
Records = List[Dict[str, Any]]


def official_package() -> Tuple[Any, str]:
    """segment_anything_hq, with the real torchvision when it imports, else with the tests'
    stand-ins (tests/helpers/official.py); and which NMS it runs on, in words."""
    try:
        torchvision = importlib.import_module("torchvision")
    except ImportError:
        sys.path.insert(0, os.path.join(ROOT, "tests"))
        official = importlib.import_module("helpers.official")
        return official.segment_anything_hq, "the tests' stand-in (a Python transcription of torchvision's CPU kernel)"
    return importlib.import_module("segment_anything_hq"), f"torchvision {torchvision.__version__}"


class OfficialEncoder(nn.Module):
    """samhq_core's image encoder with the official encoders' interface: img_size, and
    (embeddings, [early features]) from pixel values."""

    def __init__(self, model: SamHQModel) -> None:
        super().__init__()
        self.encoder = model.image_encoder
        self.img_size = model.config.vision_config.image_size

    def forward(self, pixels: torch.Tensor) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        embeddings, early = self.encoder(pixels)
        return embeddings, [early]


def official_twin(model: SamHQModel, package: Any) -> nn.Module:
    """The official `Sam` of a samhq_core model's architecture and weights (prompt encoder, mask
    decoder), around samhq_core's image encoder (`OfficialEncoder`)."""
    config, modeling = model.config, package.modeling
    p, d = config.prompt_encoder_config, config.mask_decoder_config
    transformer = modeling.TwoWayTransformer(depth=d.num_hidden_layers, embedding_dim=d.hidden_size, mlp_dim=d.mlp_dim,
                                             num_heads=d.num_attention_heads,
                                             attention_downsample_rate=d.attention_downsample_rate)
    decoder_args = dict(transformer_dim=d.hidden_size, transformer=transformer, num_multimask_outputs=d.num_multimask_outputs,
                        iou_head_depth=d.iou_head_depth, iou_head_hidden_dim=d.iou_head_hidden_dim)
    decoder = modeling.MaskDecoderHQ(vit_dim=d.vit_dim, **decoder_args) if d.hq else modeling.MaskDecoder(**decoder_args)
    size = config.vision_config.image_size
    prompt_encoder = modeling.PromptEncoder(embed_dim=p.hidden_size, image_embedding_size=config.embedding_size,
                                            input_image_size=(size, size), mask_in_chans=p.mask_input_channels)
    sam = modeling.Sam(image_encoder=OfficialEncoder(model), prompt_encoder=prompt_encoder, mask_decoder=decoder)
    state = {k: v for k, v in model.state_dict().items() if k.startswith(("prompt_encoder.", "mask_decoder."))}
    missing, unexpected = sam.load_state_dict(state, strict=False)
    if unexpected or any(not k.startswith("image_encoder.") for k in missing):
        raise RuntimeError(f"the twin does not take the weights: missing {missing}, unexpected {unexpected}")
    return sam.eval()


def official_small_vit(package: Any, hq: bool, seed: int, directory: str) -> Tuple[nn.Module, SamHQModel]:
    """A fully official SAM-HQ (or SAM) with a reduced ViT (256 px, width 64, 4 blocks, 2 global)
    and perturbed random weights, and samhq_core's model loaded from the `.pth` it is saved to."""
    modeling = package.modeling
    torch.manual_seed(seed)
    encoder = modeling.ImageEncoderViT(depth=4, embed_dim=64, img_size=256, mlp_ratio=4, num_heads=2, patch_size=16,
                                       norm_layer=lambda dim: nn.LayerNorm(dim, eps=1e-6), qkv_bias=True,
                                       use_rel_pos=True, global_attn_indexes=(1, 3), window_size=14, out_chans=256)
    transformer = modeling.TwoWayTransformer(depth=2, embedding_dim=256, mlp_dim=2048, num_heads=8)
    decoder_args = dict(num_multimask_outputs=3, transformer=transformer, transformer_dim=256, iou_head_depth=3,
                        iou_head_hidden_dim=256)
    decoder = modeling.MaskDecoderHQ(vit_dim=64, **decoder_args) if hq else modeling.MaskDecoder(**decoder_args)
    prompt_encoder = modeling.PromptEncoder(embed_dim=256, image_embedding_size=(16, 16), input_image_size=(256, 256),
                                            mask_in_chans=16)
    official = perturb(modeling.Sam(image_encoder=encoder, prompt_encoder=prompt_encoder, mask_decoder=decoder), seed)
    path = os.path.join(directory, f"small_vit_{'hq' if hq else 'sam'}_{seed}.pth")
    torch.save(official.state_dict(), path)
    return official.eval(), SamHQModel.from_pretrained(path).eval()


def scenes(count: int, side: int, seed: int) -> List[np.ndarray]:
    """`count` synthetic scenes, uint8 (side, side, 3)."""
    rng = np.random.default_rng(seed)
    return [make_scene(rng, side, side).image for _ in range(count)]


def segmentation_masks(records: Records) -> np.ndarray:
    """bool (n, H * W) of binary_mask records."""
    if not records:
        return np.zeros((0, 0), dtype=bool)
    return np.stack([np.asarray(r["segmentation"]).reshape(-1) for r in records])


def match(official: Records, ours: Records) -> Tuple[List[Tuple[int, int]], np.ndarray]:
    """One-to-one matching of two sets of binary_mask records by mask IoU (greedy, best pairs
    first): the pairs (official index, our index) and their IoUs."""
    if not official or not ours:
        return [], np.zeros(0)
    a, b = segmentation_masks(official).astype(np.float32), segmentation_masks(ours).astype(np.float32)
    inter = a @ b.T
    iou = inter / np.maximum(a.sum(1)[:, None] + b.sum(1)[None, :] - inter, 1)
    pairs, used_a, used_b = [], set(), set()
    for flat in np.argsort(-iou, axis=None, kind="stable"):
        i, j = divmod(int(flat), iou.shape[1])
        if i not in used_a and j not in used_b:
            pairs.append((i, j))
            used_a.add(i)
            used_b.add(j)
    return pairs, np.array([iou[i, j] for i, j in pairs])


def compare(official: Records, ours: Records) -> Dict[str, Any]:
    """How two generators' records for one image agree: counts, min IoU of the matched masks,
    whether the order and every non-mask field is identical, the largest score differences."""
    pairs, ious = match(official, ours)
    same_order = len(official) == len(ours) and all(i == j for i, j in pairs)
    fields = ("bbox", "area", "point_coords", "crop_box")
    identical = same_order and all(official[i][f] == ours[j][f] for i, j in pairs for f in fields)
    return {
        "official": len(official), "ours": len(ours), "matched": len(pairs),
        "min_iou": float(ious.min()) if len(ious) else 1.0, "exact": int((ious == 1.0).sum()),
        "same_order_and_fields": identical,
        "max_score_diff": max([abs(official[i][k] - ours[j][k]) for i, j in pairs
                               for k in ("predicted_iou", "stability_score")] or [0.0]),
    }


def time_rounds(runners: Dict[str, Callable[[], Any]], repeats: int) -> Dict[str, float]:
    """Median seconds of each runner over `repeats` rounds, alternating them in every round
    (after one untimed warm-up round)."""
    times: Dict[str, List[float]] = {name: [] for name in runners}
    for round_index in range(repeats + 1):
        for name, run in runners.items():
            start = time.perf_counter()
            run()
            if round_index:
                times[name].append(time.perf_counter() - start)
    return {name: median(values) for name, values in times.items()}


def timing(args: argparse.Namespace) -> str:
    package, nms_used = official_package()
    model = SamHQModel.from_pretrained(DEMO).eval()
    twin = official_twin(model, package)
    images = scenes(args.images, args.side, args.seed)
    configs: List[Dict[str, Any]] = [{"crop_n_layers": 0}, {"crop_n_layers": 1, "crop_n_points_downscale_factor": 2},
                                     {"crop_n_layers": 0, "min_mask_region_area": 100}]
    lines = ["| config | official img/s | ours, one at a time img/s | ratio | ours, all at once img/s | ratio "
             "| masks/image | official vs ours: counts, min IoU |", "|---|---:|---:|---:|---:|---:|---:|---|"]
    start_counters, started = cpu_counters(), time.perf_counter()
    for config in configs:
        params: Dict[str, Any] = dict(points_per_side=args.points_per_side, **DEMO_THRESHOLDS, **config)
        official = package.SamAutomaticMaskGenerator(twin, **params)
        ours = SamHQAutomaticMaskGenerator(model, **params)

        def run_official(official: Any = official) -> List[Records]:
            with torch.inference_mode():
                return [official.generate(image, multimask_output=False) for image in images]

        def run_ours(ours: SamHQAutomaticMaskGenerator = ours) -> List[Records]:
            return [ours.generate(image, multimask_output=False) for image in images]

        def run_batch(ours: SamHQAutomaticMaskGenerator = ours) -> List[Records]:
            return ours.generate_batch(images, multimask_output=False)

        checks = [compare(e, g) for e, g in zip(run_official(), run_batch(), strict=True)]
        seconds = time_rounds({"official": run_official, "ours": run_ours, "batch": run_batch}, args.repeats)
        rate = {name: len(images) / s for name, s in seconds.items()}
        counts_equal = all(c["official"] == c["ours"] == c["matched"] for c in checks)
        lines.append(f"| {', '.join(f'{k} {v}' for k, v in config.items())} | {rate['official']:.2f} | {rate['ours']:.2f} | "
                     f"{rate['ours'] / rate['official']:.2f}x | {rate['batch']:.2f} | {rate['batch'] / rate['official']:.2f}x | "
                     f"{np.mean([c['ours'] for c in checks]):.1f} | {'equal' if counts_equal else 'DIFFER'}, "
                     f"{min(c['min_iou'] for c in checks):.4f} |")
        print(lines[-1], flush=True)
    runtime = time.perf_counter() - started
    return "\n".join([
        "# Automatic mask generation on the CPU: ours vs the official SAM-HQ generator", "",
        f"Written by `PYTHONPATH=. {sys.executable} -m bench.automatic_masks --images {args.images} --side {args.side} "
        f"--points-per-side {args.points_per_side} --repeats {args.repeats} --threads {args.threads}` "
        f"(torch {torch.__version__}, "
        f"{args.threads} threads; the official generator's NMS: {nms_used}).", "",
        f"The demo model (models/samhq-demo-synthetic, 256 px input) and the official twin of it (see the script), "
        f"{args.images} synthetic scenes of {args.side} x {args.side}, points_per_side {args.points_per_side}, "
        f"points_per_batch 64, pred_iou_thresh {DEMO_THRESHOLDS['pred_iou_thresh']}, stability_score_thresh "
        f"{DEMO_THRESHOLDS['stability_score_thresh']}, multimask_output False, other parameters the official "
        f"defaults. Images/s from the median of {args.repeats} timed rounds (after a warm-up round) that alternate "
        "the three; \"all at once\" is `generate_batch` of every image in one call.", "",
        *lines, "",
        f"Machine: {machine_at_end()}; during the run {contention(start_counters, runtime)}.", ""])


def nms_check(torchvision: Any, seed: int = 0) -> Tuple[int, int]:
    """(cases, mismatches) of our batched_nms against torchvision's on random boxes: integer
    and fractional coordinates, tied and distinct scores, 1 and 3 categories, sizes on both
    sides of torchvision's switch to one NMS per category (1,000 boxes on the CPU)."""
    gen = torch.Generator().manual_seed(seed)
    cases = mismatches = 0
    for n in (0, 1, 2, 5, 17, 64, 300, 999, 1001, 1600):
        for trial in range(4):
            corner = torch.randint(0, 80, (n, 2), generator=gen).float()
            size = torch.randint(0, 50, (n, 2), generator=gen).float()
            boxes = torch.cat([corner, corner + size], dim=1)
            if trial % 2:
                boxes = boxes + torch.rand(n, 4, generator=gen) * 3
            scores = (torch.randint(0, 4, (n,), generator=gen).float() if trial < 2 else torch.rand(n, generator=gen))
            for categories in (1, 3):
                idxs = torch.randint(0, categories, (n,), generator=gen)
                for threshold in (0.0, 0.5, 0.7, 0.95):
                    cases += 1
                    expected = torchvision.ops.batched_nms(boxes, scores, idxs, threshold)
                    mismatches += int(not torch.equal(batched_nms(boxes, scores, idxs, threshold), expected))
    return cases, mismatches


def verify(args: argparse.Namespace) -> str:
    package, nms_used = official_package()
    if not nms_used.startswith("torchvision"):
        raise SystemExit("--verify needs the real torchvision (e.g. /work/ultra_venv/bin/python)")
    torchvision = importlib.import_module("torchvision")
    cases, mismatches = nms_check(torchvision)
    lines = [f"batched_nms: {cases} random cases against torchvision.ops.batched_nms, {mismatches} mismatches.", "",
             "| model | scene | config | official masks | ours | matched | min IoU | IoU 1.0 | order and fields "
             "identical | max score diff |", "|---|---:|---|---:|---:|---:|---:|---:|---|---:|"]
    failures = mismatches
    with tempfile.TemporaryDirectory() as directory:
        demo = SamHQModel.from_pretrained(DEMO).eval()
        models: List[Tuple[str, nn.Module, SamHQModel, Dict[str, Any], bool]] = [
            ("demo (twin)", official_twin(demo, package), demo, dict(DEMO_THRESHOLDS), False)]
        for hq, seed in ((True, 0), (False, 1)):
            official_model, ours_model = official_small_vit(package, hq, seed, directory)
            # Random weights: their masks are large and alike, so that NMS would keep one or two:
            # thresholds and NMS off (IoU > 1 never happens), so that every mask reaches the end.
            models.append((f"random ViT {'HQ' if hq else 'SAM'}", official_model, ours_model,
                           {"pred_iou_thresh": 0.0, "stability_score_thresh": 0.0, "box_nms_thresh": 1.0,
                            "crop_nms_thresh": 1.0}, True))
        configs: List[Dict[str, Any]] = [{"crop_n_layers": 0}, {"crop_n_layers": 1},
                                         {"crop_n_layers": 0, "min_mask_region_area": 60},
                                         {"crop_n_layers": 1, "min_mask_region_area": 60}]
        for name, official_model, ours_model, thresholds, multimask in models:
            for scene_index, image in enumerate(scenes(args.scenes, 256, args.seed)):
                for config in configs:
                    params: Dict[str, Any] = dict(points_per_side=args.verify_points, crop_n_points_downscale_factor=2,
                                                  **thresholds, **config)
                    with torch.inference_mode():
                        expected = package.SamAutomaticMaskGenerator(official_model, **params).generate(image, multimask)
                    got = SamHQAutomaticMaskGenerator(ours_model, **params).generate(image, multimask)
                    c = compare(expected, got)
                    ok = c["official"] == c["ours"] == c["matched"] and c["min_iou"] >= 0.99
                    failures += int(not ok)
                    lines.append(f"| {name} | {scene_index} | {', '.join(f'{k} {v}' for k, v in config.items())}, "
                                 f"multimask {multimask} | {c['official']} | {c['ours']} | {c['matched']} | "
                                 f"{c['min_iou']:.5f} | {c['exact']} | {c['same_order_and_fields']} | "
                                 f"{c['max_score_diff']:.1e} |")
                    print(lines[-1], flush=True)
                if name.startswith("demo"):  # the twin shares our encoder: its masks are expected bit-identical
                    for mode in ("uncompressed_rle", "coco_rle"):
                        params = dict(points_per_side=args.verify_points, output_mode=mode, **thresholds)
                        with torch.inference_mode():
                            expected = package.SamAutomaticMaskGenerator(official_model, **params).generate(image, multimask)
                        got = SamHQAutomaticMaskGenerator(ours_model, **params).generate(image, multimask)
                        same = [e["segmentation"] == g["segmentation"] for e, g in zip(expected, got, strict=False)]
                        failures += int(len(expected) != len(got) or not all(same))
                        lines.append(f"| {name} | {scene_index} | output_mode {mode} | {len(expected)} | {len(got)} | - "
                                     f"| - | {sum(same)} identical | - | - |")
    verdict = "passed" if failures == 0 else f"FAILED ({failures} failures)"
    return "\n".join([
        "# Automatic mask generation: ours against the official generator with the real torchvision", "",
        f"Written by `PYTHONPATH=. {sys.executable} -m bench.automatic_masks --verify --scenes {args.scenes} "
        f"--verify-points {args.verify_points}` "
        f"(torch {torch.__version__}, the official generator's NMS: {nms_used}; segment-anything-hq 0.3).", "",
        "Masks matched one to one by IoU; \"order and fields identical\": the same masks in the same order, with equal "
        "bbox, area, point_coords and crop_box. Models and thresholds as the script's docstring says (random ViTs: "
        "thresholds 0 and NMS thresholds 1, so that no mask is dropped, multimask_output True: HQ keeps the best "
        "of 3 per point, plain SAM all 3); crop_n_points_downscale_factor 2, scenes of 256 x 256. The demo twin "
        "shares samhq_core's encoder, so its masks are expected bit-identical; the random ViTs are official end "
        "to end, so their masks may differ by a pixel.", "",
        *lines, "", f"Result: **{verdict}**.", "", f"Machine: {machine_at_end()}.", ""])


def main(argv: Sequence[str] = ()) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--verify", action="store_true", help="the torchvision check instead of the timing")
    p.add_argument("--images", type=int, default=4, help="timing: scenes timed")
    p.add_argument("--side", type=int, default=512, help="timing: scene side in pixels")
    p.add_argument("--points-per-side", type=int, default=32, help="timing: the grid of layer 0")
    p.add_argument("--repeats", type=int, default=2, help="timing: timed rounds")
    p.add_argument("--scenes", type=int, default=2, help="--verify: scenes per model")
    p.add_argument("--verify-points", type=int, default=8, help="--verify: the grid of layer 0")
    p.add_argument("--seed", type=int, default=2024)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--out", default=None, help="the report (default: bench/results/automatic_masks[_torchvision].md)")
    args = p.parse_args(list(argv) or None)
    torch.set_num_threads(args.threads)
    text = verify(args) if args.verify else timing(args)
    out = args.out or os.path.join(RESULTS, "automatic_masks_torchvision.md" if args.verify else "automatic_masks.md")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w") as f:
        f.write(text)
    print(text)
    if args.verify and "**passed**" not in text:
        raise SystemExit(1)


if __name__ == "__main__":
    main(sys.argv[1:])
