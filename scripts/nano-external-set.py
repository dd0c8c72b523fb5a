"""An external evaluation set for af2-nano: multiple-choice items on audio from sources the corpus never uses.

    python scripts/nano-external-set.py OUT_DIR [--seed 0] [--per-skill 40] [--corpus CORPUS_DIR]
    af2 eval --model MODEL --tasks mmau-test-mini --data-root OUT_DIR ...

The audio comes only from the sources that ``af2.data.sources.RESERVED`` keeps out of the corpus (every input
path is checked to be reserved): espeak-ng voices (synthesised here), sound-theme-freedesktop, oxygen-sounds,
warzone2100-music and pocketsphinx-testdata; the ones not installed are left out (apt-get install espeak-ng
sound-theme-freedesktop oxygen-sounds warzone2100-music pocketsphinx-testdata).

The questions are the corpus's own: each item's metadata goes through ``af2.data.qa.templates.template_qa``
with the corpus's option pools (``--corpus``: built from CORPUS/metadata/clips.jsonl as the corpus build does;
without it, from the values the corpus sources define), and the item keeps that template's multiple-choice
question and options. Only the audio is new. Skills (template ids):

  speech.gender      espeak-ng English voices, male (+m1..m7) or female (+f1..f5) variants
  speech.rate        espeak-ng at the corpus's three rates (its duration stretches 0.8 / 1.0 / 1.3 as -s speeds)
  speech.language    espeak-ng in the languages the corpus's language pool holds
  general.category   speech (espeak-ng, pocketsphinx test recordings, freedesktop channel announcements),
                     sound effects (freedesktop and oxygen desktop sounds) and music (warzone2100 excerpts)

Each skill's answers are balanced (every answer equally often, as far as N allows) and so are its answer
letters; the options are shuffled with the seed. Output, in the layout `af2 eval from-corpus` writes for the
mmau-test-mini task (its folder is "mmau"):

  OUT_DIR/mmau/mmau-test-mini.json    the items (MMAU fields; task = template id, dataset = audio source)
  OUT_DIR/mmau/audio/<template>/*.flac   16 kHz mono 16-bit FLAC, at most 30 s
  OUT_DIR/metadata.jsonl              each clip's metadata (what template_qa was given)
  OUT_DIR/README.md                   sources, licences, counts per skill, chance level
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import re
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from af2.audio import SAMPLE_RATE
from af2.audio.clips import normalise_peak, trim_silence, write_flac
from af2.audio.decode import load_audio, load_mono, probe
from af2.data.qa.templates import _BY_CATEGORY, build_pools, template_qa
from af2.data.sources import PACK_LANGUAGE, reserved_source
from af2.data.synth import PIPER_RATES, make_sentence
from af2.jsonl import read_jsonl, write_jsonl

TASK_FOLDER = "mmau"  # af2.eval task mmau-test-mini's folder (checked in main)
MARKER = ".nano-external-set"
MAX_SECONDS = 30.0
MUSIC_SECONDS = 10.0
ESPEAK_SPEED = 175  # espeak-ng's default words per minute: the corpus's "normal" rate (stretch 1.0)
SKILLS = ("speech.gender", "speech.rate", "speech.language", "general.category")

FREEDESKTOP = Path("/usr/share/sounds/freedesktop/stereo")
OXYGEN = Path("/usr/share/sounds")  # Debian's oxygen-sounds installs /usr/share/sounds/Oxygen-*.ogg
WARZONE = Path("/usr/share/games/warzone2100/music")
POCKETSPHINX = Path("/usr/share/pocketsphinx/test/data")
PACKAGES = {  # source -> Debian package whose copyright file gives the licence
    "espeak-ng": "espeak-ng-data", "sound-theme-freedesktop": "sound-theme-freedesktop",
    "oxygen-sounds": "oxygen-sounds", "warzone2100-music": "warzone2100-music",
    "pocketsphinx-testdata": "pocketsphinx-testdata"}

MALE_VARIANTS = tuple(f"m{i}" for i in range(1, 8))
FEMALE_VARIANTS = tuple(f"f{i}" for i in range(1, 6))
ENGLISH_VOICES = ("en-us", "en")  # American, British
ESPEAK_LANGUAGE = {"English": "en-us", "Spanish": "es", "Polish": "pl", "Russian": "ru", "Ukrainian": "uk",
                   "German": "de", "French": "fr", "Italian": "it", "Portuguese": "pt", "Dutch": "nl"}
# English text comes from the corpus's own sentence generator (af2.data.synth.make_sentence); the others are
# everyday sentences of the same kind, the same eight meanings in each language
SENTENCES = {
    "Spanish": ("Mañana vamos a visitar a mis abuelos en el pueblo.", "¿Puedes cerrar la ventana, por favor?",
                "El tren sale de la estación a las ocho.", "Hoy hace mucho calor en la ciudad.",
                "Necesito comprar pan y leche en la tienda.", "Mi hermana trabaja en un hospital.",
                "La reunión empieza dentro de diez minutos.", "Me gusta leer un libro antes de dormir."),
    "Polish": ("Jutro pojedziemy do babci na wieś.", "Czy możesz zamknąć okno?", "Pociąg odjeżdża ze stacji o ósmej.",
               "Dzisiaj w mieście jest bardzo gorąco.", "Muszę kupić chleb i mleko w sklepie.",
               "Moja siostra pracuje w szpitalu.", "Spotkanie zaczyna się za dziesięć minut.",
               "Lubię czytać książkę przed snem."),
    "Russian": ("Завтра мы поедем к бабушке в деревню.", "Ты можешь закрыть окно, пожалуйста?",
                "Поезд отправляется со станции в восемь часов.", "Сегодня в городе очень жарко.",
                "Мне нужно купить хлеб и молоко в магазине.", "Моя сестра работает в больнице.",
                "Собрание начнётся через десять минут.", "Я люблю читать книгу перед сном."),
    "Ukrainian": ("Завтра ми поїдемо до бабусі в село.", "Чи можеш ти зачинити вікно, будь ласка?",
                  "Потяг відправляється зі станції о восьмій годині.", "Сьогодні в місті дуже спекотно.",
                  "Мені треба купити хліб і молоко в магазині.", "Моя сестра працює в лікарні.",
                  "Збори почнуться через десять хвилин.", "Я люблю читати книжку перед сном."),
}


def _reserved(path: str | Path) -> str:
    """The reserved source ``path`` belongs to; anything else is refused (this set uses only reserved audio)."""
    name = reserved_source(path)
    if name is None:
        raise SystemExit(f"{path}: not a reserved source; the external set uses only audio the corpus never sees")
    return name


# ---- option pools --------------------------------------------------------------------------------------------

def corpus_pools(corpus: Path | None) -> dict[str, list[str]]:
    """The corpus's distractor pools: from its clip metadata (as ``af2 corpus build`` makes them) or, without a
    corpus, from the values its sources define (every kind of audio; English plus the hedgewars voice packs'
    languages)."""
    if corpus is not None:
        path = corpus / "metadata" / "clips.jsonl"
        if not path.is_file():
            raise SystemExit(f"{path}: not found; --corpus must be a folder `af2 corpus build` wrote")
        return build_pools(record for _, record in read_jsonl(path).records)
    metas = [{"id": f"pool/{c}", "category": c, "label": c, "attributes": {}} for c in _BY_CATEGORY]
    metas += [{"id": f"pool/{lang}", "category": "speech", "label": lang, "attributes": {"language": lang}}
              for lang in sorted({"English", *PACK_LANGUAGE.values()})]
    return build_pools(metas)


# ---- audio ---------------------------------------------------------------------------------------------------

def _shape(x: np.ndarray) -> np.ndarray:
    return normalise_peak(trim_silence(x)[: int(MAX_SECONDS * SAMPLE_RATE)])


class Espeak:
    def __init__(self, workdir: Path):
        self.exe = shutil.which("espeak-ng")
        self.workdir, self.n = workdir, 0

    def __bool__(self) -> bool:
        return self.exe is not None

    def say(self, text: str, voice: str, speed: int) -> np.ndarray:
        _reserved(self.exe)
        self.n += 1
        out = self.workdir / f"espeak-{self.n}.wav"
        subprocess.run([self.exe, "-v", voice, "-s", str(speed), "-w", str(out), text], check=True,
                       capture_output=True, timeout=120)
        x = _shape(load_mono(out))
        out.unlink()
        return x


def _file_clip(path: Path) -> np.ndarray:
    _reserved(path)
    return _shape(load_mono(path))


def _music_excerpt(path: Path, rng: np.random.Generator) -> tuple[np.ndarray, float]:
    _reserved(path)
    total = probe(path).duration_s or 3 * MUSIC_SECONDS
    # skip the first and last 10 % (fade in/out), then a seeded start
    low, high = 0.1 * total, max(0.1 * total, 0.9 * total - MUSIC_SECONDS)
    start = float(rng.uniform(low, high))
    x = load_audio(path, start_seconds=start, max_seconds=MUSIC_SECONDS, channel="mean").samples
    return normalise_peak(np.asarray(x, dtype=np.float32)), start


def recorded_speech() -> list[Path]:
    return (sorted(FREEDESKTOP.glob("audio-channel-*.oga"))
            + sorted(POCKETSPHINX.glob("cards/*.wav")) + sorted(POCKETSPHINX.glob("librivox/*.wav")))


def sound_effects() -> list[Path]:
    desktop = [p for p in sorted(FREEDESKTOP.glob("*.oga")) if not p.name.startswith("audio-channel-")]
    return desktop + sorted(OXYGEN.glob("Oxygen-*.ogg"))


def music_tracks() -> list[Path]:
    return sorted(WARZONE.rglob("*.opus"))


def _file_group(path: Path) -> str:
    """The set a file belongs to: its source and folder (freedesktop channel names, an album, pocketsphinx cards)."""
    source = _reserved(path)
    if path.name.startswith("audio-channel-"):
        return f"{source} channel names"
    return source if path.parent in (FREEDESKTOP, OXYGEN) else f"{source} {path.parent.name}"


def _words(stem: str) -> str:
    return re.sub(r"[-_]+", " ", stem.removeprefix("Oxygen-")).lower()


# ---- items ---------------------------------------------------------------------------------------------------

def _balanced(values: list, n: int, rng: np.random.Generator) -> list:
    """``n`` values, each of ``values`` equally often (to within one), in a seeded order."""
    out = [values[i % len(values)] for i in range(n)]
    return [out[int(i)] for i in rng.permutation(n)]


class Builder:
    def __init__(self, out: Path, pools: dict[str, list[str]], seed: int, espeak: Espeak):
        self.out, self.pools, self.seed, self.espeak = out, pools, seed, espeak
        self.rows: list[dict[str, Any]] = []
        self.metas: list[dict[str, Any]] = []
        self.used: Counter = Counter()  # source -> clips
        self.files: dict[str, set[str]] = {}  # source -> the files its clips came from

    def add(self, template: str, index: int, audio: np.ndarray, meta: dict[str, Any], group: str,
            detail: str) -> None:
        """One item: the clip's metadata through the corpus's templates; keep ``template``'s multiple-choice form.
        ``group`` (the report's sub-category) names the voice family or file set, ``detail`` the voice or file."""
        ident = f"external/{template}/{index:03d}"
        rel = f"audio/{template}/{index:03d}.flac"
        meta = {"id": ident, **meta, "duration": round(len(audio) / SAMPLE_RATE, 3)}
        qas = template_qa(meta, self.pools, self.seed)
        open_qa = next(q for q in qas if q.template == template)
        mcq = next((q for q in qas if q.template == f"{template}:mcq"), None)
        if mcq is None:
            raise SystemExit(f"{ident}: the template {template} made no multiple-choice item (empty pool?)")
        write_flac(self.out / TASK_FOLDER / rel, audio)
        answer = mcq.options[mcq.extra["answer_index"]]
        self.rows.append({"id": ident, "audio_id": rel, "audio_path": rel, "question": open_qa.question,
                          "choices": list(mcq.options), "answer": answer, "task": template,
                          "modality": "AF2-External", "category": mcq.skill, "dataset": meta["source"],
                          "sub-category": group, "detail": detail})
        self.metas.append(meta)
        self.used[meta["source"]] += 1
        if "file" in meta["attributes"]:
            self.files.setdefault(meta["source"], set()).add(meta["attributes"]["file"])

    def place_answers(self, rng: np.random.Generator) -> None:
        """Shuffle each item's options with the seed and put its answer at a letter balanced within its skill."""
        for template in sorted({r["task"] for r in self.rows}):
            for k in sorted({len(r["choices"]) for r in self.rows if r["task"] == template}):
                rows = [r for r in self.rows if r["task"] == template and len(r["choices"]) == k]
                for row, position in zip(rows, _balanced(list(range(k)), len(rows), rng)):
                    others = [c for c in row["choices"] if c != row["answer"]]
                    others = [others[int(i)] for i in rng.permutation(len(others))]
                    row["choices"] = others[:position] + [row["answer"]] + others[position:]


def _speech_meta(source: str, text: str, attributes: dict[str, Any]) -> dict[str, Any]:
    return {"source": source, "category": "speech", "label": "speech",
            "caption": f"A synthetic voice says \"{text}\".", "transcript": text, "attributes": attributes}


def build_speech(b: Builder, n: int, rng: np.random.Generator) -> None:
    """speech.gender, speech.rate and speech.language from espeak-ng voices."""
    stretch = {word: scale for scale, word in PIPER_RATES.items()}  # the corpus's rates: word -> duration stretch

    def variant(gender: str | None) -> tuple[str, str]:
        gender = gender or ("male", "female")[int(rng.integers(2))]
        names = MALE_VARIANTS if gender == "male" else FEMALE_VARIANTS
        return gender, names[int(rng.integers(len(names)))]

    def english() -> tuple[str, str]:
        return make_sentence(rng)["text"], ENGLISH_VOICES[int(rng.integers(len(ENGLISH_VOICES)))]

    for i, gender in enumerate(_balanced(["male", "female"], n, rng)):
        text, base = english()
        gender, var = variant(gender)
        voice = f"{base}+{var}"
        b.add("speech.gender", i, b.espeak.say(text, voice, ESPEAK_SPEED),
              _speech_meta("espeak-ng", text, {"language": "English", "gender": gender, "espeak_voice": voice}),
              f"espeak-ng {base}", f"espeak-ng {voice}")
    rates = [w for w in ("slow", "normal", "fast") if w in stretch and w in b.pools.get("speaking_rate", [w])]
    for i, rate in enumerate(_balanced(rates, n, rng)):
        text, base = english()
        gender, var = variant(None)
        voice, speed = f"{base}+{var}", round(ESPEAK_SPEED / stretch[rate])
        b.add("speech.rate", i, b.espeak.say(text, voice, speed),
              _speech_meta("espeak-ng", text, {"language": "English", "gender": gender, "speaking_rate": rate,
                                               "espeak_voice": voice, "espeak_speed": speed}),
              f"espeak-ng {base}", f"espeak-ng {voice} -s {speed}")
    languages = [lang for lang in b.pools.get("language", []) if lang == "English" or lang in SENTENCES]
    if len(languages) < 2:
        print(f"speech.language: the corpus's language pool {b.pools.get('language')} has fewer than two languages "
              "with sentences here; skipped", file=sys.stderr)
        return
    said: Counter = Counter()
    for i, language in enumerate(_balanced(languages, n, rng)):
        if language == "English":
            text = make_sentence(rng)["text"]
        else:  # each sentence once before any repeats
            text = SENTENCES[language][said[language] % len(SENTENCES[language])]
            said[language] += 1
        gender, var = variant(None)
        voice = f"{ESPEAK_LANGUAGE[language]}+{var}"
        b.add("speech.language", i, b.espeak.say(text, voice, ESPEAK_SPEED),
              _speech_meta("espeak-ng", text, {"language": language, "gender": gender, "espeak_voice": voice}),
              f"espeak-ng {ESPEAK_LANGUAGE[language]}", f"espeak-ng {voice}")


def build_category(b: Builder, n: int, rng: np.random.Generator) -> None:
    """general.category: speech, sound effects and music, as many of each as the installed sources allow."""
    def shuffled(paths: list[Path]) -> list[Path]:
        return [paths[int(i)] for i in rng.permutation(len(paths))]

    recorded, sfx, music = shuffled(recorded_speech()), shuffled(sound_effects()), shuffled(music_tracks())
    kinds = [k for k, ok in (("speech", recorded or b.espeak), ("sfx", sfx), ("music", music)) if ok]
    if len(kinds) < 2:
        print(f"general.category: only {kinds} available; skipped (install the reserved sources)", file=sys.stderr)
        return
    taken: Counter = Counter()
    for i, kind in enumerate(_balanced(kinds, n, rng)):
        k = taken[kind]
        taken[kind] += 1
        if kind == "speech" and (not b.espeak or (recorded and k % 2 == 1)):  # half recorded, half synthesised
            path = recorded[(k // 2 if b.espeak else k) % len(recorded)]
            source = _reserved(path)
            b.add("general.category", i, _file_clip(path),
                  {"source": source, "category": "speech", "label": "speech", "caption": "Recorded speech.",
                   "attributes": {"file": str(path)}}, _file_group(path), path.name)
        elif kind == "speech":
            languages = sorted(ESPEAK_LANGUAGE.keys() & ({"English"} | SENTENCES.keys()))
            language = languages[int(rng.integers(len(languages)))]
            text = (make_sentence(rng)["text"] if language == "English"
                    else SENTENCES[language][int(rng.integers(len(SENTENCES[language])))])
            names = MALE_VARIANTS + FEMALE_VARIANTS
            voice = f"{ESPEAK_LANGUAGE[language]}+{names[int(rng.integers(len(names)))]}"
            b.add("general.category", i, b.espeak.say(text, voice, ESPEAK_SPEED),
                  _speech_meta("espeak-ng", text, {"language": language, "espeak_voice": voice}),
                  f"espeak-ng {ESPEAK_LANGUAGE[language]}", f"espeak-ng {voice}")
        elif kind == "sfx":
            path = sfx[k % len(sfx)]
            label = _words(path.stem)
            b.add("general.category", i, _file_clip(path),
                  {"source": _reserved(path), "category": "sfx", "label": label,
                   "caption": f"A desktop notification sound: {label}.", "attributes": {"file": str(path)}},
                  _file_group(path), path.name)
        else:
            path = music[k % len(music)]
            audio, start = _music_excerpt(path, rng)
            b.add("general.category", i, audio,
                  {"source": _reserved(path), "category": "music", "label": "music", "caption": "Game music.",
                   "attributes": {"file": str(path), "start_s": round(start, 2)}},
                  _file_group(path), f"{path.parent.name}/{path.name} @{start:.0f}s")


# ---- output --------------------------------------------------------------------------------------------------

def _refuse_corpus(out: Path, corpus: Path | None) -> None:
    """Never write into a corpus: not into --corpus, nor into any folder `af2 corpus build` wrote."""
    out = out.resolve()
    for d in (out, *out.parents):
        if (d / "datasheet.json").is_file() and (d / "manifests").is_dir():
            raise SystemExit(f"{out}: inside the corpus {d}; write the external set elsewhere")
    if corpus is not None and out.is_relative_to(corpus.resolve()):
        raise SystemExit(f"{out}: inside --corpus {corpus}; write the external set elsewhere")


def _licences(text: str, files: list[str]) -> list[str]:
    """The licences a Debian copyright file gives ``files`` (machine-readable format: the last stanza whose
    Files: pattern matches a file's path applies); all its licences when no file is named or it is free-form."""
    stanzas = []
    for block in re.split(r"\n\s*\n", text):
        found = re.search(r"^Files:\s*(.*(?:\n[ \t]+\S.*)*)", block, re.MULTILINE)
        licence = re.search(r"^License:\s*(\S.*)$", block, re.MULTILINE)
        if found and licence:
            stanzas.append((found.group(1).split(), licence.group(1).strip()))
    if not stanzas:  # free-form (espeak-ng): the GPL version it names
        m = re.search(r"GNU General Public License.*?version (\d)(.{0,60}later)?", text, re.DOTALL)
        return [f"GPL-{m.group(1)}{'+' if m.group(2) else ''}"] if m else ["see the copyright file"]
    if not files:
        return list(dict.fromkeys(lic for _, lic in stanzas))
    out = []
    for f in files:
        hits = [lic for patterns, lic in stanzas if any(fnmatch.fnmatch(f, p if p == "*" else f"*/{p}")
                                                        for p in patterns)]
        if hits:
            out.append(hits[-1])
    return sorted(set(out))


def _package(pkg: str, files: list[str]) -> tuple[str, str]:
    """(version, licences of ``files``) of an installed Debian package: dpkg and /usr/share/doc/<pkg>/copyright."""
    try:
        version = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", pkg], capture_output=True, text=True,
                                 timeout=30).stdout.strip() or "?"
    except (OSError, subprocess.SubprocessError):
        version = "?"
    path = Path("/usr/share/doc") / pkg / "copyright"
    text = path.read_text(errors="replace") if path.is_file() else ""
    return version, ", ".join(_licences(text, files))


def _readme(rows: list[dict], used: Counter, files: dict[str, set[str]], args: argparse.Namespace,
            pools_from: str) -> str:
    lines = ["# af2-nano external evaluation set", "",
             "Multiple-choice items in the MMAU layout (task `mmau-test-mini`, folder `mmau/`) on audio from the "
             "sources that `af2.data.sources.RESERVED` keeps out of the training corpus. The questions and option "
             "wordings are the corpus's own templates (`af2.data.qa.templates.template_qa`, option pools "
             f"{pools_from}); only the audio sources are new. Not MMAU: the paper comparison does not apply.", "",
             f"Built by `python scripts/nano-external-set.py {args.out} --seed {args.seed} --per-skill "
             f"{args.per_skill}" + (f" --corpus {args.corpus}" if args.corpus else "") + "`; evaluate with", "",
             f"    af2 eval --model MODEL --tasks mmau-test-mini --data-root {args.out} --no-paper-comparison", "",
             "## Sources", "",
             "| source | Debian package | version | licence (/usr/share/doc/<pkg>/copyright) | clips |",
             "|---|---|---|---|---|"]
    for source in sorted(used):
        pkg = PACKAGES.get(source, source)
        version, licence = _package(pkg, sorted(files.get(source, ())))
        lines.append(f"| {source} | {pkg} | {version} | {licence} | {used[source]} |")
    notes = {"espeak-ng": "speech synthesised here with espeak-ng (program GPL-3+); voices en-us/en with variants "
                          "+m1..m7 (male) and +f1..f5 (female), es, pl, ru, uk",
             "sound-theme-freedesktop": "per-file licences (CC-BY-3.0, CC-BY-SA-3.0, GPL-2, GPL-2+) are listed in "
                                        "the copyright file; audio-channel-* announcements are used as speech",
             "warzone2100-music": "10-s excerpts; the Debian copyright gives GPL-2+ (Files: *); the aftermath "
                                  "and legacy albums' own music/albums/*/license.txt add CC-BY-SA-3.0 (or later)",
             "pocketsphinx-testdata": "cards/*.wav and librivox/*.wav recordings, used as speech"}
    lines += [""] + [f"- {s}: {notes[s]}" for s in sorted(used) if s in notes]
    lines += ["", "## Items", "", "| skill (template) | AudioSkills skill | items | options | answers | answer letters "
              "| chance |", "|---|---|---|---|---|---|---|"]
    chance_total = 0.0
    for template in sorted({r["task"] for r in rows}):
        sel = [r for r in rows if r["task"] == template]
        answers = Counter(r["answer"] for r in sel)
        letters = Counter("ABCDEFGH"[r["choices"].index(r["answer"])] for r in sel)
        chance = sum(1 / len(r["choices"]) for r in sel) / len(sel)
        chance_total += chance * len(sel)
        sizes = sorted({len(r["choices"]) for r in sel})
        lines.append(f"| {template} | {sel[0]['category']} | {len(sel)} | {'/'.join(map(str, sizes))} | "
                     + ", ".join(f"{a} {c}" for a, c in sorted(answers.items())) + " | "
                     + ", ".join(f"{a} {c}" for a, c in sorted(letters.items())) + f" | {chance:.3f} |")
    lines += ["", f"{len(rows)} items; chance level (mean of 1/options over the items): "
              f"{chance_total / max(1, len(rows)):.3f}. Within each skill every answer and every answer letter is "
              "correct equally often (to within one item), so neither an answer prior nor a letter prior beats "
              "chance.", "",
              "Questions, as the corpus words them:", ""]
    for template in sorted({r["task"] for r in rows}):
        r = next(r for r in rows if r["task"] == template)
        options = sorted({c for x in rows if x["task"] == template for c in x["choices"]})
        lines.append(f"- {template}: \"{r['question']}\" options drawn from {options}")
    lines += ["", "All audio: 16 kHz mono 16-bit FLAC, silence trimmed, peak-normalised, at most 30 s. Item fields: "
              "`task` = template id, `category` = AudioSkills skill, `dataset` = audio source, `sub-category` = "
              "the voice family or file set, `detail` = the voice or file. Each clip's metadata (what the templates "
              "were given) is in metadata.jsonl.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path, help="output folder (the --data-root for af2 eval)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--per-skill", type=int, default=40, help="items per skill (at most)")
    ap.add_argument("--corpus", type=Path, default=None,
                    help="an `af2 corpus build` folder whose option pools to use (read only)")
    args = ap.parse_args(argv)
    if args.per_skill < 1:
        ap.error("--per-skill must be at least 1")

    from af2.eval.benchmarks import choice_qa  # noqa: F401  (registers the tasks)
    from af2.eval.registry import TASKS

    if TASKS["mmau-test-mini"].folder != TASK_FOLDER:
        raise SystemExit(f"task mmau-test-mini reads {TASKS['mmau-test-mini'].folder!r}, not {TASK_FOLDER!r}")
    _refuse_corpus(args.out, args.corpus)
    folder = args.out / TASK_FOLDER
    if folder.exists():
        if not (folder / MARKER).is_file():
            raise SystemExit(f"{folder} exists and was not written by this script; remove it or pick another OUT_DIR")
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    (folder / MARKER).write_text("written by scripts/nano-external-set.py; rebuilt on each run\n")

    pools = corpus_pools(args.corpus)
    with tempfile.TemporaryDirectory() as tmp:
        espeak = Espeak(Path(tmp))
        b = Builder(args.out, pools, args.seed, espeak)
        if espeak:
            build_speech(b, args.per_skill, np.random.default_rng([args.seed, 1]))
        else:
            print("espeak-ng not installed: speech.gender, speech.rate and speech.language skipped", file=sys.stderr)
        build_category(b, args.per_skill, np.random.default_rng([args.seed, 2]))
    if not b.rows:
        raise SystemExit("no items: none of the reserved sources is installed")
    b.place_answers(np.random.default_rng([args.seed, 3]))

    (folder / "mmau-test-mini.json").write_text(json.dumps(b.rows, indent=1, ensure_ascii=False), encoding="utf-8")
    write_jsonl(args.out / "metadata.jsonl", b.metas, sort_keys=True)
    pools_from = (f"from {args.corpus}/metadata/clips.jsonl" if args.corpus
                  else "from the values the corpus sources define")
    (args.out / "README.md").write_text(_readme(b.rows, b.used, b.files, args, pools_from), encoding="utf-8")
    counts = Counter(r["task"] for r in b.rows)
    print(f"{args.out}: {len(b.rows)} items ({', '.join(f'{k} {v}' for k, v in sorted(counts.items()))}); "
          f"sources {dict(sorted(b.used.items()))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
