"""Scorers against hand-computed values."""

import http.server
import json
import math
import threading

import pytest

from af2.eval import captioning, labels
from af2.eval.judge import Judge, JudgeConfig, parse_score
from af2.eval.scoring import ScoringOptions, get_scorer, score_by_category
from af2.eval.tasks import Example

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
    assert table == {"a": {"accuracy": 50.0, "n": 2.0}, "b": {"accuracy": 100.0, "n": 1.0}}


def test_corpus_metric_by_category_rescores_subsets():
    scorer = get_scorer("captioning")
    examples = [_example(0, REFS[0], "x"), _example(1, REFS[1], "y")]
    options = ScoringOptions(caption_tokenizer="simple", meteor=False)
    overall = scorer.score(examples, PREDS, options)
    table = score_by_category(scorer, examples, PREDS, options, overall)
    # One example alone: idf = log 1 - log 1 = 0 for every n-gram, so CIDEr-D is 0 (IDF is per set).
    assert table["x"]["cider_d"] == 0.0 and table["x"]["n"] == 1.0


class _JudgeHandler(http.server.BaseHTTPRequestHandler):
    replies: list = []
    requests: list = []

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append(body)
        status, text = type(self).replies.pop(0)
        payload = json.dumps({"choices": [{"message": {"content": text}}]}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


@pytest.fixture
def judge_server():
    server = http.server.HTTPServer(("127.0.0.1", 0), _JudgeHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _JudgeHandler.replies, _JudgeHandler.requests = [], []
    yield f"http://127.0.0.1:{server.server_address[1]}/v1", _JudgeHandler
    server.shutdown()
    server.server_close()


def test_parse_score():
    assert parse_score("Score: 7") == 7
    assert parse_score("score=10\n") == 10
    for bad in ("Score: 0", "Score: 11", "seven", ""):
        with pytest.raises(ValueError):
            parse_score(bad)


def test_judge_retries_caches_and_scales(judge_server, tmp_path):
    url, handler = judge_server
    handler.replies = [(500, "oops"), (200, "Score: 7"), (200, "I think it is fine"), (200, "Score: 4")]
    judge = Judge(JudgeConfig(url=url, model="judge-x", cache_dir=tmp_path, max_retries=2, backoff_s=0.0))
    examples = [_example(0, "a bell rings twice", "c1"), _example(1, "a car passes", "c2")]
    options = ScoringOptions(judge=judge)
    scored = get_scorer("open-judged").score(examples, ["a bell rings", "a truck"], options)
    assert [r["judge"] for r in scored.per_example] == [7.0, 4.0]
    assert scored.metrics["judge"] == pytest.approx(10 * (7 + 4) / 2)  # mean x 10
    assert judge.calls == 4  # 500 retried, unparseable reply retried
    assert handler.requests[0]["temperature"] == 0.0 and handler.requests[0]["model"] == "judge-x"
    assert "a bell rings twice" in handler.requests[0]["messages"][0]["content"]
    again = Judge(JudgeConfig(url=url, model="judge-x", cache_dir=tmp_path, max_retries=0))
    assert again.score("q", "a bell rings twice", "a bell rings") == 7 and again.calls == 0  # cached


def test_judge_gives_up_loudly(judge_server, tmp_path):
    url, handler = judge_server
    handler.replies = [(200, "no idea")] * 3
    judge = Judge(JudgeConfig(url=url, model="m", cache_dir=tmp_path, max_retries=2, backoff_s=0.0))
    with pytest.raises(ValueError, match="no usable verdict after 3 tries"):
        judge.score("q", "ref", "pred")


def test_open_judged_without_judge_says_so():
    scored = get_scorer("open-judged").score([_example(0, "a bell", "c")], ["a bell"], ScoringOptions())
    assert scored.metrics["judge"].startswith("not computed")
    assert scored.metrics["similarity"] == pytest.approx(100.0, abs=1e-3)
