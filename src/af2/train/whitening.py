"""Fitting ``XAttnConfig.audio_whitening``: the fixed map on the audio features that every gated
cross-attention block reads.

af2-nano's audio path (a frozen random-init nano HTSAT and frozen random audio transformer layers) gives
features whose energy sits almost all in a few directions: over its training clips, 75 % of the token
energy in one direction and 98 % in five of 256. Linear probes on the clips' pooled features find the voice
and the instrument at 100 % and 80 % held out, but only at 73 % and 51 % from the top five principal components
(scripts/nano-tower-probe.py --pcs; docs/af2-nano/round12/probe.md): the rest lies in directions that carry
almost no energy, which a cross-attention block trained by Adam on the raw features learnt neither of (af2-nano
round 12: voice 59 % own vs 57 % shuffled, instrument 29 %). The map is a ZCA whitening of the token second moment M,
shrunk toward isotropy: W = ((1 - s) M + s (tr M / D) I)^(-1/2), so that every direction of the features
reaches the blocks at a comparable scale. No centring: the blocks' keys and values have no bias, and a
constant shift of every key leaves the attention weights unchanged.
"""

from __future__ import annotations

import torch
from tqdm import tqdm

from af2.data.dataset import ManifestDataset
from af2.errors import ConfigError
from af2.model.af2 import AF2Model


def whitening_matrix(second_moment: torch.Tensor, shrink: float) -> torch.Tensor:
    """(D, D) second moment → the symmetric (D, D) map W with W M_s W = I for the shrunk M_s."""
    dim = second_moment.shape[0]
    eye = torch.eye(dim, dtype=second_moment.dtype, device=second_moment.device)
    shrunk = (1 - shrink) * second_moment + shrink * second_moment.trace() / dim * eye
    values, vectors = torch.linalg.eigh(shrunk)
    return vectors @ torch.diag(values.clamp_min(torch.finfo(values.dtype).tiny).rsqrt()) @ vectors.T


@torch.no_grad()
def fit_audio_whitening(model: AF2Model, dataset: ManifestDataset, items: int, shrink: float,
                        seed: int = 0, progress: bool = True) -> torch.Tensor:
    """Set ``model.audio_whitening`` from the audio features of ``items`` random dataset items (the audio
    path must be frozen: the map is fitted once). Returns the (D, D) map."""
    if model.audio_whitening is None:
        raise ConfigError("fit_audio_whitening: the model has no audio_whitening map (xattn.audio_whitening)")
    if any(p.requires_grad for p in (*model.audio_encoder.parameters(), *model.audio_transformer.parameters())):
        raise ConfigError("xattn.audio_whitening is fitted once to a frozen audio path: keep 'clap' and "
                          "'audio_transformer' out of trainable in the stage that fits it")
    model.audio_whitening.copy_(torch.eye(model.audio_whitening.shape[0]))
    picks = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:items].tolist()
    was_training = model.training
    model.eval()
    dim = model.audio_whitening.shape[0]
    second, count = torch.zeros(dim, dim, dtype=torch.float64), 0
    device = model.audio_whitening.device
    for i in tqdm(picks, desc="fitting audio whitening", unit="item", disable=not progress):
        windows = dataset[i].windows.to(device)[None]  # (1, W, S)
        context = model.encode_audio(windows, torch.ones(windows.shape[:2], device=device))
        tokens = context.features[context.mask].double().cpu()  # (real tokens, D)
        second += tokens.T @ tokens
        count += tokens.shape[0]
    model.train(was_training)
    matrix = whitening_matrix(second / count, shrink)
    model.audio_whitening.copy_(matrix.to(model.audio_whitening.dtype))
    return matrix
