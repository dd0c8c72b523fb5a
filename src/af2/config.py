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
from af2.audio import HOP_LENGTH, SAMPLE_RATE, WINDOW_SECONDS
from af2.errors import ConfigError


@dataclass(frozen=True)
class AudioConfig:
    """Audio front end (spec section 1). The official code hard-codes all of these."""

    sample_rate: int = SAMPLE_RATE
    window_seconds: float = WINDOW_SECONDS  # window_length: HTSAT sees exactly 10-s windows
    window_overlap_seconds: float = 0.0  # 0.0 in every official config
    # 12 in the shipped inference config (2 min); 30 gives the 5 minutes AF2 is advertised for.
    max_windows: int = 30
    n_fft: int = 1024
    win_length: int = 1024
    hop_length: int = HOP_LENGTH
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
    # Dropout on the attention probabilities, active only in training mode. The official module keeps
    # ScaledDotProductAttention's default 0.1 (spec 3 says 0); training sets it (TrainConfig.audio_attn_dropout).
    attn_dropout: float = 0.0


@dataclass(frozen=True)
class XAttnConfig:
    """Gated cross-attention (XATTN-Dense) blocks (spec section 4)."""

    every_n_layers: int = 1
    # Explicit decoder-layer indices that get a block (overrides every_n_layers when non-empty). af2-nano puts
    # its blocks in the upper half of the LM, so training never back-propagates through the lower half.
    layers: tuple[int, ...] = ()
    heads: int = 8
    dim_head: int = 64
    ff_mult: int = 4
    layernorm_eps: float = 1e-5
    # A fixed multiplier on both gated branches: x + tanh(g)·s·attn(x), x + tanh(g)·s·ff(x). The official
    # blocks have s = 1. A frozen LM whose residual stream is large (SmolLM2-135M: RMS 6-28 in layers 14-29,
    # against ~0.3 for a freshly initialised block) needs s ~ that RMS for the blocks to move its outputs
    # within a short run; s multiplies the blocks' output scale and, under Adam, their effective learning
    # rate. Gates still start at 0, so the LM is unchanged at initialisation for any s.
    output_scale: float = 1.0
    # The starting value of the attention branch's gate parameter (the branch is scaled by its tanh). The
    # official blocks start at 0, which leaves the LM unchanged but also gives the branch's weights no
    # gradient until the gate moves; with a frozen LM whose loss is first lowered by text-only routes (the
    # FF branch, the new token rows) the gate then never moves. A small value (0.1) lets the audio branch
    # learn from the first step. The FF branch's gate always starts at 0.
    attn_gate_init: float = 0.0
    # A fixed (D x D) linear map on the audio features before every block's keys and values: a whitening
    # fitted once to the frozen audio path's outputs when stage 1 starts (af2.train.whitening). The
    # features of a frozen random-init nano audio path hold 98 % of their energy in 5 of 256 directions,
    # and what tells voices and instruments apart lies in the rest; whitened, every direction starts
    # equal for the cross-attention to learn from. ``af2 export`` folds the map into each block's to_kv,
    # so an exported model has AF2's layout. Off (no map) in the official architecture.
    audio_whitening: bool = False
    # When > 0 (an even number): every token the blocks read also carries where it lies in time, as a learnt
    # linear map (``AF2Model.audio_time``, zero at initialisation, so the model is unchanged until it learns)
    # of this many fixed sinusoids: half of the clock in seconds (periods 2.5 s to 640 s), half of the position
    # within the clip's real windows (0 at the start, 1 at the end). The official blocks read the audio as a
    # bag of tokens: the audio transformation layers' rotary positions are relative, so nothing they hand on
    # says "early" or "late", and what comes first, what rises or falls, and where in the clip a sound lies
    # cannot be read. Off (0) in the official architecture and in every af2-nano recipe: round 14 measured no
    # gain on the corpus, whose scene items mostly ask where a spoken phrase lies (docs/af2-nano/history.md).
    audio_time_features: int = 0

    def has_block(self, layer: int) -> bool:
        """Whether decoder layer ``layer`` (0-based) gets a gated cross-attention block."""
        return layer in self.layers if self.layers else (layer + 1) % self.every_n_layers == 0


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


def nano_config(max_windows: int = 30) -> AF2Config:
    """af2-nano without its LM: a 256-wide HTSAT (depths 1-1-2-1), 3 audio transformer layers and a
    gated cross-attention block before decoder layers 14, 17, ..., 29 of SmolLM2's 30. ``lm``/``vocab_size`` come from the base LM
    (SmolLM2-135M-Instruct for the shipped model) when a run or a model folder is built."""
    return AF2Config(
        audio=AudioConfig(max_windows=max_windows),
        htsat=HTSATConfig(embed_dim=32, depths=(1, 1, 2, 1), num_heads=(2, 4, 8, 16),
                          drop_path_rate=0.0, num_classes=4, unused_stft_n_fft=64),
        audio_transformer=AudioTransformerConfig(n_layers=3, n_head=4, d_inner=1024),
        xattn=XAttnConfig(layers=(14, 17, 20, 23, 26, 29), heads=4, dim_head=64, ff_mult=2),
        vocab_size=0,
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


def _unknown_key(cls: type, key: str, names: list[str]) -> ConfigError:
    close = difflib.get_close_matches(key, names, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else f" (valid keys: {', '.join(names)})"
    return ConfigError(f"unknown config key {key!r} for {cls.__name__}{hint}")


def _coerce(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping for {tp.__name__}, got {value!r}")
        return config_from_dict(tp, value, where)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__} {str(value)[:40]}")
        return tuple(value)
    if origin in (types.UnionType, typing.Union):
        return value
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp in (int, float, str, bool) and not isinstance(value, tp):
        raise ConfigError(f"{where}: expected {tp.__name__}, got {type(value).__name__} {str(value)[:40]}")
    return value


def config_from_dict(cls: type, data: dict[str, Any], where: str = "") -> Any:
    """Build dataclass ``cls`` from ``data``; unknown keys raise with a suggestion."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where or cls.__name__}: expected a mapping, got {type(data).__name__}")
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
        if not raw.strip():  # `base_lm=` means "none": an empty string, not YAML's null
            out[key.strip()] = ""
            continue
        try:
            out[key.strip()] = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            raise ConfigError(f"override {item!r}: the value is not valid YAML ({' '.join(str(exc).split())[:120]})")\
                from None
    return out


def load_config_yaml(path: str | Path, base: Any | None = None) -> Any:
    """Apply the YAML file at ``path`` as overrides on ``base`` (default: ``AF2Config()``)."""
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f) or {}
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except (yaml.YAMLError, UnicodeDecodeError, RecursionError) as exc:
        raise ConfigError(f"{path}: not valid YAML ({' '.join(str(exc).split())[:200]})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    return apply_overrides(base if base is not None else AF2Config(), data)


# --------------------------------------------------------------------------------------------
# sizes, checked before anything is allocated

# Refuse configs implying more parameters than this (AF2-3B has about 3.5e9); raise it with the
# environment variable AF2_MAX_PARAMETERS for a genuinely larger model.
MAX_PARAMETERS = 50_000_000_000
_LM_SIZES = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "vocab_size")


def _positive_ints(where: str, **values: Any) -> None:
    for key, value in values.items():
        items = value if isinstance(value, (tuple, list)) else (value,)
        if not items or any(isinstance(v, bool) or not isinstance(v, int) or v <= 0 for v in items):
            raise ConfigError(f"{where}{key}: expected positive integer(s), got {str(value)[:40]}")


def estimate_parameters(cfg: AF2Config) -> int:
    """Roughly how many parameters ``AF2Model(cfg)`` has, after checking every size is a positive int."""
    h, a, t, x = cfg.htsat, cfg.audio_transformer, cfg.xattn, cfg.lm
    _positive_ints("htsat.", embed_dim=h.embed_dim, depths=h.depths, num_heads=h.num_heads, window_size=h.window_size,
                   patch_size=h.patch_size, spec_size=h.spec_size, mel_bins=h.mel_bins, num_classes=h.num_classes)
    _positive_ints("audio_transformer.", n_layers=a.n_layers, n_head=a.n_head, d_inner=a.d_inner)
    _positive_ints("xattn.", every_n_layers=t.every_n_layers, heads=t.heads, dim_head=t.dim_head, ff_mult=t.ff_mult)
    _positive_ints("audio.", max_windows=cfg.audio.max_windows, n_fft=cfg.audio.n_fft, n_mels=cfg.audio.n_mels,
                   hop_length=cfg.audio.hop_length, win_length=cfg.audio.win_length)
    _positive_ints("", vocab_size=cfg.vocab_size)
    if len(h.depths) != len(h.num_heads) or len(h.depths) > 8:
        raise ConfigError(f"htsat.depths {h.depths} and htsat.num_heads {h.num_heads}: same length, at most 8")
    if not isinstance(x, dict) or not isinstance(x.get("model_type"), str):
        raise ConfigError("lm: expected the base LM's config with a 'model_type' string (e.g. 'qwen2')")
    _positive_ints("lm.", **{k: x.get(k) for k in _LM_SIZES}, num_key_value_heads=x.get("num_key_value_heads", 1))
    H, inter, L = x["hidden_size"], x["intermediate_size"], x["num_hidden_layers"]
    if H % x["num_attention_heads"]:
        raise ConfigError(f"lm.hidden_size {H} is not a multiple of lm.num_attention_heads {x['num_attention_heads']}")
    htsat = sum(d * 12 * (h.embed_dim * 2 ** i) ** 2 for i, d in enumerate(h.depths))
    A = cfg.audio_dim
    transformer = a.n_layers * (4 * A * A + 2 * A * a.d_inner)
    inner = t.heads * t.dim_head
    xattn = (L // t.every_n_layers) * (2 * H * inner + 2 * A * inner + 2 * t.ff_mult * H * H)
    lm = cfg.vocab_size * H + L * (4 * H * H + 3 * H * inter)
    return htsat + transformer + xattn + lm


def check_sizes(cfg: AF2Config, where: str) -> int:
    """``estimate_parameters`` bounded by MAX_PARAMETERS (or $AF2_MAX_PARAMETERS): a config that
    claims 10**9 layers fails here in microseconds instead of allocating for hours."""
    import os

    try:
        limit = int(float(os.environ.get("AF2_MAX_PARAMETERS", MAX_PARAMETERS)))
        n = estimate_parameters(cfg)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    except ValueError:
        raise ConfigError(f"AF2_MAX_PARAMETERS={os.environ['AF2_MAX_PARAMETERS']!r} is not a number") from None
    if n > limit:
        raise ConfigError(f"{where}: these sizes imply about {n:.3g} parameters, more than the {limit:.3g} allowed; "
                          "fix the config, or raise the limit with AF2_MAX_PARAMETERS if the model is really that big")
    return n
