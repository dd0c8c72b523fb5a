"""Does the model listen? Two figures logged at every evaluation of a training run.

1. **Shuffled-audio control**: multiple-choice accuracy on held-out items with each item's own audio
   vs with another item's audio (a fixed derangement). A model that answers from text priors alone
   scores the same on both; one that listens loses accuracy when the audio is swapped.
2. **Feature diversity**: the mean pairwise cosine similarity, across clips, of the audio
   transformer's mean-pooled outputs. Near 1.0 means the audio path has collapsed to one vector.

The answer letter is read from one forward pass: the prompt is followed by ``(`` (every AF2
multiple-choice answer starts ``(x) ...``) and the letters' next-token logits are compared, so the
check costs one teacher-forced pass per item and variant instead of a generation.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

from af2.audio import pad_windows
from af2.data.dataset import ManifestDataset
from af2.data.manifest import ManifestItem, read_manifest
from af2.model.af2 import AF2Model
from af2.model.xattn import AudioContext
from af2.tokens import IGNORE_INDEX, encode_training_batch, inference_prompt
from af2.train.stages import train_mode

_ANSWER = re.compile(r"^\(([a-h])\)", re.IGNORECASE)
LETTERS = "abcdefgh"


@dataclass(frozen=True)
class ListenReport:
    items: int
    accuracy: float  # own audio
    shuffled_accuracy: float  # another item's audio
    chance: float  # mean of 1 / options
    feature_cosine: float  # mean pairwise cosine of pooled audio-transformer outputs across items
    # Mean negative log-probability of the gold answer among the item's choices (letters, or option texts), with
    # own and with shuffled audio: a finer signal than accuracy. A model that listens has nll < nll_shuffled well before its
    # accuracy moves.
    nll: float = float("nan")
    nll_shuffled: float = float("nan")

    def as_dict(self) -> dict[str, float]:
        return {"listen_items": self.items, "listen_acc": self.accuracy, "listen_acc_shuffled": self.shuffled_accuracy,
                "listen_chance": self.chance, "feature_cosine": self.feature_cosine,
                "listen_nll": self.nll, "listen_nll_shuffled": self.nll_shuffled}


def multiple_choice_items(manifest: str, limit: int, scoring: str = "letter") -> list[ManifestItem]:
    """``limit`` multiple-choice items of ``manifest`` spread over the file (every k-th item), in a fixed random
    order, so each check sees the same items and batches mix sources. "letter" scoring needs answers that start
    with the option letter ``(x) ...``; "options" scoring also takes items answered with the option's text, whose
    options and answer index the manifest records (``options``, ``answer_index``)."""
    def is_choice(it: ManifestItem) -> bool:
        if _ANSWER.match(it.output.strip()):
            return True
        return scoring == "options" and bool(it.extra.get("options")) and it.extra.get("answer_index") is not None

    items = [it for it in read_manifest(manifest).items if is_choice(it)]
    if not items:
        wanted = "answers starting '(A)'" if scoring == "letter" else "answers starting '(A)', or 'options' and 'answer_index'"
        raise ValueError(f"listen.manifest {manifest}: no multiple-choice items ({wanted}); point listen.manifest "
                         "at a manifest with multiple-choice items")
    step = max(1, len(items) // limit)
    picked = items[::step][:limit]
    # Checked in a fixed random order: the shuffled-audio control lends each item the audio of its neighbour in
    # a batch, and neighbours in file order often share a source or a voice (af2 eval's control had the same
    # flaw until it answered in a seeded random order).
    random.Random(0).shuffle(picked)
    return picked


def _n_options(prompt: str) -> int:
    return max(2, len(re.findall(r"\([A-Ha-h]\)", prompt)))


def _options(item: ManifestItem) -> tuple[list[str], int]:
    """The item's option texts and the index of the answer (from the manifest, else parsed from the prompt)."""
    options, gold = item.extra.get("options"), item.extra.get("answer_index")
    if not options or gold is None:
        options = [o.strip().rstrip(".") for o in re.split(r"\([A-Ha-h]\)", item.prompt)[1:]]
        gold = LETTERS.index(_ANSWER.match(item.output.strip()).group(1).lower())
    return list(options), int(gold)


Scorer = Callable[[AudioContext], torch.Tensor]


def _letter_scorer(model: AF2Model, tokenizer, batch: list[ManifestItem], device) -> tuple[Scorer, torch.Tensor,
                                                                                          torch.Tensor]:
    """Scores of the answer letters read after "(" → (scorer: audio → (B, 8) logits, -inf past the item's
    options), the gold letters (B,) and the option counts (B,)."""
    enc = tokenizer([inference_prompt(it.prompt) + "(" for it in batch], return_tensors="pt", padding="longest",
                    add_special_tokens=False)
    ids, attn = enc["input_ids"].to(device), enc["attention_mask"].to(device)
    last = attn.sum(1) - 1  # right padding: the position of "("
    rows = torch.arange(len(batch), device=device)
    letter_ids = torch.tensor([tokenizer.convert_tokens_to_ids(c) for c in LETTERS], device=device)
    gold = torch.tensor([LETTERS.index(_ANSWER.match(it.output.strip()).group(1).lower()) for it in batch])
    counts = torch.tensor([_n_options(it.prompt) for it in batch])
    allowed = torch.arange(len(LETTERS))[None, :] < counts[:, None]

    def score(audio: AudioContext) -> torch.Tensor:
        logits = model(input_ids=ids, attention_mask=attn, audio=audio).logits[rows, last]
        return logits[:, letter_ids].float().cpu().masked_fill(~allowed, float("-inf"))

    return score, gold, counts


def _option_scorer(model: AF2Model, tokenizer, batch: list[ManifestItem], device) -> tuple[Scorer, torch.Tensor,
                                                                                          torch.Tensor]:
    """Scores of the option texts as answers: minus their mean answer-token NLL → (scorer: audio → (B, max options),
    -inf past the item's options), the gold indices (B,) and the option counts (B,). Tokenised once per batch."""
    found = [_options(it) for it in batch]
    counts = torch.tensor([len(options) for options, _ in found])
    prompts = [it.prompt for it, (options, _) in zip(batch, found) for _ in options]
    enc = encode_training_batch(tokenizer, prompts, [o for options, _ in found for o in options], model.cfg.tokens)
    ids, attn = enc["input_ids"].to(device), enc["attention_mask"].to(device)
    labels = enc["labels"][:, 1:].to(device)
    owner = torch.repeat_interleave(torch.arange(len(batch)), counts).to(device)
    slot = torch.cat([torch.arange(int(c)) for c in counts]).to(device)

    def score(audio: AudioContext) -> torch.Tensor:
        logits = model(input_ids=ids, attention_mask=attn, audio=audio.select(owner)).logits[:, :-1].float()
        nll = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=IGNORE_INDEX,
                              reduction="none").view(labels.shape)
        mean_nll = nll.sum(1) / (labels != IGNORE_INDEX).sum(1).clamp_min(1)
        scores = torch.full((len(batch), int(counts.max())), float("-inf"), device=device)
        scores[owner, slot] = -mean_nll
        return scores.cpu()

    return score, torch.tensor([g for _, g in found]), counts


@torch.no_grad()
def listen_check(model: AF2Model, tokenizer, items: list[ManifestItem], data_root: str, windows: int,
                 batch_size: int = 8, scoring: str = "letter") -> ListenReport:
    """Accuracy with own vs shuffled audio, and feature diversity, over ``items`` (model left in eval).

    scoring: "letter" reads the answer letter after "(" (models trained on "(B) text" answers); "options"
    ranks the option texts by their mean answer-token NLL (models trained to answer with the option text)."""
    was_training = model.training
    model.eval()
    make_scorer = _option_scorer if scoring == "options" else _letter_scorer
    dataset = ManifestDataset(items, data_root, replace(model.cfg.audio, max_windows=windows))
    device = next(model.parameters()).device
    features, chance = [], []
    correct: tuple[list[torch.Tensor], list[torch.Tensor]] = ([], [])  # own audio, shuffled audio
    nll: tuple[list[torch.Tensor], list[torch.Tensor]] = ([], [])
    for start in range(0, len(items), batch_size):
        batch = [dataset[i] for i in range(start, min(start + batch_size, len(items)))]
        wins, mask = pad_windows([s.windows for s in batch], windows)
        audio = model.encode_audio(wins.to(device), mask.to(device))
        real = audio.mask.unsqueeze(-1).to(audio.features.dtype)
        features.append((audio.features * real).sum(1) / real.sum(1))
        score, gold, counts = make_scorer(model, tokenizer, items[start:start + len(batch)], device)
        # the same prompts with the audio rolled by one item (a derangement for batches of 2+)
        perm = torch.roll(torch.arange(len(batch)), 1) if len(batch) > 1 else torch.arange(1)
        for variant, context in enumerate((audio, audio.select(perm.to(device)))):
            scores = score(context)
            correct[variant].append(scores.argmax(1) == gold)
            nll[variant].append(-scores.log_softmax(1).gather(1, gold[:, None]).squeeze(1))
        chance.append(1.0 / counts.float())
    if was_training:
        train_mode(model)
    return ListenReport(items=len(items), accuracy=torch.cat(correct[0]).float().mean().item(),
                        shuffled_accuracy=torch.cat(correct[1]).float().mean().item(),
                        chance=torch.cat(chance).mean().item(), feature_cosine=mean_pairwise_cosine(torch.cat(features)),
                        nll=torch.cat(nll[0]).mean().item(), nll_shuffled=torch.cat(nll[1]).mean().item())


def mean_pairwise_cosine(x: torch.Tensor) -> float:
    """Mean cosine similarity over all distinct pairs of rows of ``x`` (n, D)."""
    if x.shape[0] < 2:
        return float("nan")
    unit = torch.nn.functional.normalize(x.float(), dim=1)
    sims = unit @ unit.T
    n = x.shape[0]
    return ((sims.sum() - sims.diagonal().sum()) / (n * (n - 1))).item()
