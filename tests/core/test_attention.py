"""The encoder's two ways of adding decomposed relative positions to attention: the blocked
SDPA bias (CPU, windowed blocks) and FlexAttention's score_mod (global blocks on a GPU) give
the same attention; here FlexAttention runs its unfused reference, as on a CPU."""

import warnings

import torch

from samhq_core.modeling.image_encoder import (
    decomposed_rel_pos,
    rel_pos_bias_attention,
    rel_pos_flex_attention,
    use_flex_attention,
)


def test_flex_attention_adds_the_same_relative_positions_as_the_bias():
    generator = torch.Generator().manual_seed(0)
    batch, heads, h, w, dim = 2, 3, 6, 10, 16  # h != w, so that row and column cannot be swapped unnoticed
    q, k, v = (torch.randn(batch, heads, h * w, dim, generator=generator) for _ in range(3))
    table_h = torch.randn(2 * h - 1, dim, generator=generator)
    table_w = torch.randn(2 * w - 1, dim, generator=generator)
    rel_h, rel_w = decomposed_rel_pos(q, table_h, table_w, (h, w))
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
