#!/usr/bin/env bash
# Set up .venv, lint, and run the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-venv.sh
bash scripts/setup-chromium.sh
.venv/bin/ruff check .
.venv/bin/python -m pytest "$@"
