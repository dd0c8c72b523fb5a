"""What an audio tower hears: linear probes on its pooled tokens for the corpus's clip attributes.

    python scripts/nano-tower-probe.py CORPUS OUT NAME=TOWER [NAME=TOWER ...] [--yamnet] [--random NAME]
                                       [--model NAME=MODEL_FOLDER ...]

Each TOWER is an ``audio_tower.safetensors`` (stage 0's output) or a run directory holding one; ``--random
NAME`` adds a tower at its random init (seed 0) whose input BatchNorm statistics are the corpus's own (the
mean and variance of the log-mel bins over the training clips, what stage 0's BatchNorm would track). For
every single-source clip of the corpus (scenes excluded), the first 10-s window goes through the nano HTSAT
and its 64 tokens are mean-pooled; ``--yamnet`` adds YAMNet's mean class logits as a reference (needs the
stage-0 teacher installed, af2.train.teacher). A multinomial logistic regression per attribute (instrument,
speaker voice, speaking rate, ...) is fitted on the train clips and scored on the held-out clips. Writes
OUT/probe.md (the table) and OUT/probe.json. ``--save-random FILE`` keeps the random tower, for a stage 1
without stage 0 (af2-nano round 11: ``audio_tower_checkpoint=FILE``). ``--model NAME=FOLDER`` probes a whole
model's audio path (a folder ``af2 export`` wrote): its tower (as NAME) and the features its cross-attention
reads, after the audio transformer (and ``xattn.audio_whitening``'s map, if any), mean-pooled the same way (as
NAME+AT). ``--pcs 5 20`` adds, per feature set,
the share of the pooled features' variance in their top K principal components (fitted on the train clips)
and probes on those K components alone (as NAME@pcK): where the attributes lie, in the few directions that
carry the energy or in the rest.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from af2.audio import load_audio
from af2.audio.features import log_mel
from af2.checkpoint.folder import load_pretrained
from af2.config import nano_config
from af2.jsonl import read_jsonl
from af2.model.htsat import HTSAT
from af2.train.checkpoint import load_weights, save_weights
from af2.train.run import audio_tower_file

TASKS = [("midi-synth", "instrument"), ("midi-synth", "family"), ("midi-synth", "pattern"),
         ("midi-synth", "tempo"), ("midi-synth", "dynamics"), ("midi-synth", "mode"), ("tts", "gender"),
         ("tts", "speaking_rate"), ("tts", "voice"), ("tts", "sentence_type"), ("tts", "situation"),
         ("hedgewars-voices", "language"), ("hedgewars-voices", "character"), ("all", "category")]


def clip_path(corpus: Path, clip_id: str) -> Path:
    path = corpus / "audio" / "clips" / f"{clip_id}.flac"  # where `af2 corpus build` writes every clip
    if not path.is_file():
        raise SystemExit(f"nano-tower-probe: no audio for clip {clip_id}: {path} is missing")
    return path


def probe(x: np.ndarray, labels: list[str], train: np.ndarray, weight_decay: float = 1e-3) -> float:
    """Held-out accuracy of an L2-regularised multinomial logistic regression on standardised features."""
    feats = torch.tensor(x, dtype=torch.float64)
    mean, std = feats[train].mean(0), feats[train].std(0) + 1e-6
    feats = (feats - mean) / std
    classes = sorted(set(labels))
    y = torch.tensor([classes.index(v) for v in labels])
    w = torch.zeros(feats.shape[1], len(classes), dtype=torch.float64, requires_grad=True)
    b = torch.zeros(len(classes), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=300, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(feats[train] @ w + b, y[train]) + weight_decay * (w ** 2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        return ((feats[~train] @ w + b).argmax(1) == y[~train]).double().mean().item()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("corpus", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("towers", nargs="*", metavar="NAME=TOWER")
    ap.add_argument("--yamnet", action="store_true", help="add YAMNet's mean class logits as a reference")
    ap.add_argument("--random", metavar="NAME", help="add a randomly initialised tower under this name")
    ap.add_argument("--save-random", type=Path, metavar="FILE",
                    help="also write that random tower as an audio_tower.safetensors (stage 1's audio_tower_checkpoint)")
    ap.add_argument("--pcs", type=int, nargs="*", default=[], metavar="K",
                    help="also probe each feature set's top K principal components")
    ap.add_argument("--model", action="append", default=[], metavar="NAME=FOLDER",
                    help="probe a model folder's tower and its audio transformer's output (repeatable)")
    args = ap.parse_args()
    torch.set_num_threads(1)  # light enough to run beside a training job
    cfg = nano_config()
    rows = [r for _, r in read_jsonl(args.corpus / "metadata" / "clips.jsonl").records if r["source"] != "scenes"]
    waves = [torch.from_numpy(load_audio(clip_path(args.corpus, r["id"]), max_seconds=cfg.audio.window_seconds)
                              .samples).float() for r in tqdm(rows, desc="audio", unit="clip")]
    windows = torch.stack([F.pad(w, (0, cfg.audio.window_samples - w.numel())) for w in waves])
    train = np.array([r["split"] == "train" for r in rows])

    towers: dict[str, HTSAT] = {}
    for spec in args.towers:
        name, _, path = spec.partition("=")
        tower = HTSAT(cfg.htsat)
        load_weights(tower, audio_tower_file(path))
        towers[name] = tower
    if args.random:
        torch.manual_seed(0)
        tower = HTSAT(cfg.htsat)
        sample = np.flatnonzero(train)[::max(1, int(train.sum()) // 256)]  # ~256 training windows
        mels = torch.cat([log_mel(windows[sample[i:i + 32]], cfg.audio) for i in range(0, len(sample), 32)])
        tower.bn0.running_mean.copy_(mels.mean(dim=(0, 1)))
        tower.bn0.running_var.copy_(mels.var(dim=(0, 1)))
        towers[args.random] = tower
        if args.save_random:
            args.save_random.parent.mkdir(parents=True, exist_ok=True)
            save_weights(tower.state_dict(), args.save_random)

    features: dict[str, np.ndarray] = {}
    with torch.no_grad():
        for name, tower in towers.items():
            tower.eval()
            pooled = [tower(log_mel(windows[i:i + 32], cfg.audio)).mean(dim=1)
                      for i in tqdm(range(0, len(rows), 32), desc=name, unit="batch")]
            features[name] = torch.cat(pooled).numpy()
        for spec in args.model:
            name, _, folder = spec.partition("=")
            model = load_pretrained(folder).eval()
            tower_pooled, read_pooled = [], []
            for i in tqdm(range(0, len(rows), 32), desc=name, unit="batch"):
                one_window, mask = windows[i:i + 32, None], torch.ones(len(windows[i:i + 32]), 1)
                tokens = model.encode_windows(one_window, mask)  # the model's own audio path, whitening included
                tower_pooled.append(tokens.mean(dim=1))
                read_pooled.append(model.encode_audio(one_window, mask, tokens=tokens).features.mean(dim=1))
            features[name] = torch.cat(tower_pooled).numpy()
            features[f"{name}+AT"] = torch.cat(read_pooled).numpy()
    if args.yamnet:
        from af2.train.teacher import YamnetTeacher
        teacher = YamnetTeacher()
        features["YAMNet"] = np.stack([teacher.logits(w).mean(0).numpy()
                                       for w in tqdm(waves, desc="YAMNet", unit="clip")])

    variance_share = {}
    for name in list(features):
        for k in args.pcs:
            x = features[name] - features[name][train].mean(0)
            _, singular, basis = np.linalg.svd(x[train], full_matrices=False)
            variance_share[f"{name}@pc{k}"] = float((singular[:k] ** 2).sum() / (singular ** 2).sum())
            features[f"{name}@pc{k}"] = x @ basis[:k].T  # what those K directions hold (the probe standardises)
    if variance_share:
        print("share of the pooled features' variance in the top principal components: "
              + ", ".join(f"{n} {100 * v:.1f} %" for n, v in variance_share.items()))

    results = []
    for source, attr in TASKS:
        keep = [i for i, r in enumerate(rows) if source == "all" or r["source"].startswith(source)]
        value = (lambda r: r.get(attr)) if attr == "category" else (lambda r: r["attributes"].get(attr))
        keep = [i for i in keep if value(rows[i]) is not None]
        labels = [str(value(rows[i])) for i in keep]
        held = ~train[keep]
        majority = Counter(lb for lb, t in zip(labels, train[keep]) if t).most_common(1)[0][0]
        results.append({"task": f"{source}.{attr}", "classes": len(set(labels)), "train": int((~held).sum()),
                        "held_out": int(held.sum()),
                        "majority": float(np.mean([lb == majority for lb, h in zip(labels, held) if h])),
                        **{name: probe(x[keep], labels, train[keep]) for name, x in features.items()}})
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "probe.json").write_text(json.dumps({"probes": results, "variance_share": variance_share}, indent=2))
    names = list(features)
    lines = ["| attribute | classes | train / held-out clips | majority | " + " | ".join(names) + " |",
             "|---|---|---|---|" + "---|" * len(names)]
    for r in results:
        lines.append(f"| {r['task']} | {r['classes']} | {r['train']} / {r['held_out']} | {100 * r['majority']:.0f} | "
                     + " | ".join(f"{100 * r[n]:.0f}" for n in names) + " |")
    if variance_share:
        lines += ["", "Share of the pooled features' variance (train clips) in the top principal components: "
                  + ", ".join(f"{n} {100 * v:.1f} %" for n, v in variance_share.items()) + "."]
    (args.out / "probe.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
