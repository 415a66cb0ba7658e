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

# System packages the tests use when present: Debian's docker-compose (validates
# docker-compose.yml offline) and chromium (the browser test; never a downloaded browser).
# Installed in CI, or anywhere with RACEWIRE_INSTALL_SYSTEM_DEPS=1, when apt-get can be used.
install_system_deps() {
  local missing=()
  command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)
  [[ -x /usr/bin/chromium ]] || missing+=(chromium)
  ((${#missing[@]})) || return 0
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
    echo "installing ${missing[*]} (Debian packages) ..." >&2
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"; } >&2 ||
      echo "could not install ${missing[*]}; the tests that need them will be skipped" >&2
  else
    echo "missing ${missing[*]}; the tests that need them will be skipped" >&2
  fi
}

cmd=${1:-up}
shift || true
case "$cmd" in
  test)
    if [[ ${CI:-} == true || ${RACEWIRE_INSTALL_SYSTEM_DEPS:-} == 1 ]]; then install_system_deps; fi
    .venv/bin/ruff check .
    .venv/bin/mypy
    .venv/bin/lint-imports
    exec .venv/bin/python -m pytest "$@"
    ;;
  *)
    exec .venv/bin/racewire "$cmd" "$@"
    ;;
esac
