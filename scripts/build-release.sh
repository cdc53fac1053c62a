#!/usr/bin/env bash
# Release builds of every Lambda function, as deployed: `cargo lambda build --release` (fat LTO,
# one codegen unit, stripped, panic = abort) with cargo-lambda and zig from PyPI, for
# provided.al2023 (glibc). Prints each function's zip size and fails when one exceeds 5 MB.
#
#   scripts/build-release.sh [--store postgres] [--arm64] [function ...]
#
# --store postgres  link the Postgres adapter too (a Store=postgres deployment)
# --arm64           build for Graviton (needs the aarch64-unknown-linux-gnu standard library)
# Zips land in target/lambda/<function>/bootstrap.zip.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
LIMIT=${ZX_ZIP_LIMIT:-5000000}   # 5 MB
features=()
target=()
functions=()
while [ $# -gt 0 ]; do
  case $1 in
    --store) shift; [ "${1:-}" = postgres ] && features=(--features postgres) || { [ "${1:-}" = dynamodb ] || { echo "--store dynamodb|postgres" >&2; exit 2; }; } ;;
    --arm64) target=(--target aarch64-unknown-linux-gnu) ;;
    -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
    *) functions+=("$1") ;;
  esac
  shift
done
if [ ${#functions[@]} -eq 0 ]; then
  for dir in functions/*/; do functions+=("$(basename "$dir")"); done
fi
PATH="$(scripts/venv.sh build):$PATH"
packages=()
for f in "${functions[@]}"; do
  [ -f "functions/$f/Cargo.toml" ] || { echo "no function $f" >&2; exit 2; }
  packages+=(-p "$f")
done

echo "[build] cargo lambda build --release ${features[*]} ${target[*]} (${#functions[@]} functions)"
t0=$SECONDS
# One cargo invocation for all functions: dependencies compile once; features are resolved
# over the function crates only (the tests and the local gateway, which want Postgres, are
# not part of this build).
cargo lambda build --release --locked --output-format zip "${features[@]}" "${target[@]}" "${packages[@]}"
echo "[build] done in $((SECONDS - t0)) s"

over=0
printf '%-22s %12s %12s\n' function zip_bytes bootstrap_bytes
for f in "${functions[@]}"; do
  zip=target/lambda/$f/bootstrap.zip
  size=$(stat -c %s "$zip")
  raw=$(python3 -c "import zipfile,sys; print(zipfile.ZipFile(sys.argv[1]).getinfo('bootstrap').file_size)" "$zip")
  flag=""
  if [ "$size" -gt "$LIMIT" ]; then flag="  > $LIMIT bytes"; over=$((over + 1)); fi
  printf '%-22s %12s %12s%s\n' "$f" "$size" "$raw" "$flag"
done
if [ "$over" -gt 0 ]; then
  echo "[build] $over zip(s) over $LIMIT bytes" >&2
  exit 1
fi
echo "[build] every zip <= $LIMIT bytes"
