"""Model invariants: zero gates leave the LM unchanged, batch equals single, cached equals
uncached, Llama-family LMs work, and the official parity fixture passes end to end."""

from __future__ import annotations

import copy

import pytest
import torch

from af2.config import AF2Config, tiny_config
from af2.generate import GenerationConfig, generate, left_pad
from af2.model.af2 import AF2Model, build_lm


def _audio(seed: int, windows: int, samples: int = 160_000) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(windows, samples, generator=g) * 2 - 1) * 0.5


def test_official_fixture_parity(fixture_dir):
    from af2.parity import run_parity

    checks = run_parity(fixture_dir, log=lambda line: None)
    failed = [c.line() for c in checks if not c.passed]
    assert len(checks) >= 40 and not failed, failed


@pytest.mark.parametrize("model_type", ["qwen2", "llama"])
def test_zero_gates_leave_lm_unchanged(model_type, open_gates):
    cfg = tiny_config()
    if model_type == "llama":
        lm = {k: v for k, v in cfg.lm.items()}
        lm.update(model_type="llama", architectures=["LlamaForCausalLM"])
        cfg = AF2Config(**{**cfg.__dict__, "lm": lm})
    torch.manual_seed(0)
    plain = build_lm(cfg).eval()
    model = AF2Model(cfg, lm=copy.deepcopy(plain)).eval()
    ids = torch.randint(0, 500, (2, 9))
    windows = torch.stack([_audio(1, 2), _audio(2, 2)])
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    with torch.no_grad():
        want = plain(input_ids=ids).logits
        got = model(windows, mask, ids).logits
        assert torch.equal(got, want), (got - want).abs().max()
        open_gates(model, torch.Generator().manual_seed(3))
        moved = model(windows, mask, ids).logits
    assert (moved - want).abs().max() > 1e-3, "open gates must let the audio change the logits"


@pytest.fixture(scope="module")
def tiny_model(official_model):
    """The fixture's official tiny checkpoint: random weights drawn so that greedy decoding is not
    stuck on one token and audio moves the logits (see the fixture README)."""
    return official_model[0]


def _greedy(model, clips, prompts, cache_kv=True, max_new=6):
    from af2.audio import pad_windows

    windows, mask = pad_windows(clips, 30)
    audio = model.encode_audio(windows, mask, cache_kv=cache_kv)
    ids, attn = left_pad(prompts, pad_id=514)
    return generate(model, audio, ids, attn, GenerationConfig(max_new_tokens=max_new), stop_ids=(500,), pad_id=514)


def test_batch_equals_single_for_1_to_30_windows(tiny_model):
    lengths = [1, 7, 30, 3]
    clips = [_audio(10 + i, n) for i, n in enumerate(lengths)]
    prompts = [[512, 5, 6, 515], [512, 7, 8, 9, 10, 11, 515], [512, 3, 515], [512, 40, 41, 42, 515]]
    batch = _greedy(tiny_model, clips, prompts)
    single = [_greedy(tiny_model, [c], [p])[0] for c, p in zip(clips, prompts)]
    assert batch == single
    assert len({tuple(s) for s in single}) > 1, "different audio and prompts should not all decode alike"


def test_cached_audio_kv_matches_uncached(tiny_model):
    clips = [_audio(20, 2), _audio(21, 5)]
    prompts = [[512, 5, 6, 515], [512, 9, 515]]
    assert _greedy(tiny_model, clips, prompts, cache_kv=True) == _greedy(tiny_model, clips, prompts, cache_kv=False)


def test_audio_changes_the_answer(tiny_model):
    prompts = [[512, 5, 6, 515]]
    a = _greedy(tiny_model, [_audio(30, 1)], prompts, max_new=8)
    b = _greedy(tiny_model, [torch.zeros(1, 160_000)], prompts, max_new=8)
    assert a != b


def test_encode_rejects_items_without_audio(tiny_model):
    with pytest.raises(ValueError, match="at least one real audio window"):
        tiny_model.encode_audio(torch.zeros(1, 2, 160_000), torch.zeros(1, 2))


def test_sampling_is_seeded_and_respects_top_k(tiny_model):
    from af2.audio import pad_windows

    windows, mask = pad_windows([_audio(40, 1)], 30)
    audio = tiny_model.encode_audio(windows, mask, cache_kv=True)
    ids, attn = left_pad([[512, 5, 515]], 514)
    gen = GenerationConfig(max_new_tokens=8, do_sample=True, temperature=1.5, top_k=5, top_p=0.9, seed=7)
    logits: list[torch.Tensor] = []
    a = generate(tiny_model, audio, ids, attn, gen, (500,), 514, logits)
    b = generate(tiny_model, audio, ids, attn, gen, (500,), 514)
    assert a == b
    for step, tok in zip(logits, a[0]):
        assert tok in step[0].topk(5).indices.tolist()
    with pytest.raises(ValueError):
        GenerationConfig(do_sample=True, temperature=0.0)


def test_output_scale_multiplies_the_gated_branches():
    """xattn.output_scale s: x + tanh(g)·s·attn(x) and x + tanh(g)·s·ff(x); s = 1 is the official block and
    zero gates still leave the LM unchanged for any s."""
    from dataclasses import replace

    from af2.model.xattn import GatedCrossAttentionBlock

    cfg = tiny_config()
    torch.manual_seed(0)
    one = GatedCrossAttentionBlock(32, 24, replace(cfg.xattn, heads=2, dim_head=8, ff_mult=2))
    scaled = GatedCrossAttentionBlock(32, 24, replace(cfg.xattn, heads=2, dim_head=8, ff_mult=2, output_scale=20.0))
    scaled.load_state_dict(one.state_dict())
    x, audio = torch.randn(2, 5, 32), torch.randn(2, 7, 24)
    mask = torch.ones(2, 1, 1, 7, dtype=torch.bool)
    with torch.no_grad():
        assert torch.equal(scaled(x, mask, scaled.attn.keys_values(audio)), x)  # gates at 0
        for block in (one, scaled):
            block.attn_gate.fill_(0.3)
        attn = one.attn(x, mask, one.attn.keys_values(audio))
        want = x + torch.tanh(torch.tensor(0.3)) * 20.0 * attn  # ff gate still 0
        torch.testing.assert_close(scaled(x, mask, scaled.attn.keys_values(audio)), want)


def test_unpadded_audio_skips_the_mask_and_computes_the_same():
    from af2.config import XAttnConfig
    from af2.model.xattn import AudioContext, MaskedCrossAttention

    torch.manual_seed(0)
    attn = MaskedCrossAttention(16, 8, XAttnConfig(heads=2, dim_head=4))
    x, audio = torch.randn(2, 3, 16), torch.randn(2, 6, 8)
    kv = attn.keys_values(audio)
    full = AudioContext(audio, torch.ones(2, 6, dtype=torch.bool))
    padded = AudioContext(audio, torch.tensor([[True] * 6, [True] * 4 + [False] * 2]))
    assert full.all_real and full.attention_mask(3) is None  # no padding: nothing to mask
    assert not padded.all_real and padded.attention_mask(3).shape == (2, 1, 1, 6)
    with torch.no_grad():
        skipped = attn(x, None, kv)
        assert torch.equal(skipped, attn(x, full.mask[:, None, None, :], kv))  # an all-true mask changes nothing
        assert torch.equal(attn(x, padded.attention_mask(3), kv)[:1], skipped[:1])  # the unpadded row
        assert not torch.allclose(attn(x, padded.attention_mask(3), kv)[1:], skipped[1:])  # padding is masked
    # off the CPU the check is not made (it would sync the host at every training step): the mask stays
    on_meta = AudioContext(audio.to("meta"), torch.ones(2, 6, dtype=torch.bool, device="meta"))
    assert not on_meta.all_real and on_meta.attention_mask(3).shape == (2, 1, 1, 6)
