"""The encoder's four ways of adding decomposed relative positions to attention: the blocked
SDPA bias (fp32 on CPU, windowed blocks), FlexAttention's score_mod (global blocks on a GPU;
here its unfused reference runs, as on a CPU), the bias folded into the dot products (bf16
on a CPU with AMX) and explicit matmul scores (bf16 global blocks on a CPU with AVX512-BF16
and no AMX) give the same attention."""

import warnings

import pytest
import torch

from samhq_core.modeling.image_encoder import (
    cpu_has_amx_bf16,
    cpu_has_avx512_bf16,
    decomposed_rel_pos,
    rel_pos_bias_attention,
    rel_pos_explicit_attention,
    rel_pos_flex_attention,
    rel_pos_folded_attention,
    use_explicit_scores,
    use_flex_attention,
    use_folded_rel_pos,
)


def _attention_inputs(dtype=torch.float32):
    generator = torch.Generator().manual_seed(0)
    batch, heads, h, w, dim = 2, 3, 6, 10, 16  # h != w, so that row and column cannot be swapped unnoticed
    q, k, v = (torch.randn(batch, heads, h * w, dim, generator=generator) for _ in range(3))
    table_h = torch.randn(2 * h - 1, dim, generator=generator)
    table_w = torch.randn(2 * w - 1, dim, generator=generator)
    q, k, v = q.to(dtype), k.to(dtype), v.to(dtype)
    rel_h, rel_w = decomposed_rel_pos(q, table_h, table_w, (h, w))
    return q, k, v, rel_h, rel_w


def test_flex_attention_adds_the_same_relative_positions_as_the_bias():
    q, k, v, rel_h, rel_w = _attention_inputs()
    expected = rel_pos_bias_attention(q, k, v, rel_h, rel_w)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # flex_attention's "called without torch.compile" notice
        got = rel_pos_flex_attention(q, k, v, rel_h, rel_w)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    plain = torch.nn.functional.scaled_dot_product_attention(q, k, v)
    assert (plain - expected).abs().max() > 0.1  # the positions matter at these magnitudes


def test_flex_attention_only_for_global_blocks_on_a_gpu_with_power_of_two_heads():
    cpu = torch.zeros(1, 1, 4, 64)
    assert not use_flex_attention(cpu, global_attention=True)
    if torch.cuda.is_available():
        assert use_flex_attention(cpu.cuda(), global_attention=True)
        assert not use_flex_attention(cpu.cuda(), global_attention=False)
        assert not use_flex_attention(torch.zeros(1, 1, 4, 80, device="cuda"), global_attention=True)  # vit_h


CPU_PATHS = [rel_pos_folded_attention, rel_pos_explicit_attention]


@pytest.mark.parametrize("attention", CPU_PATHS, ids=["folded", "explicit"])
def test_cpu_paths_add_the_same_relative_positions_as_the_bias(attention):
    q, k, v, rel_h, rel_w = _attention_inputs()
    expected = rel_pos_bias_attention(q, k, v, rel_h, rel_w)
    got = attention(q, k, v, rel_h, rel_w)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    plain = torch.nn.functional.scaled_dot_product_attention(q, k, v)
    assert (plain - expected).abs().max() > 0.1  # the positions matter at these magnitudes


@pytest.mark.parametrize("attention, slack", [(rel_pos_folded_attention, 1.1), (rel_pos_explicit_attention, 1.25)],
                         ids=["folded", "explicit"])
def test_cpu_paths_in_bf16_are_about_as_close_to_fp32_as_the_bias(attention, slack):
    """In bf16 each path rounds elsewhere (the bias path rel_h + rel_w, the folded one nothing
    before the kernel's fp32 sums, the explicit one the scores before the positions are added):
    each is held to the fp32 result on the same bf16 inputs."""
    inputs = _attention_inputs(torch.bfloat16)
    reference = rel_pos_bias_attention(*(t.float() for t in inputs))
    bias_error = (rel_pos_bias_attention(*inputs).float() - reference).abs()
    got = attention(*inputs)
    assert got.dtype == torch.bfloat16
    error = (got.float() - reference).abs()
    assert error.mean() <= slack * bias_error.mean() and error.max() <= slack * bias_error.max()


def test_folded_attention_only_in_reduced_precision_on_a_cpu_with_amx():
    assert not use_folded_rel_pos(torch.zeros(1, 1, 4, 64))  # fp32 keeps the official arithmetic
    assert use_folded_rel_pos(torch.zeros(1, 1, 4, 64, dtype=torch.bfloat16)) == cpu_has_amx_bf16()
    if torch.cuda.is_available():
        assert not use_folded_rel_pos(torch.zeros(1, 1, 4, 64, dtype=torch.bfloat16, device="cuda"))


def test_explicit_scores_only_for_global_bf16_blocks_on_a_cpu_with_avx512_bf16_and_no_amx():
    bf16 = torch.zeros(1, 1, 4, 64, dtype=torch.bfloat16)
    assert use_explicit_scores(bf16, global_attention=True) == (cpu_has_avx512_bf16() and not cpu_has_amx_bf16())
    assert not use_explicit_scores(bf16, global_attention=False)
    assert not use_explicit_scores(torch.zeros(1, 1, 4, 64), global_attention=True)  # fp32: the official arithmetic
    assert not use_explicit_scores(bf16.half(), global_attention=True)
    if torch.cuda.is_available():
        assert not use_explicit_scores(bf16.cuda(), global_attention=True)
