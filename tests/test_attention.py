"""af2.model.attention: the two-matmul attention the audio side takes on CPUs in bf16 computes what
scaled_dot_product_attention computes, masks and query blocks included."""

import pytest
import torch
import torch.nn.functional as F

from af2.config import tiny_config
from af2.model.attention import matmul_attention, use_matmul_attention
from af2.model.audio_transformer import AudioTransformer


def _qkv(n: int, dtype: torch.dtype, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(2, 3, n, 16, generator=g).to(dtype) for _ in range(3))


@pytest.mark.parametrize("n, block", [(10, 192), (50, 8), (50, 7)])  # one block; blocks that divide n; a ragged last one
def test_matmul_attention_equals_sdpa_with_key_mask(n, block):
    q, k, v = _qkv(n, torch.float64)
    keep = torch.ones(2, n, dtype=torch.bool)
    keep[1, n // 2:] = False  # the second item's last keys are padding
    hide = torch.zeros(2, 1, 1, n, dtype=q.dtype).masked_fill(~keep[:, None, None, :], float("-inf"))
    expect = F.scaled_dot_product_attention(q, k, v, attn_mask=keep[:, None, None, :])
    got = matmul_attention(q, k, v, hide, query_block=block)
    torch.testing.assert_close(got, expect, rtol=1e-10, atol=1e-10)


def test_matmul_attention_per_query_bias_is_cut_with_the_queries():
    q, k, v = _qkv(40, torch.float64, seed=1)
    bias = torch.randn(3, 40, 40, generator=torch.Generator().manual_seed(2), dtype=torch.float64)  # (heads, Lq, Lk)
    expect = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
    torch.testing.assert_close(matmul_attention(q, k, v, bias, query_block=16), expect, rtol=1e-10, atol=1e-10)


def test_only_cpu_bf16_takes_it():
    assert use_matmul_attention(torch.zeros(1, dtype=torch.bfloat16))
    assert not use_matmul_attention(torch.zeros(1))


def test_audio_transformer_bf16_on_cpu_matches_its_fp32_sdpa_path():
    """The bf16 model (matmul attention) stays within bf16 rounding of the fp32 model (SDPA),
    padded windows hidden the same way, and padding does not change the real tokens."""
    cfg = tiny_config()
    torch.manual_seed(0)
    at = AudioTransformer(cfg.audio_dim, cfg.audio_transformer).eval()
    tokens = torch.randn(2, 64 * 5, cfg.audio_dim)
    mask = torch.ones(2, 64 * 5, dtype=torch.bool)
    mask[1, 64 * 3:] = False
    with torch.inference_mode():
        ref = at(tokens, mask)
        got = at.to(torch.bfloat16)(tokens.bfloat16(), mask).float()
        alone = at(tokens[1:, :64 * 3].bfloat16(), mask[1:, :64 * 3]).float()
    assert (got - ref).abs().max() < 0.1 * ref.abs().max()
    torch.testing.assert_close(got[1:, :64 * 3], alone, rtol=0.02, atol=0.02)
