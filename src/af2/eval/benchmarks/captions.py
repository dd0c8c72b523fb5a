"""Captioning benchmarks: AudioCaps and Clotho v2 (five reference captions per clip)."""

from __future__ import annotations

from pathlib import Path

from af2.eval.formats import audio_by_stem, audio_path, find_file, read_csv
from af2.eval.registry import Example, register_task

CAPTION_PROMPT = "Generate a caption for the input audio."


def _caption_example(ident: str, audio: str, captions: list[str], category: str = "all") -> Example:
    return Example(id=ident, audio=audio, question=CAPTION_PROMPT, reference=captions, category=category)


@register_task("audiocaps-captioning", version="1", folder="audiocaps", prompt="{question}", scorer="captioning",
               description="AudioCaps test captioning (5 references per clip): CIDEr-D, BLEU, ROUGE-L, METEOR",
               data_source="github.com/cdjkim/audiocaps: dataset/test.csv; audio from YouTube (yt-dlp) into audio/",
               revision="cdjkim/audiocaps dataset/test.csv (AudioCaps 1.0, what AF2 reports on) or "
                        "dataset2.0/test.csv (AudioCaps 2.0, read only when 1.0 is absent): audiocap_id, youtube_id, "
                        "start_time, caption; one row per caption; the card names the file read")
def load_audiocaps(root: Path) -> list[Example]:
    path = find_file(root, ("test.csv", "dataset/test.csv", "dataset2.0/test.csv", "*.csv"), "audiocaps-captioning")
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
               data_source="zenodo.org/records/4783391: clotho_captions_evaluation.csv + clotho_audio_evaluation.7z",
               revision="Clotho v2.1 (Zenodo 4783391) clotho_captions_evaluation.csv (file_name, caption_1..5)")
def load_clotho_captions(root: Path) -> list[Example]:
    path = find_file(root, ("clotho_captions_evaluation.csv", "clotho_captions_*.csv"), "clotho-captioning")
    rows = read_csv(path, ("file_name", "caption_1"))
    audio_dir = next((root / d for d in ("evaluation", "audio") if (root / d).is_dir()), root)
    return [_caption_example(r["file_name"], audio_path(audio_dir, r["file_name"], str(path)),
                             [r[f"caption_{k}"] for k in range(1, 6) if r.get(f"caption_{k}")]) for r in rows]
