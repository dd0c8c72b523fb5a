#!/usr/bin/env bash
# Set up af2 and ask AF2-0.5B a question about a clip (default: a generated clip of beeps).
# Usage: bash scripts/demo.sh [AUDIO] [QUESTION]   (env AF2_MODEL, AF2_DEVICE, AF2_DTYPE to change)
# Needs the Hugging Face hub (or the model in its local cache) for nvidia/audio-flamingo-2-0.5B
# and Qwen/Qwen2.5-0.5B; offline, af2 says exactly what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
AUDIO=${1:-}
QUESTION=${2:-"How many beeps do you hear?"}
if [ -z "$AUDIO" ]; then
  AUDIO=$(mktemp --suffix=.wav)
  .venv/bin/python - "$AUDIO" <<'PY'
import sys
import numpy as np
import soundfile as sf
rate = 16_000
t = np.arange(rate * 6) / rate
beeps = sum(((t > s) & (t < s + 0.3)) * np.sin(2 * np.pi * 880 * t) for s in (0.5, 1.7, 2.9, 4.1))
sf.write(sys.argv[1], 0.5 * beeps, rate)
PY
  echo "generated $AUDIO (4 beeps)" >&2
fi
exec .venv/bin/af2 ask --model "${AF2_MODEL:-nvidia/audio-flamingo-2-0.5B}" --device "${AF2_DEVICE:-cpu}" \
  --dtype "${AF2_DTYPE:-float32}" "$AUDIO" "$QUESTION"
