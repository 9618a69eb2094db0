#!/usr/bin/env bash
# Creates (or refreshes) the local virtualenv .venv/ with the pinned Python tools of hack/requirements.txt.
# Re-installs only when requirements.txt changed since the last install. Prints the venv path.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
stamp="$VENV/.requirements.sha256"
want="$(sha256sum hack/requirements.txt | cut -d' ' -f1)"
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "venv: installing hack/requirements.txt into $VENV" >&2
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip >/dev/null
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r hack/requirements.txt
  echo "$want" > "$stamp"
fi
echo "$VENV"
