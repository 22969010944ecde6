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
log=.venv/install.log
cpu_index=https://download.pytorch.org/whl/cpu
torch_from=()  # PyPI's Linux torch wheel is the CUDA build (GBs): take PyTorch's CPU index where it can be reached
if timeout 15 "$python" -c "import urllib.request; urllib.request.urlopen('$cpu_index/torch/', timeout=10)" 2>/dev/null; then
  torch_from=(--index-url "$cpu_index")
fi
echo "setting up .venv (torch 2.13.0 CPU, then requirements/constraints.txt; log: $log)"
{
  .venv/bin/python -m pip install --upgrade pip &&
  .venv/bin/python -m pip install ${torch_from[@]+"${torch_from[@]}"} torch==2.13.0 &&
  .venv/bin/python -m pip install -c requirements/constraints.txt -e ".[test]"
} > "$log" 2>&1 || { tail -n 40 "$log"; echo "setup failed; full log: $log" >&2; exit 1; }
echo "$want" > "$stamp"
