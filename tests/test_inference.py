"""The inference API and CLI on the fixture's tiny official checkpoint."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import soundfile as sf
import torch
from safetensors.torch import load_file

import af2
from af2.checkpoint.folder import save_pretrained
from af2.cli import main
from af2.parity import fixture_config

PROMPT = "w379 w366 w250 w360 w455 w15"


@pytest.fixture(scope="module")
def api(fixture_dir):
    return af2.load(fixture_dir / "checkpoint", config=fixture_config(fixture_dir), max_audio_seconds=120,
                    dtype="float32")


@pytest.fixture(scope="module")
def model_dir(official_model, tmp_path_factory):
    model, tokenizer, _ = official_model
    return save_pretrained(model, tmp_path_factory.mktemp("model") / "tiny-af2", tokenizer)


def _tone(path, seconds, rate=16_000, channels=1):
    t = np.arange(int(seconds * rate)) / rate
    x = 0.3 * np.sin(2 * np.pi * 440 * t) + 0.05 * np.sin(2 * np.pi * 3 * t) * np.sin(2 * np.pi * 1500 * t)
    sf.write(path, np.stack([x] * channels, axis=1) if channels > 1 else x, rate, subtype="PCM_16")
    return path


def test_golden_greedy_outputs_come_out_of_ask(api, fixture_dir):
    expected = load_file(str(fixture_dir / "expected.safetensors"))
    cases = json.loads((fixture_dir / "cases.json").read_text())["cases"]
    for case, spec in cases.items():
        answer = api.ask(fixture_dir / spec["file"], spec["prompt_text"], max_new_tokens=12)
        assert list(answer.token_ids) == expected[f"greedy_new_tokens/{case}"].tolist(), case
        assert answer.audio.windows == spec["num_windows"]
        assert answer.finish_reason == "length"


def test_batch_answers_equal_single_answers(api, fixture_dir):
    files = [fixture_dir / "audio" / f for f in ("short.wav", "long.wav", "stereo.wav")]
    questions = [PROMPT, "w20 w196 w68", "w189 w486 w363 w128"]
    batch = api.ask_batch(files, questions, max_new_tokens=8)
    single = [api.ask(f, q, max_new_tokens=8) for f, q in zip(files, questions)]
    assert [a.token_ids for a in batch] == [a.token_ids for a in single]
    assert all(a.text for a in batch)


def test_stream_yields_the_same_text(api, fixture_dir):
    pieces = list(api.stream(fixture_dir / "audio" / "short.wav", PROMPT, max_new_tokens=10))
    assert len(pieces) > 1
    assert "".join(pieces) == api.ask(fixture_dir / "audio" / "short.wav", PROMPT, max_new_tokens=10).text


def test_stop_strings_late_in_a_long_answer(api, fixture_dir):
    wav = fixture_dir / "audio" / "long.wav"
    full = api.ask(wav, PROMPT, max_new_tokens=40)
    words = full.text.split()
    assert len(words) >= 30
    for stop in (words[-3], " " + words[-3], f"{words[-4]} {words[-3]}"):
        first = full.text.index(stop)
        cut = api.ask(wav, PROMPT, max_new_tokens=40, stop=[stop])
        assert cut.text == full.text[:first].rstrip() and cut.finish_reason == "stop", stop
        assert len(cut.token_ids) < len(full.token_ids)  # decoding stopped there, not at the length limit


def test_progress_reports_windows_while_encoding(api, fixture_dir):
    calls = []
    files = [fixture_dir / "audio" / f for f in ("long.wav", "short.wav")]
    api.ask_batch(files, [PROMPT, PROMPT], max_new_tokens=2, progress=lambda done, total: calls.append((done, total)))
    total = sum(api._load(f)[0].shape[0] for f in files)
    assert calls and calls[-1] == (total, total)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls) and {t for _, t in calls} == {total}
    assert len(calls) == -(-total // api.encoder_chunk)


def test_stop_strings_and_inputs(api, fixture_dir):
    full = api.ask(fixture_dir / "audio" / "short.wav", PROMPT, max_new_tokens=12).text
    word = full.split()[2]
    cut = api.ask(fixture_dir / "audio" / "short.wav", PROMPT, max_new_tokens=12, stop=[word])
    assert cut.text == full[: full.index(word)].rstrip() and cut.finish_reason == "stop"
    samples, rate = sf.read(fixture_dir / "audio" / "short.wav")
    from_array = api.ask((samples, rate), PROMPT, max_new_tokens=6)
    from_bytes = api.ask((fixture_dir / "audio" / "short.wav").read_bytes(), PROMPT, max_new_tokens=6)
    assert from_array.token_ids == from_bytes.token_ids
    with pytest.raises(ValueError, match="question is empty"):
        api.ask(fixture_dir / "audio" / "short.wav", "  ")


def test_cli_five_and_six_minutes(model_dir, tmp_path, capsys):
    five = _tone(tmp_path / "five.wav", 300)
    six = _tone(tmp_path / "six.flac", 360)
    assert main(["ask", "--model", str(model_dir), str(five), PROMPT, "--max-new-tokens", "4", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["windows"] == 30 and out["truncated_s"] == 0 and out["answer"]
    assert main(["ask", "--model", str(model_dir), str(six), PROMPT, "--max-new-tokens", "4", "--json"]) == 0
    captured = capsys.readouterr()
    out = json.loads(captured.out)
    assert out["truncated_s"] == pytest.approx(60.0) and out["kept_s"] == pytest.approx(300.0)
    assert "60.0 s of" in captured.err and "truncated" in captured.err
    rc = main(["ask", "--model", str(model_dir), str(six), PROMPT, "--strict-length"])
    assert rc != 0 and "truncated" in capsys.readouterr().err


@pytest.mark.parametrize("content,suffix", [(b"", ".wav"), (b"RIFF\x00\x00garbage" * 10, ".wav"),
                                            (os.urandom(4000), ".xyz")])
def test_cli_bad_audio_is_one_line_error(model_dir, tmp_path, capsys, content, suffix):
    bad = tmp_path / f"bad{suffix}"
    bad.write_bytes(content)
    rc = main(["ask", "--model", str(model_dir), str(bad), PROMPT])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.count("\n") == 0 and "error" in err and "Traceback" not in err


def test_cli_caption_and_missing_model(model_dir, fixture_dir, tmp_path, capsys):
    assert main(["caption", "--model", str(model_dir), str(fixture_dir / "audio" / "short.wav"),
                 "--max-new-tokens", "3"]) == 0
    assert capsys.readouterr().out.strip()
    assert main(["ask", "--model", str(tmp_path / "none"), str(fixture_dir / "audio" / "short.wav"), "q"]) == 2
    assert "no such folder" in capsys.readouterr().err


def test_jsonl_batch_killed_midway_resumes(model_dir, fixture_dir, tmp_path):
    requests = tmp_path / "q.jsonl"
    with open(requests, "w") as f:
        for i in range(16):
            f.write(json.dumps({"id": f"q{i}", "audio": str(fixture_dir / "audio" / "short.wav"),
                                "question": f"w{i} w{i + 1}"}) + "\n")
    answers = tmp_path / "a.jsonl"
    cmd = [sys.executable, "-m", "af2", "ask", "--model", str(model_dir), "--input", str(requests),
           "--output", str(answers), "--batch-size", "1", "--max-new-tokens", "6"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and (not answers.exists() or len(answers.read_text().splitlines()) < 3):
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    first = [json.loads(line) for line in answers.read_text().splitlines() if line.strip()]
    assert 3 <= len(first) < 16, "the run must be killed midway"
    done = subprocess.run(cmd[:-4] + ["--batch-size", "8", "--max-new-tokens", "6"], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert f"{len(first)} already answered" in done.stderr
    final = [json.loads(line) for line in answers.read_text().splitlines()]
    assert [r["id"] for r in final] == [f"q{i}" for i in range(16)]
    assert final[: len(first)] == first  # answered lines were kept, not redone


def test_cli_progress_bar_only_on_a_terminal(monkeypatch):
    import io

    from af2.cli.ask import EncodeProgress

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    for stream, quiet, shown in ((Terminal(), False, True), (Terminal(), True, False), (io.StringIO(), False, False)):
        monkeypatch.setattr(sys, "stderr", stream)
        bar = EncodeProgress(quiet)
        for done in (2, 4, 12):
            bar(done, 12)
        bar.close()
        assert ("/12 [" in stream.getvalue()) == shown and ("encoding audio" in stream.getvalue()) == shown
