"""Freezing as data: a stage names its trainable groups; ``apply_stage`` applies and checks them.

Groups (parameter names of ``af2.model.af2.AF2Model``):
  clap               audio_encoder.*                      the AF-CLAP HTSAT tower
  audio_transformer  audio_transformer.*                  the 3 transformation layers
  xattn              lm.model.layers.<i>.xattn.*          gated cross-attention blocks
  embeddings         lm.model.embed_tokens.weight         tied to lm_head: the whole vocabulary trains
  lora               *.lora_a.weight, *.lora_b.weight     adapters on the LM (af2.train.lora)
  text_tower         text_encoder.*                       stage 0 only: the HF text encoder
  projections        audio_/text_projection.*, teacher_head.*, logit_scale  stage 0 only: the heads
Frozen modules are put in eval mode and kept there: a forward pre-hook returns them to eval even
after ``model.train()`` (so BatchNorm statistics, SpecAugment and drop-path of a frozen CLAP stay off,
unlike the official code, spec 10.4 #23).
"""

from __future__ import annotations

import re
import weakref
from collections.abc import Callable
from dataclasses import dataclass

from torch import nn
from af2.errors import ConfigError
from af2.model.af2 import EMBEDDING_KEY

GROUP_PATTERNS: dict[str, Callable[[str], bool]] = {
    "clap": lambda n: n.startswith("audio_encoder."),
    "audio_transformer": lambda n: n.startswith("audio_transformer."),
    # the blocks and the map of where audio tokens lie in time that only they read (xattn.audio_time_features)
    "xattn": lambda n: re.match(r"lm\.model\.layers\.\d+\.xattn\.", n) is not None or n.startswith("audio_time."),
    "embeddings": lambda n: n == EMBEDDING_KEY,
    "lora": lambda n: re.search(r"\.lora_[ab]\.weight$", n) is not None,
    # stage 0 (af2.model.clap.AFClap): the text tower, both projection heads and the teacher head
    "text_tower": lambda n: n.startswith("text_encoder."),
    "projections": lambda n: n.startswith(("audio_projection.", "text_projection.", "teacher_head."))
    or n == "logit_scale",
}


# model -> hook handles of its frozen modules, replaced each time a stage is applied
_EVAL_HOOKS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class TrainableSet:
    names: tuple[str, ...]
    count: int  # trainable scalars
    per_group: dict[str, int]


def select(names: list[str], groups: tuple[str, ...]) -> dict[str, list[str]]:
    """``{group: [parameter names]}``; each requested group must match something."""
    out = {}
    for group in groups:
        if group not in GROUP_PATTERNS:
            raise ConfigError(f"unknown trainable group {group!r}; choose from {', '.join(GROUP_PATTERNS)}")
        out[group] = [n for n in names if GROUP_PATTERNS[group](n)]
        if not out[group]:
            raise ConfigError(f"trainable group {group!r} matches no parameter of the model")
    return out


def _keep_eval(module: nn.Module, args) -> None:
    if module.training:
        module.eval()


def apply_stage(model: nn.Module, groups: tuple[str, ...], expected_count: int | None = None) -> TrainableSet:
    """Make exactly ``groups`` trainable; freeze everything else and hold frozen modules in eval."""
    params = dict(model.named_parameters())
    chosen = select(list(params), groups)
    trainable = {n for names in chosen.values() for n in names}
    for name, p in params.items():
        p.requires_grad_(name in trainable)
    for handle in _EVAL_HOOKS.pop(model, []):
        handle.remove()
    frozen = _maximal_frozen(model)
    for module in frozen:
        module.eval()
    _EVAL_HOOKS[model] = [m.register_forward_pre_hook(_keep_eval) for m in frozen]
    result = TrainableSet(names=tuple(sorted(trainable)), count=sum(params[n].numel() for n in trainable),
                          per_group={g: sum(params[n].numel() for n in ns) for g, ns in chosen.items()})
    assert_trainable(model, result.names)
    if expected_count is not None and result.count != expected_count:
        raise AssertionError(f"stage {groups}: {result.count} trainable parameters, expected {expected_count}")
    return result


def assert_trainable(model: nn.Module, names: tuple[str, ...]) -> None:
    """Fail unless the parameters with ``requires_grad`` are exactly ``names``."""
    actual = {n for n, p in model.named_parameters() if p.requires_grad}
    if actual != set(names):
        extra, missing = sorted(actual - set(names)), sorted(set(names) - actual)
        raise AssertionError(f"trainable parameters differ: unexpected {extra[:5]}, missing {missing[:5]}")


def _maximal_frozen(model: nn.Module) -> list[nn.Module]:
    """The largest sub-modules that own parameters, none of them trainable."""
    out: list[nn.Module] = []

    def visit(module: nn.Module) -> None:
        ps = list(module.parameters())
        if ps and not any(p.requires_grad for p in ps):
            out.append(module)
            return
        for child in module.children():
            visit(child)

    visit(model)
    return out


def train_mode(model: nn.Module) -> None:
    """``model.train()``, with the frozen modules of the applied stage back in eval at once."""
    model.train()
    for handle_owner in _frozen_of(model):
        handle_owner.eval()


def _frozen_of(model: nn.Module) -> list[nn.Module]:
    return _maximal_frozen(model) if model in _EVAL_HOOKS else []
