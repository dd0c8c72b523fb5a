"""Linear weights pre-packed for oneDNN (bf16, and fp32 on AVX-512 CPUs) compute what the plain linears compute."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import af2
from af2.generate import GenerationConfig, generate, left_pad
from af2.errors import RequestError
from af2.model.cpu_decode import decode_kernels_on
from af2.model.cpu_pack import (AUDIO_ROWS_HINT, PackedHead, PackedLinear, RowLinear, can_pack, cpu_layout, is_packed,
                                  lay_out_audio_for_cpu, lay_out_for_cpu, pack_for_cpu, packs)
from af2.parity import fixture_config

HAS_BF16, HAS_FP32 = packs(torch.bfloat16), packs(torch.float32)  # what this CPU packs (af2.model.cpu_pack)
DTYPES = [pytest.param(torch.bfloat16, marks=pytest.mark.skipif(not HAS_BF16, reason="needs oneDNN's bf16 kernels")),
          pytest.param(torch.float32, marks=pytest.mark.skipif(not HAS_FP32, reason="fp32 packs on AVX-512 only"))]


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("dtype", DTYPES)
def test_packed_linear_equals_the_reference_matmul(dtype, bias):
    g = torch.Generator().manual_seed(0)
    linear = nn.Linear(96, 200, bias=bias).to(dtype)
    packed = PackedLinear(linear)
    w = linear.weight.double()
    for shape in [(1, 96), (3, 96), (8, 1, 96), (2, 5, 96)]:
        x = torch.randn(shape, generator=g).to(dtype)
        y = packed(x)
        assert y.dtype == dtype and y.shape == (*shape[:-1], 200)
        want = x.double() @ w.T + (0 if linear.bias is None else linear.bias.double())
        tol = 2e-2 if dtype == torch.bfloat16 else 1e-5  # bf16: the output's rounding (8 bits)
        assert torch.allclose(y.double(), want, rtol=tol, atol=tol), (y.double() - want).abs().max()
        if dtype == torch.bfloat16:  # the same oneDNN kernel as the plain bf16 linear: bit for bit
            assert torch.equal(y, linear(x)), shape
    x = torch.randn(8, 96, generator=g).to(dtype)
    assert torch.equal(packed(x[:1]), packed(x)[:1])  # rows are independent of the batch
    with pytest.raises(RuntimeError, match="inference only"):
        packed.state_dict()


@pytest.mark.parametrize("dtype", DTYPES)
def test_packed_model_decodes_as_the_plain_one(three_rows, dtype):
    model, run = three_rows(dtype)
    assert can_pack(model.lm, torch.device("cpu")) and not can_pack(model.lm, torch.device("meta"))
    plain_tokens, plain_logits = run([0, 1, 2])
    assert pack_for_cpu(model.lm) > 0 and is_packed(model.lm)
    assert isinstance(model.lm.lm_head, PackedHead) and model.lm.lm_head.weight is model.lm.model.embed_tokens.weight
    assert not any(type(m) is nn.Linear for m in model.lm.modules() if m is not model.lm.lm_head.linear)
    tokens, logits = run([0, 1, 2])
    assert tokens == plain_tokens
    if dtype == torch.bfloat16:
        assert torch.equal(logits, plain_logits)
    else:  # oneDNN's fp32 kernel against MKL's: the same sums, in another order
        assert torch.allclose(logits, plain_logits, rtol=1e-4, atol=1e-4), (logits - plain_logits).abs().max()
    assert [run([r])[0][0] for r in range(3)] == tokens  # batch = alone, packed


def test_load_lays_out_weights_for_the_expected_batch(fixture_dir):
    load = dict(config=fixture_config(fixture_dir), max_audio_seconds=120)
    path = fixture_dir / "checkpoint"
    assert cpu_layout(af2.load(path, dtype="bfloat16", **load).model.lm) == ("rows" if HAS_BF16 else "plain")
    assert cpu_layout(af2.load(path, dtype="bfloat16", decode_batch=8, **load).model.lm) == \
        ("packed" if HAS_BF16 else "plain")
    for batch, hint in ((1, 1), (8, 8)):  # fp32: packed for the batch expected
        lm = af2.load(path, dtype="float32", decode_batch=batch, **load).model.lm
        assert is_packed(lm) == HAS_FP32
        hints = {name.endswith("to_kv"): m.rows_hint for name, m in lm.named_modules() if isinstance(m, PackedLinear)}
        assert hints == ({False: hint, True: AUDIO_ROWS_HINT} if HAS_FP32 else {})  # K/V projections: for audio
    assert cpu_layout(af2.load(path, dtype="int8", **load).model.lm) == "plain"
    int8_batched = af2.load(path, dtype="int8", decode_batch=8, **load).model.lm  # plain weights, batched attention
    assert cpu_layout(int8_batched) == "plain" and decode_kernels_on(int8_batched)
    assert not decode_kernels_on(af2.load(path, dtype="int8", **load).model.lm)
    with pytest.raises(RequestError, match="decode_batch"):
        af2.load(path, decode_batch=0, **load)


@pytest.mark.parametrize("dtype", DTYPES)
def test_packed_audio_path_encodes_as_the_plain_one(official_model, dtype):
    model = copy.deepcopy(official_model[0]).to(dtype).eval()
    g = torch.Generator().manual_seed(0)
    windows, mask = torch.rand(2, 3, 160_000, generator=g) - 0.5, torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    with torch.inference_mode():
        plain = model.encode_audio(windows, mask.to(dtype), cache_kv=True, chunk=2)
        count = lay_out_audio_for_cpu(model, torch.device("cpu"))
        packed = model.encode_audio(windows, mask.to(dtype), cache_kv=True, chunk=2)
    linears = sum(isinstance(m, PackedLinear) for part in (model.audio_encoder, model.audio_transformer)
                  for m in part.modules())
    to_kv = [layer.xattn.attn.to_kv for layer in model.decoder_layers if layer.xattn is not None]
    assert count == linears + len(to_kv) and linears > 0 and all(isinstance(m, PackedLinear) for m in to_kv)
    assert not any(type(m) is nn.Linear for part in (model.audio_encoder, model.audio_transformer)
                   for m in part.modules())
    assert lay_out_audio_for_cpu(model, torch.device("cpu")) == 0  # nothing left to pack
    pairs = [(plain.features, packed.features)] + [(a, b) for p, q in zip(plain.kv, packed.kv) if p is not None
                                                     for a, b in zip(p, q)]
    for a, b in pairs:
        if dtype == torch.bfloat16:  # the same oneDNN kernel, its weight re-laid-out once instead of per call
            assert torch.equal(a, b)
        else:  # oneDNN's fp32 sums against MKL's
            assert torch.allclose(a, b, rtol=1e-4, atol=1e-5), (a - b).abs().max()
    assert torch.equal(plain.mask, packed.mask)


def test_int8_and_non_cpu_audio_paths_stay_plain(official_model, fixture_dir):
    model = copy.deepcopy(official_model[0]).eval()
    assert lay_out_audio_for_cpu(model, torch.device("meta")) == 0
    assert not any(isinstance(m, PackedLinear) for m in model.modules())
    int8 = af2.load(fixture_dir / "checkpoint", dtype="int8", config=fixture_config(fixture_dir),
                    max_audio_seconds=120).model
    assert not any(isinstance(m, PackedLinear) for m in int8.modules())  # its linears carry int8 codes
    if HAS_BF16:  # af2.load packs the audio path where it can
        bf16 = af2.load(fixture_dir / "checkpoint", dtype="bfloat16", config=fixture_config(fixture_dir),
                        max_audio_seconds=120).model
        assert any(isinstance(m, PackedLinear) for m in bf16.audio_encoder.modules())


def test_load_takes_the_layout_asked_for_and_refuses_what_cannot_apply(fixture_dir, tmp_path):
    load = dict(config=fixture_config(fixture_dir), max_audio_seconds=120)
    path = fixture_dir / "checkpoint"
    if HAS_BF16:
        lm = af2.load(path, dtype="bfloat16", cpu_layout="packed", **load).model.lm  # one row, packed anyway
        assert cpu_layout(lm) == "packed" and not decode_kernels_on(lm)
        assert {m.rows_hint for name, m in lm.named_modules() if isinstance(m, PackedLinear)
                and not name.endswith("to_kv")} == {8}
        lm = af2.load(path, dtype="bfloat16", decode_batch=8, cpu_layout="rows", **load).model.lm
        assert cpu_layout(lm) == "rows" and decode_kernels_on(lm)  # a batch's attention kernels, row weights
    missing = tmp_path / "no-such-model"  # refused before any file is read: the path does not exist
    for kwargs, match in (({"cpu_layout": "fast"}, "unknown CPU layout 'fast'; choose from rows, packed"),
                          ({"dtype": "int8", "cpu_layout": "packed"}, "does not apply to int8 or packed weights"),
                          ({"dtype": "float32", "cpu_layout": "rows"}, "does not apply to float32 weights")):
        with pytest.raises(RequestError, match=match):
            af2.load(missing, **kwargs)


@pytest.mark.skipif(not HAS_BF16, reason="needs oneDNN's bf16 kernels")
def test_a_bf16_model_packed_for_one_row_decodes_as_the_row_layout(official_model, open_gates):
    g = torch.Generator().manual_seed(0)
    windows = torch.rand(1, 2, 160_000, generator=g) - 0.5
    runs = []
    for layout in ("rows", "packed"):
        model = copy.deepcopy(official_model[0]).to(torch.bfloat16).eval()
        open_gates(model, torch.Generator().manual_seed(1))
        assert lay_out_for_cpu(model.lm, torch.device("cpu"), decode_batch=1, layout=layout) == layout
        with torch.inference_mode():
            audio = model.encode_audio(windows, torch.ones(1, 2, dtype=torch.bfloat16), cache_kv=True)
        logits: list[torch.Tensor] = []
        ids, attn = left_pad([[5, 6, 7, 8]], 0)
        runs.append((generate(model, audio, ids, attn, GenerationConfig(max_new_tokens=6), (), 0, logits),
                     torch.stack(logits)))
    (rows_tokens, rows_logits), (packed_tokens, packed_logits) = runs
    assert packed_tokens == rows_tokens  # PyTorch's one-row kernel against oneDNN's: bf16 sums in another order
    assert torch.allclose(packed_logits, rows_logits, rtol=0.02, atol=0.02), (packed_logits - rows_logits).abs().max()
    with pytest.raises(ValueError, match="not packed yet"):
        lay_out_for_cpu(model.lm, torch.device("cpu"), layout="rows")  # packed weights cannot go back


@pytest.mark.parametrize("bias", [False, True])
def test_row_linear_keeps_the_parameters_and_computes_the_product(bias):
    g = torch.Generator().manual_seed(0)
    linear = nn.Linear(96, 200, bias=bias).to(torch.bfloat16)
    row = RowLinear.from_linear(linear)
    assert row.weight is linear.weight and row.bias is linear.bias
    assert row.state_dict().keys() == linear.state_dict().keys()
    w = linear.weight.double()
    for shape in [(1, 96), (1, 1, 96), (3, 96), (2, 5, 96)]:
        x = torch.randn(shape, generator=g).to(torch.bfloat16)
        y = row(x)
        want = x.double() @ w.T + (0 if linear.bias is None else linear.bias.double())
        assert y.dtype == torch.bfloat16 and y.shape == (*shape[:-1], 200)
        assert torch.allclose(y.double(), want, rtol=2e-2, atol=2e-2), (y.double() - want).abs().max()
    before = torch.backends.mkldnn.enabled
    row(torch.randn(1, 96).to(torch.bfloat16))
    assert torch.backends.mkldnn.enabled == before  # oneDNN's switch restored after a single row


@pytest.mark.skipif(not HAS_BF16, reason="needs oneDNN's bf16 kernels")
def test_row_layout_decodes_as_the_plain_model_and_packs_later(official_model, open_gates):
    model = copy.deepcopy(official_model[0]).to(torch.bfloat16).eval()
    open_gates(model, torch.Generator().manual_seed(1))
    g = torch.Generator().manual_seed(0)
    windows, mask = torch.rand(2, 2, 160_000, generator=g) - 0.5, torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    with torch.inference_mode():
        audio = model.encode_audio(windows, mask.to(torch.bfloat16), cache_kv=True)
    prompts = [[5, 6, 7, 8], [9, 10]]
    gen = GenerationConfig(max_new_tokens=6)

    def run(row):
        logits: list[torch.Tensor] = []
        ids, attn = left_pad([prompts[row]], 0)
        tokens = generate(model, audio.select(torch.tensor([row])), ids, attn, gen, (), 0, logits)
        return tokens, torch.stack(logits)

    plain = [run(r) for r in range(2)]  # plain weights: oneDNN for every product
    assert lay_out_for_cpu(model.lm, torch.device("cpu"), decode_batch=1) == "rows"
    head = model.lm.get_output_embeddings()
    assert isinstance(head, RowLinear) and head.weight is model.lm.model.embed_tokens.weight  # no second table
    assert not any(type(m) is nn.Linear for m in model.lm.modules())
    for r in range(2):  # PyTorch's one-row kernel against oneDNN's: bf16 sums in another order
        tokens, logits = run(r)
        assert tokens == plain[r][0]
        assert torch.allclose(logits, plain[r][1], rtol=0.02, atol=0.02), (logits - plain[r][1]).abs().max()
    assert lay_out_for_cpu(model.lm, torch.device("cpu"), decode_batch=8) == "packed"
    packed = {name for name, m in model.lm.named_modules() if isinstance(m, PackedLinear)}
    for batch in (1, 8):  # laid out again: nothing changes (the head's plain table is not packed twice)
        assert lay_out_for_cpu(model.lm, torch.device("cpu"), decode_batch=batch) == "packed"
    assert {name for name, m in model.lm.named_modules() if isinstance(m, PackedLinear)} == packed
    assert isinstance(model.lm.get_output_embeddings().linear, nn.Linear)  # the plain table, not packed
    for r in range(2):
        assert run(r)[0] == plain[r][0]
