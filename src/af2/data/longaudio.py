"""Long audio, LongAudio-style (spec 7.2): recordings with an exact timeline, and their QA.

``compose`` places short clips one after another (never overlapping, silent gaps between them,
optionally over a quiet real music bed) and returns the audio with a ``Timeline`` whose event
times are exact to the sample. Real long recordings enter as a ``Timeline`` built from their
segment annotations. ``longaudio_qa`` turns any timeline into captioning, plot, temporal,
needle-in-a-haystack, subscene, counting, ordering and general QA.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import numpy as np

from af2.audio import SAMPLE_RATE
from af2.data.qa import QAPair, item_rng, multiple_choice, number_options

SR = SAMPLE_RATE  # the corpus rate, short to keep the arithmetic below readable
CATEGORIES = ("captioning", "plot_qa", "temporal_qa", "needle_qa", "subscene_qa", "counting", "ordering", "general_qa")
GENERATOR = "longaudio"
THIRDS = ("the first third", "the middle third", "the last third")


@dataclass
class Event:
    start: float
    end: float
    label: str
    category: str
    caption: str
    source_id: str
    transcript: str | None = None
    attributes: dict[str, Any] = field(default_factory=dict)


@dataclass
class Timeline:
    id: str
    duration: float
    kind: str  # composed | real
    events: list[Event]
    background: dict[str, Any] | None = None  # {"label", "source_id", "gain"} of a music bed
    title: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "Timeline":
        return cls(**{**d, "events": [Event(**e) for e in d["events"]]})


def clock(t: float) -> str:
    """Seconds -> "m:ss"."""
    t = int(round(t))
    return f"{t // 60}:{t % 60:02d}"


def compose(rec_id: str, clips: Sequence[Any], rng: np.random.Generator, target_seconds: float, *,
            gap: tuple[float, float] = (0.5, 3.0), repeats: int = 3, needle: Any | None = None,
            bed: tuple[str, np.ndarray, str] | None = None, bed_gain: float = 0.1,
            distinct_labels: bool = False) -> tuple[np.ndarray, Timeline]:
    """Fill ``target_seconds`` with clips (objects with id, audio, label, category, caption, transcript).

    One clip is repeated ``repeats`` times (for counting questions); ``needle`` (if given) is placed
    once at a random point in the middle 80 %; ``bed`` = (label, audio, source id) is mixed under
    everything at ``bed_gain``. With ``distinct_labels`` no two other clips share a label, so a label's
    chance to be first or last does not depend on how many clips in the pool carry it.
    """
    total = int(target_seconds * SR)
    used = 0
    picks = rng.permutation(len(clips))
    repeated = clips[int(picks[0])]
    slots = [repeated] * repeats
    labels = {repeated.label}
    for j in picks[1:]:
        if used > total:
            break
        if distinct_labels and clips[int(j)].label in labels:
            continue  # only the repeated clip's label occurs more than once
        labels.add(clips[int(j)].label)
        slots.append(clips[int(j)])
        used += len(clips[int(j)].audio) + int(np.mean(gap) * SR)
    slots = [slots[int(i)] for i in rng.permutation(len(slots))]
    if needle is not None:
        slots.insert(int(len(slots) * (0.1 + 0.8 * rng.random())), needle)
    audio = np.zeros(total, dtype=np.float32)
    events: list[Event] = []
    pos = int(rng.uniform(*gap) * SR)
    for clip in slots:
        n = len(clip.audio)
        if pos + n > total:
            # stop rather than skip to a shorter clip: skipping made the last events short sounds more often
            # than not, which the text of "which is heard last?" options gave away
            break
        audio[pos: pos + n] += clip.audio
        events.append(Event(start=pos / SR, end=(pos + n) / SR, label=clip.label, category=clip.category,
                            caption=clip.caption, source_id=clip.id, transcript=clip.transcript,
                            attributes=dict(getattr(clip, "attributes", {}))))
        pos += n + int(rng.uniform(*gap) * SR)
    background = None
    if bed is not None:
        label, bed_audio, bed_id = bed
        reps = int(np.ceil(total / max(1, len(bed_audio))))
        audio += bed_gain * np.tile(bed_audio, reps)[:total]
        background = {"label": label, "source_id": bed_id, "gain": bed_gain}
    return audio, Timeline(id=rec_id, duration=total / SR, kind="composed", events=events, background=background)


def _event_time(audio_of_event: np.ndarray | None, e: Event) -> float | None:
    """A whole second inside the event where the event itself is loud (so "at m:ss" is audible)."""
    seconds = [s for s in range(int(np.ceil(e.start + 0.25)), int(np.floor(e.end - 0.25)) + 1)]
    if not seconds:
        return None
    if audio_of_event is None:
        return float(seconds[len(seconds) // 2])
    energies = []
    for s in seconds:
        a = int((s - e.start - 0.2) * SR)
        energies.append(float(np.sqrt(np.mean(np.square(audio_of_event[max(0, a): a + int(0.4 * SR)]) + 1e-12))))
    return float(seconds[int(np.argmax(energies))])


def _describe(e: Event) -> str:
    if e.transcript:
        return f"a voice saying \"{e.transcript}\""
    return f"a {e.label}" if e.category != "music" else f"music ({e.label})"


class _LongBuilder:
    """One timeline's QA, in the AudioSkills templates' pattern (``af2.data.qa.templates``): ``add``
    appends an open pair and its multiple-choice form; one function per LongAudio category adds its
    questions. The functions run in a fixed order because they share the item's random stream."""

    def __init__(self, tl: Timeline, seed: int, clip_audio: dict[str, np.ndarray] | None):
        self.tl, self.ev = tl, tl.events
        self.rng = item_rng(seed, "longaudio", tl.id)
        self.clip_audio = clip_audio
        self.out: list[QAPair] = []
        self.labels = [e.label for e in self.ev]
        self.kinds = Counter(e.category for e in self.ev)
        # events whose label occurs once (not counting the last event): "the X" names exactly one of them
        self.unique = [i for i, lab in enumerate(self.labels[:-1]) if self.labels.count(lab) == 1]

    def add(self, cat: str, template: str, q: str, a: str, distractors: Sequence[str] = (), option: str | None = None,
            **extra: Any) -> None:
        qa = QAPair(question=q, answer=a, skill=cat, generator=GENERATOR, template=template,
                    sources=(self.tl.id, *sorted({e.source_id for e in self.ev} - {self.tl.id})), extra=extra)
        self.out.append(qa)
        if distractors:
            mcq = multiple_choice(qa, distractors, self.rng, answer_option=option)
            if mcq is not None:
                self.out.append(mcq)

    def pick(self, indices: Sequence[int]) -> int:
        return indices[int(self.rng.integers(len(indices)))]


def _real(b: _LongBuilder) -> None:
    """A real recording (or an empty timeline): only what its metadata says."""
    tl, ev = b.tl, b.ev
    desc = ev[0].caption if ev else tl.title
    b.add("captioning", "long.caption.real", "Describe the audio in detail.", desc)
    b.add("general_qa", "long.general.length", "About how long is this recording?", f"About {clock(tl.duration)}.")
    for key, q in (("mood", "What is the mood of this music?"), ("theme", "What kind of scene does this music accompany?")):
        if ev and key in ev[0].attributes:
            b.add("general_qa", f"long.general.{key}", q, ev[0].attributes[key])


def _caption_and_plot(b: _LongBuilder) -> None:
    tl, ev, kinds = b.tl, b.ev, b.kinds
    bed = f" Quiet background music ({tl.background['label']}) plays throughout." if tl.background else ""
    listing = "; ".join(f"{clock(e.start)} {_describe(e)}" for e in ev[:12])
    b.add("captioning", "long.caption", "Describe the audio in detail.",
          f"A {clock(tl.duration)} recording made of {len(ev)} separate sounds: {kinds.get('speech', 0)} speech, "
          f"{kinds.get('music', 0)} music and {len(ev) - kinds.get('speech', 0) - kinds.get('music', 0)} other sound "
          f"events, separated by short pauses. It begins with {_describe(ev[0])} and ends with {_describe(ev[-1])}."
          f"{bed} Timeline: {listing}{' ...' if len(ev) > 12 else ''}.")
    thirds = [[e for e in ev if i * tl.duration / 3 <= e.start < (i + 1) * tl.duration / 3] for i in range(3)]
    parts = [", ".join(dict.fromkeys(_describe(e) for e in part[:4])) or "silence" for part in thirds]
    b.add("plot_qa", "long.plot", "How does the recording unfold from beginning to end?",
          f"At the start there is {parts[0]}. In the middle there is {parts[1]}. Towards the end there is {parts[2]}.")
    b.add("plot_qa", "long.plot.ending", "How does the recording end?", f"It ends with {_describe(ev[-1])}, "
          f"from {clock(ev[-1].start)} to {clock(ev[-1].end)}.")


def _temporal(b: _LongBuilder) -> None:
    """What happens at a time, what comes right after X, when does X happen, in which third."""
    ev, labels, unique = b.ev, b.labels, b.unique
    times = [_event_time(b.clip_audio.get(e.source_id) if b.clip_audio else None, e) for e in ev]
    # only events that hold a whole second can be asked about, so only those are distractors: otherwise the
    # answer would be a long event (a long description) more often than the distractors
    askable = [i for i, t in enumerate(times) if t is not None]
    for i in b.rng.permutation(len(askable))[:3]:
        e, t = ev[askable[int(i)]], times[askable[int(i)]]
        b.add("temporal_qa", "long.temporal.at", f"What can be heard at {clock(t)}?", _describe(e),
              distractors=[_describe(ev[k]) for k in askable if ev[k].label != e.label], time=t, event=askable[int(i)])
    if not unique:
        return
    i = b.pick(unique)
    b.add("temporal_qa", "long.temporal.after", f"What comes right after the {labels[i]}?", _describe(ev[i + 1]),
          distractors=[_describe(x) for x in ev if x.label not in (labels[i], labels[i + 1])][:12], event=i + 1)
    j = b.pick(unique)
    b.add("temporal_qa", "long.temporal.when", f"When does the {labels[j]} occur?",
          f"From {clock(ev[j].start)} to {clock(ev[j].end)}.", event=j,
          distractors=[f"From {clock(x.start)} to {clock(x.end)}." for x in ev if x.label != labels[j]])
    k = b.pick(unique)
    part = min(2, int(3 * (ev[k].start + ev[k].end) / 2 / b.tl.duration))
    b.add("temporal_qa", "long.temporal.part", f"In which part of the recording is the {labels[k]} heard: the first "
          "third, the middle third or the last third?", THIRDS[part], distractors=THIRDS, event=k)


def _needle(b: _LongBuilder) -> None:
    """A needle in a haystack: a single speech event (and its slots), or a single sound among many."""
    ev, labels = b.ev, b.labels
    speech = [i for i, e in enumerate(ev) if e.transcript and labels.count(e.label) == 1]
    if speech:
        i = b.pick(speech)
        e = ev[i]
        b.add("needle_qa", "long.needle.say", "At one point a voice speaks. What does it say?",
              f"\"{e.transcript}\" (at {clock(e.start)}).", event=i)
        slots = e.attributes.get("slots", {})
        for slot, question in sorted(e.attributes.get("slot_questions", {}).items())[:1]:
            b.add("needle_qa", f"long.needle.slot.{slot}", f"Somewhere in the recording a voice makes an announcement. "
                  f"{question}", str(slots[slot]), event=i)
    if b.unique:
        i = b.pick(b.unique)
        b.add("needle_qa", "long.needle.find", f"Is there a {labels[i]} anywhere in the recording? If so, when?",
              f"Yes, at {clock(ev[i].start)}.", event=i)


def _subscene(b: _LongBuilder) -> None:
    """Describe a 30-s window (10 s in recordings under a minute)."""
    tl = b.tl
    if tl.duration < 20:
        return
    span = 30 if tl.duration >= 60 else 10
    a = float(b.rng.integers(0, int(tl.duration - span)))
    inside = [e for e in b.ev if e.end > a and e.start < a + span]
    b.add("subscene_qa", "long.subscene", f"Describe what happens between {clock(a)} and {clock(a + span)}.",
          ("; ".join(f"at {clock(max(e.start, a))} {_describe(e)}" for e in inside) or "Nothing but silence")
          + ".", window=[a, a + span])


def _counting(b: _LongBuilder) -> None:
    lab, n = Counter(b.labels).most_common(1)[0]
    b.add("counting", "long.count.repeat", f"How many times is the {lab} heard?", f"{n} {'time' if n == 1 else 'times'}.",
          distractors=number_options(n, b.rng, lambda k: f"{k} {'time' if k == 1 else 'times'}."))
    b.add("counting", "long.count.speech", "How many times does someone speak?", f"{b.kinds.get('speech', 0)}.")
    b.add("counting", "long.count.events", "How many separate sound events are there in total?", f"{len(b.ev)}.")


def _ordering(b: _LongBuilder) -> None:
    ev, labels = b.ev, b.labels
    if len(ev) >= 3:
        b.add("ordering", "long.order.first3", "List the first three sounds in order.",
              ", then ".join(_describe(e) for e in ev[:3]) + ".")
    if len(b.unique) >= 2:
        i, j = sorted(int(k) for k in b.rng.choice(b.unique, size=2, replace=False))
        named = (j, i) if b.rng.random() < 0.5 else (i, j)  # the first-named sound is not always the answer
        b.add("ordering", "long.order.pair", f"Which is heard first, the {labels[named[0]]} or the {labels[named[1]]}?",
              f"The {labels[i]} ({clock(ev[i].start)}), before the {labels[j]} ({clock(ev[j].start)}).",
              distractors=[labels[j]], option=labels[i], first=i, second=j)


def _general(b: _LongBuilder) -> None:
    tl, all_labels = b.tl, sorted(set(b.labels))
    b.add("general_qa", "long.general.speech", "Is there any speech in this recording?",
          "Yes." if b.kinds.get("speech") else "No.")  # open only: with a spoken needle the answer is nearly always yes
    b.add("general_qa", "long.general.music", "Is there background music?",
          f"Yes, {tl.background['label']}." if tl.background else "No, only separate sounds with silence between them.")
    b.add("general_qa", "long.general.kinds", "What kinds of sounds make up this recording?",
          ", ".join(all_labels[:15]) + ("..." if len(all_labels) > 15 else "") + ".")


# In this order: they draw from one random stream per item, so reordering changes every corpus.
_COMPOSED = (_caption_and_plot, _temporal, _needle, _subscene, _counting, _ordering, _general)


def longaudio_qa(tl: Timeline, seed: int = 0, clip_audio: dict[str, np.ndarray] | None = None) -> list[QAPair]:
    """QA for every LongAudio category that the timeline supports; ``extra`` carries the evidence."""
    b = _LongBuilder(tl, seed, clip_audio)
    for make in (_real,) if tl.kind == "real" or not tl.events else _COMPOSED:
        make(b)
    return b.out
