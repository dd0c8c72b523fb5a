"""Reduced precision: int8 weight-only linears against their dequantized reference, and greedy
answers of bf16 and int8 models against fp32 on the golden fixture."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from torch import nn

import af2
from af2 import inference
from af2.config import af2_config
from af2.model.af2 import AF2Model
from af2.model.quant import Int8DequantLinear, Int8Embedding, Int8Linear, quantize_int8, quantize_rows
from af2.parity import fixture_config


@pytest.mark.parametrize("shape", [(48, 64), (516, 64), (24, 40)])  # 40: not a multiple of 16, dequantized path
def test_int8_linear_matches_its_dequantized_reference(shape):
    g = torch.Generator().manual_seed(0)
    linear = nn.Linear(shape[1], shape[0], bias=True)
    with torch.no_grad():
        linear.weight.copy_(torch.randn(shape, generator=g) * torch.rand(shape[0], 1, generator=g))
    q = Int8Linear.from_linear(linear)
    assert q.weight.dtype == torch.int8 and q.weight.abs().max() <= 127
    # Quantization error: at most half a step of each row's scale (plus bf16 rounding of the scale).
    err = (q.dequantized().float() - linear.weight).abs()
    assert bool((err <= q.scale.float()[:, None] * 0.51).all())
    x = torch.randn(3, 5, shape[1], generator=g)
    want = nn.functional.linear(x.bfloat16().float(), q.dequantized()) + linear.bias
    got = q(x)
    assert got.shape == (3, 5, shape[0]) and got.dtype == torch.float32
    torch.testing.assert_close(got, want, atol=2e-2, rtol=2e-2)
    # Rows are independent: a batch computes what each row computes alone (bit for bit in the int8 kernel;
    # the dequantized fallback for K % 16 != 0 runs a bf16 matmul whose blocking may depend on the batch).
    if shape[1] % 16 == 0:
        assert torch.equal(q(x[:1]), got[:1])
    else:
        torch.testing.assert_close(q(x[:1]), got[:1], atol=1e-2, rtol=1e-2)


def test_int8_dequant_linear_is_the_float_linear_of_its_dequantized_weight():
    g = torch.Generator().manual_seed(1)
    linear = nn.Linear(40, 24)  # 40: any width, no kernel constraint
    with torch.no_grad():
        linear.weight.copy_(torch.randn(24, 40, generator=g) * torch.rand(24, 1, generator=g))
    q = Int8DequantLinear.from_linear(linear)
    assert q.weight.dtype == torch.int8
    x = torch.randn(2, 7, 40, generator=g)
    # Dequantizing in the input's dtype is exact (q · s rounded once): the same float matmul.
    assert torch.equal(q(x), nn.functional.linear(x, q.dequantized(), linear.bias))
    xb = x.bfloat16()
    assert torch.equal(q(xb), nn.functional.linear(xb, q.dequantized().bfloat16(), linear.bias.bfloat16()))


def _dequantized_copy(model: AF2Model, quantized: AF2Model) -> AF2Model:
    """``model`` holding, in every quantized linear and the embedding, the weights its int8 codes stand for."""
    ref = copy.deepcopy(model)
    with torch.no_grad():
        for name, module in quantized.named_modules():
            if isinstance(module, (Int8Linear, Int8Embedding)):
                weight = module.weight.float() * module.scale.float()[:, None]
                ref.get_submodule(name).weight.copy_(weight)
    return ref


def test_quantize_int8_covers_every_linear_and_shares_the_tied_table(official_model):
    model = official_model[0]
    quantized = copy.deepcopy(model)
    before = sum(m.weight.numel() for m in model.modules() if isinstance(m, (nn.Linear, nn.Embedding))
                 and m is not model.lm.lm_head)
    assert quantize_int8(quantized) == before
    lm = quantized.lm
    assert isinstance(lm.model.embed_tokens, Int8Embedding) and isinstance(lm.lm_head, Int8Linear)
    assert lm.lm_head.weight is lm.model.embed_tokens.weight and lm.lm_head.scale is lm.model.embed_tokens.scale
    assert not any(isinstance(m, nn.Linear) for m in quantized.modules())
    assert all(type(m) is Int8DequantLinear for tower in (quantized.audio_encoder, quantized.audio_transformer)
               for m in tower.modules() if isinstance(m, Int8Linear))
    ref = _dequantized_copy(model, quantized)
    # Embedding: the rows looked up are the dequantized rows, exactly.
    ids = torch.tensor([[3, 7, 11], [0, 5, lm.model.embed_tokens.num_embeddings - 1]])
    codes, scale = quantize_rows(model.lm.model.embed_tokens.weight)
    want = codes[ids].float() * scale[ids, None].float()
    assert torch.equal(lm.model.embed_tokens(ids), want) and torch.equal(ref.lm.model.embed_tokens(ids), want)
    # Tied head: logits from the int8 kernel against the float product with the dequantized table.
    hidden = torch.randn(2, 3, model.lm.config.hidden_size, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(lm.lm_head(hidden), ref.lm.lm_head(hidden.bfloat16().float()), atol=2e-2, rtol=2e-2)
    # Audio side (dequantized per call, in fp32 here): the float model with the dequantized weights, exactly.
    mel = torch.randn(2, model.cfg.audio.frames_per_window, model.cfg.audio.n_mels,
                      generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        tokens = quantized.audio_encoder(mel)
        assert torch.equal(tokens, ref.audio_encoder(mel))
        mask = torch.ones(1, tokens.shape[0] * tokens.shape[1], dtype=torch.bool)
        flat = tokens.reshape(1, -1, tokens.shape[-1])
        assert torch.equal(quantized.audio_transformer(flat, mask), ref.audio_transformer(flat, mask))


def test_int8_weights_are_half_of_bf16_at_af2_05b():
    def weight_bytes(model):
        tensors = {id(t): t for t in [*model.parameters(), *model.buffers()]}  # the tied table once
        return sum(t.numel() * t.element_size() for t in tensors.values())

    with torch.device("meta"):
        bf16 = AF2Model(af2_config("0.5b")).to(torch.bfloat16)
        bytes_bf16 = weight_bytes(bf16)
        quantize_int8(bf16)
    ratio = weight_bytes(bf16) / bytes_bf16
    assert 0.5 < ratio < 0.51, ratio  # scales, biases, norms and convolutions stay in bf16


def _teacher_forced(api, wav, question, answer_ids):
    windows, _ = api._load(wav)
    with torch.inference_mode():
        audio = api.model.encode_audio(windows[None], torch.ones(1, windows.shape[0]), cache_kv=True)
        prompt = api._prompt_ids(question)
        ids = torch.tensor([prompt + list(answer_ids)])
        out = api.model(input_ids=ids, attention_mask=torch.ones_like(ids), audio=audio)
    return out.logits[0, len(prompt) - 1:-1].float()  # the logits that chose each answer token


@pytest.mark.parametrize("dtype", ["bfloat16", "int8"])
def test_reduced_precision_greedy_agrees_with_fp32(fixture_dir, dtype):
    cases = json.loads((fixture_dir / "cases.json").read_text())["cases"]
    load = dict(config=fixture_config(fixture_dir), max_audio_seconds=120)
    ref, low = (af2.load(fixture_dir / "checkpoint", dtype=d, **load) for d in ("float32", dtype))
    steps = agree = 0
    for case, spec in cases.items():
        want = ref.ask(fixture_dir / spec["file"], spec["prompt_text"], max_new_tokens=12)
        base = _teacher_forced(ref, fixture_dir / spec["file"], spec["prompt_text"], want.token_ids)
        logits = _teacher_forced(low, fixture_dir / spec["file"], spec["prompt_text"], want.token_ids)
        same = logits.argmax(-1) == base.argmax(-1)
        top2 = base.topk(2, dim=-1).values
        margin = top2[:, 0] - top2[:, 1]
        error = (logits - base).abs().amax(-1)
        print(f"{dtype} {case}: {int(same.sum())}/{len(same)} steps agree; fp32 top-2 margins where they differ "
              f"{margin[~same].tolist()}, max |logit error| there {error[~same].tolist()}")
        steps, agree = steps + len(same), agree + int(same.sum())
        # Quality bound: the logit error stays a small fraction of the logits' spread.
        assert float(error.max()) < 0.15 * float(base.std()), case
        if dtype == "bfloat16":
            assert low.ask(fixture_dir / spec["file"], spec["prompt_text"], max_new_tokens=12).token_ids == \
                want.token_ids, case
    assert agree >= 0.9 * steps


def test_default_dtype_follows_the_cpu(monkeypatch):
    monkeypatch.setattr(inference, "cpu_has_fast_bf16", lambda: True)
    assert inference.resolve_dtype(None, "cpu") == (torch.bfloat16, False)
    assert inference.resolve_dtype("int8", "cpu") == (torch.bfloat16, True)
    monkeypatch.setattr(inference, "cpu_has_fast_bf16", lambda: False)
    assert inference.resolve_dtype(None, "cpu") == (torch.float32, False)
    with pytest.warns(UserWarning, match="no native bfloat16"):
        assert inference.resolve_dtype("bfloat16", "cpu") == (torch.bfloat16, False)
    assert inference.resolve_dtype("float32", "cpu") == (torch.float32, False)
    with pytest.raises(ValueError, match="unknown dtype"):
        inference.resolve_dtype("int4", "cpu")


def test_int8_quantized_while_loading_equals_quantized_after(official_model, fixture_dir, tmp_path):
    from af2.checkpoint.folder import load_pretrained, save_pretrained
    from af2.checkpoint.official import build_official

    model, tokenizer, _ = official_model
    folder = save_pretrained(model, tmp_path / "m", tokenizer)
    direct = load_pretrained(folder, torch.bfloat16, int8=True)
    after = load_pretrained(folder, torch.bfloat16)
    quantize_int8(after)
    got, want = direct.state_dict(), after.state_dict()
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)
    assert direct.lm.lm_head.weight is direct.lm.model.embed_tokens.weight
    assert direct.lm.model.embed_tokens.dtype == torch.bfloat16
    api = af2.load(folder, dtype="int8")
    assert api.dtype_name == "int8" and isinstance(api.model.lm.lm_head, Int8Linear)
    official = build_official(fixture_dir / "checkpoint", model.cfg, torch.bfloat16, int8=True)
    got = official.state_dict()
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)
