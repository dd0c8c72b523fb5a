"""`af2 eval` end to end on tiny benchmark files in every supported format, with tiny generated
audio: reports, determinism, resume after an interruption, sharding, and loud failures."""

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from af2.cli import main
from af2.errors import RequestError
from af2.eval.adapters import FirstChoiceAdapter, PredictionsAdapter, Request
from af2.eval.runner import RunConfig, run
from af2.eval.scoring import ScoringOptions
from af2.eval.benchmarks import all_tasks, get_task

SR = 16000


def _wav(path: Path, seed: int) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(0.25 * SR)) / SR
    sf.write(path, (0.3 * np.sin(2 * np.pi * (200 + 50 * seed) * t)).astype(np.float32), SR)
    return path.name


def _json(path: Path, doc) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc), encoding="utf-8")


def _jsonl(path: Path, rows) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def _csv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    quote = lambda v: '"' + str(v).replace('"', '""') + '"'  # noqa: E731
    path.write_text("\n".join(",".join(quote(v) for v in r) for r in [header, *rows]) + "\n", encoding="utf-8")


def build_benchmarks(root: Path) -> None:
    """Two to six items per benchmark, in each benchmark's own file layout."""
    mmau = [{"id": f"m{i}", "audio_id": f"./test-mini-audios/m{i}.wav", "question": "Who speaks?",
             "choices": ["Man", "Woman", "Child", "Robot"], "answer": ans, "task": task, "difficulty": "easy",
             "category": "Reasoning" if i else ["Reasoning"], "sub-category": "Source"}
            for i, (ans, task) in enumerate([("Man", "sound"), ("Woman", "speech"), ("Man", "music")])]
    for i in range(3):
        _wav(root / "mmau/test-mini-audios" / f"m{i}.wav", i)
    _json(root / "mmau/mmau-test-mini.json", mmau)
    mmar = [{"id": f"r{i}", "audio_path": f"./audio/r{i}.wav", "question": "Which instrument?",
             "choices": ["Violin", "Piano"], "answer": ans, "modality": "music", "category": "Perception Layer",
             "sub-category": "Music Theory"} for i, ans in enumerate(["Violin", "Piano"])]
    for i in range(2):
        _wav(root / "mmar/audio" / f"r{i}.wav", i)
    _jsonl(root / "mmar/MMAR-meta.jsonl", mmar)  # the layout MMAR ships today
    _wav(root / "clotho-aqa/audio_files/a.wav", 1)
    _csv(root / "clotho-aqa/clotho_aqa_test.csv", ["file_name", "QuestionText", "answer", "confidence"],
         [["a.wav", "Is it raining?", "yes", "yes"], ["a.wav", "Is it raining?", "yes", "yes"],
          ["a.wav", "Is it raining?", "no", "maybe"], ["a.wav", "What animal?", "dog", "yes"],
          ["a.wav", "What animal?", "dog", "yes"], ["a.wav", "What animal?", "cat", "yes"]])
    for yid in ("yt1", "yt2"):
        _wav(root / "audiocaps/audio" / f"Y{yid}_30.wav", 2)
    _csv(root / "audiocaps/test.csv", ["audiocap_id", "youtube_id", "start_time", "caption"],
         [[str(i), yid, "30", c] for i, (yid, c) in enumerate(
             [("yt1", "a sound is heard"), ("yt1", "a dog barks"), ("yt2", "rain falls"), ("yt2", "heavy rain")])])
    for name in ("c1.wav", "c2.wav"):
        _wav(root / "clotho/evaluation" / name, 3)
    _csv(root / "clotho/clotho_captions_evaluation.csv", ["file_name"] + [f"caption_{k}" for k in range(1, 6)],
         [["c1.wav", "a sound is heard", "birds sing", "birds chirp", "a bird", "birds"],
          ["c2.wav", "a car passes", "traffic noise", "a car", "cars drive", "a road"]])
    for genre in ("blues", "hiphop", "rock"):
        _wav(root / "gtzan/genres_original" / genre / f"{genre}.00000.wav", 4)
    _csv(root / "esc50/meta/esc50.csv", ["filename", "fold", "target", "category", "esc10", "src_file", "take"],
         [["1-1-A-0.wav", "1", "0", "dog", "True", "1", "A"], ["1-2-A-1.wav", "2", "1", "rooster", "False", "2", "A"]])
    _wav(root / "esc50/audio/1-1-A-0.wav", 5)
    _wav(root / "esc50/audio/1-2-A-1.wav", 6)
    _json(root / "nsynth/examples.json", {
        "bass_synthetic_033-022-050": {"instrument_family_str": "bass", "instrument_source_str": "synthetic"},
        "keyboard_acoustic_004-060-025": {"instrument_family_str": "keyboard", "instrument_source_str": "acoustic"}})
    _wav(root / "nsynth/audio/bass_synthetic_033-022-050.wav", 7)
    _wav(root / "nsynth/audio/keyboard_acoustic_004-060-025.wav", 8)
    _wav(root / "audio-entailment/audio/e.wav", 9)
    _wav(root / "audio-entailment/audio/Y7fmOlUlwoNg.wav", 9)
    header = ["Prompt", "Dataset", "Audio file", "Caption", "Entailment", "Neutral", "Contradiction", "Full response"]
    _csv(root / "audio-entailment/data/CLE/clotho_entailment_evaluation.csv", header,
         [["", "Clotho", "e.wav", "rain on a roof", "water is falling", "it is night", "the weather is dry", ""]])
    _csv(root / "audio-entailment/data/CLE/clotho_entailment_development.csv", header,  # not a test split: skipped
         [["", "Clotho", "missing.wav", "x", "y", "z", "w", ""]])
    _csv(root / "audio-entailment/data/ACE/audiocaps_entailment_test.csv", header,  # upstream: no extension
         [["", "Audiocaps", "Y7fmOlUlwoNg", "rattling", "a mechanical noise", "a loose part", "a quiet library", ""]])
    _wav(root / "compa-r/audio/x.wav", 10)
    _json(root / "compa-r/CompA-R-test.json", [{"audio_id": "./compa_r_test_audios/x.wav", "instruction_output": [
        {"instruction": "Why is the crowd cheering?", "output": "a goal was scored"},
        {"instruction": "Where is this?", "output": "a stadium"}]}])
    _wav(root / "muchomusic/audio/s.wav", 11)
    _json(root / "muchomusic/muchomusic.json", [{"id": "mc1", "audio_path": "s.wav", "question": "What is the mood?",
                                                "answers": ["happy", "sad", "angry", "calm"], "correct_answer_index": 0,
                                                "dataset": "sdd"}])
    _wav(root / "longaudiobench/long.wav", 12)
    _json(root / "longaudiobench/longaudiobench.json", [
        {"id": "l1", "audio": "long.wav", "question": "What happens after the bell?", "answer": "a sound is heard",
         "category": "temporal"},
        {"id": "l2", "audio": "long.wav", "question": "How many speakers?", "answer": "two speakers", "category": "counting"}])
    _wav(root / "manifests/clips/q.wav", 13)
    _json(root / "manifests/Toy-AQA/test.json", {"split": "test", "split_path": "clips", "flamingo_task": "Toy-AQA",
                                                 "total_num": 1, "data": {"0": {"name": "q.wav", "prompt": "What is heard?",
                                                                                "output": "a sound is heard", "duration": 0.25}}})


ALL = ",".join(all_tasks())


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    build_benchmarks(root)
    return root


def _cli(bench, out, *extra):
    return main(["eval", "--adapter", "first-choice", "--tasks", ALL, "--data-root", str(bench), "--out", str(out),
                 "--caption-tokenizer", "simple", "--no-meteor", "--no-progress", "--batch-size", "2", *extra])


def test_every_task_has_a_tiny_benchmark_here():
    assert len(all_tasks()) == 13


def test_end_to_end_every_format_and_deterministic(bench, tmp_path, capsys):
    assert _cli(bench, tmp_path / "a") == 0
    assert "report:" in capsys.readouterr().out
    summary = json.loads((tmp_path / "a/summary.json").read_text())
    assert set(summary["tasks"]) == set(all_tasks())
    t = summary["tasks"]
    # The first-choice test adapter answers option (A): hand-counted results.
    assert t["mmau-test-mini"]["metrics"]["accuracy"] == pytest.approx(200 / 3)  # "Man" right twice of 3
    assert t["mmau-test-mini"]["by_category"]["speech"]["accuracy"] == 0.0
    assert t["mmau-test-mini"]["by_facet"]["difficulty"]["easy"]["n"] == 3
    assert list(t["mmau-test-mini"]["by_facet"]["duration"]) == ["0-10 s"]  # every tiny clip is 0.25 s
    assert t["mmau-test-mini"]["by_facet"]["duration"]["0-10 s"]["n"] == 3
    assert t["mmar"]["metrics"]["accuracy"] == 50.0
    assert t["muchomusic"]["metrics"]["accuracy"] == 100.0
    assert t["gtzan"]["metrics"]["accuracy"] == pytest.approx(100 / 3)  # always "blues"
    assert t["esc50"]["metrics"]["accuracy"] == 50.0  # always "dog"
    assert t["nsynth"]["metrics"]["accuracy"] == 50.0  # always "bass"
    assert t["audio-entailment"]["metrics"]["accuracy"] == pytest.approx(100 / 3)  # always "entailment"
    assert t["audio-entailment"]["n"] == 6 and set(t["audio-entailment"]["by_category"]) == {"audiocaps", "clotho"}
    assert t["mmau-test-mini"]["by_facet"]["category"] == {"Reasoning": t["mmau-test-mini"]["by_facet"]["category"]
                                                           ["Reasoning"]}  # ['Reasoning'] read as Reasoning
    assert t["compa-r"]["n"] == 2  # two questions on one clip
    assert t["clotho-aqa"]["metrics"]["accuracy"] == 0.0 and t["clotho-aqa"]["n"] == 2
    assert t["af2-manifest"]["metrics"]["accuracy"] == 100.0  # fallback sentence equals the reference
    assert t["longaudiobench"]["metrics"]["judge"].startswith("not computed")
    assert t["longaudiobench"]["by_category"]["temporal"]["similarity"] == pytest.approx(100.0, abs=1e-3)
    assert t["audiocaps-captioning"]["metrics"]["cider_d"] > t["clotho-captioning"]["metrics"]["cider_d"] >= 0
    assert t["audiocaps-captioning"]["metrics"]["spice"].startswith("unavailable")
    report = (tmp_path / "a/report.md").read_text()
    # Wilson interval of 0 of 1: centre = half-width = (z^2 / 2) / (1 + z^2) = 0.3967 -> [0, 79.35] %.
    assert "| speech | 1 | 0.00 [0.00, 79.35] |" in report and "Reproducibility card" in report
    assert "### By task" in report and "### By category" in report and "['Reasoning']" not in report
    for section in report.split("\n## ")[1:]:  # every table in a task's section has a heading of its own
        headings = [line for line in section.splitlines() if line.startswith("### ")]
        tables = sum(1 for line in section.splitlines() if line.startswith("|---"))
        assert len(headings) == len(set(headings)) and (tables <= len(headings) or "Published" in section)
    assert "## Published AF2 results beside ours" in report and "| mmau-test-mini | MMAU Sound | AF2-3B |" in report
    assert t["mmau-test-mini"]["paper"][0]["paper"] == 65.1 and t["mmau-test-mini"]["paper"][0]["ours"] == 100.0
    card = json.loads((tmp_path / "a/card.json").read_text())
    assert card["tasks"]["mmau-test-mini"]["prompt_template"] == "{question} {options}"
    assert "TEST ADAPTER" in card["model"]["adapter"] and card["git_commit"]
    assert card["scoring"]["caption_tokenizer"] == "simple"
    mmar_card = card["tasks"]["mmar"]
    assert list(mmar_card["benchmark_files_sha256"]) == ["MMAR-meta.jsonl"] and "jsonl" in mmar_card["benchmark_revision"]
    assert mmar_card["benchmark_files_sha256"]["MMAR-meta.jsonl"] == hashlib.sha256(
        (bench / "mmar/MMAR-meta.jsonl").read_bytes()).hexdigest()
    assert set(card["tasks"]["audio-entailment"]["benchmark_files_sha256"]) == {
        "data/ACE/audiocaps_entailment_test.csv", "data/CLE/clotho_entailment_evaluation.csv"}
    rows = [json.loads(l) for l in (tmp_path / "a/mmau-test-mini/examples.jsonl").read_text().splitlines()]
    assert rows[0]["prompt"] == "Who speaks? (A) Man. (B) Woman. (C) Child. (D) Robot." and rows[0]["prediction"] == "Man"
    pngs = sorted(p.name for p in (tmp_path / "a/plots").glob("*.png"))
    assert len(pngs) == 14 and all((tmp_path / "a/plots" / p).read_bytes()[:4] == b"\x89PNG" for p in pngs)
    # A second run gives byte-identical outputs.
    assert _cli(bench, tmp_path / "b") == 0
    for rel in ["summary.json", "card.json", "report.md", "plots/overview.png", "mmau-test-mini/examples.jsonl",
                "audiocaps-captioning/examples.jsonl"]:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel


class _Crashing:
    """Answers like the first-choice test adapter, then raises after ``after`` batches."""

    def __init__(self, after: int):
        self.inner, self.after, self.seen = FirstChoiceAdapter(), after, []

    def answer(self, requests):
        if self.after == 0:
            raise KeyboardInterrupt
        self.after -= 1
        self.seen += [r.id for r in requests]
        return self.inner.answer(requests)

    def describe(self):
        return self.inner.describe()


def _config(bench, out, **kw):
    return RunConfig(tasks=("mmau-test-mini", "gtzan"), data_root=bench, out_dir=out, batch_size=1,
                     scoring=ScoringOptions(meteor=False), progress=False, **kw)


def test_interrupted_run_resumes(bench, tmp_path):
    crashing = _Crashing(after=2)
    with pytest.raises(KeyboardInterrupt):
        run(crashing, _config(bench, tmp_path / "r"))
    shard = tmp_path / "r/mmau-test-mini/predictions.rank0-of-1.jsonl"
    assert len(shard.read_text().splitlines()) == 2
    with shard.open("a") as f:
        f.write('{"id": "m2", "predic')  # a line cut off by the kill
    resumed = _Crashing(after=100)
    summary = run(resumed, _config(bench, tmp_path / "r"))
    # answered in a seeded random order (the runner's), so compare the items, not their order
    everything = _Crashing(after=100)
    run(everything, _config(bench, tmp_path / "all"))
    assert len(crashing.seen) == 2 and sorted(resumed.seen) == sorted(set(everything.seen) - set(crashing.seen))
    fresh = run(FirstChoiceAdapter(), _config(bench, tmp_path / "f"))
    assert summary == fresh


def test_sharded_ranks_merge_on_rank0(bench, tmp_path):
    out = tmp_path / "s"
    rank1 = _Crashing(after=100)
    assert run(rank1, _config(bench, out, rank=1, world_size=2)) is None
    assert sorted(rank1.seen) == ["hiphop/hiphop.00000.wav", "m1"]  # examples 1, 3, ... of each sorted task
    rank0 = _Crashing(after=100)
    summary = run(rank0, _config(bench, out, rank=0, world_size=2, merge_timeout_s=5))
    assert sorted(rank0.seen) == ["blues/blues.00000.wav", "m0", "m2", "rock/rock.00000.wav"]
    assert summary == run(FirstChoiceAdapter(), _config(bench, tmp_path / "single"))


def test_rank0_waits_then_fails_loudly_without_other_ranks(bench, tmp_path):
    with pytest.raises(RequestError, match="did not finish"):
        run(FirstChoiceAdapter(), _config(bench, tmp_path / "w", rank=0, world_size=2, merge_timeout_s=0))


def test_resume_refuses_answers_of_another_model(bench, tmp_path):
    run(FirstChoiceAdapter(), _config(bench, tmp_path / "m"))
    table = tmp_path / "preds.jsonl"
    table.write_text("".join(json.dumps({"task": "mmau-test-mini", "id": f"m{i}", "prediction": "Man"}) + "\n"
                             for i in range(3)))
    with pytest.raises(RequestError, match="another model"):
        run(PredictionsAdapter(table), _config(bench, tmp_path / "m"))


def test_predictions_adapter_scores_dumped_answers(bench, tmp_path):
    table = tmp_path / "preds.jsonl"
    table.write_text("".join(json.dumps({"task": "mmau-test-mini", "id": f"m{i}", "prediction": p}) + "\n"
                             for i, p in enumerate(["man", "a woman", "robot"])))
    assert main(["eval", "--adapter", "predictions", "--model", str(table), "--tasks", "mmau-test-mini",
                 "--data-root", str(bench), "--out", str(tmp_path / "p"), "--no-progress"]) == 0
    summary = json.loads((tmp_path / "p/summary.json").read_text())
    assert summary["tasks"]["mmau-test-mini"]["metrics"]["accuracy"] == pytest.approx(200 / 3)
    with pytest.raises(ValueError, match="no prediction"):
        PredictionsAdapter(table).answer([Request("mmau-test-mini", "zz", "x.wav", "q")])


def test_list_tasks_names_every_task(capsys):
    assert main(["eval", "--list-tasks"]) == 0
    printed = capsys.readouterr().out
    assert all(name in printed for name in all_tasks())


def test_loud_errors(bench, tmp_path, capsys):
    assert main(["eval", "--adapter", "first-choice", "--tasks", "nope", "--data-root", str(bench),
                 "--out", str(tmp_path)]) == 2
    assert "unknown task 'nope'" in capsys.readouterr().err
    with pytest.raises(RequestError, match="does not exist"):
        get_task("gtzan").load(tmp_path / "missing")
    bad = tmp_path / "mmau"
    _json(bad / "mmau-test-mini.json", [{"id": "x", "audio_id": "gone.wav", "question": "q", "choices": ["a", "b"],
                                         "answer": "a", "task": "sound"}])
    with pytest.raises(RequestError, match="gone.wav does not exist"):
        get_task("mmau-test-mini").load(bad)
    _json(bad / "mmau-test-mini.json", [{"id": "x", "audio_id": "gone.wav", "question": "q", "choices": ["a", "b"],
                                         "answer": "c"}])
    with pytest.raises(RequestError, match="must be a list that contains 'answer'"):
        get_task("mmau-test-mini").load(bad)


@pytest.fixture(scope="module")
def tiny_af2_dir(official_model, tmp_path_factory):
    """The golden fixture's tiny AF2 checkpoint (random weights), saved in af2's own format."""
    from af2.checkpoint.folder import save_pretrained

    model, tokenizer, _ = official_model
    return save_pretrained(model, tmp_path_factory.mktemp("model") / "tiny-af2", tokenizer)


def test_end_to_end_with_a_tiny_af2_model(bench, tiny_af2_dir, tmp_path):
    """The real AF2 adapter (af2.inference.load + ask_batch) through `af2 eval`: every format once,
    then three tasks again, which must give byte-identical per-example files and metrics."""
    def once(out, tasks):
        return main(["eval", "--model", str(tiny_af2_dir), "--tasks", tasks, "--data-root", str(bench),
                     "--out", str(out), "--caption-tokenizer", "simple", "--no-meteor", "--no-progress",
                     "--batch-size", "8", "--max-new-tokens", "4", "--limit", "2"])

    assert once(tmp_path / "a", ALL) == 0
    card = json.loads((tmp_path / "a/card.json").read_text())
    assert card["model"]["adapter"] == "af2" and len(card["model"]["model_sha256"]) == 64
    assert card["model"]["decoding"] == {"max_new_tokens": 4, "do_sample": False}
    rows = [json.loads(l) for l in (tmp_path / "a/gtzan/examples.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all(isinstance(r["prediction"], str) for r in rows)
    assert card["limit"] == 2
    assert len(list((tmp_path / "a/plots").glob("*.png"))) == 14
    again = "mmau-test-mini,gtzan,longaudiobench"
    assert once(tmp_path / "b", again) == 0
    first = json.loads((tmp_path / "a/summary.json").read_text())["tasks"]
    second = json.loads((tmp_path / "b/summary.json").read_text())["tasks"]
    for task in again.split(","):
        assert first[task] == second[task], task
        rel = f"{task}/examples.jsonl"
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel


def test_eval_runs_int8_weights(bench, tiny_af2_dir, tmp_path):
    """--dtype int8 (weight-only int8 linears) is accepted and recorded: the default model's int8 quality
    is measured with af2 eval (docs/af2-nano.md)."""
    assert main(["eval", "--model", str(tiny_af2_dir), "--tasks", "mmau-test-mini", "--data-root", str(bench),
                 "--out", str(tmp_path / "q"), "--no-progress", "--dtype", "int8", "--max-new-tokens", "4"]) == 0
    card = json.loads((tmp_path / "q/card.json").read_text())
    assert card["model"]["dtype"] == "int8"
    summary = json.loads((tmp_path / "q/summary.json").read_text())
    assert summary["tasks"]["mmau-test-mini"]["n"] == 3


def test_eval_without_model_uses_the_default_of_af2_load(bench, tiny_af2_dir, tmp_path, monkeypatch):
    from af2 import inference

    real_load, calls = inference.load, []

    def default_is_the_tiny_model(*args, **kwargs):  # stands in for load()'s default model
        calls.append(args)
        return real_load(tiny_af2_dir, **kwargs)

    monkeypatch.setattr(inference, "load", default_is_the_tiny_model)
    monkeypatch.setattr(inference, "DEFAULT_MODEL", str(tiny_af2_dir))
    assert main(["eval", "--tasks", "gtzan", "--data-root", str(bench), "--out", str(tmp_path / "d"), "--no-progress",
                 "--max-new-tokens", "2", "--limit", "1"]) == 0
    assert calls == [()]  # no model argument: af2.load() picks its default
    card = json.loads((tmp_path / "d/card.json").read_text())
    assert card["model"]["model"] == str(tiny_af2_dir) and len(card["model"]["model_sha256"]) == 64


def test_duration_bands_follow_the_curriculum_windows(tmp_path):
    from af2.eval.runner import duration_band, duration_bands

    assert [duration_band(s) for s in (0.5, 10.0, 10.01, 30.0, 119.9, 120.0, 300.0, 300.1)] == [
        "0-10 s", "0-10 s", "10-30 s", "10-30 s", "30 s-2 min", "30 s-2 min", "2-5 min", "over 5 min"]
    _wav(tmp_path / "a.wav", 0)
    clip = str(tmp_path / "a.wav")
    assert duration_bands([clip, clip]) == ["0-10 s", "0-10 s"]
    assert duration_bands([clip, str(tmp_path / "missing.wav")]) is None  # no partial breakdown


def test_rank_from_env(monkeypatch):
    from af2.eval.runner import rank_from_env

    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert rank_from_env() == (0, 1)
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert rank_from_env() == (3, 4)
    monkeypatch.setenv("RANK", "4")
    with pytest.raises(RequestError, match="RANK=4"):
        rank_from_env()
