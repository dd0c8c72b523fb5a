"""Classification benchmarks asked as questions: GTZAN, ESC-50, NSynth, Audio Entailment.

The model answers in free text; the ``label-accuracy`` scorer maps the answer to the nearest
class by text embedding (and reports exact word matching as a second column).
"""

from __future__ import annotations

from pathlib import Path

from af2.errors import RequestError
from af2.eval.formats import audio_by_stem, audio_path, field, find_file, read_csv, read_json
from af2.eval.registry import Example, register_task


@register_task("gtzan", version="2", folder="gtzan",
               prompt="What is the genre of this music? Choose one of: {choices_inline}.", scorer="label-accuracy",
               description="GTZAN genre classification, 10 genres, all 1,000 clips",
               data_source="Kaggle 'GTZAN Dataset - Music Genre Classification' (genres_original/<genre>/*.wav)",
               revision="GTZAN as on Kaggle (Data/genres_original/<genre>/<genre>.000NN.wav) or the original "
                        "genres/<genre>/*.au; no metadata file, the folder names are the labels",
               category_name="genre")
def load_gtzan(root: Path) -> list[Example]:
    base = next((root / d for d in ("genres_original", "Data/genres_original", "genres") if (root / d).is_dir()), root)
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


@register_task("esc50", version="2", folder="esc50",
               prompt="What sound is in this audio? Answer with one of: {choices_inline}.", scorer="label-accuracy",
               description="ESC-50 environmental sound classification, 50 classes, all folds",
               data_source="github.com/karolpiczak/ESC-50: meta/esc50.csv + audio/",
               revision="karolpiczak/ESC-50 meta/esc50.csv (filename, fold, target, category, esc10, src_file, take)",
               category_name="fold")
def load_esc50(root: Path) -> list[Example]:
    path = find_file(root, ("meta/esc50.csv", "esc50.csv"), "esc50")
    rows = read_csv(path, ("filename", "category"))
    classes = tuple(sorted({r["category"].replace("_", " ") for r in rows}))
    audio_dir = root / "audio" if (root / "audio").is_dir() else path.parent
    return [Example(id=r["filename"], audio=audio_path(audio_dir, r["filename"], str(path)), question="",
                    reference=r["category"].replace("_", " "), choices=classes, category=f"fold {r.get('fold', '?')}")
            for r in rows]


@register_task("nsynth", version="2", folder="nsynth",
               prompt="Which instrument family plays this note? Choose one of: {choices_inline}.",
               scorer="label-accuracy", description="NSynth test: instrument-family classification (11 families)",
               data_source="magenta.tensorflow.org/datasets/nsynth: nsynth-test.jsonwav.tar.gz "
                           "(examples.json + audio/)",
               revision="NSynth v2.2 nsynth-test.jsonwav (examples.json keyed by note_str with instrument_family_str, "
                        "instrument_source_str; audio/<note_str>.wav)",
               category_name="instrument source")
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


ENTAILMENT_FILES = ("**/*_entailment_test.csv", "**/*_entailment_evaluation.csv")


@register_task("audio-entailment", version="2", folder="audio-entailment",
               prompt="Is this statement about the audio true (entailment), possibly true (neutral) or false "
                      "(contradiction)? Statement: {question} Answer with one of: {choices_inline}.",
               scorer="label-accuracy",
               description="Audio Entailment test sets (Clotho evaluation, AudioCaps test): one hypothesis per label",
               data_source="github.com/microsoft/AudioEntailment: data/CLE/clotho_entailment_evaluation.csv and "
                           "data/ACE/audiocaps_entailment_test.csv; audio from Clotho/AudioCaps into audio/",
               revision="microsoft/AudioEntailment @ 1d3f240: data/ACE/audiocaps_entailment_test.csv, "
                        "data/CLE/clotho_entailment_evaluation.csv (Prompt, Dataset, Audio file, Caption, Entailment, "
                        "Neutral, Contradiction, Full response); 'Audio file' may lack the extension",
               category_name="source dataset")
def load_entailment(root: Path) -> list[Example]:
    csvs = sorted({p for pattern in ENTAILMENT_FILES for p in root.glob(pattern)})
    if not csvs:  # a folder of renamed CSVs: every one is a test set
        csvs = sorted(root.glob("*.csv"))
    if not csvs:
        raise RequestError(f"task audio-entailment: none of {list(ENTAILMENT_FILES)} (nor any *.csv) under {root}")
    audio_dir = root / "audio" if (root / "audio").is_dir() else root
    out = []
    for path in csvs:
        for i, row in enumerate(read_csv(path, ("Audio file", "Entailment", "Neutral", "Contradiction"))):
            name = row["audio file"]
            audio = audio_by_stem(audio_dir, (name, name.removeprefix("Y")), f"{path}: row {i + 2}")
            category = (row.get("dataset") or path.stem.split("_")[0]).lower()
            for label in ("entailment", "neutral", "contradiction"):
                out.append(Example(id=f"{path.stem}/{i}/{label}", audio=audio, question=row[label], reference=label,
                                   choices=("entailment", "neutral", "contradiction"), category=category))
    return out
