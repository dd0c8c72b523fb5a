#!/usr/bin/env bash
# Set up (if needed) and run the whole offline test suite plus the golden parity check.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
bash scripts/setup.sh
SHARED=${AF2_SHARED:-../shared}
.venv/bin/af2 check-parity "$SHARED/fixtures/af2-golden-a"
.venv/bin/af2 check-train-parity "$SHARED/fixtures/af2-train-golden-a"
.venv/bin/pytest -q "$@"
