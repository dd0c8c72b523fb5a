"""Shared test helpers: the golden fixture's location and tiny models. Everything is offline."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("AF2_SHARED", REPO.parent / "shared"))
FIXTURE = SHARED / "fixtures" / "af2-golden-a"
TRAIN_FIXTURE = SHARED / "fixtures" / "af2-train-golden-a"


@pytest.fixture(scope="session")
def fixture_dir() -> Path:
    if not FIXTURE.is_dir():
        pytest.fail(f"golden fixture not found at {FIXTURE}; set AF2_SHARED to the shared/ folder")
    return FIXTURE


@pytest.fixture(scope="session")
def train_fixture_dir() -> Path:
    if not TRAIN_FIXTURE.is_dir():
        pytest.fail(f"training fixture not found at {TRAIN_FIXTURE}; set AF2_SHARED to the shared/ folder")
    return TRAIN_FIXTURE


@pytest.fixture(scope="session")
def official_model(fixture_dir):
    """The fixture's tiny official checkpoint loaded through our strict loader (model, tokenizer, ids)."""
    from af2.checkpoint import load_official
    from af2.parity import fixture_config

    return load_official(fixture_dir / "checkpoint", cfg=fixture_config(fixture_dir))


def randomize_gates(model, generator: torch.Generator) -> None:
    """Open every cross-attention gate so that audio moves the logits (gates start at zero)."""
    with torch.no_grad():
        for layer in model.decoder_layers:
            if layer.xattn is not None:
                layer.xattn.attn_gate.uniform_(0.3, 1.0, generator=generator)
                layer.xattn.ff_gate.uniform_(0.3, 1.0, generator=generator)


@pytest.fixture(scope="session")
def open_gates():
    return randomize_gates
