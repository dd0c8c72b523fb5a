import json

import pytest

from af2.data.manifest import ManifestError, ManifestItem, read_manifest, write_manifest


def _items():
    return [ManifestItem(id=f"T/x/{i}", name=f"clips/{i}.flac", prompt=f"What is {i}?", output=f"It is {i}.",
                         duration=1.5 + i, audio_start=0.25 * i,
                         extra={"skill": "counting", "provenance": {"generator": "templates", "sources": [f"c{i}"]},
                                "timeline": f"timelines/{i}.json"})
            for i in range(3)]


@pytest.mark.parametrize("suffix", [".json", ".jsonl"])
def test_roundtrip_keeps_every_field(tmp_path, suffix):
    path = write_manifest(tmp_path / "T" / f"train{suffix}", _items(), split="train", split_path="audio",
                          flamingo_task="T-QA")
    m = read_manifest(path)
    assert [it.id for it in m.items] == ["T/x/0", "T/x/1", "T/x/2"]
    for got, want in zip(m.items, _items()):
        assert (got.name, got.prompt, got.output, got.duration, got.audio_start, got.extra) == \
               (want.name, want.prompt, want.output, want.duration, want.audio_start, want.extra)
        assert got.split == "train" and got.split_path == "audio" and got.flamingo_task == "T-QA"
        assert got.audio_path("/data") .as_posix() == f"/data/audio/{want.name}"


def test_json_is_the_official_layout(tmp_path):
    path = write_manifest(tmp_path / "T" / "train.json", _items(), split="train", split_path="audio",
                          flamingo_task="T-QA")
    doc = json.loads(path.read_text())
    assert doc["split"] == "train" and doc["split_path"] == "audio" and doc["flamingo_task"] == "T-QA"
    assert doc["total_num"] == 3 and list(doc["data"]) == ["0", "1", "2"]
    assert {"name", "prompt", "output", "duration", "audio_start"} <= set(doc["data"]["0"])


def test_official_manifest_without_ids(tmp_path):
    path = tmp_path / "audiocaps-AudioCaptioning" / "train.json"
    path.parent.mkdir()
    path.write_text(json.dumps({"split": "train", "split_path": "audiocaps/audio/train",
                                "flamingo_task": "audiocaps-AudioCaptioning", "total_num": 1,
                                "data": {"0": {"name": "5228.flac", "prompt": "Caption the input audio.",
                                               "output": "An engine idles.", "duration": 10.0}}}))
    item = read_manifest(path).items[0]
    assert item.id == "audiocaps-AudioCaptioning/train/0" and item.audio_start == 0.0 and item.extra == {}
    assert item.audio_path("/r").as_posix() == "/r/audiocaps/audio/train/5228.flac"


@pytest.mark.parametrize("text, needle", [
    ("{not json", "malformed JSON"),
    (json.dumps({"data": {"1": {"name": "a", "prompt": "p", "output": "o", "duration": 1}}}), "keys of 'data'"),
    (json.dumps({"data": {"0": {"name": "a", "prompt": "p", "duration": 1}}}), "missing field 'output'"),
    (json.dumps({"data": {"0": {"name": ["a", "b"], "prompt": "p", "output": "o", "duration": 1}}}), "'name'"),
])
def test_bad_manifests_fail_with_a_named_field(tmp_path, text, needle):
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(ManifestError, match=needle) as info:
        read_manifest(path)
    assert str(path) in str(info.value)


def test_writes_are_byte_deterministic(tmp_path):
    a = write_manifest(tmp_path / "a.json", _items(), split="train", split_path="audio", flamingo_task="T")
    b = write_manifest(tmp_path / "b.json", _items(), split="train", split_path="audio", flamingo_task="T")
    assert a.read_bytes() == b.read_bytes()
