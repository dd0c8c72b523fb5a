"""LoRA on the language model: ``LoRALinear`` wraps an ``nn.Linear`` by composition.

The wrapped layer's weights stay under ``<name>.base.*``; ``plain_state_dict`` maps them back to
``<name>.*`` so that a checkpoint without adapters loads into a model without LoRA, and the
adapters (``*.lora_a.weight``, ``*.lora_b.weight``) are saved on their own.
"""

from __future__ import annotations

import re

import torch
from torch import nn

from af2.errors import ConfigError
from af2.train.config import LoRAConfig


class LoRALinear(nn.Module):
    """``base(x) + (alpha / rank) * B(A(x))``; ``B`` starts at zero so the wrapped layer is unchanged."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float, dropout: float = 0.0):
        super().__init__()
        self.base = base
        self.lora_a = nn.Linear(base.in_features, rank, bias=False, device=base.weight.device,
                                dtype=base.weight.dtype)
        self.lora_b = nn.Linear(rank, base.out_features, bias=False, device=base.weight.device,
                                dtype=base.weight.dtype)
        nn.init.kaiming_uniform_(self.lora_a.weight, a=5 ** 0.5)
        nn.init.zeros_(self.lora_b.weight)
        self.scale = alpha / rank
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + self.lora_b(self.lora_a(self.dropout(x))) * self.scale

    def merged(self) -> nn.Linear:
        """A plain ``nn.Linear`` computing the same function."""
        out = nn.Linear(self.base.in_features, self.base.out_features, bias=self.base.bias is not None,
                        device=self.base.weight.device, dtype=self.base.weight.dtype)
        with torch.no_grad():
            out.weight.copy_(self.base.weight + self.scale * self.lora_b.weight @ self.lora_a.weight)
            if self.base.bias is not None:
                out.bias.copy_(self.base.bias)
        return out


def add_lora(model: nn.Module, cfg: LoRAConfig, prefix: str = "lm.") -> list[str]:
    """Wrap every ``nn.Linear`` under ``prefix`` whose last name is in ``cfg.targets``; return their names."""
    names = [n for n, m in model.named_modules()
             if isinstance(m, nn.Linear) and n.startswith(prefix) and n.rsplit(".", 1)[-1] in cfg.targets]
    if not names:
        raise ConfigError(f"LoRA: no nn.Linear named {list(cfg.targets)} under {prefix!r}; fix lora.targets")
    for name in names:
        parent_name, child = name.rsplit(".", 1)
        parent = model.get_submodule(parent_name)
        setattr(parent, child, LoRALinear(getattr(parent, child), cfg.rank, cfg.alpha, cfg.dropout))
    return names


def merge_lora(model: nn.Module) -> int:
    """Fold every adapter into its linear layer (in place); returns how many were merged."""
    names = [n for n, m in model.named_modules() if isinstance(m, LoRALinear)]
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, getattr(parent, child).merged())
    return len(names)


_LORA_KEY = re.compile(r"\.lora_[ab]\.weight$")


def split_lora_state(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(plain model state with ``.base.`` removed, adapter state)."""
    plain, adapters = {}, {}
    for key, value in state.items():
        if _LORA_KEY.search(key):
            adapters[key] = value
        else:
            plain[key.replace(".base.", ".")] = value
    return plain, adapters


def join_lora_state(model: nn.Module, plain: dict[str, torch.Tensor],
                    adapters: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The inverse of ``split_lora_state`` for ``model`` (which has LoRA where the adapters say)."""
    wrapped = {n for n, m in model.named_modules() if isinstance(m, LoRALinear)}
    out = dict(adapters)
    for key, value in plain.items():
        module, _, leaf = key.rpartition(".")
        out[f"{module}.base.{leaf}" if module in wrapped else key] = value
    return out
