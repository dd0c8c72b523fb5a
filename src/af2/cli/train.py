"""``af2 train --config RECIPE [key=value ...]`` (also under ``torchrun --nproc_per_node N -m af2 train``)."""

from __future__ import annotations

import argparse

from af2.config import parse_cli_overrides
from af2.train.config import load_train_config, recipe_names


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "train", help="train one stage of the AF2 curriculum",
        description="Train one stage. RECIPE is a YAML file or a shipped recipe name "
                    f"({', '.join(recipe_names())}); key=value arguments override it (e.g. optim.lr=3e-5).")
    p.add_argument("--config", required=True, metavar="RECIPE")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in output_dir")
    p.add_argument("overrides", nargs="*", metavar="key=value")
    p.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    from af2.train.run import run  # noqa: PLC0415 - keeps `af2 --help` fast

    overrides = parse_cli_overrides(args.overrides)
    if args.resume:
        overrides["resume"] = True
    cfg = load_train_config(args.config, overrides)
    result = run(cfg)
    if not result.losses:
        print(f"{result.run_dir}: already complete at step {result.step} of max_steps={cfg.max_steps}; nothing to do "
              f"(pass a larger max_steps=N with --resume to train further)")
        return 0
    print(f"{result.run_dir}: {result.step} steps, last loss {result.losses[-1] if result.losses else float('nan'):.4f}, "
          f"checkpoint {result.checkpoint}, skipped samples {result.skipped}")
    return 0
