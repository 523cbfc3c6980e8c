#!/usr/bin/env bash
# Sets up cdc-agent in a project-local virtual environment and runs the embedded demo: a sample ERP
# database in SQLite, trigger capture, a small business workload, and the domain events as they land.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -e .
exec .venv/bin/cdc-agent demo "$@"
