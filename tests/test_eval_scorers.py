"""Scorers against hand-computed values."""

import math

import pytest

from af2.eval import captioning, labels
from af2.eval.judge import Judge, JudgeConfig, parse_score
from af2.eval.scoring import ScoringOptions, get_scorer, score_by_category
from af2.eval.registry import Example

GTZAN = ["blues", "classical", "country", "disco", "hiphop", "jazz", "metal", "pop", "reggae", "rock"]


@pytest.mark.parametrize("label,prediction,expected", [
    ("hiphop", "Hip-Hop music.", True),
    ("hiphop", "hip hop", True),
    ("hiphop", "It sounds like rap.", True),  # synonym
    ("rock", "rock and roll", True),
    ("rock", "pop rock", False),  # names another class
    ("rock", "rocky", False),  # whole words only
    ("classical", "The genre is Classical", True),
    ("jazz", "", False),
])
def test_label_match_gtzan(label, prediction, expected):
    assert labels.label_match(label, prediction, GTZAN) is expected


def test_label_normalisation_esc50():
    classes = ["crying baby", "dog", "rooster", "clock tick"]
    assert labels.normalise("The Crying_Baby!") == "crying baby"
    assert labels.label_match("crying baby", "a crying baby", classes)
    assert labels.label_match("crying baby", "baby crying", classes)  # synonym
    assert labels.label_match("clock tick", "a clock ticking", classes)
    assert not labels.label_match("dog", "a dog and a rooster", classes)


# Two examples whose metrics are worked out by hand below (simple tokenizer: no punctuation).
PREDS = ["a dog barks", "rain falls"]
REFS = [["a dog barks"], ["heavy rain"]]


def test_caption_metrics_hand_computed():
    metrics, per = captioning.caption_metrics(PREDS, REFS, tokenizer="simple", meteor=False)
    # CIDEr-D, N = 2 examples, idf = log 2 - log max(1, df), every n-gram has df <= 1.
    # ex1 = its reference: cosine 1 for n = 1, 2, 3; no 4-grams -> 0; mean 0.75, x10 = 7.5.
    # ex2 unigrams {rain, falls} vs {heavy, rain}: (log2)^2 / (sqrt2 log2)^2 = 0.5; no shared
    # bigram; equal bigram counts -> no length penalty; mean 0.125, x10 = 1.25.
    assert per[0]["cider_d"] == pytest.approx(7.5)
    assert per[1]["cider_d"] == pytest.approx(1.25)
    assert metrics["cider_d"] == pytest.approx((7.5 + 1.25) / 2)
    # Corpus BLEU: unigrams 4 of 5 match; bigrams 2 of 3; lengths equal so no brevity penalty.
    assert metrics["bleu_1"] == pytest.approx(0.8, abs=1e-6)
    assert metrics["bleu_2"] == pytest.approx(math.sqrt(0.8 * 2 / 3), abs=1e-6)
    # ROUGE-L (beta 1.2): ex1 F = 1; ex2 LCS 1 of 2 both ways: 2.44 * .25 / (.5 + 1.44 * .5).
    f2 = 2.44 * 0.25 / (0.5 + 1.44 * 0.5)
    assert per[1]["rouge_l"] == pytest.approx(f2)
    assert metrics["rouge_l"] == pytest.approx((1 + f2) / 2)


def test_caption_metrics_report_unavailable_assets_not_numbers():
    metrics, _ = captioning.caption_metrics(PREDS, REFS, tokenizer="simple", meteor=False)
    for name in ("spice", "spider", "fense"):
        assert isinstance(metrics[name], str) and metrics[name].startswith("unavailable")
    assert "not computed" in metrics["meteor"]
    assert metrics["tokenizer"] == "simple"


def test_simple_tokenizer_drops_punctuation():
    assert captioning.simple_tokenize("A dog, barking loudly!") == "a dog barking loudly"


def test_caption_metrics_rejects_missing_references():
    with pytest.raises(ValueError, match="no reference"):
        captioning.caption_metrics(["x"], [[]], tokenizer="simple", meteor=False)


def test_similarity_scores():
    from af2.eval.similarity import similarity_scores

    same, para, other, empty = similarity_scores(
        ["a dog barks", "a dog is barking", "piano music plays", ""],
        ["a dog barks", "a dog barks", "a dog barks", "a dog barks"])
    assert same == pytest.approx(1.0, abs=1e-5)
    assert para > 0.8 > 0.3 > other
    assert empty == 0.0
    # several references: the best one counts
    assert similarity_scores(["a dog barks"], [["piano", "a dog barks"]])[0] == pytest.approx(1.0, abs=1e-5)


def _example(i, ref, category, choices=()):
    return Example(id=str(i), audio="/dev/null", question="q", reference=ref, choices=tuple(choices), category=category)


def test_accuracy_by_category():
    scorer = get_scorer("mmau-string-match")
    examples = [_example(0, "yes", "a", ["yes", "no"]), _example(1, "no", "a", ["yes", "no"]),
                _example(2, "yes", "b", ["yes", "no"])]
    preds = ["yes", "yes", "yes"]
    options = ScoringOptions(meteor=False)
    overall = scorer.score(examples, preds, options)
    assert overall.metrics["accuracy"] == pytest.approx(200 / 3)
    table = score_by_category(scorer, examples, preds, options, overall)
    assert {c: (m["accuracy"], m["n"]) for c, m in table.items()} == {"a": (50.0, 2.0), "b": (100.0, 1.0)}
    # Wilson, z = 1.96: 1 of 2 -> 0.5 +- 1.96 sqrt(.125 + z^2/16) / (1 + z^2/2) = [9.45, 90.55] %;
    # 1 of 1 -> centre (1 + z^2/2) / (1 + z^2) = .6033, half 1.96 (z/2) / (1 + z^2) = .3967 -> [20.65, 100] %.
    assert table["a"]["ci95"]["accuracy"] == pytest.approx([9.4531, 90.5469], abs=1e-3)
    assert table["b"]["ci95"]["accuracy"] == pytest.approx([20.6549, 100.0], abs=1e-3)


def test_corpus_metric_by_category_rescores_subsets():
    scorer = get_scorer("captioning")
    examples = [_example(0, REFS[0], "x"), _example(1, REFS[1], "y")]
    options = ScoringOptions(caption_tokenizer="simple", meteor=False)
    overall = scorer.score(examples, PREDS, options)
    table = score_by_category(scorer, examples, PREDS, options, overall)
    # One example alone: idf = log 1 - log 1 = 0 for every n-gram, so CIDEr-D is 0 (IDF is per set).
    assert table["x"]["cider_d"] == 0.0 and table["x"]["n"] == 1.0


def _scripted(replies):
    """Replies in order: (status, content) pairs."""
    queue = list(replies)
    return lambda body: (*queue.pop(0), 0.0)


@pytest.mark.parametrize("reply,score", [
    ("Score: 7", 7.0), ("score=10\n", 10.0), ("**Score:** 8", 8.0), ("I would give it a score of 6.", 6.0),
    ("8.5", 8.5), ("Score: 8/10", 8.0), ("It names the bell but not the count: 7 out of 10", 7.0),
    ("The reference says two bells. A score of 10 needs both.\nScore: 5", 5.0),  # the last statement wins
])
def test_parse_score_reads_what_judges_write(reply, score):
    assert parse_score(reply) == score


@pytest.mark.parametrize("reply", ["Score: 0", "Score: 11", "seven", "", "The answer is fine."])
def test_parse_score_refuses_no_or_out_of_range_score(reply):
    with pytest.raises(ValueError):
        parse_score(reply)


def test_judge_retries_caches_and_reports_both_scales(chat_server, tmp_path):
    server = chat_server(_scripted([(500, ""), (200, "Score: 7"), (200, "I think it is fine"), (200, "**Score:** 4")]))
    judge = Judge(JudgeConfig(url=server.url, model="judge-x", cache_dir=tmp_path, max_retries=2, backoff_s=0.0))
    examples = [_example(0, "a bell rings twice", "c1"), _example(1, "a car passes", "c2")]
    scored = get_scorer("open-judged").score(examples, ["a bell rings", "a truck"], ScoringOptions(judge=judge))
    assert [r["judge"] for r in scored.per_example] == [7.0, 4.0]
    assert scored.metrics["judge"] == pytest.approx(10 * (7 + 4) / 2)  # mean x 10
    assert scored.metrics["judge_1_10"] == pytest.approx((7 + 4) / 2)
    assert scored.metrics["judge_failures"] == 0.0
    details = scored.details["judge"]
    assert details["raw_score_histogram"] == {"4": 1, "7": 1} and details["model"] == "judge-x"
    assert details["prompt_sha256"] == judge.prompt_hash and "scores 10" in details["note"]
    assert judge.calls == 4  # 500 retried, unparseable reply retried
    first = server.requests[0]
    assert first["temperature"] == 0.0 and first["model"] == "judge-x" and first["max_tokens"] == 1024
    assert "a bell rings twice" in first["messages"][0]["content"] and first["_path"] == "/v1/chat/completions"
    again = Judge(JudgeConfig(url=server.url, model="judge-x", cache_dir=tmp_path, max_retries=0))
    assert again.verdict("q", "a bell rings twice", "a bell rings").score == 7 and again.calls == 0  # cached


def test_unparseable_judge_replies_are_counted_failures_not_fatal(chat_server, tmp_path):
    server = chat_server(lambda body: (200, "no idea" if "car" in body["messages"][0]["content"] else "Score: 9", 0.0))
    judge = Judge(JudgeConfig(url=server.url, model="m", cache_dir=tmp_path, max_retries=2, backoff_s=0.0))
    examples = [_example(0, "a bell rings", "c"), _example(1, "a car passes", "c")]
    scored = get_scorer("open-judged").score(examples, ["a bell", "a truck"], ScoringOptions(judge=judge))
    assert [r["judge"] for r in scored.per_example] == [9.0, None]
    assert scored.metrics["judge_failures"] == 1.0 and scored.metrics["judge"] == 90.0  # failures left out
    assert scored.details["judge"]["raw_score_histogram"] == {"9": 1, "unparseable": 1}
    assert judge.calls == 1 + 3  # the unreadable reply was asked 3 times, then counted


def test_judge_endpoint_that_refuses_fails_loudly(chat_server, tmp_path):
    from af2.chat_client import ChatError

    server = chat_server(lambda body: (404, "", 0.0))
    judge = Judge(JudgeConfig(url=server.url, model="m", cache_dir=tmp_path, max_retries=2, backoff_s=0.0))
    with pytest.raises(ChatError, match="HTTP 404"):
        judge.verdict("q", "ref", "pred")
    assert judge.calls == 1  # a 4xx is not retried


def test_open_judged_without_judge_says_so():
    scored = get_scorer("open-judged").score([_example(0, "a bell", "c")], ["a bell"], ScoringOptions())
    assert scored.metrics["judge"].startswith("not computed")
    assert scored.metrics["similarity"] == pytest.approx(100.0, abs=1e-3)


def test_the_readme_publishes_the_judge_prompt_verbatim():
    from pathlib import Path

    from af2.eval.judge import judge_prompt

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    assert f"```text\n{judge_prompt()}```" in readme
