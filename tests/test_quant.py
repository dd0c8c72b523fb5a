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
from af2.model.quant import Int8Embedding, Int8Linear, quantize_int8, quantize_rows
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


def test_quantize_int8_shares_the_tied_table(official_model):
    model = copy.deepcopy(official_model[0])
    before = sum(m.weight.numel() for m in model.lm.modules() if isinstance(m, (nn.Linear, nn.Embedding))
                 and m is not model.lm.lm_head)
    count = quantize_int8(model.lm)
    assert count == before
    assert isinstance(model.lm.model.embed_tokens, Int8Embedding) and isinstance(model.lm.lm_head, Int8Linear)
    assert model.lm.lm_head.weight is model.lm.model.embed_tokens.weight
    assert not any(isinstance(m, nn.Linear) for m in model.lm.modules())
    ids = torch.tensor([[3, 7, 11]])
    codes, scale = quantize_rows(official_model[0].lm.model.embed_tokens.weight)
    torch.testing.assert_close(model.lm.model.embed_tokens(ids), (codes[ids].float() * scale[ids, None].float()))


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
    quantize_int8(after.lm)
    got, want = direct.state_dict(), after.state_dict()
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)
    assert direct.lm.lm_head.weight is direct.lm.model.embed_tokens.weight
    assert direct.lm.model.embed_tokens.dtype == torch.bfloat16
    api = af2.load(folder, dtype="int8")
    assert api.dtype_name == "int8" and isinstance(api.model.lm.lm_head, Int8Linear)
    official = build_official(fixture_dir / "checkpoint", model.cfg, torch.bfloat16, int8=True)
    got = official.state_dict()
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)
