"""The built-in benchmarks: one loader per file format users keep locally.

Each task reads ``<data-root>/<folder>`` (override with ``--data TASK=PATH``); the layouts are
the ones the benchmarks ship in, described per task in the README section 'Evaluation' with where to get them.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from af2.errors import RequestError
from af2.eval.formats import audio_by_stem, audio_path, field, find_file, read_csv, read_json
from af2.eval.tasks import Example, register_task

MC_PROMPT = "{question} {options}"  # AF2's training format for options: "Question? (A) xxx. (B) yyy."


def _json_list(root: Path, file_names: tuple[str, ...], task: str) -> tuple[Path, list]:
    """The task's JSON file under ``root`` and its top-level list of items."""
    path = find_file(root, file_names, task)
    data = read_json(path)
    if not isinstance(data, list):
        raise RequestError(f"{path}: expected a JSON list of items")
    return path, data


def _facets(record: dict, keys: tuple[str, ...]) -> dict:
    return {"facets": {k: str(record[k]) for k in keys if record.get(k) not in (None, "")}}


def _mc_items(root: Path, file_names: tuple[str, ...], task: str, audio_keys: tuple[str, ...],
              category_key: str, facet_keys: tuple[str, ...]) -> list[Example]:
    path = find_file(root, file_names, task)
    data = read_json(path)
    if not isinstance(data, list):
        raise RequestError(f"{path}: expected a JSON list of questions")
    out = []
    for i, item in enumerate(data):
        where = f"{path}: item {i}"
        choices = field(item, ("choices",), where)
        answer = field(item, ("answer",), where)
        if not isinstance(choices, list) or answer not in choices:
            raise RequestError(f"{where}: 'choices' must be a list that contains 'answer' ({answer!r})")
        out.append(Example(
            id=str(item.get("id", i)), audio=audio_path(path.parent, field(item, audio_keys, where), where),
            question=field(item, ("question",), where), reference=answer, choices=tuple(choices),
            category=str(item.get(category_key, "all")), extra=_facets(item, facet_keys)))
    return out


@register_task("mmau-test-mini", version="1", folder="mmau", prompt=MC_PROMPT, scorer="mmau-string-match",
               description="MMAU test-mini: 1,000 multiple-choice questions on sound, music and speech",
               data_source="github.com/Sakshi113/MMAU: mmau-test-mini.json + test-mini-audios.tar.gz")
def load_mmau(root: Path) -> list[Example]:
    return _mc_items(root, ("mmau-test-mini.json", "*.json"), "mmau-test-mini", ("audio_id", "audio_path"),
                     "task", ("difficulty", "category", "sub-category"))


@register_task("mmar", version="1", folder="mmar", prompt=MC_PROMPT, scorer="mmau-string-match",
               description="MMAR: 1,000 multiple-choice reasoning questions over sound, music, speech and mixes",
               data_source="github.com/ddlBoJack/MMAR: MMAR-meta.json + the audio archive (HF dataset BoJack/MMAR)")
def load_mmar(root: Path) -> list[Example]:
    return _mc_items(root, ("MMAR-meta.json", "*.json"), "mmar", ("audio_path", "audio_id"),
                     "modality", ("category", "sub-category", "language"))


@register_task("clotho-aqa", version="1", folder="clotho-aqa", prompt="{question}", scorer="open-exact",
               description="Clotho-AQA test: open and yes/no questions, 3 annotators; reference = majority answer",
               data_source="zenodo.org/records/6473207: clotho_aqa_test.csv + audio_files.zip")
def load_clotho_aqa(root: Path) -> list[Example]:
    path = find_file(root, ("clotho_aqa_test.csv", "*.csv"), "clotho-aqa")
    rows = read_csv(path, ("file_name", "QuestionText", "answer"))
    groups: dict[tuple[str, str], list[str]] = {}
    for row in rows:
        groups.setdefault((row["file_name"], row["questiontext"]), []).append(row["answer"].lower())
    audio_dir = root / "audio_files" if (root / "audio_files").is_dir() else root
    out = []
    for (name, question), answers in groups.items():
        majority = Counter(answers).most_common(1)[0][0]  # ties: the first answer given
        category = "yes/no" if majority in ("yes", "no") else "open"
        out.append(Example(id=f"{name}::{question}", audio=audio_path(audio_dir, name, str(path)), question=question,
                           reference=majority, category=category, extra={"answers": answers}))
    return out


def _caption_example(ident: str, audio: str, captions: list[str], category: str = "all") -> Example:
    return Example(id=ident, audio=audio, question="Generate a caption for the input audio.",
                   reference=captions, category=category)


@register_task("audiocaps-captioning", version="1", folder="audiocaps", prompt="{question}", scorer="captioning",
               description="AudioCaps test captioning (5 references per clip): CIDEr-D, BLEU, ROUGE-L, METEOR",
               data_source="github.com/cdjkim/audiocaps: dataset/test.csv; audio from YouTube (yt-dlp) into audio/")
def load_audiocaps(root: Path) -> list[Example]:
    path = find_file(root, ("test.csv", "*.csv"), "audiocaps-captioning")
    rows = read_csv(path, ("youtube_id", "start_time", "caption"))
    groups: dict[str, list[dict]] = {}
    for row in rows:
        groups.setdefault(row["youtube_id"], []).append(row)
    audio_dir = root / "audio" if (root / "audio").is_dir() else root
    out = []
    for yid, group in groups.items():
        start = group[0]["start_time"]
        stems = (yid, f"Y{yid}", f"{yid}_{start}", f"Y{yid}_{start}", group[0].get("audiocap_id", yid))
        out.append(_caption_example(yid, audio_by_stem(audio_dir, stems, str(path)), [r["caption"] for r in group]))
    return out


@register_task("clotho-captioning", version="1", folder="clotho", prompt="{question}", scorer="captioning",
               description="Clotho v2 evaluation split captioning (5 references per clip)",
               data_source="zenodo.org/records/4783391: clotho_captions_evaluation.csv + clotho_audio_evaluation.7z")
def load_clotho_captions(root: Path) -> list[Example]:
    path = find_file(root, ("clotho_captions_evaluation.csv", "clotho_captions_*.csv"), "clotho-captioning")
    rows = read_csv(path, ("file_name", "caption_1"))
    audio_dir = next((root / d for d in ("evaluation", "audio") if (root / d).is_dir()), root)
    return [_caption_example(r["file_name"], audio_path(audio_dir, r["file_name"], str(path)),
                             [r[f"caption_{k}"] for k in range(1, 6) if r.get(f"caption_{k}")]) for r in rows]


@register_task("gtzan", version="1", folder="gtzan",
               prompt="What is the genre of this music? Choose one of: {choices_inline}.", scorer="label-accuracy",
               description="GTZAN genre classification, 10 genres, all 1,000 clips",
               data_source="Kaggle 'GTZAN Dataset - Music Genre Classification' (genres_original/<genre>/*.wav)")
def load_gtzan(root: Path) -> list[Example]:
    base = next((root / d for d in ("genres_original", "genres") if (root / d).is_dir()), root)
    genres = sorted(p.name for p in base.iterdir() if p.is_dir())
    if not genres:
        raise RequestError(f"task gtzan: no genre folders under {base} (expected <genre>/<clip>.wav)")
    out = []
    for genre in genres:
        for clip in sorted((base / genre).iterdir()):
            if clip.suffix.lower() in (".wav", ".au", ".flac", ".mp3"):
                out.append(Example(id=f"{genre}/{clip.name}", audio=str(clip.resolve()), question="",
                                   reference=genre, choices=tuple(genres), category=genre))
    return out


@register_task("esc50", version="1", folder="esc50",
               prompt="What sound is in this audio? Answer with one of: {choices_inline}.", scorer="label-accuracy",
               description="ESC-50 environmental sound classification, 50 classes, all folds",
               data_source="github.com/karolpiczak/ESC-50: meta/esc50.csv + audio/")
def load_esc50(root: Path) -> list[Example]:
    path = find_file(root, ("meta/esc50.csv", "esc50.csv"), "esc50")
    rows = read_csv(path, ("filename", "category"))
    classes = tuple(sorted({r["category"].replace("_", " ") for r in rows}))
    audio_dir = root / "audio" if (root / "audio").is_dir() else path.parent
    return [Example(id=r["filename"], audio=audio_path(audio_dir, r["filename"], str(path)), question="",
                    reference=r["category"].replace("_", " "), choices=classes, category=f"fold {r.get('fold', '?')}")
            for r in rows]


@register_task("nsynth", version="1", folder="nsynth",
               prompt="Which instrument family plays this note? Choose one of: {choices_inline}.",
               scorer="label-accuracy", description="NSynth test: instrument-family classification (11 families)",
               data_source="magenta.tensorflow.org/datasets/nsynth: nsynth-test.jsonwav.tar.gz "
                           "(examples.json + audio/)")
def load_nsynth(root: Path) -> list[Example]:
    path = find_file(root, ("examples.json", "*/examples.json"), "nsynth")
    data = read_json(path)
    if not isinstance(data, dict):
        raise RequestError(f"{path}: expected an object keyed by note name")
    families = tuple(sorted({field(v, ("instrument_family_str",), f"{path}: {k}").replace("_", " ")
                             for k, v in data.items()}))
    return [Example(id=k, audio=audio_path(path.parent / "audio", f"{k}.wav", str(path)), question="",
                    reference=v["instrument_family_str"].replace("_", " "), choices=families,
                    category=str(v.get("instrument_source_str", "all")))
            for k, v in data.items()]


@register_task("audio-entailment", version="1", folder="audio-entailment",
               prompt="Is this statement about the audio true (entailment), possibly true (neutral) or false "
                      "(contradiction)? Statement: {question} Answer with one of: {choices_inline}.",
               scorer="label-accuracy",
               description="Audio Entailment (Clotho and AudioCaps): each row gives one hypothesis per label",
               data_source="github.com/microsoft/AudioEntailment: the clotho/audiocaps test CSVs; "
                           "audio from Clotho/AudioCaps into audio/")
def load_entailment(root: Path) -> list[Example]:
    csvs = sorted(root.glob("*.csv"))
    if not csvs:
        raise RequestError(f"task audio-entailment: no *.csv under {root}")
    audio_dir = root / "audio" if (root / "audio").is_dir() else root
    out = []
    for path in csvs:
        for i, row in enumerate(read_csv(path, ("Audio file", "Entailment", "Neutral", "Contradiction"))):
            audio = audio_path(audio_dir, row["audio file"], f"{path}: row {i + 2}")
            for label in ("entailment", "neutral", "contradiction"):
                out.append(Example(id=f"{path.stem}/{i}/{label}", audio=audio, question=row[label], reference=label,
                                   choices=("entailment", "neutral", "contradiction"), category=path.stem))
    return out


@register_task("compa-r", version="1", folder="compa-r", prompt="{question}", scorer="open-judged",
               description="CompA-R-test: open-ended complex reasoning; LLM judge (1-10 ×10) and similarity",
               data_source="github.com/Sreyan88/GAMA: CompA-R-test JSON; audio from AudioSet into audio/")
def load_compa_r(root: Path) -> list[Example]:
    path, data = _json_list(root, ("CompA-R-test.json", "*.json"), "compa-r")
    audio_dir = root / "audio" if (root / "audio").is_dir() else root
    out = []
    for i, item in enumerate(data):
        where = f"{path}: item {i}"
        audio = audio_path(audio_dir, field(item, ("audio_id", "audio"), where), where)
        out.append(Example(id=str(item.get("id", i)), audio=audio, question=field(item, ("instruction", "question"), where),
                           reference=field(item, ("output", "answer"), where), category=str(item.get("category", "all"))))
    return out


@register_task("muchomusic", version="1", folder="muchomusic", prompt=MC_PROMPT, scorer="letter-or-text",
               description="MuChoMusic: 1,187 multiple-choice music questions (4 options)",
               data_source="github.com/mulab-mir/muchomusic: muchomusic.json; audio from MusicCaps/SDD into audio/")
def load_muchomusic(root: Path) -> list[Example]:
    path, data = _json_list(root, ("muchomusic.json", "*.json"), "muchomusic")
    audio_dir = root / "audio" if (root / "audio").is_dir() else root
    out = []
    for i, item in enumerate(data):
        where = f"{path}: item {i}"
        options = field(item, ("answers", "choices", "options"), where)
        if "correct_answer_index" in item:
            answer = options[int(item["correct_answer_index"])]
        else:
            answer = field(item, ("correct_answer", "answer"), where)
        if answer not in options:
            raise RequestError(f"{where}: the answer {answer!r} is not one of the options")
        audio = audio_path(audio_dir, field(item, ("audio_path", "location", "audio"), where), where)
        out.append(Example(id=str(item.get("id", i)), audio=audio,
                           question=field(item, ("question",), where), reference=answer, choices=tuple(options),
                           category=str(item.get("dataset", "all")), extra=_facets(item, ("reasoning", "knowledge"))))
    return out


@register_task("longaudiobench", version="1", folder="longaudiobench", prompt="{question}", scorer="open-judged",
               description="LongAudioBench-style long-audio QA: open question, reference answer, category; LLM judge",
               data_source="NVIDIA has not published LongAudioBench; "
                           "any JSON list of {audio, question, answer, category} works")
def load_longaudiobench(root: Path) -> list[Example]:
    path, data = _json_list(root, ("longaudiobench.json", "*.json"), "longaudiobench")
    out = []
    for i, item in enumerate(data):
        where = f"{path}: item {i}"
        audio = audio_path(path.parent, field(item, ("audio", "audio_path"), where), where)
        out.append(Example(id=str(item.get("id", i)), audio=audio, question=field(item, ("question",), where),
                           reference=field(item, ("answer", "reference"), where), category=str(item.get("category", "all"))))
    return out


@register_task("af2-manifest", version="1", folder="manifests", prompt="{question}", scorer="open-exact",
               description="Any AF2 manifest (spec 6.4): prompt -> output, exact match and similarity",
               data_source="this project's manifests (af2.data.manifest); audio at <folder>/<split_path>/<name>")
def load_manifests(root: Path) -> list[Example]:
    from af2.data.manifest import ManifestError, read_manifest

    files = sorted(p for p in root.rglob("*") if p.suffix in (".json", ".jsonl"))
    if not files:
        raise RequestError(f"task af2-manifest: no *.json / *.jsonl manifests under {root}")
    out = []
    for path in files:
        try:
            manifest = read_manifest(path)
        except ManifestError as exc:
            raise RequestError(str(exc)) from exc
        for item in manifest.items:
            audio = audio_path(root, str(Path(item.split_path) / item.name), str(path))
            out.append(Example(id=item.id, audio=audio, question=item.prompt, reference=item.output,
                               category=item.flamingo_task or path.parent.name))
    return out
