"""Training parity with the official trainer: ``af2 check-train-parity`` on the public training
fixture, and the official behaviours it relies on, each on a crafted case (label-masking edge
cases, a loss without targets, the few-shot mask, the embedding-row mask, weight-decay groups,
audio_start over-read, audio-transformer dropout)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from af2.audio import AudioError, load_audio
from af2.config import AudioTransformerConfig, XAttnConfig
from af2.model.audio_transformer import AudioTransformer
from af2.model.xattn import AudioContext, MaskedCrossAttention
from af2.tokens import IGNORE_INDEX, SpecialTokens, fewshot_audio_limit, make_labels
from af2.train.alm import EmbeddingGradMask, causal_lm_loss, token_nll
from af2.train.config import OptimConfig, TrainConfig
from af2.train.engine import make_optimizer

IDS = SpecialTokens(audio=12, end_of_chunk=13, pad=14, sep=15, eos=10)
A, EOC, PAD, SEP, EOS, X = 12, 13, 14, 15, 10, IGNORE_INDEX


def test_check_train_parity_passes_on_the_public_fixture(train_fixture_dir, capsys):
    from af2.cli import main

    rc = main(["check-train-parity", str(train_fixture_dir)])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "FAIL" not in out and out.rstrip().endswith(", 0 failed")
    for group in ("items/windows_sha256", "batch/labels", "weight_decay_groups", "loss/a_full_xattn",
                  "loss/b_fewshot_mask", "grad_norms/b_fewshot_mask", "adamw_step/a_full_xattn"):
        assert f"PASS  {group}" in out, group


def test_label_masking_edge_cases():
    ids = torch.tensor([
        [A, 1, 2, SEP, 3, 4, EOC, EOS, PAD, PAD],  # plain
        [A, 1, EOS, 2, SEP, 3, EOC, EOS, PAD, PAD],  # EOS inside the prompt stays a target
        [A, 1, SEP, 3, EOC, 4, 5, EOC, EOS, PAD],  # <|endofchunk|> inside the answer ends the targets
        [A, 1, SEP, 3, A, 4, EOC, EOS, PAD, PAD],  # <audio> inside the answer is never a target
        [A, 1, 2, 3, SEP, 4, 5, 6, 7, 8],  # answer cut by the token limit: no target at all
    ])
    want = torch.tensor([
        [X, X, X, X, 3, 4, EOC, EOS, X, X],
        [X, X, EOS, X, X, 3, EOC, EOS, X, X],
        [X, X, X, 3, EOC, X, X, X, EOS, X],
        [X, X, X, 3, X, 4, EOC, EOS, X, X],
        [X] * 10,
    ])
    assert torch.equal(make_labels(ids, IDS), want)


def test_loss_is_the_mean_over_targets_and_zero_without_any():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 7, requires_grad=True)
    labels = torch.tensor([[X, X, 3, 4, X], [X, X, X, X, X]])  # second row: no target
    loss = causal_lm_loss(logits, labels)
    want = nn.functional.cross_entropy(logits[:, :-1].reshape(-1, 7), labels[:, 1:].reshape(-1))
    assert torch.allclose(loss, want) and token_nll(logits, labels)[1].abs().sum() == 0
    empty = causal_lm_loss(logits, torch.full_like(labels, X))
    empty.backward()
    assert empty.item() == 0.0 and torch.isfinite(logits.grad).all()


def test_fewshot_mask_limits_audio_and_gives_exact_zero_query_gradients():
    ids = torch.tensor([[A, 1, 2, A, 3], [A, 1, 2, 3, PAD]])
    limit = fewshot_audio_limit(ids, A, tokens_per_audio=1)
    assert limit.tolist() == [[1, 1, 1, 2, 2], [1, 1, 1, 1, 1]]
    torch.manual_seed(0)
    attn = MaskedCrossAttention(16, 8, XAttnConfig(heads=2, dim_head=4))
    x, audio = torch.randn(2, 5, 16), torch.randn(2, 6, 8)
    real = torch.tensor([[True] * 6, [True] * 4 + [False] * 2])
    kv = attn.keys_values(audio)
    full = attn(x, AudioContext(audio, real).attention_mask(5), kv)
    everything = attn(x, AudioContext(audio, real, text_limit=torch.full((2, 5), 6)).attention_mask(5), kv)
    assert torch.allclose(full, everything, atol=1e-6)  # a limit past the audio = the full mask
    one = AudioContext(audio, real, text_limit=torch.ones(2, 5, dtype=torch.long))
    attn(x, one.attention_mask(5), attn.keys_values(audio)).sum().backward()
    assert torch.equal(attn.to_q.weight.grad, torch.zeros_like(attn.to_q.weight))  # softmax over one key
    with pytest.raises(ValueError, match="teacher-forced"):
        one.attention_mask(1)


def test_embedding_grad_mask_keeps_only_the_special_rows():
    model = nn.Module()
    model.lm = nn.Module()
    model.lm.model = nn.Module()
    model.lm.model.embed_tokens = nn.Embedding(6, 3)
    model.lm.model.embed_tokens(torch.arange(6)).pow(2).sum().backward()
    EmbeddingGradMask([2, 4])(model)
    kept = model.lm.model.embed_tokens.weight.grad.abs().sum(dim=1) > 0
    assert kept.tolist() == [False, False, True, False, True, False]


def test_official_weight_decay_groups():
    model = nn.Module()
    model.audio_transformer = nn.Linear(3, 3)
    model.lm = nn.Module()
    model.lm.model = nn.Module()
    model.lm.model.embed_tokens = nn.Embedding(5, 3)
    model.lm.model.layers = nn.ModuleList([nn.Module()])
    model.lm.model.layers[0].xattn = nn.Linear(3, 3)
    model.lm.model.layers[0].attn_gate = nn.Parameter(torch.zeros(1))

    def decayed(cfg: TrainConfig) -> set[str]:
        optimizer = make_optimizer(cfg, model)
        names = {id(p): n for n, p in model.named_parameters()}
        return {names[id(p)] for g in optimizer.param_groups if g["weight_decay"] > 0 for p in g["params"]}

    official = TrainConfig(optim=OptimConfig(decay_params="xattn"))
    assert decayed(official) == {"lm.model.layers.0.xattn.weight", "lm.model.layers.0.xattn.bias"}
    assert decayed(TrainConfig()) == {"audio_transformer.weight", "lm.model.embed_tokens.weight",
                                      "lm.model.layers.0.xattn.weight"}


def test_audio_start_seeks_and_the_over_read_sets_the_peak(tmp_path):
    sr = 16_000
    t = np.arange(6 * sr) / sr
    x = np.where(t < 1.0, 0.0, 0.25 * np.sin(2 * np.pi * 900 * t))
    x[:5] = 0.95  # loud clicks before audio_start
    x[-sr:] *= 2  # louder in the last second, inside the over-read tail
    path = tmp_path / "burst.wav"
    import soundfile as sf

    sf.write(path, x, sr, subtype="PCM_16")
    start, seconds = 1.5, 2.0
    read = load_audio(path, max_seconds=start + seconds, start_seconds=start).samples
    assert len(read) == min(int((start + seconds) * sr), len(x) - int(start * sr))  # (start + duration) frames
    first = sf.read(path)[0][int(start * sr):]
    peak = np.abs(first[:len(read)]).max()
    # Normalised by the peak of what was read (the loud tail), not of the clicks before the seek.
    assert np.abs(read).max() == pytest.approx(1.0, abs=1e-4)
    assert np.abs(read[:sr]).max() == pytest.approx(np.abs(first[:sr]).max() / peak, abs=1e-4)
    with pytest.raises(AudioError, match="past the end"):
        load_audio(path, max_seconds=10.0, start_seconds=6.0)


def test_audio_transformer_dropout_only_while_training():
    torch.manual_seed(0)
    cfg = AudioTransformerConfig(n_layers=1, n_head=1, d_inner=8)
    plain = AudioTransformer(32, cfg)
    dropped = AudioTransformer(32, AudioTransformerConfig(n_layers=1, n_head=1, d_inner=8, attn_dropout=0.5))
    dropped.load_state_dict(plain.state_dict())
    x, mask = torch.randn(1, 10, 32), torch.ones(1, 10)
    plain.eval(), dropped.eval()
    assert torch.equal(plain(x, mask), dropped(x, mask))
    dropped.train()
    assert not torch.allclose(dropped(x, mask), plain(x, mask))
