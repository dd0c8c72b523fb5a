#!/usr/bin/env bash
# Train af2-nano through the curriculum on the offline corpus: stage 0 (AF-CLAP-nano) -> 1 -> 2 -> 3.
# The shipped model (round 13) is stages 1 and 2 on the random-init tower of scripts/nano-random-tower.py, which
# stage 1 reads instead of stage 0's (linear probes hear more in it; docs/af2-nano/history.md, rounds 10-11):
#   bash scripts/train-nano.sh corpus runs 1 2
# Every stage resumes where it stopped (checkpoints + --resume), so the script can be re-run after an
# interruption or a time budget and continues. Each stage's recipe sets a wall-clock budget (max_minutes).
#   bash scripts/train-nano.sh [CORPUS_DIR] [RUNS_DIR] [STAGES...]
#   e.g. bash scripts/train-nano.sh /work/corpus runs 0 1      # only stages 0 and 1
# Env: NICE (default 0) runs the trainer at that niceness; EXTRA holds more key=value overrides; TOWER sets
# stage 1's tower (e.g. TOWER=runs/nano_stage0 for stage 0's).
set -euo pipefail
cd "$(dirname "$0")/.."
CORPUS=${1:-corpus}
RUNS=${2:-runs}
shift $(( $# > 2 ? 2 : $# )) || true
STAGES=${*:-0 1 2 3}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
[ -d "$CORPUS/manifests" ] || { echo "train-nano: no corpus at $CORPUS; build it: af2 corpus build --out $CORPUS" >&2; exit 2; }
common=(data.data_root="$CORPUS" data.dataset_file_root="$CORPUS/manifests")
listen=(listen.manifest="$CORPUS/manifests/AF2Corpus-AudioSkills/val.json")
case " $STAGES " in *" 1 "*|*" 2 "*)  # stages 1-2 train on the short-answer AudioSkills items
  [ -f "$CORPUS/manifests/AF2Corpus-AudioSkills-Acoustic/val.json" ] ||
    "${AF2_PYTHON:-.venv/bin/python}" scripts/nano-short-manifest.py "$CORPUS" ;;
esac
for s in $STAGES; do
  case $s in
    0) extra=(output_dir="$RUNS/nano_stage0") ;;
    1) [ -f "$RUNS/nano_random_tower.safetensors" ] ||
         "${AF2_PYTHON:-.venv/bin/python}" scripts/nano-random-tower.py "$RUNS/nano_random_tower.safetensors"
       extra=(output_dir="$RUNS/nano_stage1" audio_tower_checkpoint="${TOWER:-$RUNS/nano_random_tower.safetensors}"
              listen.manifest="$CORPUS/manifests/AF2Corpus-AudioSkills-Focus/val.json") ;;
    2) extra=(output_dir="$RUNS/nano_stage2" init_checkpoint="$RUNS/nano_stage1" "${listen[@]}") ;;
    3) extra=(output_dir="$RUNS/nano_stage3" init_checkpoint="$RUNS/nano_stage2"
              listen.manifest="$CORPUS/manifests/AF2Corpus-LongAudio/val.json") ;;
    *) echo "train-nano: unknown stage $s (0-3)" >&2; exit 2 ;;
  esac
  resume=()
  [ -f "$RUNS/nano_stage$s/checkpoints/latest" ] && resume=(--resume)
  echo "== stage $s $(date -u +%H:%M:%S)" >&2
  nice -n "${NICE:-0}" "${AF2_PYTHON:-.venv/bin/python}" -m af2.cli train --config "nano_stage$s" "${resume[@]}" "${common[@]}" "${extra[@]}" ${EXTRA:-}
done
