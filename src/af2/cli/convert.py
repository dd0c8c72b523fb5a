"""Model folders: ``af2 convert`` (NVIDIA's layout -> af2's), ``af2 export`` (a run's model) and ``af2 base-lm``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("convert", help="convert an official AF2 checkpoint folder to af2's format",
                       description="Read NVIDIA's released layout (safe_ckpt/ + clap_ckpt/) plus the base LM's "
                                   "config and tokenizer, check every key, write config.json + model.safetensors "
                                   "+ tokenizer to OUT_DIR.")
    p.add_argument("official_dir", type=Path, help="folder holding safe_ckpt/ and clap_ckpt/")
    p.add_argument("out_dir", type=Path)
    p.add_argument("--base-lm", help="Qwen2.5 base LM (local folder or hub id) for its config and tokenizer, "
                                      "when OFFICIAL_DIR has no lm_config.json/tokenizer/ "
                                      "(e.g. Qwen/Qwen2.5-0.5B for audio-flamingo-2-0.5B)")
    p.add_argument("--config", type=Path, help="YAML giving the architecture (default: the released AF2, with "
                                                "the audio-side sizes read from the checkpoint's tensor shapes)")
    p.add_argument("--max-windows", type=int, default=None,
                   help="audio windows (10 s each) stored in the converted config (default: the value in "
                        "--config, else 30 = 5 minutes; NVIDIA's shipped inference config uses 12 = 2 minutes)")
    p.add_argument("--strict", action="store_true", help="refuse weights holding NaN or Inf (default: warn)")
    p.set_defaults(func=_convert)

    p = sub.add_parser("export", help="copy a training run's model (or any af2 model folder) to a clean folder",
                       description="Copy the newest checkpoint of a run directory (or a checkpoint / model folder) "
                                   "as a model folder: config.json, model.safetensors and the tokenizer; the "
                                   "trainer state (optimizer, RNG) stays behind. The result loads with af2.load.")
    p.add_argument("source", type=Path, help="run directory, checkpoint folder or model folder")
    p.add_argument("out_dir", type=Path)
    p.set_defaults(func=_export)

    p = sub.add_parser("base-lm", help="prepare a registered base LM offline (e.g. dequantise SmolLM2 once)")
    p.add_argument("action", choices=("prepare",))
    p.add_argument("name", help="a registered base LM, e.g. smollm2-135m-instruct")
    p.set_defaults(func=_base_lm)


def _convert(args: argparse.Namespace) -> int:
    import dataclasses

    from af2.checkpoint.folder import save_pretrained
    from af2.checkpoint.official import load_official, official_base_lm
    from af2.config import load_config_yaml

    cfg = load_config_yaml(args.config) if args.config else None  # None: sizes read from the shapes
    if args.base_lm is None and (args.official_dir / "safe_ckpt").is_dir() and \
            not (args.official_dir / "lm_config.json").is_file():
        args.base_lm = official_base_lm(args.official_dir)
    model, tokenizer, _ = load_official(args.official_dir, base_lm=args.base_lm, cfg=cfg, strict=args.strict)
    if args.max_windows is not None:  # how much audio the model listens to: no weight depends on it
        model.cfg = dataclasses.replace(model.cfg, audio=dataclasses.replace(model.cfg.audio,
                                                                             max_windows=args.max_windows))
    out = save_pretrained(model, args.out_dir, tokenizer)
    n = sum(p.numel() for p in model.parameters())
    print(f"wrote {out} ({n:,} parameters)", file=sys.stderr)
    return 0


def _export(args: argparse.Namespace) -> int:
    from af2.checkpoint.folder import export_model_folder

    out = export_model_folder(args.source, args.out_dir)
    size = sum(f.stat().st_size for f in out.iterdir()) / 1e6
    print(f"wrote {out} ({size:.1f} MB)", file=sys.stderr)
    return 0


def _base_lm(args: argparse.Namespace) -> int:
    from af2.base_lm import resolve_base_lm
    from af2.errors import ConfigError
    from af2.registry import BASE_LMS

    if args.name.lower() not in BASE_LMS:
        raise ConfigError(f"unknown base LM {args.name!r}; registered: {', '.join(BASE_LMS)}")
    print(f"{args.name}: {resolve_base_lm(args.name)}", file=sys.stderr)
    return 0
