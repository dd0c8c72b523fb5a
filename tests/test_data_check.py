import json

import numpy as np
import soundfile as sf

from af2.cli import main
from af2.data.check import check_manifests


def _corpus(tmp_path):
    audio = tmp_path / "audio"
    audio.mkdir()
    sf.write(audio / "good.wav", np.zeros(16000 * 2, dtype=np.float32), 16000)  # 2.0 s
    (audio / "broken.wav").write_bytes(b"RIFF not really a wav file")
    entries = [
        {"id": "ok", "name": "good.wav", "prompt": "p?", "output": "o", "duration": 2.0},
        {"id": "missing", "name": "nope.wav", "prompt": "p?", "output": "o", "duration": 2.0},
        {"id": "unreadable", "name": "broken.wav", "prompt": "p?", "output": "o", "duration": 2.0},
        {"id": "noprompt", "name": "good.wav", "prompt": "  ", "output": "o", "duration": 2.0},
        {"id": "nooutput", "name": "good.wav", "prompt": "p?", "output": "", "duration": 2.0},
        {"id": "negative", "name": "good.wav", "prompt": "p?", "output": "o", "duration": -1.0},
        {"id": "toolong", "name": "good.wav", "prompt": "p?", "output": "o", "duration": 9.0},
        {"id": "ok", "name": "good.wav", "prompt": "p?", "output": "o", "duration": 2.0},
        {"id": "nofield", "name": "good.wav", "prompt": "p?", "duration": 2.0},
        {"id": "segment", "name": "good.wav", "prompt": "p?", "output": "o", "duration": 1.0, "audio_start": 0.5},
    ]
    man = tmp_path / "manifests" / "T" / "train.json"
    man.parent.mkdir(parents=True)
    man.write_text(json.dumps({"split": "train", "split_path": "audio", "flamingo_task": "T",
                               "data": {str(i): e for i, e in enumerate(entries)}}))
    bad = tmp_path / "manifests" / "T" / "val.json"
    bad.write_text('{"data": {"0": ')
    lines = tmp_path / "manifests" / "T" / "extra.jsonl"
    lines.write_text(json.dumps({"id": "j1", "name": "good.wav", "split_path": "audio", "prompt": "p", "output": "o",
                                 "duration": 2.0}) + "\n{oops\n")
    return man, bad, lines


def test_each_problem_is_counted_and_named(tmp_path):
    man, bad, lines = _corpus(tmp_path)
    report = check_manifests([man, bad, lines], tmp_path)
    assert report.counts == {"missing_audio": 1, "unreadable_audio": 1, "empty_prompt": 1, "empty_output": 1,
                             "bad_duration": 2, "duplicate_id": 1, "malformed_entry": 1, "malformed_manifest": 2}
    by_kind = {p.kind: p for p in report.problems}
    assert by_kind["missing_audio"].entry == "1" and "nope.wav" in by_kind["missing_audio"].message
    assert by_kind["duplicate_id"].entry == "7" and str(man) == by_kind["duplicate_id"].file
    assert "output" in by_kind["malformed_entry"].message
    text = report.format()
    assert "missing_audio: 1" in text and f"{man}: entry 1" in text


def test_cli_exit_codes(tmp_path, capsys):
    man, _, _ = _corpus(tmp_path)
    assert main(["data", "check", str(man), "--data-root", str(tmp_path)]) == 1
    assert "duplicate_id: 1" in capsys.readouterr().out
    clean = tmp_path / "manifests" / "T" / "clean.json"
    clean.write_text(json.dumps({"split_path": "audio", "data": {"0": {"name": "good.wav", "prompt": "p?",
                                                                       "output": "o", "duration": 2.1}}}))
    assert main(["data", "check", str(clean)]) == 0  # root found from manifests/<Task>/<split>.json
    assert "0 problems" in capsys.readouterr().out
