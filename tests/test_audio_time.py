"""xattn.audio_time_features: where each audio token lies in time, added to what the cross-attention reads."""

from dataclasses import replace

import pytest
import torch
from safetensors.torch import save_file

from af2.config import tiny_config
from af2.errors import CheckpointError
from af2.model.af2 import AF2Model, audio_time_features
from af2.train.checkpoint import load_weights
from af2.train.stages import GROUP_PATTERNS


def timed_config(n: int = 8, whitening: bool = False):
    cfg = tiny_config()
    return replace(cfg, xattn=replace(cfg.xattn, audio_time_features=n, audio_whitening=whitening))


def open_gates(model: AF2Model) -> None:
    for layer in model.decoder_layers:
        if layer.xattn is not None:  # so the audio reaches the logits
            layer.xattn.attn_gate.data.fill_(0.5)


def test_features_follow_the_clock_and_the_place_in_the_clip():
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]])
    f = audio_time_features(mask, 8, slots=32, window_seconds=10.0)
    assert f.shape == (2, 3 * 64, 8)
    # the clock half is the same for every row; token 0 of window 1 is slot 0 of its window: 10 s + half a slot
    assert torch.equal(f[0, :, :4], f[1, :, :4])
    t = 10.0 + 0.5 * 10.0 / 32
    assert torch.allclose(f[0, 64, 0], torch.tensor(2 * torch.pi * t / 2.5).sin().float())
    # HTSAT's token order: slot = token mod 32 (two mel bands of 32 chronological slots per window)
    assert torch.equal(f[0, 5], f[0, 37])
    # the place half: u = t / clip length, over real windows only (row 1 is 10 s long; its padding reads u = 1)
    u0, u1 = t / 30.0, min(t / 10.0, 1.0)
    assert torch.allclose(f[0, 64, 4], torch.tensor(torch.pi * u0).sin().float(), atol=1e-6)
    assert torch.allclose(f[1, 64, 4], torch.tensor(torch.pi * u1).sin().float(), atol=1e-6)
    assert torch.allclose(f[0, -1, 6], torch.tensor(torch.pi * (30 - 10 / 64) / 30).cos().float(), atol=1e-6)


def test_the_official_layout_has_no_map_and_a_new_one_changes_nothing():
    assert AF2Model(tiny_config()).audio_time is None
    with pytest.raises(ValueError, match="multiple of 4"):
        AF2Model(timed_config(6))
    torch.manual_seed(0)
    plain = AF2Model(tiny_config()).eval()
    open_gates(plain)
    timed = AF2Model(timed_config()).eval()
    missing, unexpected = timed.load_state_dict(plain.state_dict(), strict=False)
    assert missing == ["audio_time.weight"] and not unexpected
    assert not timed.audio_time.weight.any()  # zero at initialisation
    assert GROUP_PATTERNS["xattn"]("audio_time.weight")  # it trains with the blocks
    gen = torch.Generator().manual_seed(1)
    windows, mask = torch.randn(1, 2, 160_000, generator=gen) * 0.1, torch.ones(1, 2)
    ids = torch.tensor([[1, 5, 9, 13, 2]])
    with torch.no_grad():
        assert torch.equal(timed(windows, mask, input_ids=ids).logits, plain(windows, mask, input_ids=ids).logits)
        timed.audio_time.weight.normal_(0, 1.0)
        moved = timed(windows, mask, input_ids=ids).logits
    assert not torch.allclose(moved, plain(windows, mask, input_ids=ids).logits, atol=1e-4)


def test_a_batch_gives_each_clip_its_own_times():
    torch.manual_seed(0)
    model = AF2Model(timed_config()).eval()
    with torch.no_grad():
        model.audio_time.weight.normal_(0, 1.0)
    gen = torch.Generator().manual_seed(2)
    long, short = torch.randn(1, 3, 160_000, generator=gen) * 0.1, torch.randn(1, 1, 160_000, generator=gen) * 0.1
    windows = torch.cat([long, torch.cat([short, torch.zeros(1, 2, 160_000)], dim=1)])
    mask = torch.tensor([[1.0, 1, 1], [1, 0, 0]])
    with torch.no_grad():
        batch = model.encode_audio(windows, mask).features
        alone_long = model.encode_audio(long, torch.ones(1, 3)).features
        alone_short = model.encode_audio(short, torch.ones(1, 1)).features
    assert torch.allclose(batch[0], alone_long[0], atol=1e-5)
    assert torch.allclose(batch[1, :64], alone_short[0], atol=1e-5)


def test_a_stage_that_adds_the_map_loads_the_stage_before(tmp_path):
    torch.manual_seed(0)
    before = AF2Model(tiny_config())
    save_file({k: v.contiguous() for k, v in before.state_dict().items() if k != "lm.lm_head.weight"},
              str(tmp_path / "model.safetensors"))
    after = AF2Model(timed_config())
    with pytest.raises(CheckpointError, match="audio_time.weight"):
        load_weights(after, tmp_path / "model.safetensors")
    load_weights(after, tmp_path / "model.safetensors", ("audio_time.",))
    assert not after.audio_time.weight.any()
    key = "lm.model.layers.1.xattn.attn.to_kv.weight"
    assert torch.equal(after.state_dict()[key], before.state_dict()[key])


def test_export_folds_the_whitening_and_keeps_the_time_map(tmp_path):
    from af2.checkpoint.folder import export_model_folder, load_pretrained, read_model_folder_config, save_pretrained

    torch.manual_seed(0)
    model = AF2Model(timed_config(whitening=True)).eval()
    open_gates(model)
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        root = torch.randn(model.cfg.audio_dim, model.cfg.audio_dim, generator=gen, dtype=torch.float64)
        model.audio_whitening.copy_((root @ root.T / model.cfg.audio_dim + torch.eye(model.cfg.audio_dim)).float())
        model.audio_time.weight.normal_(0, 1.0, generator=gen)
    save_pretrained(model, tmp_path / "trained")
    export_model_folder(tmp_path / "trained", tmp_path / "exported")
    cfg, _ = read_model_folder_config(tmp_path / "exported")
    assert not cfg.xattn.audio_whitening and cfg.xattn.audio_time_features == 8
    exported = load_pretrained(tmp_path / "exported").eval()
    windows, mask = torch.randn(1, 2, 160_000, generator=gen) * 0.1, torch.ones(1, 2)
    ids = torch.tensor([[1, 5, 9, 13, 2]])
    with torch.no_grad():
        want = model(windows, mask, input_ids=ids).logits
        got = exported(windows, mask, input_ids=ids).logits
    assert torch.allclose(got, want, atol=1e-4), (got - want).abs().max()
