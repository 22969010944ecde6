#!/usr/bin/env bash
# Set up .venv and run the batch job on the bundled sample (DirectRunner's FnApiRunner, bundled all-MiniLM-L6-v2).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-venv.sh
out=${1:-out/sample}
.venv/bin/semsim batch --input 'data/sample/*.jsonl' --output "$out" "${@:2}"
echo "outputs in $out/: pairs/ clusters/ dead_letter/ (Parquet) and summary.json"
