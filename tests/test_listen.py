"""The training-time listening check (af2.train.listen) on the golden fixture's tiny AF2: own vs shuffled
audio accuracy and gold NLL with both scorings, the pooled-feature cosine, item selection and option parsing."""

from __future__ import annotations

import copy
import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from af2.base_lm import load_tokenizer
from af2.data.manifest import ManifestItem, write_manifest
from af2.tokens import add_special_tokens
from af2.train.listen import LETTERS, _options, listen_check, mean_pairwise_cosine, multiple_choice_items

SR = 16_000
SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "nano-short-manifest.py"


def item(i: int, prompt: str, output: str, **extra) -> ManifestItem:
    return ManifestItem(id=f"t/{i}", name=f"{i}.wav", prompt=prompt, output=output, duration=1.0, split="val",
                        split_path="clips", flamingo_task="T-AQA", extra=extra)


# --- mean_pairwise_cosine ---------------------------------------------------------------------------------------

def test_mean_pairwise_cosine():
    assert mean_pairwise_cosine(torch.tensor([[1.0, 2.0, 3.0]] * 4)) == pytest.approx(1.0)
    assert mean_pairwise_cosine(torch.tensor([[2.0, 0.0], [0.0, 5.0]])) == pytest.approx(0.0, abs=1e-7)
    assert mean_pairwise_cosine(torch.tensor([[1.0, 0.0], [-1.0, 0.0]])) == pytest.approx(-1.0)
    # three rows: pairs (1,1)->1, the two others 0 → mean over the 3 distinct pairs = 1/3
    assert mean_pairwise_cosine(torch.tensor([[1.0, 0.0], [3.0, 0.0], [0.0, 1.0]])) == pytest.approx(1 / 3)
    assert math.isnan(mean_pairwise_cosine(torch.tensor([[1.0, 2.0]])))


# --- multiple_choice_items --------------------------------------------------------------------------------------

def test_multiple_choice_items_are_lettered_answers_spread_over_the_file(tmp_path):
    not_lettered = ["a dog barking", "(I) not a letter", " (Z) nope", "b) a cat", "the answer is (A) a dog"]
    items = []
    for i in range(30):
        if i % 3 == 0:  # 10 multiple-choice items at 0, 3, ..., 27; answers (A)..(H) in either case
            items.append(item(i, "what is it? (A) a dog. (B) a cat.", f"({'ABCDEFGHab'[i // 3]}) option"))
        else:
            items.append(item(i, "what is it?", not_lettered[i % len(not_lettered)]))
    path = write_manifest(tmp_path / "m.json", items, split="val", split_path="clips", flamingo_task="T-AQA")
    picked = multiple_choice_items(str(path), 3)
    assert sorted(it.id for it in picked) == ["t/0", "t/18", "t/9"]  # every 3rd of the 10, not the first 3
    every = [it.id for it in multiple_choice_items(str(path), 100)]
    assert sorted(every, key=lambda i: int(i[2:])) == [f"t/{i}" for i in range(0, 30, 3)]
    # in a fixed random order, so batch neighbours (whose audio the shuffled control swaps) are not file neighbours
    assert every != sorted(every, key=lambda i: int(i[2:]))
    assert [it.id for it in multiple_choice_items(str(path), 100)] == every
    assert len(multiple_choice_items(str(path), 7)) == 7
    open_only = write_manifest(tmp_path / "open.json", [it for it in items if not it.output.startswith("(")],
                               split="val", split_path="clips", flamingo_task="T-AQA")
    with pytest.raises(ValueError, match="no multiple-choice items"):
        multiple_choice_items(str(open_only), 3)


def test_options_scoring_also_takes_items_answered_with_the_option_text(tmp_path):
    # scripts/nano-short-manifest.py answers multiple-choice items with the option's text and records the options
    texted = [item(i, "what is it? (A) a dog. (B) a cat.", ["a dog", "a cat"][i % 2], options=["a dog", "a cat"],
                   answer_index=i % 2) for i in range(4)]
    open_items = [item(10 + i, "what is it?", "a dog") for i in range(3)]
    path = write_manifest(tmp_path / "m.json", texted + open_items, split="val", split_path="clips",
                          flamingo_task="T-AQA")
    assert sorted(it.id for it in multiple_choice_items(str(path), 10, "options")) == [f"t/{i}" for i in range(4)]
    with pytest.raises(ValueError, match="no multiple-choice items"):  # letter scoring cannot read these
        multiple_choice_items(str(path), 10, "letter")


# --- _options -----------------------------------------------------------------------------------------------------

def test_options_from_manifest_fields_and_from_the_prompt():
    explicit = item(0, "which? (A) ignored. (B) also ignored.", "(A) ignored",
                    options=["violin", "piano", "drums"], answer_index=2)
    assert _options(explicit) == (["violin", "piano", "drums"], 2)
    assert _options(item(1, "which instrument? (A) violin. (B) piano. (C) drums.", "(B) piano")) == (
        ["violin", "piano", "drums"], 1)
    # answer_index 0 is a real index, not a missing one
    assert _options(item(2, "x (A) p. (B) q.", "(B) q", options=["p", "q"], answer_index=0)) == (["p", "q"], 0)
    # only one of the two fields present: parsed from the prompt
    assert _options(item(3, "x (A) p. (B) q.", "(b) q", options=["z"])) == (["p", "q"], 1)


# --- listen_check on the tiny official AF2 ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def letter_tokenizer(official_model, fixture_dir, tmp_path_factory):
    """The fixture's word-level tokenizer with words w10..w17 renamed to the letters a..h (same ids), so the
    letter scoring reads distinct tokens; the AF2 special tokens are added as the loader adds them."""
    src = fixture_dir / "checkpoint" / "tokenizer"
    folder = tmp_path_factory.mktemp("letter_tok")
    for f in src.iterdir():
        (folder / f.name).write_bytes(f.read_bytes())
    doc = json.loads((folder / "tokenizer.json").read_text())
    vocab = doc["model"]["vocab"]
    for k, letter in enumerate(LETTERS):
        vocab[letter] = vocab.pop(f"w{10 + k}")
    (folder / "tokenizer.json").write_text(json.dumps(doc))
    tokenizer = load_tokenizer(folder)
    add_special_tokens(tokenizer, official_model[0].cfg.tokens)
    assert len(tokenizer) == len(official_model[1])
    assert [tokenizer.convert_tokens_to_ids(c) for c in LETTERS] == list(range(10, 18))
    return tokenizer


@pytest.fixture(scope="module")
def listen_items(tmp_path_factory):
    """Six 1-s tones of different pitch; 2-4 options each (words of the stand-in vocabulary), mixed gold
    letters, two items with options/answer_index given as manifest fields."""
    root = tmp_path_factory.mktemp("listen_data")
    (root / "clips").mkdir()
    rng = np.random.default_rng(0)
    t = np.arange(SR) / SR
    specs = [(2, 0, False), (3, 2, False), (4, 1, True), (2, 1, False), (3, 0, True), (4, 3, False)]
    items = []
    for i, (n, gold, fields) in enumerate(specs):
        clip = 0.5 * np.sin(2 * np.pi * (200 + 700 * i) * t) + 0.05 * rng.standard_normal(SR)
        sf.write(root / "clips" / f"{i}.wav", clip.astype(np.float32), SR)
        words = [f"w{40 + 5 * i + k}" for k in range(n)]
        prompt = f"w{20 + i} w{30 + i} " + " ".join(f"({LETTERS[k].upper()}) {w}." for k, w in enumerate(words))
        extra = {"options": words, "answer_index": gold} if fields else {}
        items.append(item(i, prompt, f"({LETTERS[gold].upper()}) {words[gold]}", **extra))
    path = write_manifest(root / "val.json", items, split="val", split_path="clips", flamingo_task="T-AQA")
    picked = multiple_choice_items(str(path), 6)
    assert len(picked) == 6
    return picked, str(root), sum(1 / s[0] for s in specs) / len(specs)


def set_gates(model, value: float) -> None:
    with torch.no_grad():
        for layer in model.decoder_layers:
            if layer.xattn is not None:
                layer.xattn.attn_gate.fill_(value)
                layer.xattn.ff_gate.fill_(value)


@pytest.fixture(scope="module")
def closed_and_open(official_model, open_gates):
    closed = copy.deepcopy(official_model[0]).eval()
    set_gates(closed, 0.0)
    opened = copy.deepcopy(official_model[0]).eval()
    open_gates(opened, torch.Generator().manual_seed(0))
    return closed, opened


@pytest.mark.parametrize("scoring", ["letter", "options"])
def test_listen_check_closed_gates_ignore_audio_open_gates_listen(closed_and_open, letter_tokenizer, listen_items,
                                                                 scoring):
    items, root, chance = listen_items
    closed, opened = closed_and_open
    # batch_size 4: one full batch and a batch of 2, both shuffled by a derangement
    shut = listen_check(closed, letter_tokenizer, items, root, windows=1, batch_size=4, scoring=scoring)
    live = listen_check(opened, letter_tokenizer, items, root, windows=1, batch_size=4, scoring=scoring)
    for report in (shut, live):
        assert report.items == len(items) == 6
        assert report.chance == pytest.approx(chance)
        assert 0.0 <= report.accuracy <= 1.0 and 0.0 <= report.shuffled_accuracy <= 1.0
        # accuracies are counts over 6 items
        assert report.accuracy * 6 == pytest.approx(round(report.accuracy * 6))
        assert math.isfinite(report.nll) and report.nll > 0 and math.isfinite(report.nll_shuffled)
        assert -1.0 - 1e-6 <= report.feature_cosine <= 1.0 + 1e-6
        assert set(report.as_dict()) == {"listen_items", "listen_acc", "listen_acc_shuffled", "listen_chance",
                                         "feature_cosine", "listen_nll", "listen_nll_shuffled"}
    # gates at zero: the LM never sees the audio, so whose audio it is cannot matter
    assert shut.accuracy == shut.shuffled_accuracy
    assert shut.nll == shut.nll_shuffled
    # the gates do not touch the audio encoder
    assert live.feature_cosine == pytest.approx(shut.feature_cosine, abs=1e-6)
    # open gates: the audio reaches the answer scores
    assert abs(live.nll - live.nll_shuffled) > 1e-4
    assert live.nll != pytest.approx(shut.nll, abs=1e-4)


def test_listen_check_restores_training_mode(official_model, letter_tokenizer, listen_items):
    items, root, _ = listen_items
    model = copy.deepcopy(official_model[0]).train()
    listen_check(model, letter_tokenizer, items[:2], root, windows=1, scoring="letter")
    assert model.training
    model.eval()
    listen_check(model, letter_tokenizer, items[:2], root, windows=1, scoring="options")
    assert not model.training


# --- scripts/nano-short-manifest.py ------------------------------------------------------------------------------

def test_nano_short_manifest_option_text():
    spec = importlib.util.spec_from_file_location("nano_short_manifest", SCRIPT)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    lettered = item(0, "which instrument? (A) piano. (B) violin.", "(B) violin", answer_index=1)
    converted = script.option_text(lettered)
    assert converted.output == "violin"
    assert converted.prompt == lettered.prompt and converted.extra == lettered.extra
    assert script.option_text(item(1, "who speaks?", "male")) == item(1, "who speaks?", "male")
    assert script.option_text(item(2, "x", " (H)  two words ")).output == "two words"
