#!/usr/bin/env bash
# Prints the bin/ directory of a virtualenv holding scripts/requirements/<name>.txt (pinned, from
# PyPI), creating it on first use under $ZX_CACHE_DIR (default ~/.cache/zhixuan). The
# directory's name carries a hash of the requirements, so a change of pins makes a new one.
#
#   PATH="$(scripts/venv.sh build):$PATH"
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
name=${1:?usage: scripts/venv.sh check|build|bench}
req=$ROOT/scripts/requirements/$name.txt
[ -f "$req" ] || { echo "no $req" >&2; exit 1; }
CACHE=${ZX_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/zhixuan}
hash=$(sha256sum "$req" | cut -c1-12)
venv=$CACHE/venv-$name-$hash
if [ ! -f "$venv/.complete" ]; then
  rm -rf "$venv"
  echo "[venv] installing $(tr '\n' ' ' < "$req")into $venv" >&2
  python3 -m venv "$venv" >&2
  "$venv/bin/pip" install -q --disable-pip-version-check -r "$req" >&2
  touch "$venv/.complete"
fi
echo "$venv/bin"
