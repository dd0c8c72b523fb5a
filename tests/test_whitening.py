"""xattn.audio_whitening: the fixed map on the audio features the cross-attention reads, and its fitting."""

from dataclasses import replace

import pytest
import torch

from af2.config import tiny_config
from af2.data.dataset import Sample
from af2.errors import ConfigError
from af2.model.af2 import AF2Model
from af2.train.stages import apply_stage
from af2.train.whitening import fit_audio_whitening, whitening_matrix


def whitened_config():
    cfg = tiny_config()
    return replace(cfg, xattn=replace(cfg.xattn, audio_whitening=True))


class Clips:
    """A dataset of one-window noise clips of growing loudness (what fit_audio_whitening reads: len and .windows)."""

    def __init__(self, n: int, window_samples: int):
        gen = torch.Generator().manual_seed(0)
        self.windows = [torch.randn(1, window_samples, generator=gen) * (0.1 + i / n) for i in range(n)]

    def __len__(self):
        return len(self.windows)

    def __getitem__(self, i):
        return Sample(id=str(i), windows=self.windows[i], prompt="", output="")


def test_whitening_matrix_whitens_the_shrunk_second_moment():
    gen = torch.Generator().manual_seed(0)
    scales = torch.diag(torch.logspace(0, -3, 16, dtype=torch.float64))  # energy over 3 decades
    x = torch.randn(4000, 16, generator=gen, dtype=torch.float64) @ scales
    m = x.T @ x / x.shape[0]
    w = whitening_matrix(m, 0.0)
    assert torch.allclose(w, w.T)
    assert torch.allclose(w @ m @ w, torch.eye(16, dtype=torch.float64), atol=1e-8)
    # fully shrunk: a multiple of the identity that gives the features unit mean energy per direction
    iso = whitening_matrix(m, 1.0)
    assert torch.allclose(iso, torch.eye(16, dtype=torch.float64) * (m.trace() / 16).rsqrt())


def test_the_official_layout_has_no_map_and_the_whitened_one_starts_at_identity():
    assert AF2Model(tiny_config()).audio_whitening is None
    assert "audio_whitening" not in AF2Model(tiny_config()).state_dict()
    model = AF2Model(whitened_config())
    assert torch.equal(model.state_dict()["audio_whitening"], torch.eye(model.cfg.audio_dim))


def test_fitted_map_is_what_every_block_reads():
    torch.manual_seed(0)
    model = AF2Model(whitened_config()).eval()
    apply_stage(model, ("xattn", "embeddings"))
    clips = Clips(12, model.cfg.audio.window_samples)
    matrix = fit_audio_whitening(model, clips, items=12, shrink=0.1, progress=False)
    windows, mask = clips[3].windows[None], torch.ones(1, 1)
    raw = model.audio_transformer(model.encode_windows(windows, mask), mask.bool().repeat_interleave(64, 1))
    with torch.no_grad():
        context = model.encode_audio(windows, mask, cache_kv=True)
    assert torch.allclose(context.features, raw @ matrix.float().T, atol=1e-5)
    block = next(layer for layer in model.decoder_layers if layer.xattn is not None)
    keys, _ = block.xattn.attn.keys_values(raw @ matrix.float().T)
    assert torch.allclose(context.kv[block.layer_idx][0], keys, atol=1e-5)
    # the fitted features have the shrunk second moment's whitening: energy spread over every direction
    feats = torch.cat([model.encode_audio(c.windows[None], torch.ones(1, 1)).features[0] for c in
                       (clips[i] for i in range(12))]).double()
    energy = torch.linalg.eigvalsh(feats.T @ feats / feats.shape[0])
    raw_feats = feats @ torch.linalg.inv(matrix).T
    raw_energy = torch.linalg.eigvalsh(raw_feats.T @ raw_feats / raw_feats.shape[0])
    assert energy.max() / energy.sum() < raw_energy.max() / raw_energy.sum()
    assert energy.max() < 1.5


def test_fitting_needs_a_frozen_audio_path():
    model = AF2Model(whitened_config())
    apply_stage(model, ("audio_transformer", "xattn"))
    with pytest.raises(ConfigError, match="frozen audio path"):
        fit_audio_whitening(model, Clips(2, model.cfg.audio.window_samples), items=2, shrink=0.1, progress=False)
    with pytest.raises(ConfigError, match="no audio_whitening"):
        fit_audio_whitening(AF2Model(tiny_config()), Clips(2, 160_000), items=2, shrink=0.1, progress=False)


def test_export_folds_the_map_into_the_blocks(tmp_path):
    """An exported whitened model has AF2's layout (no map, flag off) and gives the same logits."""
    from af2.checkpoint.folder import export_model_folder, load_pretrained, read_model_folder_config, save_pretrained

    torch.manual_seed(0)
    model = AF2Model(whitened_config()).eval()
    for layer in model.decoder_layers:
        if layer.xattn is not None:  # gates open, so the audio reaches the logits
            layer.xattn.attn_gate.data.fill_(0.5)
    apply_stage(model, ("xattn",))
    clips = Clips(6, model.cfg.audio.window_samples)
    fit_audio_whitening(model, clips, items=6, shrink=0.1, progress=False)
    save_pretrained(model, tmp_path / "trained")
    export_model_folder(tmp_path / "trained", tmp_path / "exported")
    cfg, _ = read_model_folder_config(tmp_path / "exported")
    assert not cfg.xattn.audio_whitening
    exported = load_pretrained(tmp_path / "exported").eval()
    assert exported.audio_whitening is None and "audio_whitening" not in exported.state_dict()
    windows, mask = clips[2].windows[None], torch.ones(1, 1)
    ids = torch.tensor([[1, 5, 9, 13, 2]])
    with torch.no_grad():
        want = model(windows, mask, input_ids=ids).logits
        got = exported(windows, mask, input_ids=ids).logits
    assert torch.allclose(got, want, atol=1e-4), (got - want).abs().max()
