#!/usr/bin/env bash
# Set up af2 (offline: registries only) and ask the default model, af2-nano, a question about a clip.
#   bash scripts/demo.sh                         # a shipped example clip and question
#   bash scripts/demo.sh clip.wav "What is happening?"
# Env: AF2_MODEL (e.g. nvidia/audio-flamingo-2-0.5B, needs the hub or its local cache), AF2_DEVICE, AF2_DTYPE.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1}
AUDIO=${1:-$(.venv/bin/python -c 'import af2.examples as e; print(e.clip("clarinet"))')}
QUESTION=${2:-"Which instrument is playing? (A) harp. (B) clarinet. (C) church organ. (D) acoustic bass."}
echo "af2 ask $AUDIO \"$QUESTION\"" >&2
args=()
[ -n "${AF2_MODEL:-}" ] && args+=(--model "$AF2_MODEL")
[ -n "${AF2_DEVICE:-}" ] && args+=(--device "$AF2_DEVICE")
[ -n "${AF2_DTYPE:-}" ] && args+=(--dtype "$AF2_DTYPE")
exec .venv/bin/af2 ask "${args[@]}" "$AUDIO" "$QUESTION"
