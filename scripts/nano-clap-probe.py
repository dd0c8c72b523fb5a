"""How well does a stage-0 AF-CLAP run match held-out clips to their captions? Zero-shot retrieval on the
corpus's val captions (clips never trained on): audio -> text and text -> audio recall@1/5/10 and median rank,
with the chance levels of the same pool.

    python scripts/nano-clap-probe.py RUN CORPUS [--checkpoint step_00000180] [--clips 400]

RUN is a stage-0 run folder (its config.yaml and checkpoints/); the latest checkpoint unless --checkpoint.
Audio -> text counts a hit when any of the clip's captions ranks within k among every caption of the pool.
"""

from __future__ import annotations

import argparse
import collections
import json
from dataclasses import replace
from pathlib import Path

import torch

from af2.data.dataset import ManifestDataset
from af2.data.manifest import read_manifest
from af2.model.clap import AFClap
from af2.train.checkpoint import latest_checkpoint, load_weights
from af2.train.clap import ClapCollator, build_text_encoder, text_encoder_dir
from af2.train.config import load_train_config
from af2.train.run import load_tokenizer, model_config


def recalls(sim: torch.Tensor, hit: torch.Tensor, ks=(1, 5, 10)) -> dict[str, float]:
    """sim (Q, P) scores; hit (Q, P) bool: which pool entries are right for each query."""
    order = sim.argsort(dim=1, descending=True)
    ranked_hits = hit.gather(1, order)
    first = ranked_hits.float().argmax(dim=1) + 1  # 1-based rank of the first right entry
    out = {f"R@{k}": float((first <= k).float().mean()) for k in ks}
    out["median_rank"] = float(first.float().median())
    right = hit.float().sum(1).mean()
    out.update({f"chance_R@{k}": float(1 - torch.prod(1 - right / torch.arange(hit.shape[1], hit.shape[1] - k, -1)))
                for k in ks})
    return out


@torch.no_grad()
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run")
    ap.add_argument("corpus")
    ap.add_argument("--checkpoint", help="a checkpoint folder name under RUN/checkpoints (default: the latest)")
    ap.add_argument("--clips", type=int, default=400)
    ap.add_argument("--batch", type=int, default=32)
    args = ap.parse_args()
    run, corpus = Path(args.run), Path(args.corpus)
    cfg = load_train_config(str(run / "config.yaml"))
    ckpt = run / "checkpoints" / args.checkpoint if args.checkpoint else latest_checkpoint(run)
    arch = model_config(cfg)
    model = AFClap(arch.htsat, arch.audio, build_text_encoder(cfg.clap), embed_dim=cfg.clap.embed_dim,
                   logit_scale_init=cfg.clap.logit_scale_init)
    load_weights(model, ckpt)
    model.eval()

    items = read_manifest(corpus / "manifests" / "AF2Corpus-AudioCaptioning" / "val.json").items
    by_clip: dict[str, list] = collections.defaultdict(list)
    for item in items:
        by_clip[item.name].append(item)
    clips = sorted(by_clip)[:args.clips]
    firsts = [by_clip[c][0] for c in clips]
    captions = [(i, it.output) for i, c in enumerate(clips) for it in by_clip[c]]
    dataset = ManifestDataset(firsts, str(corpus), replace(arch.audio, max_windows=1))
    collate = ClapCollator(load_tokenizer(text_encoder_dir(cfg.clap.tokenizer or cfg.clap.text_encoder),
                                          "clap.tokenizer"), cfg.clap)

    audio = torch.cat([model.embed_audio(torch.stack([dataset[i].windows[0]
                                                      for i in range(s, min(s + args.batch, len(dataset)))]))
                       for s in range(0, len(dataset), args.batch)])
    text = []
    for s in range(0, len(captions), 64):
        ids, mask = collate._tokens([t for _, t in captions[s:s + 64]])
        text.append(model.embed_text(ids, mask))
    text = torch.cat(text)
    owner = torch.tensor([i for i, _ in captions])
    hit = owner[None, :] == torch.arange(len(clips))[:, None]  # (clips, captions)
    sim = audio @ text.T
    result = {"checkpoint": str(ckpt), "clips": len(clips), "captions": len(captions),
              "audio_to_text": recalls(sim, hit), "text_to_audio": recalls(sim.T, hit.T)}
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
