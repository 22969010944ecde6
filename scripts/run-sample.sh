#!/usr/bin/env bash
# Set up .venv and run the batch job on the bundled sample (DirectRunner's FnApiRunner, bundled all-MiniLM-L6-v2).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-venv.sh
out=${1:-out/sample}
.venv/bin/semsim batch --input 'data/sample/*.jsonl' --output "$out" --overwrite --write-deduplicated "${@:2}"
.venv/bin/semsim report "$out"
echo "outputs in $out/: pairs/ clusters/ removed/ deduplicated/ dead_letter/ (Parquet), summary.json and report.html" \
  "(open it in a browser)"
