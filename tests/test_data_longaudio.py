"""Timelines are exact: what a question says happens at a time is really in the audio there."""

import re
from types import SimpleNamespace

import numpy as np
import soundfile as sf

from af2.data.longaudio import CATEGORIES, Timeline, compose, longaudio_qa

SR = 16_000


def _clips(rng):
    out = []
    for k in range(12):  # distinct tones, chirps and noise bursts of 0.6-4 s
        n = int(rng.uniform(0.6, 4.0) * SR)
        t = np.arange(n) / SR
        audio = 0.5 * np.sin(2 * np.pi * (200 + 97 * k) * t) if k % 3 else rng.uniform(-0.5, 0.5, n)
        out.append(SimpleNamespace(id=f"c{k}", audio=audio.astype(np.float32), label=f"sound {k}",
                                   category="speech" if k == 5 else "sfx", caption=f"sound number {k}",
                                   transcript="turn left onto main street" if k == 5 else None,
                                   attributes={"slots": {"street": "Main Street"},
                                               "slot_questions": {"street": "Which street?"}} if k == 5 else {}))
    return out


def _parse_clock(text):
    m, s = re.search(r"(\d+):(\d\d)", text).groups()
    return int(m) * 60 + int(s)


def test_stated_events_are_in_the_written_audio(tmp_path):
    rng = np.random.default_rng(3)
    clips = _clips(rng)
    by_id = {c.id: c for c in clips}
    audio, tl = compose("long/0", clips[:5] + clips[6:], rng, 90.0, repeats=3, needle=clips[5])
    path = tmp_path / "long.flac"
    sf.write(path, audio, SR, subtype="PCM_16")
    back, _ = sf.read(path, dtype="float32")
    tl = Timeline.from_json(tl.to_json())  # what the corpus stores
    assert abs(tl.duration - len(back) / SR) < 1e-6
    # every placed clip is in the file, sample for sample (up to 16-bit rounding), at its stated offset
    for e in tl.events:
        a, b = round(e.start * SR), round(e.end * SR)
        assert np.max(np.abs(back[a:b] - by_id[e.source_id].audio)) < 1e-3
    # outside events there is silence
    mask = np.ones(len(back), bool)
    for e in tl.events:
        mask[round(e.start * SR): round(e.end * SR)] = False
    assert np.max(np.abs(back[mask])) < 1e-3
    qas = longaudio_qa(tl, seed=0, clip_audio={c.id: c.audio for c in clips})
    assert {q.skill for q in qas} == set(CATEGORIES)
    at = [q for q in qas if q.template == "long.temporal.at"]
    assert at
    for q in at:  # "what can be heard at m:ss?" -> the named event is loud in the recording at that second
        t = _parse_clock(q.question)
        e = tl.events[q.extra["event"]]
        assert e.start <= t <= e.end and e.label.split()[-1] in q.answer or e.transcript in q.answer
        window = back[int((t - 0.2) * SR): int((t + 0.2) * SR)]
        assert np.sqrt(np.mean(window ** 2)) > 0.05
    after = next(q for q in qas if q.template == "long.temporal.after")
    e = tl.events[after.extra["event"]]
    prev = tl.events[after.extra["event"] - 1]
    assert prev.label in after.question and e.start > prev.end
    count = next(q for q in qas if q.template == "long.count.repeat")
    label = re.search(r"the (.+) heard", count.question).group(1)
    assert int(count.answer.split()[0]) == sum(ev.label == label for ev in tl.events)
    needle = next(q for q in qas if q.template == "long.needle.say")
    assert "turn left onto main street" in needle.answer
    sub = next(q for q in qas if q.template == "long.subscene")
    a, b = sub.extra["window"]
    assert all(ev.label.split()[-1] in sub.answer or ev.transcript in sub.answer
               for ev in tl.events if ev.end > a and ev.start < b)


def test_music_bed_keeps_events_recoverable():
    rng = np.random.default_rng(5)
    clips = _clips(rng)
    bed = 0.2 * np.sin(2 * np.pi * 55 * np.arange(20 * SR) / SR).astype(np.float32)
    audio, tl = compose("long/1", clips, rng, 60.0, bed=("calm music", bed, "bed0"), bed_gain=0.5)
    residual = audio - 0.5 * np.tile(bed, 3)[: len(audio)]
    for e in tl.events:
        clip = next(c for c in clips if c.id == e.source_id).audio
        seg = residual[round(e.start * SR): round(e.end * SR)]
        assert np.allclose(seg, clip, atol=1e-5)
    assert tl.background["label"] == "calm music"
    assert any("calm music" in q.answer for q in longaudio_qa(tl) if q.template == "long.general.music")
