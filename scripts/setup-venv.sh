#!/usr/bin/env bash
# Create .venv and install semsim with pinned versions; torch==2.13.0 (CPU wheel) goes in first.
# Re-running is cheap: it reinstalls only when setup.py or the constraints changed.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
stamp=.venv/.semsim-installed
want=$(cat setup.py requirements/constraints.txt | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
[ -x .venv/bin/python ] || "$python" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet torch==2.13.0
.venv/bin/python -m pip install --quiet -c requirements/constraints.txt -e ".[test]"
echo "$want" > "$stamp"
