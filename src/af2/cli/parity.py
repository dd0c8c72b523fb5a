"""``af2 check-parity`` and ``af2 check-train-parity``: golden fixtures against af2's forward and training step."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("check-parity", help="compare against a golden fixture computed by the official code",
                       description="Load a golden fixture (config.json, cases.json, checkpoint/, audio/, "
                                   "expected.safetensors), run every case and the batch, print each tensor's "
                                   "error against the fixture's tolerances; exit 0 only if all pass.")
    p.add_argument("fixture", type=Path, help="fixture folder, e.g. ../shared/fixtures/af2-golden-a")
    p.set_defaults(func=_check_parity)

    p = sub.add_parser("check-train-parity", help="compare one training step against a golden training fixture",
                       description="Load a golden TRAINING fixture (config.json, cases.json, checkpoint/, manifests/, "
                                   "audio/, expected.safetensors) computed by the official trainer, run af2's own "
                                   "data path and one training step (stage-1 freezing, loss, backward, embedding-row "
                                   "mask, clip, AdamW) per cross-attention variant, print each tensor's error and a "
                                   "per-group summary; exit 0 only if all pass.")
    p.add_argument("fixture", type=Path, help="fixture folder, e.g. ../shared/fixtures/af2-train-golden-a")
    p.add_argument("--variant", action="append", default=None,
                   help="run only this variant of the fixture (repeatable; default: every variant it records, "
                        "e.g. a_full_xattn = xattn_mask full, b_fewshot_mask = xattn_mask official_fewshot)")
    p.set_defaults(func=_check_train_parity)


def _check_parity(args: argparse.Namespace) -> int:
    import torch

    from af2.parity import run_parity

    torch.manual_seed(0)
    checks = run_parity(args.fixture)
    failed = [c for c in checks if not c.passed]
    print(f"\n{len(checks) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0


def _check_train_parity(args: argparse.Namespace) -> int:
    import torch

    from af2.train.parity import run_train_parity, summarise

    torch.manual_seed(0)
    checks = run_train_parity(args.fixture, args.variant)
    failed = [c for c in checks if not c.passed]
    print("\nper group:")
    for line in summarise(checks):
        print(line)
    print(f"\n{len(checks) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0
