"""Multiple-choice give-aways: planted cases are found and counted per template; the fixed templates have none."""

import json
from collections import Counter

import numpy as np

from af2.cli import main
from af2.data.giveaway import balance_answers, giveaway_report, heuristic_baseline, parse_mc
from af2.data.manifest import ManifestItem, write_manifest
from af2.data.qa import LETTERS, QAPair, item_rng, multiple_choice, normalise_option, number_options
from af2.data.qa.templates import build_pools, template_qa

SITUATIONS = ["a train station announcement", "a voicemail message", "a weather forecast on the radio",
              "a cooking instruction", "car navigation directions", "a live sports commentary"]


def _item(i: int, template: str, question: str, options: list[str], answer: int) -> ManifestItem:
    listed = " ".join(f"({LETTERS[k]}) {o}" for k, o in enumerate(options))
    return ManifestItem(id=f"t/{template}/{i}", name="clips/x.flac", prompt=f"{question} {listed}",
                        output=f"({LETTERS[answer]}) {options[answer]}", duration=1.0,
                        extra={"skill": "s", "provenance": {"generator": "g", "template": template, "sources": ["x"]}})


def _planted(n: int = 24) -> list[ManifestItem]:
    rng = np.random.default_rng(0)
    items = []
    for i in range(n):
        pick = [SITUATIONS[int(j)] for j in rng.permutation(len(SITUATIONS))[:4]]
        pos = i % 4
        # the old speech.situation bug: the answer keeps the open-answer wording
        prefixed = [f"{o}." for o in pick]
        prefixed[pos] = f"It sounds like {pick[pos]}."
        items.append(_item(i, "prefix:mcq", "In what situation would this be said?", prefixed, pos))
        # a distractor equal to the answer once normalised
        dup = [f"{o}." for o in pick]
        dup[(pos + 1) % 4] = f"In {pick[pos]}."
        items.append(_item(i, "dup:mcq", "Where would this be heard?", dup, pos))
        # the answer named in the question
        items.append(_item(i, "inq:mcq", f"Is this {pick[pos]} or something else?", [f"{o}." for o in pick], pos))
        # the answer always the longest option
        long = [f"{o[:6]}." for o in pick]
        long[pos] = f"{pick[pos]} with many extra words."
        items.append(_item(i, "long:mcq", "Which one?", long, pos))
        # a clean template
        items.append(_item(i, "clean:mcq", "In what situation would this be said?", [f"{o}." for o in pick], pos))
    return items


def test_planted_giveaways_are_counted_per_template():
    stats = giveaway_report(_planted(24))
    found = {t: s.giveaways() for t, s in stats.items()}
    assert found["prefix:mcq"]["odd_format:lead_words"] == found["prefix:mcq"]["odd_format:capitalised"] == 24
    assert found["dup:mcq"] == {"duplicate_option": 24}
    assert found["inq:mcq"] == {"answer_in_question": 24}
    assert found["long:mcq"].get("length:longest") == 24
    assert found["clean:mcq"] == {}
    assert all(stats[t].items == 24 for t in found)
    assert stats["prefix:mcq"].examples["odd_format:lead_words"][0].startswith("t/prefix:mcq/0")


def test_check_command_reports_and_strict_mode_fails(tmp_path, capsys):
    path = write_manifest(tmp_path / "manifests" / "T" / "train.json", _planted(12), split="train",
                          split_path="audio", flamingo_task="T")
    import soundfile as sf

    (tmp_path / "audio" / "clips").mkdir(parents=True)
    sf.write(tmp_path / "audio" / "clips" / "x.flac", np.zeros(16_000, dtype=np.float32), 16_000)
    assert main(["data", "check", str(path)]) == 0  # give-aways are reported, not errors, by default
    out = capsys.readouterr().out
    assert "4 templates give the answer away" in out and "prefix:mcq (12 items)" in out and "clean:mcq" not in out
    assert main(["data", "check", "--strict-giveaways", str(path)]) == 1
    assert main(["data", "giveaway-baseline", "--by-template", str(path)]) == 0
    table = capsys.readouterr().out
    row = next(line for line in table.splitlines() if line.startswith("long:mcq"))
    assert "100.0%" in row  # "longest option" always wins on the planted length give-away


def test_baseline_heuristics_find_the_planted_cases_and_chance_on_clean():
    mcs = [parse_mc(it) for it in _planted(40)]
    by = {t: [m for m in mcs if m.template == t] for t in {m.template for m in mcs}}
    assert heuristic_baseline(by["long:mcq"])["longest"]["accuracy"] == 1.0
    assert heuristic_baseline(by["prefix:mcq"])["odd_format"]["accuracy"] == 1.0
    clean = heuristic_baseline(by["clean:mcq"])
    assert clean["chance"]["accuracy"] == 0.25
    for name in ("longest", "shortest", "question_overlap", "odd_format"):
        assert clean[name]["accuracy"] <= 0.5, name


def test_normalise_and_mcq_never_offer_the_answer_twice():
    assert normalise_option("It sounds like a voicemail message.") == normalise_option("a voicemail message")
    assert normalise_option("In a turn-based strategy game.") == "turn-based strategy game"
    qa = QAPair("Where?", "In a park.", "s", "g", "t", ("x",))
    mcq = multiple_choice(qa, ["a park", "a zoo", "a beach", "In a zoo."], item_rng(0, "x"), answer_option="a park")
    assert sorted(map(normalise_option, mcq.options)) == ["beach", "park", "zoo"]
    assert mcq.answer.endswith(" a park") and mcq.extra["options"][mcq.extra["answer_index"]] == "a park"


def test_answer_position_is_uniform_and_counts_have_no_fixed_rank():
    positions, ranks = Counter(), Counter()
    for i in range(2000):
        rng = item_rng(0, str(i))
        value = int(rng.integers(4, 12))
        opts = sorted([value, *map(int, number_options(value, rng))])
        ranks[opts.index(value)] += 1
        qa = QAPair("Q?", str(value), "s", "g", "t", (str(i),))
        mcq = multiple_choice(qa, number_options(value, rng), rng)
        positions[mcq.extra["answer_index"]] += 1
    assert set(positions) == set(ranks) == {0, 1, 2, 3}
    assert max(positions.values()) - min(positions.values()) < 150  # 500 each expected; sd ~19
    assert max(ranks.values()) - min(ranks.values()) < 150


def test_fixed_templates_give_nothing_away():
    """speech.situation / sfx.setting: the correct option is in the distractors' form (issue 9)."""
    metas = []
    for i in range(60):
        sit = SITUATIONS[i % len(SITUATIONS)]
        metas.append({"id": f"t{i}", "source": "tts-flite", "category": "speech", "label": f"speech: {sit}",
                      "caption": "x", "duration": 3.0, "transcript": "Hello there.",
                      "attributes": {"gender": ("male", "female")[i % 2], "language": "English", "situation": sit,
                                     "sentence_type": ("question", "command", "request", "statement")[i // 2 % 4],
                                     "speaking_rate": ("slow", "normal", "fast")[i // 3 % 3], "template": "x"}})
        metas.append({"id": f"s{i}", "source": "hedgewars", "category": "sfx", "label": f"sound {i % 7}",
                      "caption": "x", "duration": 1.0,
                      "attributes": {"game": ("a cartoon artillery video game", "a bubble-shooting puzzle game",
                                              "a turn-based strategy game", "a loudspeaker test")[i % 4]}})
    pools = build_pools(metas)
    qas = [q for m in metas for q in template_qa(m, pools, seed=3)]
    by = {(q.sources[0], q.template): q for q in qas}
    setting = by[("s0", "sfx.setting:mcq")]
    assert setting.answer.endswith(" a cartoon artillery video game") and ") In " not in setting.question
    items = [ManifestItem(id=f"{q.sources[0]}/{q.template}", name="x.flac", prompt=q.question, output=q.answer,
                          duration=1.0, extra={"provenance": q.provenance(), **q.extra}) for q in qas]
    stats = giveaway_report(items)
    assert stats["speech.situation:mcq"].items == 60 and stats["sfx.setting:mcq"].items == 60
    assert {t: s.giveaways() for t, s in stats.items() if s.giveaways()} == {}
    assert json.dumps(items[0].extra)  # options and answer index are JSON-serialisable manifest extras


def test_balancing_makes_the_answer_prior_worth_chance():
    """A template whose answer is 'statement' 3 times in 4: balanced, every answer is correct equally often."""
    kinds = ["question", "command", "request", "statement"]
    items, rng = [], np.random.default_rng(1)
    for i in range(400):
        answer = "statement" if i % 4 else kinds[(i // 4) % 3]
        order = [kinds[int(k)] for k in rng.permutation(4)]
        items.append(_item(i, "kind:mcq", "Is the speaker asking, commanding, requesting or stating?", order,
                           order.index(answer)))
    items.append(ManifestItem(id="open", name="x.flac", prompt="Open?", output="yes", duration=1.0))
    before = [parse_mc(it) for it in items[:-1]]
    assert heuristic_baseline(before)["answer_prior"]["accuracy"] > 0.7
    balanced = balance_answers(items, 1.0)
    counts = Counter(parse_mc(it).options[parse_mc(it).answer] for it in balanced if parse_mc(it))
    assert set(counts.values()) == {min(counts.values())} and len(counts) == 4  # every answer kept, equally often
    assert balanced[-1].id == "open"
    after = [m for m in map(parse_mc, balanced) if m]
    assert abs(heuristic_baseline(after, before)["answer_prior"]["accuracy"] - 0.25) < 0.05
    capped = Counter(parse_mc(it).options[parse_mc(it).answer] for it in balance_answers(items, 2.0) if parse_mc(it))
    assert max(capped.values()) == 2 * min(capped.values())
    assert balance_answers(items, 1.0) == balanced  # deterministic


def test_open_pools_are_not_balanced():
    """Sound-label answers (many distinct values) keep their natural frequency, as their distractors do."""
    labels = [f"sound {k}" for k in range(60)]
    items = [_item(i, "label:mcq", "Which sound?", [labels[i % 60], labels[(i + 1) % 60], labels[(i + 2) % 60]],
                   0) for i in range(200)]
    assert balance_answers(items, 1.0) == items
    assert len(balance_answers(items, 1.0, open_pool=100)) == 60 * 3  # as a closed set: every label cut to 3


def test_a_rare_answer_does_not_cut_the_others():
    counts = {"2.": 120, "3.": 150, "4.": 100, "8.": 2}
    items, i = [], 0
    for answer, n in counts.items():
        for _ in range(n):
            opts = [answer] + [o for o in ("1.", "5.", "6.") if o != answer]
            items.append(_item(i, "count:mcq", "How many?", opts, 0))
            i += 1
    kept = Counter(parse_mc(it).options[0] for it in balance_answers(items, 1.0))
    assert kept == {"2.": 100, "3.": 100, "4.": 100}  # the 2 eight-event items do not set the cap
    train = Counter(parse_mc(it).options[0] for it in balance_answers(items, 3.0))
    assert train == counts  # 3 x 100 caps nothing here, and the rare answer stays in train
