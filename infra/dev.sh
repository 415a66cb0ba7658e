#!/usr/bin/env bash
# One entry point for a fresh machine: creates .venv, installs racewire, then runs the command.
#   infra/dev.sh test [pytest args]   lint (ruff, mypy) and run the whole test suite
#   infra/dev.sh up [racewire up args] run the whole system (embedded services, flow, serving, race)
#   infra/dev.sh <racewire sub-command> ...
set -euo pipefail
cd "$(dirname "$0")/.."

pick_python() {
  for candidate in "${PYTHON:-}" python3.12 python3.11 python3; do
    [[ -n "$candidate" ]] || continue
    if command -v "$candidate" >/dev/null 2>&1 &&
      "$candidate" -c 'import sys; sys.exit(0 if (3, 11) <= sys.version_info[:2] <= (3, 12) else 1)'; then
      echo "$candidate"
      return
    fi
  done
  echo "racewire needs Python 3.11 or 3.12 (set PYTHON=/path/to/python)" >&2
  exit 2
}

if [[ ! -x .venv/bin/python ]]; then
  "$(pick_python)" -m venv .venv
fi
stamp=.venv/.racewire-installed
if [[ ! -f $stamp || pyproject.toml -nt $stamp ]]; then
  echo "installing racewire and its dependencies into .venv ..." >&2
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -e '.[dev]'
  touch "$stamp"
fi

cmd=${1:-up}
shift || true
case "$cmd" in
  test)
    .venv/bin/ruff check .
    .venv/bin/mypy
    exec .venv/bin/python -m pytest "$@"
    ;;
  *)
    exec .venv/bin/racewire "$cmd" "$@"
    ;;
esac
