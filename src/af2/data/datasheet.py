"""The corpus datasheet: what ``af2 corpus build`` wrote, in numbers (JSON) and as Markdown."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from af2.data.qa import SKILLS
from af2.data.sources import RESERVED, Clip


def held_out_summary(rows, split_of: dict[str, str], clips: list[Clip]) -> dict[str, Any]:
    """What the val split holds: clips, items, multiple-choice items, and those on recordings of 2 min or more."""
    val = [it for (_task, sp), lst in rows.items() if sp == "val" for it in lst]
    mcq = [it for it in val if it.extra["provenance"]["template"].endswith(":mcq")]
    return {"clips": sum(1 for c in clips if split_of[c.id] == "val"), "items": len(val),
            "multiple_choice": len(mcq), "multiple_choice_2min_plus": sum(1 for it in mcq if it.duration >= 120),
            "rule": "split by source clip id; val scenes and long recordings contain only val clips"}


def datasheet(clips, scenes, timelines, rows, per_source, opts, manifests, tasks: dict[str, str]) -> dict[str, Any]:
    """The corpus in numbers (datasheet.json); ``tasks`` maps skills / caption / long to their manifest names."""
    items = [it for lst in rows.values() for it in lst]
    long_composed = [t for t in timelines if t.kind == "composed"]
    in_range = [t for t in long_composed if 60 <= t.duration <= 300]
    by_skill = Counter(it.extra["skill"] for it in items if it.flamingo_task == tasks["skills"])
    by_long = Counter(it.extra["skill"] for it in items if it.flamingo_task == tasks["long"])
    return {
        "seed": opts.seed, "sources": per_source, "reserved_for_evaluation": sorted(RESERVED),
        "clips": {"count": len(clips), "hours": round(sum(c.duration for c in clips) / 3600, 3),
                  "by_category": dict(sorted(Counter(c.category for c in clips).items())),
                  "by_source": dict(sorted(Counter(c.source for c in clips).items())),
                  "top_labels": dict(Counter(c.label for c in clips).most_common(40))},
        "scenes": {"count": len(scenes), "hours": round(sum(s.duration for s in scenes) / 3600, 3)},
        "long": {"composed": len(long_composed), "composed_1_to_5_min": len(in_range),
                 "real": len(timelines) - len(long_composed),
                 "hours": round(sum(t.duration for t in timelines) / 3600, 3),
                 "events": sum(len(t.events) for t in long_composed)},
        "qa": {"total": len(items), "audioskills_by_skill": dict(sorted(by_skill.items())),
               "longaudio_by_category": dict(sorted(by_long.items())),
               "multiple_choice": sum(1 for it in items if it.extra["provenance"]["template"].endswith(":mcq")),
               "captions": sum(1 for it in items if it.flamingo_task == tasks["caption"]),
               "skills_missing": [s for s in SKILLS if s not in by_skill]},
        "manifests": {m: len(rows[(Path(m).parent.name, Path(m).stem)]) for m in manifests},
    }


def _held_out_text(h: dict[str, Any] | None) -> str:
    if not h:
        return "none"
    return (f"{h['clips']} held-out clips; {h['items']} items, {h['multiple_choice']} multiple-choice, of which "
            f"{h['multiple_choice_2min_plus']} on recordings of 2 minutes or more. Rule: {h['rule']}.")


def datasheet_markdown(s: dict[str, Any]) -> str:
    lines = ["# AF2 offline corpus: datasheet", "", f"Seed {s['seed']}. Audio is 16 kHz mono FLAC. "
             f"Reserved for evaluation and never included: {', '.join(s['reserved_for_evaluation'])}.", "",
             "## Totals", "", "| what | count | hours |", "|---|---|---|",
             f"| clips | {s['clips']['count']} | {s['clips']['hours']} |",
             f"| scenes (8-20 s, with timelines) | {s['scenes']['count']} | {s['scenes']['hours']} |",
             f"| long recordings, composed (1-5 min: {s['long']['composed_1_to_5_min']}) | {s['long']['composed']} | "
             f"{s['long']['hours']} (all long) |", f"| long recordings, real music | {s['long']['real']} | |",
             f"| QA pairs (incl. {s['qa']['multiple_choice']} multiple-choice, {s['qa']['captions']} captions) | "
             f"{s['qa']['total']} | |", "", "## Held-out split (val)", "", _held_out_text(s.get("held_out")), "",
             "## Sources and licences", "", "| source | kind | items | packages | licence |",
             "|---|---|---|---|---|"]
    lines += [f"| {k} | {v['kind']} | {v['items']} | {', '.join(v['packages'])} | {v['licence']} |"
              for k, v in s["sources"].items()]
    lines += ["", "## QA by AudioSkills skill", "", "| skill | pairs |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in s["qa"]["audioskills_by_skill"].items()]
    lines += ["", "## QA by LongAudio category", "", "| category | pairs |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in s["qa"]["longaudio_by_category"].items()]
    lines += ["", "## Clips by category and source", "", "| category | clips |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in s["clips"]["by_category"].items()]
    lines += ["", "| source | clips |", "|---|---|"] + [f"| {k} | {v} |" for k, v in s["clips"]["by_source"].items()]
    lines += ["", "## Most frequent clip labels", "", "| label | clips |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in s["clips"]["top_labels"].items()]
    if s.get("giveaways"):
        lines += ["", "## Multiple-choice templates that give the answer away in the text", "",
                  "| template | give-aways |", "|---|---|"] + [f"| {t} | {k} |" for t, k in s["giveaways"].items()]
    lines += ["", "## Manifests", "", "| manifest | items |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in s["manifests"].items()]
    return "\n".join(lines) + "\n"
