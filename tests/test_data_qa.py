import re
from collections import Counter

from af2.data.qa import SKILLS, QAPair, item_rng, multiple_choice
from af2.data.qa.templates import build_pools, template_qa

METAS = [
    {"id": "s1", "source": "hedgewars", "category": "sfx", "label": "explosion", "caption": "An explosion.",
     "duration": 1.2, "attributes": {"game": "a cartoon artillery video game"}},
    {"id": "s2", "source": "freeciv", "category": "sfx", "label": "splash into water", "caption": "A splash.",
     "duration": 0.8, "attributes": {"game": "a turn-based strategy game"}},
    {"id": "t1", "source": "tts-flite", "category": "speech", "label": "speech: a weather forecast", "duration": 3.0,
     "caption": "x", "transcript": "Good morning. Today will be rainy with a high of six degrees.",
     "attributes": {"gender": "female", "language": "English", "situation": "a weather forecast",
                    "sentence_type": "statement", "template": "weather", "slots": {"weather": "rainy", "m": "six"},
                    "slot_questions": {"weather": "What will the weather be like?",
                                       "m": "What is the forecast high temperature?"}}},
    {"id": "m1", "source": "midi-synth", "category": "music", "label": "violin arpeggio", "caption": "x",
     "duration": 4.0, "attributes": {"instrument": "violin", "family": "string", "key": "D minor", "mode": "minor",
                                     "tempo_bpm": 80, "tempo": "slow", "dynamics": "soft", "pattern": "arpeggio",
                                     "notes": 7}},
    {"id": "m2", "source": "midi-synth", "category": "music", "label": "flute melody", "caption": "x",
     "duration": 4.0, "attributes": {"instrument": "flute", "key": "G major", "mode": "major", "pattern": "melody"}},
    {"id": "sc", "source": "scenes", "category": "scene", "label": "scene", "caption": "x", "duration": 9.0,
     "attributes": {}, "events": [{"start": 0.5, "end": 1.7, "label": "explosion"},
                                  {"start": 2.0, "end": 2.8, "label": "splash into water"},
                                  {"start": 3.5, "end": 4.7, "label": "explosion"}]},
]


def test_every_skill_is_covered_with_provenance():
    pools = build_pools(METAS)
    qas = [q for m in METAS for q in template_qa(m, pools, seed=1)]
    assert {q.skill for q in qas} == set(SKILLS)
    for q in qas:
        assert q.question.strip() and q.answer.strip()
        assert q.generator == "templates" and q.template and len(q.sources) == 1


def test_answers_come_from_the_metadata():
    pools = build_pools(METAS)
    by = {(q.sources[0], q.template): q for m in METAS for q in template_qa(m, pools, seed=1)}
    assert by[("m1", "music.notes")].answer == "7 notes."
    assert by[("m1", "music.instrument")].answer == "violin"
    assert by[("t1", "speech.slot.weather.weather")].answer == "rainy"
    assert by[("sc", "scene.repeat")].answer == "2 times." and "explosion" in by[("sc", "scene.repeat")].question
    assert by[("sc", "scene.first")].answer == "explosion"
    assert by[("sc", "scene.after")].question == "What is heard right after the splash into water?"
    assert by[("sc", "scene.after")].answer == "explosion"


def test_multiple_choice_format():
    qa = QAPair("Which instrument is playing?", "violin", "attribute_identification", "templates", "t", ("x",))
    mcq = multiple_choice(qa, ["flute", "piano", "violin", "cello", "harp"], item_rng(0, "x"))
    m = re.fullmatch(r"Which instrument is playing\? \(A\) (\w+)\. \(B\) (\w+)\. \(C\) (\w+)\. \(D\) (\w+)\.", mcq.question)
    assert m and "violin" in m.groups() and len(set(m.groups())) == 4
    letter = "ABCD"[m.groups().index("violin")]
    assert mcq.answer == f"({letter}) violin" and mcq.template == "t:mcq"
    assert multiple_choice(qa, ["violin"], item_rng(0, "x")) is None


def test_deterministic_and_order_independent():
    pools = build_pools(METAS)
    a = [template_qa(m, pools, seed=4) for m in METAS]
    b = [template_qa(m, pools, seed=4) for m in reversed(METAS)][::-1]
    assert a == b
    assert a != [template_qa(m, pools, seed=5) for m in METAS]


def test_every_clip_has_three_to_five_distinct_captions():
    from af2.data.qa.templates import caption_qa

    for meta in METAS:
        caps = caption_qa(meta)
        assert 3 <= len(caps) <= 5 and len({c.answer for c in caps}) == len(caps), meta["id"]
        assert caps[0].answer == meta["caption"] and all(c.extra["caption_of"] == meta["id"] for c in caps)
    scene = caption_qa(METAS[-1])
    assert all("explosion" in c.answer for c in scene[1:])  # paraphrases say what the metadata says


def test_audio_only_choices_for_order_and_position():
    pools = build_pools(METAS)
    by = {q.template: q for q in template_qa(METAS[-1], pools, seed=2)}
    pos = by["scene.position:mcq"]
    assert pos.options and set(pos.options) == {"near the start", "in the middle", "near the end"}
    meta = {**METAS[-1], "id": "sc2", "events": [{"start": 0.5, "end": 1.7, "label": "explosion"},
                                                 {"start": 2.0, "end": 2.8, "label": "splash into water"}]}
    firsts = Counter()
    for seed in range(40):
        q = {x.template: x for x in template_qa(meta, pools, seed=seed)}["scene.order:mcq"]
        assert q.answer.endswith(" explosion") and set(q.options) == {"explosion", "splash into water"}
        firsts[q.question.split(", the ")[1].split(" or ")[0]] += 1
    assert len(firsts) == 2  # the answer is not always the first-named sound
