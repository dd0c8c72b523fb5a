"""Open-answer benchmarks: Clotho-AQA, CompA-R-test, LongAudioBench-style QA, and AF2 manifests."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from af2.errors import RequestError
from af2.eval.formats import audio_path, field, find_file, label_text, note_read, read_csv, read_records
from af2.eval.registry import Example, register_task


@register_task("clotho-aqa", version="2", folder="clotho-aqa", prompt="{question}", scorer="open-exact",
               description="Clotho-AQA test: open and yes/no questions, 3 annotators; reference = majority answer",
               data_source="zenodo.org/records/6473207: clotho_aqa_test.csv + audio_files.zip",
               revision="Clotho-AQA (Zenodo 6473207) clotho_aqa_test.csv (file_name, QuestionText, answer, "
                        "confidence; one row per annotator)",
               category_name="answer type")
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
        agreement = "unanimous" if len(set(answers)) == 1 else "not unanimous"
        out.append(Example(id=f"{name}::{question}", audio=audio_path(audio_dir, name, str(path)), question=question,
                           reference=majority, category=category,
                           extra={"answers": answers, "facets": {"agreement": agreement}}))
    return out


@register_task("compa-r", version="2", folder="compa-r", prompt="{question}", scorer="open-judged",
               description="CompA-R-test: open-ended complex reasoning; LLM judge (1-10 and x10) and similarity",
               data_source="github.com/Sreyan88/GAMA: CompA-R-test JSON; audio from AudioSet into audio/",
               revision="Sreyan88/GAMA CompA-R-test.json: a list of {audio_id, instruction_output: [{instruction, "
                        "output}, ...]} (several questions per clip); flat {audio_id, instruction, output} items "
                        "are read too")
def load_compa_r(root: Path) -> list[Example]:
    path = find_file(root, ("CompA-R-test.json", "*.json"), "compa-r")
    audio_dir = root / "audio" if (root / "audio").is_dir() else root
    out = []
    for i, item in enumerate(read_records(path)):
        where = f"{path}: item {i}"
        raw_audio = str(field(item, ("audio_id", "audio"), where))
        audio = audio_path(audio_dir, raw_audio if (audio_dir / raw_audio).is_file() else Path(raw_audio).name, where)
        pairs = item.get("instruction_output") or [item]
        for j, pair in enumerate(pairs):
            ident = str(item.get("id", i)) + (f"/{j}" if "instruction_output" in item else "")
            out.append(Example(id=ident, audio=audio, question=field(pair, ("instruction", "question"), f"{where}.{j}"),
                               reference=field(pair, ("output", "answer"), f"{where}.{j}"),
                               category=label_text(item.get("category", "all"))))
    return out


@register_task("longaudiobench", version="2", folder="longaudiobench", prompt="{question}", scorer="open-judged",
               description="LongAudioBench-style long-audio QA: open question, reference answer, category; LLM judge",
               data_source="NVIDIA has not published LongAudioBench; "
                           "any JSON list (or JSONL) of {audio, question, answer, category} works",
               revision="no upstream release; this project's format: longaudiobench.json or .jsonl")
def load_longaudiobench(root: Path) -> list[Example]:
    path = find_file(root, ("longaudiobench.json", "longaudiobench.jsonl", "*.json", "*.jsonl"), "longaudiobench")
    out = []
    for i, item in enumerate(read_records(path)):
        where = f"{path}: item {i}"
        audio = audio_path(path.parent, field(item, ("audio", "audio_path"), where), where)
        out.append(Example(id=str(item.get("id", i)), audio=audio, question=field(item, ("question",), where),
                           reference=field(item, ("answer", "reference"), where),
                           category=label_text(item.get("category", "all"))))
    return out


@register_task("af2-manifest", version="1", folder="manifests", prompt="{question}", scorer="open-exact",
               description="Any AF2 manifest (spec 6.4): prompt -> output, exact match and similarity",
               data_source="this project's manifests (af2.data.manifest); audio at <folder>/<split_path>/<name>",
               revision="af2.data.manifest JSON / JSONL (spec 6.4)", category_name="flamingo_task")
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
        note_read(path)
        for item in manifest.items:
            audio = audio_path(root, str(Path(item.split_path) / item.name), str(path))
            out.append(Example(id=item.id, audio=audio, question=item.prompt, reference=item.output,
                               category=item.flamingo_task or path.parent.name))
    return out
