"""Typed, frozen configuration for every part of the AF2 model.

Defaults are the official AF2 values (spec sections 1-5). YAML files and ``key=value`` overrides
only *override* these dataclasses: an unknown key fails with the closest valid name.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from af2.errors import ConfigError


@dataclass(frozen=True)
class AudioConfig:
    """Audio front end (spec section 1). The official code hard-codes all of these."""

    sample_rate: int = 16_000
    window_seconds: float = 10.0  # window_length: HTSAT sees exactly 10-s windows
    window_overlap_seconds: float = 0.0  # 0.0 in every official config
    # 12 in the shipped inference config (2 min); 30 gives the 5 minutes AF2 is advertised for.
    max_windows: int = 30
    n_fft: int = 1024
    win_length: int = 1024
    hop_length: int = 160
    n_mels: int = 64
    f_min: float = 50.0
    f_max: float = 8000.0  # 14000 before the v20250625 checkpoints
    amin: float = 1e-10  # AmplitudeToDB floor: 10*log10(max(P, amin))

    @property
    def window_samples(self) -> int:
        return int(round(self.window_seconds * self.sample_rate))

    @property
    def hop_samples(self) -> int:
        return int(round((self.window_seconds - self.window_overlap_seconds) * self.sample_rate))

    @property
    def frames_per_window(self) -> int:
        return self.window_samples // self.hop_length + 1  # center=True STFT: 1001 for 10 s


@dataclass(frozen=True)
class HTSATConfig:
    """AF-CLAP audio tower: HTSAT "large" (spec section 2.1)."""

    spec_size: int = 256
    patch_size: int = 4
    patch_stride: tuple[int, int] = (4, 4)
    in_chans: int = 1
    window_size: int = 8
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    embed_dim: int = 256
    depths: tuple[int, ...] = (2, 2, 12, 2)
    num_heads: tuple[int, ...] = (4, 8, 16, 32)
    mel_bins: int = 64
    drop_path_rate: float = 0.1
    enable_fusion: bool = True
    fusion_type: str = "aff_2d"
    layernorm_eps: float = 1e-5
    bn0_eps: float = 1e-5
    # Only size modules whose output AF2 never uses (tscam_conv/head and the torchlibrosa STFT);
    # kept so that official checkpoints load with every key accounted for.
    num_classes: int = 527
    unused_stft_n_fft: int = 1024

    @property
    def num_features(self) -> int:
        return self.embed_dim * 2 ** (len(self.depths) - 1)

    @property
    def freq_ratio(self) -> int:
        return self.spec_size // self.mel_bins


@dataclass(frozen=True)
class AudioTransformerConfig:
    """The audio representation transformation layers (spec section 3). Width = HTSAT output."""

    n_layers: int = 3
    n_head: int = 8
    d_inner: int = 2048
    rotary_base: float = 4096.0
    layernorm_eps: float = 1e-6
    mask_fill: float = -1e9
    scale_emb: bool = True


@dataclass(frozen=True)
class XAttnConfig:
    """Gated cross-attention (XATTN-Dense) blocks (spec section 4)."""

    every_n_layers: int = 1
    heads: int = 8
    dim_head: int = 64
    ff_mult: int = 4
    layernorm_eps: float = 1e-5


@dataclass(frozen=True)
class TokensConfig:
    """Special tokens added to the base tokenizer, in the official order (spec section 5.2)."""

    audio: str = "<audio>"
    end_of_chunk: str = "<|endofchunk|>"
    pad: str = "<|PAD_TOKEN|>"
    sep: str = "<SEP>"
    eos: str = "<|endoftext|>"
    max_tokens: int = 512


@dataclass(frozen=True)
class AF2Config:
    """The whole model. ``lm`` is the base LM's Hugging Face config as a plain dict."""

    audio: AudioConfig = field(default_factory=AudioConfig)
    htsat: HTSATConfig = field(default_factory=HTSATConfig)
    audio_transformer: AudioTransformerConfig = field(default_factory=AudioTransformerConfig)
    xattn: XAttnConfig = field(default_factory=XAttnConfig)
    tokens: TokensConfig = field(default_factory=TokensConfig)
    lm: dict[str, Any] = field(default_factory=dict)
    # Rows of the (tied) embedding after the official resize: base tokenizer length + 4.
    vocab_size: int = 151_669

    @property
    def audio_dim(self) -> int:
        return self.htsat.num_features


# Qwen2.5 base configs (spec section 5.1); all three tie their embeddings.
_QWEN25 = {
    "0.5b": dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                 num_key_value_heads=2),
    "1.5b": dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
                 num_key_value_heads=2),
    "3b": dict(hidden_size=2048, intermediate_size=11008, num_hidden_layers=36, num_attention_heads=16,
               num_key_value_heads=2),
}


def qwen25_lm_config(size: str) -> dict[str, Any]:
    """The Hugging Face config dict of the Qwen2.5 base LM of AF2-``size``."""
    if size not in _QWEN25:
        raise ConfigError(f"unknown AF2 size {size!r}; choose one of {sorted(_QWEN25)}")
    return {
        "model_type": "qwen2", "architectures": ["Qwen2ForCausalLM"], "vocab_size": 151_936,
        "tie_word_embeddings": True, "rope_theta": 1_000_000.0, "rms_norm_eps": 1e-6,
        "max_position_embeddings": 32_768, "bos_token_id": 151_643, "eos_token_id": 151_643,
        "hidden_act": "silu", "use_sliding_window": False, "sliding_window": None,
        "max_window_layers": _QWEN25[size]["num_hidden_layers"], "attention_dropout": 0.0,
        **_QWEN25[size],
    }


def af2_config(size: str, **overrides: Any) -> AF2Config:
    """The released AF2-``size`` architecture ("0.5b", "1.5b" or "3b"), optionally overridden."""
    cfg = AF2Config(lm=qwen25_lm_config(size))
    return apply_overrides(cfg, overrides) if overrides else cfg


def tiny_config(vocab_size: int = 516, max_windows: int = 30) -> AF2Config:
    """A few-hundred-thousand-parameter AF2 for CPU tests: same code paths, tiny widths."""
    return AF2Config(
        audio=AudioConfig(max_windows=max_windows),
        htsat=HTSATConfig(embed_dim=16, depths=(1, 1, 2, 1), num_heads=(1, 2, 2, 4), num_classes=4,
                          unused_stft_n_fft=64),
        audio_transformer=AudioTransformerConfig(n_layers=2, n_head=2, d_inner=64),
        xattn=XAttnConfig(),
        lm={"model_type": "qwen2", "architectures": ["Qwen2ForCausalLM"], "hidden_size": 64,
            "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
            "num_key_value_heads": 2, "vocab_size": vocab_size - 4, "tie_word_embeddings": True,
            "rope_theta": 1_000_000.0, "rms_norm_eps": 1e-6, "max_position_embeddings": 32_768,
            "bos_token_id": vocab_size - 16, "eos_token_id": vocab_size - 16},
        vocab_size=vocab_size,
    )


# --------------------------------------------------------------------------------------------
# dict / YAML conversion with strict key checking


def config_to_dict(cfg: Any) -> Any:
    """A plain, YAML/JSON-serialisable dict of a config dataclass (tuples become lists)."""
    if dataclasses.is_dataclass(cfg):
        return {f.name: config_to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, (tuple, list)):
        return [config_to_dict(v) for v in cfg]
    if isinstance(cfg, dict):
        return {k: config_to_dict(v) for k, v in cfg.items()}
    return cfg


def _unknown_key(cls: type, key: str, names: list[str]) -> ValueError:
    close = difflib.get_close_matches(key, names, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else f" (valid keys: {', '.join(names)})"
    return ValueError(f"unknown config key {key!r} for {cls.__name__}{hint}")


def _coerce(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping for {tp.__name__}, got {value!r}")
        return config_from_dict(tp, value, where)
    if origin is tuple:
        return tuple(value)
    if origin in (types.UnionType, typing.Union):
        return value
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp in (int, float, str, bool) and not isinstance(value, tp):
        raise ConfigError(f"{where}: expected {tp.__name__}, got {type(value).__name__} {value!r}")
    return value


def config_from_dict(cls: type, data: dict[str, Any], where: str = "") -> Any:
    """Build dataclass ``cls`` from ``data``; unknown keys raise with a suggestion."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        if key not in names:
            raise _unknown_key(cls, key, names)
        kwargs[key] = _coerce(hints[key], value, f"{where}{key}")
    return cls(**kwargs)


def apply_overrides(cfg: Any, overrides: dict[str, Any]) -> Any:
    """Return ``cfg`` with nested ``overrides`` applied (``{"audio": {"max_windows": 12}}`` or
    dotted keys ``{"audio.max_windows": 12}``)."""
    nested: dict[str, Any] = {}
    for key, value in overrides.items():
        parts = key.split(".")
        node = nested
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value
    return _merge(cfg, nested)


def _merge(cfg: Any, nested: dict[str, Any]) -> Any:
    hints = typing.get_type_hints(type(cfg))
    names = [f.name for f in dataclasses.fields(cfg)]
    changes = {}
    for key, value in nested.items():
        if key not in names:
            raise _unknown_key(type(cfg), key, names)
        current = getattr(cfg, key)
        if dataclasses.is_dataclass(current) and isinstance(value, dict):
            changes[key] = _merge(current, value)
        elif isinstance(current, dict) and isinstance(value, dict):
            changes[key] = {**current, **value}
        else:
            changes[key] = _coerce(hints[key], value, key)
    return dataclasses.replace(cfg, **changes)


def parse_cli_overrides(items: list[str]) -> dict[str, Any]:
    """``["audio.max_windows=12", "lm.rope_theta=1e6"]`` → dotted dict, values parsed as YAML."""
    out = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key.subkey=value")
        key, raw = item.split("=", 1)
        out[key.strip()] = yaml.safe_load(raw)
    return out


def load_config_yaml(path: str | Path, base: Any | None = None) -> Any:
    """Apply the YAML file at ``path`` as overrides on ``base`` (default: ``AF2Config()``)."""
    with open(path) as f:
        data = yaml.safe_load(f) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    return apply_overrides(base if base is not None else AF2Config(), data)
