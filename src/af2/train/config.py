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
XATTN_MASKS = ("full", "official_fewshot")
EMBEDDING_GRAD_ROWS = ("special", "new", "all")
DECAY_PARAMS = ("xattn", "matrices")
TRAINABLE_GROUPS = ("clap", "audio_transformer", "xattn", "embeddings", "lora", "text_tower", "projections")


@dataclass(frozen=True)
class OptimConfig:
    """AdamW with torch defaults, as every shipped config (spec section 6.2)."""

    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.1
    # Which parameters weight_decay applies to. "matrices": every trainable parameter with >= 2
    # dimensions (all of them with decay_1d; the official FSDP runs of the shipped configs decay
    # everything). "xattn": every gated cross-attention parameter (gates and norms too) and nothing
    # else, as the official non-FSDP optimizer (train.py); use it with embedding_grad_rows=special,
    # whose frozen vocabulary rows must not decay.
    decay_params: str = "matrices"
    # "matrices" only. The official FSDP run decays everything (spec 10.4 #18); biases, norms and
    # gates usually should not be.
    decay_1d: bool = False
    schedule: str = "constant_with_warmup"
    warmup_steps: int = 1875
    min_lr_ratio: float = 0.0  # cosine only: the floor as a fraction of lr
    clip_norm: float = 1.0  # one global-norm clip per optimizer step; 0 disables
    # Learning-rate multipliers per trainable group (``xattn``, ``audio_transformer``, ``clap``, ...) and
    # for ``gates`` (the tanh gates of the cross-attention): e.g. {gates: 10} lets a small model open its
    # gates in hundreds of steps instead of thousands. Empty = one lr for everything, as the official code.
    group_lr: dict[str, float] = field(default_factory=dict)


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
    # A pretrained tagger whose per-window class logits the tower also learns to predict (af2.train.teacher:
    # "yamnet"; tried for af2-nano, off in its recipe); empty = contrastive loss only, as in AF2.
    teacher: str = ""
    teacher_weight: float = 1.0  # weight of the distillation loss (mean squared error) beside the contrastive one


@dataclass(frozen=True)
class ListenConfig:
    """The listening check run every ``interval`` steps on held-out multiple-choice items: accuracy
    with each item's own audio vs with another item's audio (shuffled), and the pairwise cosine of
    the audio transformer's outputs across clips (a collapse warning above ``max_cosine``)."""

    manifest: str = ""  # an af2 manifest (JSON/JSONL) of multiple-choice items; empty = no check
    interval: int = 0  # optimizer steps between checks; 0 = only at the end of the run
    items: int = 128
    max_cosine: float = 0.95
    # "letter": the answer letter read after "(" (a model trained on "(B) text" answers); "options": the option
    # texts ranked by their mean answer-token NLL (a model trained to answer with the option's text).
    scoring: str = "letter"

    def __post_init__(self) -> None:
        _check_choice("listen.scoring", self.scoring, ("letter", "options"))


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
    # How the new rows start: "random" (the official resize) or "mean" (the mean of the base rows, so
    # <|endofchunk|> does not start at a cross-entropy of ~30).
    new_rows_init: str = "random"
    init_checkpoint: str = ""  # model.safetensors (or a run/checkpoint directory) of the previous stage
    audio_tower_checkpoint: str = ""  # stage 0's audio_tower.safetensors, loaded into audio_encoder
    # Parameters (name prefixes, e.g. "audio_time.") that init_checkpoint may lack because this stage adds
    # them to the model: they keep their fresh initialisation and a line says so. Anything else missing fails.
    init_new_params: tuple[str, ...] = ()
    # With the model's xattn.audio_whitening, a run that starts without init_checkpoint fits the map to the
    # features of this many random training items, shrunk toward isotropy by this fraction (af2.train.whitening).
    whitening_items: int = 256
    whitening_shrink: float = 0.05
    trainable: tuple[str, ...] = ("audio_transformer", "xattn", "embeddings")
    # "all": the whole (tied) embedding trains, as in the official FSDP runs of the shipped configs;
    # "special": its gradient is zeroed except the <audio> and <|endofchunk|> rows, as the official
    # non-FSDP trainer does (the code's stated intent; spec 10.4 #18); "new": every row added to the base
    # tokenizer trains (AF2's 4 tokens), the base LM's rows stay exact and checkpoints hold only the new rows.
    # With "special" or "new" the embedding is never weight-decayed (decay would shrink the frozen rows).
    embedding_grad_rows: str = "all"
    # Cross-attention during training: "full" = every text token sees every real audio token (what
    # the released weights are evaluated with, spec 4.4); "official_fewshot" = the official training
    # code's extra mask (text sees only audio tokens [0, xattn_fewshot_tokens) after one <audio>).
    xattn_mask: str = "full"
    xattn_fewshot_tokens: int = 1  # the official max_window_per_audio (it counts audio tokens)
    # Attention dropout inside the audio transformer while it trains: the official module's
    # ScaledDotProductAttention default, which the official config never turns off. Inference: none.
    audio_attn_dropout: float = 0.1
    # Compute the stage 1-3 loss with less work (af2.train.alm.lean_alm_loss): the LM head only where a
    # target follows; same loss up to rounding. Off by default so the parity check sees the official path.
    lean_loss: bool = False
    # With lean_loss: False detaches the input embeddings, so backward stops at the lowest cross-attention
    # block (the tied embedding still learns as the output head). Saves the backward of every LM layer below.
    embedding_input_grad: bool = True
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
    max_minutes: float = 0.0  # stop (with a checkpoint) after this much wall time; 0 = no budget
    keep_last: int = 0  # keep the newest N checkpoints; 0 = keep all
    threads: int = 0  # torch intra-op threads; 0 = leave torch's default (one per core)
    listen: ListenConfig = field(default_factory=ListenConfig)

    def __post_init__(self) -> None:
        _check_choice("kind", self.kind, STAGE_KINDS)
        _check_choice("optim.schedule", self.optim.schedule, SCHEDULES)
        _check_choice("precision", self.precision, PRECISIONS)
        _check_choice("strategy", self.strategy, STRATEGIES)
        _check_choice("data.broken_samples", self.data.broken_samples, BROKEN_POLICIES)
        _check_choice("xattn_mask", self.xattn_mask, XATTN_MASKS)
        _check_choice("embedding_grad_rows", self.embedding_grad_rows, EMBEDDING_GRAD_ROWS)
        _check_choice("optim.decay_params", self.optim.decay_params, DECAY_PARAMS)
        if not 0.0 <= self.audio_attn_dropout < 1.0:
            raise ConfigError(f"audio_attn_dropout must be in [0, 1), got {self.audio_attn_dropout}")
        _check_choice("new_rows_init", self.new_rows_init, ("random", "mean"))
        if self.whitening_items < 1 or not 0.0 <= self.whitening_shrink <= 1.0:
            raise ConfigError(f"whitening_items must be >= 1 and whitening_shrink in [0, 1], got "
                              f"{self.whitening_items} and {self.whitening_shrink}")
        for group in self.optim.group_lr:
            _check_choice("optim.group_lr", group, TRAINABLE_GROUPS + ("gates",))
        for group in self.trainable:
            _check_choice("trainable", group, TRAINABLE_GROUPS)
        if ("lora" in self.trainable) != self.lora.enabled:
            raise ConfigError("trainable lists 'lora' exactly when lora.enabled is true; set both or neither")
        for name in ("batch_size", "grad_accum", "max_steps", "save_interval", "windows", "xattn_fewshot_tokens"):
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


def dump_train_config(cfg: TrainConfig) -> str:
    return yaml.safe_dump(config_to_dict(cfg), sort_keys=False)
