"""Multiple-choice benchmarks: MMAU, MMAR, MuChoMusic (options listed in the prompt)."""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

from af2.errors import RequestError
from af2.eval.formats import AUDIO_SUFFIXES, audio_path, field, find_file, label_text, read_csv, read_records
from af2.eval.registry import Example, register_task

MC_PROMPT = "{question} {options}"  # AF2's training format for options: "Question? (A) xxx. (B) yyy."


def facets(record: dict, keys: tuple[str, ...]) -> dict:
    return {"facets": {k: label_text(record[k]) for k in keys if record.get(k) not in (None, "", [])}}


def mc_items(path: Path, audio_keys: tuple[str, ...], category_key: str, facet_keys: tuple[str, ...]) -> list[Example]:
    """MMAU-format items: ``choices`` (a list holding ``answer``), ``question``, an audio path relative to the file."""
    out = []
    for i, item in enumerate(read_records(path)):
        where = f"{path}: item {i}"
        choices = field(item, ("choices",), where)
        answer = field(item, ("answer",), where)
        if not isinstance(choices, list) or answer not in choices:
            raise RequestError(f"{where}: 'choices' must be a list that contains 'answer' ({answer!r})")
        out.append(Example(
            id=str(item.get("id", i)), audio=audio_path(path.parent, field(item, audio_keys, where), where),
            question=field(item, ("question",), where), reference=answer, choices=tuple(choices),
            category=label_text(item.get(category_key, "all")), extra=facets(item, facet_keys)))
    return out


@register_task("mmau-test-mini", version="2", folder="mmau", prompt=MC_PROMPT, scorer="mmau-string-match",
               description="MMAU test-mini: 1,000 multiple-choice questions on sound, music and speech",
               data_source="github.com/Sakshi113/MMAU: mmau-test-mini.json + test-mini-audios.tar.gz",
               revision="Sakshi113/MMAU mmau-test-mini.json (fields id, audio_id, question, choices, answer, dataset, "
                        "task, split, category, sub-category, difficulty); the original and v05.15.25 revisions share "
                        "this layout: the file sha256 in the card says which one was used",
               category_name="task")
def load_mmau(root: Path) -> list[Example]:
    path = find_file(root, ("mmau-test-mini.json", "*.json"), "mmau-test-mini")
    return mc_items(path, ("audio_id", "audio_path"), "task", ("difficulty", "category", "sub-category", "dataset"))


@register_task("mmar", version="2", folder="mmar", prompt=MC_PROMPT, scorer="mmau-string-match",
               description="MMAR: 1,000 multiple-choice reasoning questions over sound, music, speech and mixes",
               data_source="github.com/ddlBoJack/MMAR: MMAR-meta.jsonl (formerly MMAR-meta.json) + the audio "
                           "archive (HF dataset BoJack/MMAR)",
               revision="ddlBoJack/MMAR MMAR-meta.jsonl (one item per line; the older MMAR-meta.json list is also "
                        "read); fields id, audio_path (./audio/<id>.wav), question, choices, answer, modality, "
                        "category, sub-category, language",
               category_name="modality")
def load_mmar(root: Path) -> list[Example]:
    path = find_file(root, ("MMAR-meta.jsonl", "MMAR-meta.json", "*.jsonl", "*.json"), "mmar")
    return mc_items(path, ("audio_path", "audio_id"), "modality", ("category", "sub-category", "language"))


def _muchomusic_audio(root: Path) -> dict[str, Path]:
    """Audio files under ``root`` by stem, and by the stem before '.2min' (Song Describer's clip names)."""
    index: dict[str, Path] = {}
    for p in sorted(root.rglob("*")):
        if p.suffix.lower() in AUDIO_SUFFIXES:
            index.setdefault(p.stem, p)
            index.setdefault(p.stem.removesuffix(".2min"), p)
    return index


def _muchomusic_csv(path: Path, audio_dir: Path) -> list[Example]:
    """The released ``muchomusic.csv``: the correct answer and three distractors per row, shuffled
    deterministically per question (the official script shuffles with an unseeded RNG)."""
    rows = read_csv(path, ("question", "dataset", "dataset_identifier", "correct_answer", "distractor_1_answer",
                           "distractor_2_answer", "distractor_3_answer"))
    audio = _muchomusic_audio(audio_dir)
    out = []
    for i, row in enumerate(rows):
        where = f"{path}: row {i + 2}"
        ident = row["dataset_identifier"].removesuffix(".json")
        # Song Describer rows name a track id; MusicCaps rows "<ytid>_<n>", audio "[<ytid>]-[<start>-<end>].wav".
        stem = ident if row["dataset"] == "sdd" else "_".join(ident.split("_")[:-1])
        hit = audio.get(stem) or next((p for s, p in audio.items() if s.startswith(f"[{stem}]-")), None)
        if hit is None:
            raise RequestError(f"{where}: no audio for {row['dataset']} item {stem!r} under {audio_dir}")
        options = [row["correct_answer"], row["distractor_1_answer"], row["distractor_2_answer"],
                   row["distractor_3_answer"]]
        seed = int.from_bytes(hashlib.sha256(f"{ident}/{row['question']}".encode()).digest()[:8], "big")
        random.Random(seed).shuffle(options)
        out.append(Example(id=f"{ident}/{i}", audio=str(hit.resolve()), question=row["question"],
                           reference=row["correct_answer"], choices=tuple(options), category=row["dataset"],
                           extra=facets(row, ("music_reasoning", "music_knowledge", "genre"))))
    return out


@register_task("muchomusic", version="2", folder="muchomusic", prompt=MC_PROMPT, scorer="letter-or-text",
               description="MuChoMusic: 1,187 multiple-choice music questions (4 options)",
               data_source="github.com/mulab-mir/muchomusic: muchomusic.csv (Zenodo) or the JSON its "
                           "prepare_prompts.py writes; audio from MusicCaps/Song Describer into audio/",
               revision="mulab-mir/muchomusic @ 51d5160: data/muchomusic.csv (question, dataset, dataset_identifier, "
                        "correct_answer, distractor_1..3_answer, music_reasoning, music_knowledge, genre) or the "
                        "prepare_prompts.py JSON (answers, answer_orders, audio_path)",
               category_name="source dataset")
def load_muchomusic(root: Path) -> list[Example]:
    audio_dir = root / "audio" if (root / "audio").is_dir() else root
    path = find_file(root, ("muchomusic.json", "muchomusic.csv", "*.json", "*.csv"), "muchomusic")
    if path.suffix == ".csv":
        return _muchomusic_csv(path, audio_dir)
    out = []
    audio_index: dict[str, Path] | None = None
    for i, item in enumerate(read_records(path)):
        where = f"{path}: item {i}"
        options = field(item, ("answers", "choices", "options"), where)
        ident = str(item.get("id", i))
        if "answer_orders" in item:  # prepare_prompts.py: option j is original answer answer_orders[j]; 0 is correct
            answer, ident = options[list(item["answer_orders"]).index(0)], f"{ident}/{i}"
        elif "correct_answer_index" in item:
            answer = options[int(item["correct_answer_index"])]
        else:
            answer = field(item, ("correct_answer", "answer"), where)
        if answer not in options:
            raise RequestError(f"{where}: the answer {answer!r} is not one of the options")
        relative = field(item, ("audio_path", "location", "audio"), where)
        if (audio_dir / relative).is_file():
            audio = audio_path(audio_dir, relative, where)
        else:  # prepare_prompts.py writes paths relative to its own checkout (data/sdd/audio/...): match by name
            audio_index = _muchomusic_audio(audio_dir) if audio_index is None else audio_index
            stem = Path(relative).name.split(".")[0]
            if stem not in audio_index:
                raise RequestError(f"{where}: audio file {relative} not found under {audio_dir}")
            audio = str(audio_index[stem].resolve())
        out.append(Example(id=ident, audio=audio, question=_question(item, where), reference=answer,
                           choices=tuple(options), category=str(item.get("dataset", "all")),
                           extra=facets(item, ("reasoning", "knowledge", "genre"))))
    return out


def _question(item: dict, where: str) -> str:
    """``question``, or the question inside prepare_prompts.py's "Question: ...\n Options: ..." prompt."""
    if item.get("question"):
        return str(item["question"])
    prompt = str(field(item, ("question", "prompt"), where))
    return prompt.split("Question:")[-1].split("\n Options:")[0].strip()
