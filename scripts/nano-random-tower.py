"""Write the random-init nano audio tower that af2-nano's stage 1 starts from (rounds 11 and 13: no stage 0).

    python scripts/nano-random-tower.py OUT_FILE [--seed 0] [--bn0-from MODEL]

The nano HTSAT at its random init (torch seed ``--seed``), with its input BatchNorm statistics (``bn0``: the
mean and variance of each log-mel bin) copied from a model folder or registry name (default: the shipped
``af2-nano``, whose frozen tower carries the statistics of the corpus its stage 0 was trained on). The file is an
``audio_tower.safetensors`` for stage 1's ``audio_tower_checkpoint``. With the defaults it is bit for bit the
tower of rounds 11 and 13. (``scripts/nano-tower-probe.py --random NAME --save-random FILE`` writes one whose
statistics are measured on a corpus instead.)
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from af2.checkpoint.folder import resolve_model_dir
from af2.checkpoint.weights import read_safetensors
from af2.config import nano_config
from af2.model.htsat import HTSAT
from af2.train.checkpoint import save_weights


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--bn0-from", default="af2-nano", metavar="MODEL")
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    tower = HTSAT(nano_config().htsat)
    source = read_safetensors(resolve_model_dir(args.bn0_from) / "model.safetensors")
    state = tower.state_dict()
    for key in [k for k in state if k.startswith("bn0.")]:
        if f"audio_encoder.{key}" not in source:
            raise SystemExit(f"nano-random-tower: {args.bn0_from} has no audio_encoder.{key}")
        state[key] = source[f"audio_encoder.{key}"]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_weights(state, args.out)
    print(f"wrote {args.out} (random nano HTSAT, seed {args.seed}, bn0 from {args.bn0_from})")


if __name__ == "__main__":
    main()
