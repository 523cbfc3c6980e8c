#!/usr/bin/env bash
# Sets up everything the test suite needs on a fresh Debian 12 machine, then runs it.
# Usage: bash scripts/test.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages: database and message servers the tests start privately (the broker targets' tests start
# private rabbitmq-server, redis-server, mosquitto and nats-server instances), ODBC drivers for trigger
# capture, the browser the dashboard test drives (chromium), promtool for the shipped alerting rules, Java
# for real Debezium (the `debezium` extra, embedded through JPype), and a C compiler with the Python headers
# for the compiled decoder (agent/_fastpg.c; optional, but tested when built).
need=()
for pkg in postgresql-15 mariadb-server unixodbc odbc-postgresql odbc-mariadb chromium chromium-driver prometheus \
           rabbitmq-server redis-server mosquitto nats-server openjdk-17-jre-headless gcc python3-dev; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "installing Debian packages: ${need[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi

# Python packages, in a project-local virtual environment.
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".[test,debezium]"

# lint and types first (settings in pyproject.toml): a finding fails the run like a failing test
.venv/bin/python -m ruff check .
.venv/bin/python -m mypy agent adapters

# two test processes (pytest-xdist), each running whole modules: most tests wait on the servers and agent
# processes they start, so two of them cut the wall time by about a quarter on two cores (965 -> 708 s,
# measured side by side). CDC_TEST_WORKERS=0 runs everything in one process, as does an -n given here.
workers=(-n "${CDC_TEST_WORKERS:-2}" --dist loadfile)
for arg in "$@"; do
  case "$arg" in -n|-n*|--numprocesses*|no:xdist) workers=() ;; esac
done
[ "${CDC_TEST_WORKERS:-2}" = "0" ] && workers=()
exec .venv/bin/python -m pytest "${workers[@]}" "$@"
