"""scripts/nano-external-set.py: an MMAU-layout evaluation set from the reserved (never-trained-on) audio sources.

The build test needs espeak-ng (apt-get install espeak-ng) and is skipped without it; the reserved sound
packages (sound-theme-freedesktop, oxygen-sounds, warzone2100-music, pocketsphinx-testdata) are optional."""

from __future__ import annotations

import importlib.util
import json
import shutil
from collections import Counter
from pathlib import Path

import pytest
import soundfile as sf

from af2.data.qa.templates import category_word
from af2.data.sources import PACK_LANGUAGE, ReservedSourceError, check_not_reserved

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "nano-external-set.py"


@pytest.fixture(scope="module")
def ext():
    spec = importlib.util.spec_from_file_location("nano_external_set", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_debian_install_paths_are_reserved():
    # oxygen-sounds installs /usr/share/sounds/Oxygen-*.ogg, pocketsphinx-testdata /usr/share/pocketsphinx/test/data
    for path in ("/usr/share/sounds/Oxygen-Sys-Question.ogg", "/usr/share/pocketsphinx/test/data/cards/001.wav"):
        with pytest.raises(ReservedSourceError):
            check_not_reserved(path)
    check_not_reserved("/usr/share/sounds/alsa/Front_Left.wav")  # a corpus source stays allowed


def test_pools_without_a_corpus_are_the_corpus_values(ext):
    pools = ext.corpus_pools(None)
    assert pools["language"] == sorted({"English", *PACK_LANGUAGE.values()})
    assert pools["category_word"] == sorted(category_word({"category": c})
                                            for c in ("sfx", "speech", "vocalization", "music", "scene"))


def test_refuses_to_write_into_a_corpus(ext, tmp_path):
    corpus = tmp_path / "corpus"
    (corpus / "manifests").mkdir(parents=True)
    (corpus / "datasheet.json").write_text("{}")
    with pytest.raises(SystemExit, match="inside the corpus"):
        ext.main([str(corpus / "external"), "--per-skill", "2"])
    assert not (corpus / "external").exists()


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed (apt-get install espeak-ng)")
def test_builds_an_mmau_layout_set_with_the_corpus_wording(ext, tmp_path):
    from af2.eval.benchmarks import choice_qa  # noqa: F401  (registers the tasks)
    from af2.eval.registry import TASKS

    out = tmp_path / "ext"
    assert ext.main([str(out), "--per-skill", "4", "--seed", "1"]) == 0
    task = TASKS["mmau-test-mini"]
    examples = task.load(out / task.folder)
    rows = json.loads((out / "mmau" / "mmau-test-mini.json").read_text())
    counts = Counter(r["task"] for r in rows)
    assert {counts[s] for s in ("speech.gender", "speech.rate", "speech.language")} == {4}
    assert len(examples) == len(rows) == len({r["id"] for r in rows})
    questions = {"speech.gender": "Is the speaker male or female?",
                 "speech.rate": "Is the speaking rate slow, normal or fast?",
                 "speech.language": "What language is spoken?"}
    for r in rows:
        assert r["answer"] in r["choices"] and len(set(r["choices"])) == len(r["choices"])
        if r["task"] in questions:
            assert r["question"] == questions[r["task"]]
        x, sr = sf.read(out / "mmau" / r["audio_path"])
        assert sr == 16_000 and x.ndim == 1 and 0 < len(x) <= 30 * sr
    gender = [r for r in rows if r["task"] == "speech.gender"]
    assert Counter(r["answer"] for r in gender) == {"male": 2, "female": 2}
    assert Counter(r["choices"].index(r["answer"]) for r in gender) == {0: 2, 1: 2}
    assert (out / "README.md").read_text().count("speech.gender") >= 2
    # a rebuild replaces its own folder and gives the same items
    assert ext.main([str(out), "--per-skill", "4", "--seed", "1"]) == 0
    assert json.loads((out / "mmau" / "mmau-test-mini.json").read_text()) == rows
