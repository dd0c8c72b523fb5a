"""Deterministic template QA from clip metadata, one group of questions per AudioSkills skill.

Input: the clip metadata written by the corpus builder (``Clip.meta()``): id, category, label,
caption, duration, transcript, attributes (instrument, tempo, key, mood, voice...) and, for
scenes, events with start/end/label. Output: ``QAPair``s with template ids, plus a
multiple-choice variant wherever the answer is categorical.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Iterable

from af2.data.qa import QAPair, item_rng, multiple_choice, number_options
from af2.errors import ManifestError

GENERATOR = "templates"
POOL_KEYS = ("label", "instrument", "family", "key", "tempo", "dynamics", "pattern", "composer", "era", "metre",
             "language", "gender", "character", "intent", "situation", "speaking_rate", "game", "category_word",
             "voice")


def category_word(meta: dict[str, Any]) -> str:
    return {"sfx": "a sound effect", "speech": "speech", "vocalization": "a non-speech vocal sound",
            "music": "music", "scene": "a sequence of sounds"}[meta["category"]]


def build_pools(metas: Iterable[dict[str, Any]]) -> dict[str, list[str]]:
    """Distractor pools: every value each attribute takes in the corpus, per category."""
    pools: dict[str, set[str]] = defaultdict(set)
    for meta in metas:
        values = {**meta.get("attributes", {}), "label": meta["label"], "category_word": category_word(meta)}
        for key in POOL_KEYS:
            value = values.get(key)
            if isinstance(value, str) and value:
                pools[f"{meta['category']}:{key}"].add(value)
                pools[key].add(value)
    return {k: sorted(v) for k, v in pools.items()}


THIRDS = ("near the start", "in the middle", "near the end")


def _fmt_seconds(t: float) -> str:
    return f"{t:.1f} seconds"


class _Builder:
    def __init__(self, meta: dict[str, Any], pools: dict[str, list[str]], seed: int):
        self.meta, self.pools = meta, pools
        self.rng = item_rng(seed, "templates", meta["id"])
        self.out: list[QAPair] = []

    def add(self, skill: str, template: str, question: str, answer: str, *, choices: str | None = None,
            distractors: Iterable[str] = (), option: str | None = None) -> None:
        """One open pair and, given ``choices`` (a pool name) or ``distractors``, its multiple-choice form.

        ``option`` is the answer in the pool's surface form when the open answer is a sentence around it:
        every option of one item then comes from the same pool, worded the same way."""
        qa = QAPair(question=question, answer=answer, skill=skill, generator=GENERATOR, template=template,
                    sources=(self.meta["id"],))
        self.out.append(qa)
        pool = list(distractors) or (self.pools.get(choices, []) if choices else [])
        if pool:
            mcq = multiple_choice(qa, pool, self.rng, answer_option=option)
            if mcq is not None:
                self.out.append(mcq)


def _general(b: _Builder) -> None:
    m = b.meta
    b.add("general_reasoning", "general.category", "What kind of audio is this: speech, music, a sound effect, "
          "a non-speech vocal sound or a sequence of sounds?", category_word(m), choices="category_word")
    b.add("temporal_reasoning", "temporal.duration", "Roughly how long does the audio last?",
          f"About {_fmt_seconds(m['duration'])}.")


def _sfx(b: _Builder) -> None:
    from af2.data.sources import sfx_context

    m, attrs = b.meta, b.meta["attributes"]
    b.add("attribute_identification", "sfx.label", "What sound is heard in this clip?", m["label"],
          choices="sfx:label")
    b.add("contextual_sound_event_reasoning", "sfx.context", "Based on the sound, what is most likely happening?",
          f"The {m['label']} suggests that {sfx_context(m['label'], m['source'])}.")
    if "game" in attrs:
        b.add("general_reasoning", "sfx.setting", "In what kind of setting would this sound typically be heard?",
              f"In {attrs['game']}.", choices="game", option=attrs["game"])
    b.add("general_reasoning", "sfx.human", "Is the sound made by a human voice?",
          f"No, it is a {m['label']} sound effect.")


def _speech(b: _Builder) -> None:
    m, attrs = b.meta, b.meta["attributes"]
    text = m.get("transcript")
    if text:
        b.add("information_extraction", "speech.transcript", "What exactly does the speaker say?", f"\"{text}\"")
        words = len(text.replace(",", " ").replace(".", " ").split())
        b.add("counting", "speech.words", "How many words are spoken?", f"{words} words.",
              distractors=number_options(words, b.rng, lambda w: f"{w} words."))
    if "language" in attrs:
        b.add("attribute_identification", "speech.language", "What language is spoken?", attrs["language"],
              choices="language")
    if "gender" in attrs:
        b.add("attribute_identification", "speech.gender", "Is the speaker male or female?", attrs["gender"],
              distractors=["male", "female"])
    if "engine" in attrs and "voice" in attrs:  # synthetic voices: which of the corpus's voices speaks
        b.add("attribute_identification", "speech.voice", "Which of these voices is speaking?", attrs["voice"],
              choices="speech:voice")
    if "character" in attrs:
        b.add("attribute_identification", "speech.character", "What kind of character voice is this?",
              f"a {attrs['character']} voice", distractors=[f"a {c} voice" for c in b.pools.get("character", [])])
    if "speaking_rate" in attrs:
        b.add("attribute_identification", "speech.rate", "Is the speaking rate slow, normal or fast?",
              attrs["speaking_rate"], distractors=["slow", "normal", "fast"])
    if "situation" in attrs:
        b.add("contextual_speech_event_reasoning", "speech.situation", "In what situation would this be said?",
              f"It sounds like {attrs['situation']}.", choices="situation", option=attrs["situation"])
        kind = attrs.get("sentence_type", "statement")
        b.add("general_reasoning", "speech.sentence_type", "Is the speaker asking a question, giving a command, "
              "making a request or making a statement?", kind, distractors=["question", "command", "request", "statement"])
        for slot, question in sorted(attrs.get("slot_questions", {}).items()):
            value = attrs["slots"][slot]
            b.add("information_extraction", f"speech.slot.{attrs.get('template', 'x')}.{slot}", question, value)
    elif "intent" in attrs:
        said = f"says \"{text}\"" if text else f"shouts something in {attrs.get('language', 'another language')}"
        b.add("contextual_speech_event_reasoning", "speech.intent", "Why might the speaker be saying this?",
              f"The speaker {said}, most likely {attrs['intent']}.")
        if attrs.get("meaning") and not text:
            b.add("information_extraction", "speech.meaning", "What does the phrase mean in English?",
                  f"\"{attrs['meaning']}\"")


def _vocalization(b: _Builder) -> None:
    m = b.meta
    b.add("attribute_identification", "vocal.label", "What vocal sound is made?", m["label"],
          choices="vocalization:label")
    b.add("general_reasoning", "vocal.words", "Does the person say any words?",
          f"No, the person is {m['label']}, without speaking words.")
    b.add("contextual_sound_event_reasoning", "vocal.context", "What does this vocal sound suggest about the person?",
          {"laughing": "They are amused.", "crying out in pain": "They have just been hurt.",
           "grunting after a hit": "They have just been hit.", "grunting while jumping": "They are exerting themselves.",
           "shouting while punching": "They are attacking with effort.", "coughing": "They may be ill or choking.",
           "moaning": "They feel unwell.", "humming thoughtfully": "They are thinking something over."}
          .get(m["label"], "It expresses their reaction."))


def _music(b: _Builder) -> None:
    m, a = b.meta, b.meta["attributes"]
    if "instrument" in a:
        b.add("attribute_identification", "music.instrument", "Which instrument is playing?", a["instrument"],
              choices="instrument")
    if "family" in a:
        b.add("attribute_identification", "music.family", "To which instrument family does the instrument belong?",
              a["family"], distractors=["keyboard", "string", "brass", "woodwind", "percussion"])
    if "key" in a:
        b.add("attribute_identification", "music.key", "In which key is the music?", a["key"], choices="key")
        b.add("attribute_identification", "music.mode", "Is the music in a major or a minor key?", a["mode"],
              distractors=["major", "minor"])
    if "tempo_bpm" in a:
        b.add("information_extraction", "music.bpm", "What is the tempo in beats per minute?", f"{a['tempo_bpm']} bpm",
              distractors=[f"{t} bpm" for t in (60, 80, 100, 120, 140, 168)])
        b.add("attribute_identification", "music.tempo", "Is the tempo slow, moderate or fast?", a["tempo"],
              distractors=["slow", "moderate", "fast"])
    if "dynamics" in a:
        b.add("attribute_identification", "music.dynamics", "Is the music played softly, moderately or loudly?",
              a["dynamics"], distractors=["soft", "moderate", "loud"])
    if "notes" in a:
        b.add("counting", "music.notes", "How many notes are played?", f"{a['notes']} notes.",
              distractors=number_options(a["notes"], b.rng, lambda n: f"{n} notes."))
    if "pattern" in a:
        b.add("temporal_reasoning", "music.pattern", "How does the pitch move over time?", a["pattern"],
              choices="pattern")
    if "composer" in a:
        b.add("information_extraction", "music.composer", "Who composed this music?", a["composer"], choices="composer")
        b.add("general_reasoning", "music.era", "From which period or tradition does this music come?", a["era"],
              choices="era")
    if "metre" in a:
        b.add("attribute_identification", "music.metre", "What is the time signature?", a["metre"], choices="metre")
    if "parts" in a:
        b.add("counting", "music.parts", "How many voices or parts play at once?", str(a["parts"]))
    if "mode" in a:
        bright = a["mode"] == "major" and a.get("tempo", "moderate") != "slow"
        b.add("general_reasoning", "music.mood", "Would this music better suit a cheerful or a sombre scene?",
              "a cheerful scene" if bright else "a sombre or reflective scene",
              distractors=["a cheerful scene", "a sombre or reflective scene"])


def _scene(b: _Builder) -> None:
    events = b.meta["events"]
    labels = [e["label"] for e in events]
    b.add("counting", "scene.count", "How many separate sound events are there?", f"{len(events)}.",
          distractors=number_options(len(events), b.rng, lambda n: f"{n}."))
    counts = {label: labels.count(label) for label in labels}
    repeated = max(sorted(counts), key=lambda k: counts[k])
    b.add("counting", "scene.repeat", f"How many times is the {repeated} heard?",
          f"{counts[repeated]} {'time' if counts[repeated] == 1 else 'times'}.")
    first, last = events[0], events[-1]
    b.add("temporal_reasoning", "scene.first", "Which sound is heard first?", first["label"],
          distractors=labels)
    b.add("temporal_reasoning", "scene.last", "Which sound is heard last?", last["label"], distractors=labels)
    for i in range(len(events) - 1):
        if labels.count(labels[i]) == 1 and labels[i + 1] != labels[i]:
            b.add("temporal_reasoning", "scene.after", f"What is heard right after the {labels[i]}?",
                  labels[i + 1], distractors=[lab for lab in labels if lab != labels[i]])
            break
    a, c = events[0], events[-1]
    if a["label"] != c["label"]:
        pair = (c, a) if b.rng.random() < 0.5 else (a, c)  # the first-named sound is not always the answer
        b.add("temporal_reasoning", "scene.order", f"Which comes first, the {pair[0]['label']} or the "
              f"{pair[1]['label']}?", f"The {a['label']} comes first, at about {a['start']:.1f} s; the {c['label']} "
              f"follows at about {c['start']:.1f} s.", option=a["label"], distractors=[c["label"]])
    duration = float(b.meta["duration"])
    once = [e for e in events if labels.count(e["label"]) == 1]
    if once and duration > 0:
        e = once[int(b.rng.integers(len(once)))]
        part = min(2, int(3 * (e["start"] + e["end"]) / 2 / duration))
        b.add("temporal_reasoning", "scene.position", f"When is the {e['label']} heard: near the start, in the middle "
              "or near the end?", THIRDS[part], distractors=THIRDS)
    speech = [e for e in events if e.get("transcript")]
    if speech:
        e = speech[0]
        b.add("contextual_speech_event_reasoning", "scene.speech", "What does the voice say, and what happens around it?",
              f"The voice says \"{e['transcript']}\" at about {e['start']:.1f} s, among these sounds: "
              f"{', '.join(dict.fromkeys(labels))}.")
    b.add("contextual_sound_event_reasoning", "scene.describe", "Describe the sequence of sounds.",
          "In order: " + "; then ".join(labels) + ".")


_BY_CATEGORY = {"sfx": _sfx, "speech": _speech, "vocalization": _vocalization, "music": _music, "scene": _scene}


def template_qa(meta: dict[str, Any], pools: dict[str, list[str]], seed: int = 0) -> list[QAPair]:
    """All template QA for one clip; deterministic in (meta, pools, seed)."""
    if meta["category"] not in _BY_CATEGORY:
        raise ManifestError(f"clip {meta['id']!r}: unknown category {meta['category']!r}; expected one of {sorted(_BY_CATEGORY)}")
    b = _Builder(meta, pools, seed)
    _general(b)
    _BY_CATEGORY[meta["category"]](b)
    return b.out


def _a(noun: str) -> str:
    return f"{'an' if noun[:1].lower() in 'aeiou' else 'a'} {noun}"


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _caption_variants(meta: dict[str, Any]) -> list[str]:
    """Paraphrases of what the clip holds, all from its metadata (no claim the metadata does not make)."""
    a, label, cat = meta.get("attributes", {}), meta["label"], meta["category"]
    text = meta.get("transcript")
    if cat == "sfx":
        setting = a.get("game", "a video game")
        return [f"The sound of {_a(label)}.", f"{_cap(label)}, as heard in {setting}.",
                f"A short sound effect: {label}.", f"{_cap(_a(label))} sound."]
    if cat == "vocalization":
        return [f"Someone {label}.", f"A person {label}, without any words.", f"A cartoon voice {label}."]
    if cat == "speech" and text:
        who = f"{_a(a['gender'])} voice" if "gender" in a else "a voice"
        out = [f"{_cap(who)} says \"{text}\".", f"Speech: \"{text}\"", f"Someone saying \"{text}\"."]
        if "situation" in a:
            out.append(f"{_cap(a['situation'])}, spoken at a {a.get('speaking_rate', 'normal')} pace: \"{text}\"")
        return out
    if cat == "speech":
        lang = a.get("language", "another language")
        return [f"A short shout in {lang}.", f"A cartoon character shouting a phrase in {lang}.",
                f"Someone exclaiming something in {lang}."]
    if cat == "music" and "pattern" in a:
        inst, pattern, key = a.get("instrument", "an instrument"), a["pattern"], a.get("key")
        in_key = f" in {key}" if key else ""
        out = [f"Solo {inst}: {_a(pattern)}{in_key}.", f"{_cap(_a(pattern))} played on the {inst}{in_key}."]
        if "tempo" in a and "dynamics" in a:
            volume = {"soft": "softly", "loud": "loudly"}.get(a["dynamics"], "at moderate volume")
            out.append(f"{_cap(_a(a['tempo']))} {pattern} played {volume} on the {inst}.")
        if "family" in a and "tempo_bpm" in a:
            out.append(f"{_cap(a['family'])} instrument music, {_a(pattern)} at {a['tempo_bpm']} bpm.")
        return out
    if cat == "music" and "composer" in a:
        return [f"{_cap(a.get('era', 'classical'))} music by {a['composer']}.",
                f"A piano rendering of a piece by {a['composer']}" + (f" in {a['metre']} time." if "metre" in a
                                                                      else "."),
                f"Music by {a['composer']} on a synthesised piano" + (f", in {a['key']}." if "key" in a else ".")]
    if cat == "music":
        return [f"Music: {label}.", f"A piece of music ({label}).", f"{_cap(label)}, played as music."]
    if cat == "scene":
        labels = [e["label"] for e in meta["events"]]
        return [f"First {_a(labels[0])}, then " + ", then ".join(labels[1:]) + ".",
                f"{len(labels)} sound events one after another: " + "; ".join(labels) + ".",
                f"Several sounds in a row, starting with {_a(labels[0])} and ending with {_a(labels[-1])}."]
    return []


def caption_qa(meta: dict[str, Any]) -> list[QAPair]:
    """The clip's caption and its paraphrases (3-5 per clip), each one captioning pair; the first is the caption."""
    captions = list(dict.fromkeys([meta["caption"], *_caption_variants(meta)]))
    return [QAPair(question="Caption the input audio.", answer=c, skill="captioning", generator=GENERATOR,
                   template="caption" if k == 0 else f"caption.p{k}", sources=(meta["id"],),
                   extra={"caption_of": meta["id"]}) for k, c in enumerate(captions)]
