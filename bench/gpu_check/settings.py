"""What one run of the GPU check measures, and with which sizes: the full check on a GPU, or
every code path in miniature (--smoke)."""

import argparse
import dataclasses
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple

from samhq_core import SamHQConfig

ROOT = Path(__file__).resolve().parent.parent.parent
LOGIT_TOLERANCE = 1e-3  # fp32 CUDA vs CPU, as the README claims against the official model
BF16_MIN_MEAN_IOU = 0.98


@dataclasses.dataclass
class Settings:
    smoke: bool
    seed: int
    parity_config: SamHQConfig  # also the pipeline's checkpoint, and the model of the sync and decoder checks
    parity_boxes: int
    variants: Dict[str, SamHQConfig]
    batches: Tuple[int, ...]
    compiled: Tuple[Tuple[str, int], ...]  # (variant, batch) pairs compiled
    compile_backend: str
    box_counts: Tuple[int, ...]
    peak_size: int
    warmup: int
    repeats: int
    call_seconds: float  # timed seconds per measurement above which fewer calls are timed
    sync_images: int
    pipeline_images: int
    pipeline_hw: Tuple[int, int]
    pipeline_boxes: int
    pipeline_scenes: int
    pipeline_runs: Tuple[Tuple[int, float, int], ...]  # (actors, GPUs per actor, concurrent batches per actor)
    pipeline_dtype: str
    pipeline_batch_size: int
    pipeline_masks: str  # "random": the random weights' masks; "empty": every mask logit 0 (coding costs nothing)
    sections: str  # "all", or "pipeline": section 4 alone, on a random-weight model that skips the parity check
    torch_threads: Optional[int]  # None: torch's default


def smoke_config() -> SamHQConfig:
    """A 64 px ViT of two 32-wide blocks, one windowed (a 4 x 4 grid padded to 6 x 6 in 3 x 3
    windows) and one global, with the full-size decoder: every code path, in milliseconds."""
    return SamHQConfig.from_variant("vit_b", image_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=1,
                                    window_size=3, global_attn_indexes=[1])


def parse_args(argv: Optional[Sequence[str]] = None) -> Tuple[argparse.Namespace, Settings]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="every code path with a tiny model, on CPU unless CUDA is here")
    parser.add_argument("--out", type=Path, help="report path (default bench/results/gpu_<device>.md; with --smoke a "
                                                 "temporary file)")
    parser.add_argument("--budget-s", type=float, default=None,
                        help="skip measurements that would end later than this many seconds after the start "
                             "(default 420, 300 with --smoke)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls before each measurement (default 2)")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per measurement at most (default 5)")
    parser.add_argument("--pipeline-images", type=int, default=256)
    parser.add_argument("--pipeline-boxes", type=int, default=50, help="boxes per image in the pipeline run")
    parser.add_argument("--pipeline-dtype", choices=("bfloat16", "float32"), default="bfloat16")
    parser.add_argument("--pipeline-batch-size", type=int, default=8, help="compute.batch_size of the pipeline run")
    parser.add_argument("--pipeline-masks", choices=("random", "empty"), default="random",
                        help="random: the random weights' masks, noisy with many runs each (the worst case for mask "
                             "coding); empty: the decoder's hypernetworks zeroed, so every mask is one run (its ceiling)")
    parser.add_argument("--sections", choices=("all", "pipeline"), default="all",
                        help="pipeline: only the pipeline runs (section 4)")
    parser.add_argument("--compile-backend", default=None, help="torch.compile backend (default inductor, eager with --smoke)")
    args = parser.parse_args(argv)
    if args.budget_s is None:
        args.budget_s = 300.0 if args.smoke else 420.0
    if args.smoke:
        tiny = smoke_config()
        settings = Settings(
            smoke=True, seed=args.seed, parity_config=tiny, parity_boxes=4, variants={"smoke_64px": tiny},
            batches=(1, 2), compiled=(("smoke_64px", 2),), compile_backend=args.compile_backend or "eager",
            box_counts=(4, 80), peak_size=256, warmup=1, repeats=2, call_seconds=0.2, sync_images=2,
            pipeline_images=8, pipeline_hw=(64, 64), pipeline_boxes=3, pipeline_scenes=2, pipeline_runs=((1, 1.0, 2),),
            pipeline_dtype=args.pipeline_dtype, pipeline_batch_size=4, pipeline_masks=args.pipeline_masks,
            sections=args.sections, torch_threads=1,
        )
    else:
        settings = Settings(
            smoke=False, seed=args.seed, parity_config=SamHQConfig.from_variant("vit_b"), parity_boxes=16,
            variants={name: SamHQConfig.from_variant(name) for name in ("vit_b", "vit_l", "vit_h")},
            batches=(1, 8, 16), compiled=(("vit_b", 8), ("vit_h", 8)), compile_backend=args.compile_backend or "inductor",
            box_counts=(16, 64, 256), peak_size=8192, warmup=args.warmup, repeats=args.repeats, call_seconds=1.5,
            sync_images=4, pipeline_images=args.pipeline_images, pipeline_hw=(1080, 1920),
            pipeline_boxes=args.pipeline_boxes, pipeline_scenes=4, pipeline_runs=((1, 1.0, 1), (1, 1.0, 2), (2, 0.5, 1)),
            pipeline_dtype=args.pipeline_dtype, pipeline_batch_size=args.pipeline_batch_size,
            pipeline_masks=args.pipeline_masks, sections=args.sections, torch_threads=None,
        )
    return args, settings
