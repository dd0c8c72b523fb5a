"""The architecture an official AF2 checkpoint implies, read from its tensor shapes.

NVIDIA's released folders carry no config for the audio side (HTSAT width and depths, the
transformation layers), so a non-standard checkpoint loaded with the default architecture fails
with hundreds of mismatched keys. Every size that a shape determines is read here; the one that
shapes can leave open (the transformation layers' head count) is taken from the default when it
fits, and otherwise named in a one-line error saying what to pass.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable

from af2.config import AF2Config
from af2.errors import CheckpointError

_HTSAT_PREFIXES = ("clap.nvclap.", "clap.afclap.")
_AT = "audio_transformer_clap."

Shape = Callable[[str], "tuple[int, ...] | None"]


def _count(shape: Shape, pattern: str, limit: int = 1024) -> int:
    n = 0
    while n < limit and shape(pattern.format(n)) is not None:
        n += 1
    return n


def _htsat(shape: Shape, base):
    width = shape("patch_embed.proj.weight")
    if width is None:
        return base
    depths = []
    heads = []
    for i in range(8):
        d = _count(shape, f"layers.{i}.blocks.{{}}.norm1.weight")
        if d == 0:
            break
        depths.append(d)
        table = shape(f"layers.{i}.blocks.0.attn.relative_position_bias_table")
        heads.append(table[-1] if table else base.num_heads[min(i, len(base.num_heads) - 1)])
    changes = {"embed_dim": width[0], "depths": tuple(depths) or base.depths, "num_heads": tuple(heads) or base.num_heads}
    for field, key, axis in (("num_classes", "head.weight", 0), ("mel_bins", "bn0.weight", 0),
                             ("unused_stft_n_fft", "spectrogram_extractor.stft.conv_real.weight", 2)):
        found = shape(key)
        if found is not None and len(found) > axis:
            changes[field] = found[axis]
    return dataclasses.replace(base, **changes)


def _audio_transformer(shape: Shape, base, where: str):
    width, inner, inv_freq = (shape(_AT + k) for k in ("layer_norm.weight", "layer_stack.0.pos_ffn.w_1.weight",
                                                        "position_enc.inv_freq"))
    if width is None or inner is None:
        return base
    d_model, rotary = width[0], 2 * inv_freq[0] if inv_freq else None

    def fits(heads: int) -> bool:  # the official rotary size: max(head size // 2, 32), at most the head size
        d_k = d_model // heads
        return d_model % heads == 0 and (rotary is None or (max(d_k // 2, 32) == rotary and rotary <= d_k))

    heads = [h for h in range(1, d_model + 1) if fits(h)]
    if base.n_head in heads:
        n_head = base.n_head
    elif len(heads) == 1:
        n_head = heads[0]
    else:
        raise CheckpointError(f"{where}: the audio transformation layers are {d_model} wide with rotary size {rotary}, "
                              f"which fits {heads or 'no'} head counts; pass --config with audio_transformer.n_head")
    n_layers = _count(lambda k: shape(_AT + k), "layer_stack.{}.slf_attn.fc.weight")
    return dataclasses.replace(base, n_layers=n_layers or base.n_layers, d_inner=inner[0], n_head=n_head)


def infer_official_config(shapes: dict[str, tuple[int, ...]], base: AF2Config, where: str) -> AF2Config:
    """``base`` with every audio-side size that ``shapes`` (official key -> shape, HTSAT keys also
    without their ``clap.nvclap.`` prefix) determine; logs what differs from ``base``."""
    def htsat_shape(key: str):
        return next((shapes[p + key] for p in ("", *_HTSAT_PREFIXES) if p + key in shapes), None)

    cfg = dataclasses.replace(base, htsat=_htsat(htsat_shape, base.htsat),
                              audio_transformer=_audio_transformer(shapes.get, base.audio_transformer, where))
    changed = [f"{part}.{f.name}={getattr(getattr(cfg, part), f.name)}" for part in ("htsat", "audio_transformer")
               for f in dataclasses.fields(getattr(cfg, part))
               if getattr(getattr(cfg, part), f.name) != getattr(getattr(base, part), f.name)]
    if changed:
        logging.getLogger("af2").info("%s: architecture read from the checkpoint's shapes: %s", where, ", ".join(changed))
    return cfg
