"""Typed, frozen configuration of a training run (spec sections 6.1-6.3).

Defaults are the official stage-1 values (``configs/pretrain.yaml``); the recipes in
``af2/recipes/*.yaml`` override them per stage, and ``key=value`` arguments override a recipe.
An unknown key fails with the closest valid name (``af2.config.config_from_dict``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from af2.config import apply_overrides, config_from_dict, config_to_dict
from af2.errors import ConfigError

STAGE_KINDS = ("clap", "alm")
SCHEDULES = ("constant_with_warmup", "cosine")
PRECISIONS = ("fp32", "bf16")
STRATEGIES = ("ddp", "fsdp")
BROKEN_POLICIES = ("fail", "skip")
TRAINABLE_GROUPS = ("clap", "audio_transformer", "xattn", "embeddings", "lora", "text_tower", "projections")


@dataclass(frozen=True)
class OptimConfig:
    """AdamW with torch defaults, as every shipped config (spec section 6.2)."""

    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.1
    # The official FSDP run decays everything (spec 10.4 #18); biases, norms and gates usually should not be.
    decay_1d: bool = False
    schedule: str = "constant_with_warmup"
    warmup_steps: int = 1875
    min_lr_ratio: float = 0.0  # cosine only: the floor as a fraction of lr
    clip_norm: float = 1.0  # one global-norm clip per optimizer step; 0 disables


@dataclass(frozen=True)
class DataConfig:
    """Where the samples come from. ``blend`` maps a manifest (path without ``.json``/``.jsonl``,
    relative to ``dataset_file_root``) to its weight, as ``dataset_blending_config`` does."""

    dataset_file_root: str = ""
    data_root: str = ""
    blend: dict[str, float] = field(default_factory=dict)
    global_weight: float = 0.005  # dataset_blending_global_weight
    max_tokens: int = 512
    bucket_by_length: bool = False  # sort batches by (audio windows, tokens): less padding
    broken_samples: str = "fail"  # "fail" stops the run; "skip" drops the sample and counts it


@dataclass(frozen=True)
class LoRAConfig:
    """Low-rank adapters on the (otherwise frozen) LM's linear layers."""

    enabled: bool = False
    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")


@dataclass(frozen=True)
class ClapConfig:
    """Stage 0: AF-CLAP contrastive training (spec sections 2.3-2.4)."""

    # A local Hugging Face encoder directory (Flan-T5-large in AF2); empty = build one from text_encoder_config.
    text_encoder: str = ""
    text_encoder_config: dict[str, Any] = field(default_factory=dict)
    tokenizer: str = ""  # defaults to text_encoder
    embed_dim: int = 512
    max_text_tokens: int = 77
    positives: int = 2  # paraphrased captions per clip, all positives
    hard_negatives: int = 4  # caption-derived negatives per clip, in the softmax denominator
    logit_scale_init: float = math.log(1 / 0.07)


@dataclass(frozen=True)
class TrainConfig:
    """One training stage. ``batch_size`` is per device and per micro-step: the global batch is
    ``batch_size * grad_accum * world_size``."""

    stage: str = "stage1_pretrain"
    kind: str = "alm"  # "clap" (stage 0) or "alm" (stages 1-3)
    model: str = "0.5b"  # "0.5b", "1.5b", "3b" or "tiny"
    model_overrides: dict[str, Any] = field(default_factory=dict)
    tokenizer: str = ""  # a local tokenizer directory (base LM); special tokens are added
    # The pretrained base LM (local HF folder or hub id, e.g. Qwen/Qwen2.5-0.5B): its config replaces
    # the model's `lm` and its weights become the frozen LM. Empty: a randomly initialised LM (tests).
    base_lm: str = ""
    init_checkpoint: str = ""  # model.safetensors (or a run/checkpoint directory) of the previous stage
    audio_tower_checkpoint: str = ""  # stage 0's audio_tower.safetensors, loaded into audio_encoder
    trainable: tuple[str, ...] = ("audio_transformer", "xattn", "embeddings")
    windows: int = 3  # 10-s windows per sample: 3 = 30 s, 12 = 2 min, 30 = 5 min
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    lora: LoRAConfig = field(default_factory=LoRAConfig)
    clap: ClapConfig = field(default_factory=ClapConfig)
    batch_size: int = 16
    grad_accum: int = 2
    max_steps: int = 1000  # optimizer steps
    precision: str = "bf16"
    seed: int = 42
    device: str = "cpu"  # "cpu" or "cuda"; under torchrun each rank takes cuda:LOCAL_RANK
    strategy: str = "ddp"  # when launched with more than one process
    output_dir: str = "runs/stage1"
    save_interval: int = 500
    log_interval: int = 1
    progress: bool = True
    resume: bool = False

    def __post_init__(self) -> None:
        _check_choice("kind", self.kind, STAGE_KINDS)
        _check_choice("optim.schedule", self.optim.schedule, SCHEDULES)
        _check_choice("precision", self.precision, PRECISIONS)
        _check_choice("strategy", self.strategy, STRATEGIES)
        _check_choice("data.broken_samples", self.data.broken_samples, BROKEN_POLICIES)
        for group in self.trainable:
            _check_choice("trainable", group, TRAINABLE_GROUPS)
        if ("lora" in self.trainable) != self.lora.enabled:
            raise ConfigError("trainable lists 'lora' exactly when lora.enabled is true; set both or neither")
        for name in ("batch_size", "grad_accum", "max_steps", "save_interval", "windows"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{name}: {value!r} is not one of {', '.join(choices)}")


# --------------------------------------------------------------------------------------------
# recipes


def recipe_names() -> list[str]:
    """The recipes shipped in ``af2/recipes`` (file names without ``.yaml``)."""
    folder = resources.files("af2") / "recipes"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def recipe_path(name_or_path: str) -> Path:
    """A YAML path, or the name of a shipped recipe (``stage1_pretrain``)."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise ConfigError(f"recipe {path} does not exist")
        return path
    shipped = resources.files("af2") / "recipes" / f"{name_or_path}.yaml"
    if not shipped.is_file():
        raise ConfigError(f"unknown recipe {name_or_path!r}; shipped recipes: {', '.join(recipe_names())}")
    return Path(str(shipped))


def load_train_config(recipe: str, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """``recipe`` (a name or a YAML path) applied to ``TrainConfig()``, then dotted ``overrides``."""
    path = recipe_path(recipe)
    with open(path) as f:
        data = yaml.safe_load(f) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    try:
        cfg = config_from_dict(TrainConfig, data)
        return apply_overrides(cfg, overrides) if overrides else cfg
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{path}: {exc}") from exc


def train_config_from_dict(data: dict[str, Any]) -> TrainConfig:
    return config_from_dict(TrainConfig, data)


def dump_train_config(cfg: TrainConfig) -> str:
    return yaml.safe_dump(config_to_dict(cfg), sort_keys=False)
