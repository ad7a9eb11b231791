"""What more than one benchmark in bench/ measures the same way: the analytic FLOP count of
the ViT encoder, the IoU of binarised masks, the largest difference of two outputs, the
CPU's name for the reports, and how much CPU others took during a run (Linux: /proc/stat).
The benchmarks run as scripts (`python bench/<name>.py`), which puts this directory on
`sys.path`: they import it as `benchlib`."""

import math
import os
import platform
from typing import Tuple

import torch

from samhq_core.config import SamHQVisionConfig


def encoder_flops(v: SamHQVisionConfig) -> float:
    """Analytic FLOPs (2 per multiply-add) of one ViT encoder forward on one image: patch
    embed, qkv / proj / MLP linears, attention QK^T and AV, the decomposed relative-position
    einsums, the neck. Windowed blocks count the work as executed: the grid is zero-padded to
    a multiple of the window (64 x 64 → 70 x 70 in 25 windows of 14 x 14 at 1024 px), so qkv,
    proj and attention run on the padded tokens. Elementwise work (norms, softmax, GELU, bias
    adds) is not counted."""
    grid = v.image_size // v.patch_size
    dim, heads = v.hidden_size, v.num_attention_heads
    head_dim, mlp_dim, tokens = dim // heads, int(dim * v.mlp_ratio), grid * grid
    macs = tokens * dim * v.num_channels * v.patch_size**2  # patch embedding
    for i in range(v.num_hidden_layers):
        side = grid if i in v.global_attn_indexes else v.window_size
        windows = math.ceil(grid / side) ** 2
        window_tokens = side * side
        executed = windows * window_tokens  # tokens incl. window padding
        macs += executed * dim * 3 * dim + executed * dim * dim  # qkv, proj
        macs += 2 * windows * heads * window_tokens * window_tokens * head_dim  # QK^T, AV
        macs += 2 * windows * heads * window_tokens * side * head_dim  # rel-pos einsums along h and w
        macs += 2 * tokens * dim * mlp_dim  # MLP
    macs += tokens * dim * v.output_channels + tokens * v.output_channels**2 * 9  # neck: 1x1 and 3x3 convs
    return 2.0 * macs


def mask_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU per mask of two boolean (N, H, W) stacks; 1 where both are empty."""
    inter = (a & b).flatten(1).sum(1).float()
    union = (a | b).flatten(1).sum(1).float()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))


def max_abs_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.float() - b.float()).abs().max().item()


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else what `platform` knows."""
    try:
        with open("/proc/cpuinfo") as f:
            return next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")),
                        platform.processor())
    except OSError:
        return platform.processor()


def cpu_counters(children: bool = False) -> Tuple[float, float, float]:
    """(CPU seconds busy on the whole machine, stolen by the hypervisor, used by this process) so far;
    with `children`, this process's count includes the child processes it has waited for (a bench
    that measures in subprocesses of its own)."""
    with open("/proc/stat") as f:
        user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in f.readline().split()[1:9])
    tick = os.sysconf("SC_CLK_TCK")
    own = os.times()
    waited = own.children_user + own.children_system if children else 0.0
    return (user + nice + system + irq + softirq) / tick, steal / tick, own.user + own.system + waited


def contention(start: Tuple[float, float, float], runtime: float, children: bool = False) -> str:
    """How much CPU other processes and the hypervisor took during the run, as a share of all cores
    (`start` from `cpu_counters(children)`, with the same `children`)."""
    busy, steal, own = (b - a for a, b in zip(start, cpu_counters(children), strict=True))
    capacity = runtime * os.cpu_count()
    return (f"other processes used {busy - own:.0f} CPU-s ({(busy - own) / capacity:.0%} of the machine), "
            f"hypervisor steal {steal:.0f} CPU-s ({steal / capacity:.0%})")
