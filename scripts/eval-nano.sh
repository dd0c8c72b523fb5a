#!/usr/bin/env bash
# End-to-end evaluation on data that installs here: the held-out (val) split of the corpus as
#   af2-manifest    every val item, exact match + similarity
#   mmau-test-mini  short-clip multiple-choice val items in the MMAU layout (official string match)
#   mmar            long-audio multiple-choice val items in the MMAR layout (official string match)
# The MC tasks share MMAU's/MMAR's format, not their questions, so the report leaves out the paper's numbers.
#
# Usage: scripts/eval-nano.sh CORPUS_DIR OUT_DIR [af2 eval flags...]
#   CORPUS_DIR  an `af2 corpus build --out` folder (manifests/<Task>/val.json + audio/)
#   OUT_DIR     gets data/ (the three benchmark folders) and results/ (report.md, summary.json, plots/)
#   flags       e.g. --model runs/nano/final --device cuda --dtype bfloat16 --limit 200;
#               without --model, af2 eval uses af2.load()'s default model.
# Set AF2="python -m af2.cli" to run from a checkout without the console script.
set -euo pipefail
if [ $# -lt 2 ]; then
  sed -n '2,13p' "$0"
  exit 2
fi
corpus=$1
out=$2
shift 2
af2_cmd=${AF2:-af2}
$af2_cmd eval from-corpus "$corpus" "$out/data"
$af2_cmd eval --tasks af2-manifest,mmau-test-mini,mmar --data-root "$out/data" --out "$out/results" \
  --no-paper-comparison --no-progress "$@"
echo "report: $out/results/report.md"
