"""The batched CPU decoding kernels compute the attentions they replace, and give a row the same
result alone as in any batch."""

from __future__ import annotations

import warnings

import pytest
import torch
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from af2.model import cpu_decode
from af2.model.cpu_decode import decode_kernels_on, fused_audio_attention, precompile, text_decode_attention
from af2.model.cpu_pack import lay_out_for_cpu, packs
from af2.model.xattn import audio_attention

HAS_BF16, HAS_FP32 = packs(torch.bfloat16), packs(torch.float32)  # what this CPU packs (af2.model.cpu_pack)
TOL = {torch.float32: 1e-5, torch.bfloat16: 2e-2}


class _Attn(torch.nn.Module):  # what Transformers' attention functions read from the module
    def __init__(self, groups: int):
        super().__init__()
        self.num_key_value_groups, self.is_causal = groups, True


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("heads,kv_heads", [(14, 2), (4, 4)])
def test_text_decode_attention_equals_sdpa(dtype, heads, kv_heads):
    g = torch.Generator().manual_seed(0)
    B, S, d = 3, 11, 16
    module = _Attn(heads // kv_heads)
    q = torch.randn(B, heads, 1, d, generator=g).to(dtype)
    k, v = (torch.randn(B, kv_heads, S, d, generator=g).to(dtype) for _ in range(2))
    pad = torch.ones(B, 1, 1, S, dtype=torch.bool)
    pad[1, ..., :4] = False  # row 1 left-padded
    shared = torch.ones(1, 1, 1, S, dtype=torch.bool)
    shared[..., :2] = False  # one mask broadcast over every row
    for mask in (None, pad, shared):
        got, _ = text_decode_attention(module, q, k, v, mask, scaling=d ** -0.5)
        want, _ = sdpa_attention_forward(module, q, k, v, mask, scaling=d ** -0.5)
        assert got.shape == want.shape == (B, 1, heads, d)
        assert torch.allclose(got.float(), want.float(), rtol=TOL[dtype], atol=TOL[dtype]), (got - want).abs().max()
        alone = torch.cat([text_decode_attention(module, q[i:i + 1], k[i:i + 1], v[i:i + 1],
                                                 None if mask is None else mask[min(i, mask.shape[0] - 1)][None])[0]
                           for i in range(B)])
        assert torch.equal(got, alone)  # batch = alone
    prompt = torch.randn(B, heads, 5, d, generator=g).to(dtype)  # several queries: SDPA itself
    assert torch.equal(text_decode_attention(module, prompt, k, v, None)[0],
                       sdpa_attention_forward(module, prompt, k, v, None)[0])


@pytest.fixture
def fresh_dynamo():
    """Compiled graphs of other shapes do not count against Dynamo's recompile limit here."""
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


@pytest.mark.usefixtures("fresh_dynamo")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fused_audio_attention_equals_the_eager_form_row_by_row(dtype):
    g = torch.Generator().manual_seed(0)
    B, H, N, d = 4, 4, 192, 32
    q = torch.randn(B, 1, H, d, generator=g).to(dtype).transpose(1, 2)  # as the block makes it: a view
    k, v = (torch.randn(B, H, N, d, generator=g).to(dtype) for _ in range(2))
    with torch.inference_mode():  # as decoding makes them
        q, k, v = q.clone(), k.clone(), v.clone()
    pad = torch.ones(B, 1, 1, N, dtype=torch.bool)
    pad[2, ..., 64:] = False  # row 2 has one window of three
    with torch.inference_mode():
        for mask in (None, pad):
            got = fused_audio_attention(q, k, v, mask)
            want = audio_attention(q, k, v, mask)
            assert torch.allclose(got.float(), want.float(), rtol=TOL[dtype], atol=TOL[dtype]), (got - want).abs().max()
            for rows in ([0], [1, 2], [3, 0, 2]):
                idx = torch.tensor(rows)
                part = fused_audio_attention(q[idx], k[idx], v[idx], None if mask is None else mask[idx])
                assert torch.equal(part, got[idx]), rows  # a row's bits do not depend on its batch
        prompt = torch.randn(B, H, 3, d, generator=g).to(dtype)  # several queries: the eager form
        assert torch.equal(fused_audio_attention(prompt, k, v, pad), audio_attention(prompt, k, v, pad))


def test_fused_audio_attention_is_compiled_for_bf16_rows_only(monkeypatch):
    calls = []

    def spy():
        def attention(*args):
            calls.append(args[0].dtype)
            return audio_attention(*args)
        return attention

    monkeypatch.setattr(cpu_decode, "_compiled_audio_attention", spy)
    g = torch.Generator().manual_seed(0)
    for dtype, T in ((torch.bfloat16, 1), (torch.bfloat16, 3), (torch.float32, 1)):
        q = torch.randn(2, 2, T, 8, generator=g).to(dtype)
        k, v = (torch.randn(2, 2, 64, 8, generator=g).to(dtype) for _ in range(2))
        fused_audio_attention(q, k, v, None)
    assert calls == [torch.bfloat16]


def test_fused_audio_attention_falls_back_once_when_it_cannot_compile(monkeypatch):
    def broken():
        def fail(*args):
            raise RuntimeError("no C++ compiler")
        return fail

    monkeypatch.setattr(cpu_decode, "_compiled_audio_attention", broken)
    monkeypatch.setattr(cpu_decode, "_COMPILE_FAILED", [])
    g = torch.Generator().manual_seed(0)
    q = torch.randn(2, 2, 1, 8, generator=g).bfloat16()
    k, v = (torch.randn(2, 2, 64, 8, generator=g).bfloat16() for _ in range(2))
    with pytest.warns(UserWarning, match="could not compile.*no C\\+\\+ compiler"):
        assert torch.equal(fused_audio_attention(q, k, v, None), audio_attention(q, k, v, None))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once only
        assert torch.equal(fused_audio_attention(q, k, v, None), audio_attention(q, k, v, None))


@pytest.mark.usefixtures("fresh_dynamo")
@pytest.mark.parametrize("dtype", [
    pytest.param(torch.bfloat16, marks=pytest.mark.skipif(not HAS_BF16, reason="needs oneDNN's bf16 kernels")),
    pytest.param(torch.float32, marks=pytest.mark.skipif(not HAS_FP32, reason="fp32 packs on AVX-512 only"))])
def test_batched_layout_decodes_as_the_plain_model_and_rows_as_alone(three_rows, dtype):
    model, run = three_rows(dtype)
    plain_tokens, plain_logits = run([0, 1, 2])
    assert not decode_kernels_on(model.lm)
    assert lay_out_for_cpu(model.lm, torch.device("cpu"), decode_batch=8) == "packed" and decode_kernels_on(model.lm)
    assert all(layer.xattn is None or layer.xattn.attn.kernel is fused_audio_attention for layer in model.decoder_layers)
    tokens, logits = run([0, 1, 2])
    assert tokens == plain_tokens
    # Other kernels, the same sums in another order: in bf16 a few units in the last place of logits
    # around 10 (0.0625 each) after every layer's roundings; in fp32 oneDNN's packed kernels already differ.
    tol = 0.5 if dtype == torch.bfloat16 else 1e-4
    assert torch.allclose(logits, plain_logits, rtol=0, atol=tol), (logits - plain_logits).abs().max()
    for r in range(3):
        alone_tokens, alone_logits = run([r])
        assert alone_tokens[0] == tokens[r]
        if dtype == torch.bfloat16:  # batch = alone, bit for bit
            assert torch.equal(alone_logits[:, 0], logits[:, r])
        else:  # fp32: oneDNN's one-row and several-row kernels sum wide rows in other orders (cpu_pack)
            assert torch.allclose(alone_logits[:, 0], logits[:, r], rtol=1e-4, atol=1e-4)


@pytest.mark.usefixtures("fresh_dynamo")
@pytest.mark.skipif(not HAS_BF16, reason="needs oneDNN's bf16 kernels")
def test_precompile_covers_what_decoding_calls(three_rows):
    from torch._dynamo.utils import counters

    model, run = three_rows(torch.bfloat16)
    assert precompile(model.lm) == 0.0  # kernels off: nothing to do
    lay_out_for_cpu(model.lm, torch.device("cpu"), decode_batch=8)
    assert precompile(model.lm) > 0
    compiled = counters["stats"]["unique_graphs"]
    for rows in ([0, 1, 2], [0, 2], [1], [0]):  # padded and unpadded audio, several rows and one
        run(rows)
    assert counters["stats"]["unique_graphs"] == compiled  # no compile on the way
