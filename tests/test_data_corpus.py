"""The corpus builder on a small sample of real sources (installed by
``scripts/install-corpus-sources.sh --small``; CI runs it first)."""

import json
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from af2.cli import main
from af2.data.catalog import SMALL_SOURCES
from af2.data.check import check_manifests
from af2.data.corpus import BuildOptions, build_corpus, resolve_sources
from af2.data.longaudio import CATEGORIES
from af2.data.manifest import read_manifest
from af2.data.qa import SKILLS
from af2.data.sources import RESERVED, ReservedSourceError, SourceUnavailableError, check_not_reserved


def _opts(out):
    return BuildOptions(out=out, seed=7, sources=SMALL_SOURCES, limit=6, scenes=6, long=3, long_val=2,
                        long_seconds=(40.0, 70.0), val_fraction=0.3, small_soundfont=True, progress=False)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    try:
        resolve_sources(SMALL_SOURCES)
    except SourceUnavailableError as exc:
        pytest.fail(f"corpus sample sources missing ({exc}). Run: scripts/install-corpus-sources.sh --small")
    a, b = tmp_path_factory.mktemp("a"), tmp_path_factory.mktemp("b")
    return build_corpus(_opts(a)), a, b


def test_same_seed_gives_byte_identical_manifests(built):
    _, a, b = built
    build_corpus(_opts(b))
    files = sorted(p.relative_to(a) for p in (a / "manifests").rglob("*.json"))
    assert files and files == sorted(p.relative_to(b) for p in (b / "manifests").rglob("*.json"))
    for rel in files:
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
    assert (a / "datasheet.json").read_bytes() == (b / "datasheet.json").read_bytes()


def test_manifests_pass_check_and_load(built):
    sheet, a, _ = built
    paths = sorted((a / "manifests").rglob("*.json"))
    report = check_manifests(paths, a)
    assert report.ok, report.format()
    assert report.items == sheet["qa"]["total"] > 0
    assert main(["data", "check", *map(str, paths)]) == 0
    items = [it for p in paths for it in read_manifest(p).items]
    skills = {it.extra["skill"] for it in items if it.flamingo_task == "AF2Corpus-AudioSkills"}
    assert set(SKILLS) <= skills
    assert {it.extra["skill"] for it in items if it.flamingo_task == "AF2Corpus-LongAudio"} == set(CATEGORIES)
    for it in items:
        prov = it.extra["provenance"]
        assert prov["generator"] and prov["template"] and prov["sources"]
    assert any(it.prompt.endswith(")") is False and "(A) " in it.prompt and it.output.startswith("(") for it in items)
    sheet_md = (a / "datasheet.md").read_text()
    assert f"| clips | {sheet['clips']['count']} |" in sheet_md and "Sources and licences" in sheet_md


def test_long_recordings_contain_what_the_answers_say(built):
    _, a, _ = built
    items = read_manifest(a / "manifests" / "AF2Corpus-LongAudio" / "train.json").items
    items += read_manifest(a / "manifests" / "AF2Corpus-LongAudio" / "val.json").items \
        if (a / "manifests" / "AF2Corpus-LongAudio" / "val.json").exists() else []
    checked = 0
    for it in items:
        if not it.extra["provenance"]["template"] == "long.temporal.at":
            continue
        tl = json.loads((a / it.extra["timeline"]).read_text())
        e = tl["events"][it.extra["event"]]
        m, s = map(int, re.search(r"(\d+):(\d\d)", it.prompt).groups())
        assert e["start"] <= m * 60 + s <= e["end"]
        rec, _ = sf.read(it.audio_path(a), dtype="float32")
        clip, _ = sf.read(a / "audio" / "clips" / f"{e['source_id']}.flac", dtype="float32")
        start = round(e["start"] * 16_000)
        assert np.max(np.abs(rec[start: start + len(clip)] - clip)) < 2e-3  # the placed clip, sample for sample
        checked += 1
    assert checked >= 3


def test_reserved_sources_are_refused(tmp_path):
    for name in RESERVED:
        with pytest.raises(ReservedSourceError, match="reserved for evaluation"):
            resolve_sources([name])
    with pytest.raises(ReservedSourceError):
        check_not_reserved("/usr/share/sounds/freedesktop/stereo/bell.oga")
    with pytest.raises(ReservedSourceError):
        check_not_reserved("/usr/share/games/warzone2100/music/track1.opus")
    assert main(["corpus", "build", "--out", str(tmp_path / "x"), "--sources", "oxygen-sounds"]) == 2
    assert not (tmp_path / "x").exists()


def test_espeak_ng_voices_are_reserved():
    assert "espeak-ng" in RESERVED
    with pytest.raises(ReservedSourceError):
        check_not_reserved("/usr/lib/x86_64-linux-gnu/espeak-ng-data/voices/!v/m3")
    with pytest.raises(ReservedSourceError):
        check_not_reserved("/usr/share/espeak-ng-data/en_dict")
    from af2.data.sources import BuildContext
    from af2.data.synth import TTS_VOICES, collect_tts

    with pytest.raises(ReservedSourceError, match="espeak-ng"):
        next(collect_tts(BuildContext(rng=np.random.default_rng(0), limit=1, workdir=Path("/tmp")),
                         engines=("espeak-ng",)))
    for engine, *_ in TTS_VOICES:  # no training voice is an espeak voice
        check_not_reserved(f"tts-{engine}")


def test_held_out_split_shares_no_audio_with_training(built):
    """val items come only from val clips: val scenes and long recordings are built from val clips alone."""
    sheet, a, _ = built
    split = {m["id"]: m["split"] for m in map(json.loads, (a / "metadata" / "clips.jsonl").read_text().splitlines())}
    assert {"train", "val"} == set(split.values())
    seen = {"train": set(), "val": set()}
    for path in sorted((a / "manifests").rglob("*.json")):
        for it in read_manifest(path).items:
            clips = set(it.extra["provenance"]["sources"])
            if "timeline" in it.extra:
                tl = json.loads((a / it.extra["timeline"]).read_text())
                clips |= {e["source_id"] for e in tl["events"]}
                clips |= {tl["background"]["source_id"]} if tl.get("background") else set()
            seen[it.split] |= {c for c in clips if c in split}
    assert seen["val"] and seen["train"] and not seen["val"] & seen["train"]
    assert all(split[c] == "val" for c in seen["val"])
    long_val = read_manifest(a / "manifests" / "AF2Corpus-LongAudio" / "val.json").items
    assert {it.name for it in long_val} >= {"long/00003.flac", "long/00004.flac"}  # --long 3 then --long-val 2
    assert sheet["held_out"]["multiple_choice"] > 0


def test_data_qa_command_regenerates_from_metadata(built):
    _, a, _ = built
    out = a / "manifests" / "Regen-AudioSkills" / "train.jsonl"
    assert main(["data", "qa", str(a / "metadata" / "clips.jsonl"), "--out", str(out), "--seed", "7"]) == 0
    items = read_manifest(out).items
    assert items and check_manifests([out], a).ok
    assert {it.extra["skill"] for it in items} >= set(SKILLS)
    out.unlink()


def test_corpus_manifests_load_in_the_trainer(built, official_model):
    """The builder's manifests go through the trainer's blend, dataset and collator unchanged."""
    import torch

    from af2.config import AudioConfig, TokensConfig
    from af2.train.config import DataConfig
    from af2.data.dataset import ManifestDataset
    from af2.train.data import Collator, blended_items

    _, a, _ = built
    blend = {f"{task}/train": 1.0 for task in ("AF2Corpus-AudioSkills", "AF2Corpus-LongAudio",
                                                "AF2Corpus-AudioCaptioning")}
    data = DataConfig(dataset_file_root=str(a / "manifests"), data_root=str(a), blend=blend, global_weight=1.0)
    items = blended_items(data)
    assert len(items) == sum(len(read_manifest(a / "manifests" / f"{k}.json").items) for k in blend)
    audio = AudioConfig(max_windows=30)
    dataset = ManifestDataset(items, str(a), audio)
    longest = max(range(len(items)), key=lambda i: items[i].duration)
    samples = [dataset[0], dataset[longest]]
    assert samples[1].windows.shape[0] == min(30, -(-int(items[longest].duration * 16_000) // 160_000))
    _, tokenizer, special = official_model  # any AF2 tokenizer works for the collator
    batch = Collator(tokenizer, TokensConfig(), 30)(samples)
    assert batch["windows"].shape[0] == 2 and batch["window_mask"].sum() == sum(s.windows.shape[0] for s in samples)
    assert (batch["labels"] != -100).any() and torch.all(batch["input_ids"][:, 0] == special.audio)


def test_scenes_of_both_splits_never_share_an_id(tmp_path):
    """Scenes of fewer than 2 events are dropped; val scenes are still numbered after every train slot."""
    opts = BuildOptions(out=tmp_path, seed=3, sources=("alsa-utils", "frozen-bubble"), limit=8, scenes=30, long=0,
                        long_val=0, val_fraction=0.4, progress=False)
    sheet = build_corpus(opts)
    metas = [json.loads(line) for line in (tmp_path / "metadata" / "clips.jsonl").read_text().splitlines()]
    scenes = [m for m in metas if m["category"] == "scene"]
    assert len({m["id"] for m in scenes}) == len(scenes) == sheet["scenes"]["count"]
    val = [int(m["id"].split("/")[1]) for m in scenes if m["split"] == "val"]
    assert val and min(val) >= 30 - round(30 * 0.4)
