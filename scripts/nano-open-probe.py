"""Does a model answer open questions from the audio? Teacher-forced answers with each item's own audio vs
another item's (a fixed derangement), per question template: mean answer NLL and first-token accuracy.

    python scripts/nano-open-probe.py MODEL CORPUS [--items 160] [--manifest NAME]

MODEL is anything af2.load accepts (a run folder, a model folder, a registry name). The items are the
open-answer (not multiple-choice) items of CORPUS/manifests/NAME/val.json, every k-th one, as the
af2-nano card's round-2 figures (NAME defaults to AF2Corpus-AudioSkills-Focus, made by
scripts/nano-short-manifest.py).
"""

from __future__ import annotations

import argparse
import collections

import torch

from af2.audio import pad_windows
from af2.data.dataset import ManifestDataset
from af2.data.manifest import read_manifest
from af2.inference import load
from af2.tokens import IGNORE_INDEX, encode_training_batch


def answer_scores(model, tokenizer, batch, audio):
    """(answer NLL summed over tokens, first answer token predicted right) per item, for one audio context."""
    enc = encode_training_batch(tokenizer, [b.prompt for b in batch], [b.output for b in batch], model.cfg.tokens)
    logits = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], audio=audio).logits[:, :-1]
    labels = enc["labels"][:, 1:]
    nll = torch.nn.functional.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), ignore_index=IGNORE_INDEX,
                                            reduction="none").view(labels.shape)
    first = (labels != IGNORE_INDEX).float().argmax(1)
    rows = torch.arange(len(batch))
    return nll.sum(1), logits[rows, first].argmax(-1) == labels[rows, first]


@torch.no_grad()
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("corpus")
    ap.add_argument("--items", type=int, default=160)
    ap.add_argument("--manifest", default="AF2Corpus-AudioSkills-Focus")
    ap.add_argument("--windows", type=int, default=3)
    args = ap.parse_args()
    af2 = load(args.model, dtype="float32")
    model, tokenizer = af2.model, af2.tokenizer
    items = [it for it in read_manifest(f"{args.corpus}/manifests/{args.manifest}/val.json").items
             if not it.output.startswith("(")]
    items = items[::max(1, len(items) // args.items)][:args.items]
    dataset = ManifestDataset(items, args.corpus, model.cfg.audio)
    totals = collections.defaultdict(lambda: torch.zeros(5))  # nll own, nll shuffled, n, acc own, acc shuffled
    for start in range(0, len(items), 16):
        batch = [dataset[i] for i in range(start, min(start + 16, len(items)))]
        windows, mask = pad_windows([b.windows for b in batch], args.windows)
        audio = model.encode_audio(windows, mask)
        own = answer_scores(model, tokenizer, batch, audio)
        other = answer_scores(model, tokenizer, batch, audio.select(torch.roll(torch.arange(len(batch)), 1)))
        for i, item in enumerate(items[start:start + len(batch)]):
            template = item.extra.get("provenance", {}).get("template", item.id.split("/")[-2])
            totals[template] += torch.tensor([own[0][i], other[0][i], 1.0, float(own[1][i]), float(other[1][i])])
    totals["ALL"] = sum(totals.values(), torch.zeros(5))
    for name, (nll_own, nll_other, n, acc_own, acc_other) in sorted(totals.items(), key=lambda kv: kv[0] == "ALL"):
        print(f"{name:20s} n={int(n):3d} answer nll own {nll_own / n:.3f} shuffled {nll_other / n:.3f} | "
              f"first-token acc own {acc_own / n:.2f} shuffled {acc_other / n:.2f}")


if __name__ == "__main__":
    main()
