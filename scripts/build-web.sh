#!/usr/bin/env bash
# Builds the browser package: the crate for wasm32-unknown-unknown (profile `wasm-release`), wasm-bindgen's `--target
# web` glue into pkg/ (webr1.js, webr1_bg.wasm: generated, git-ignored), then `wasm-opt -O` when it is installed.
# Prints the .wasm size, raw and gzipped.
#
# Needs: rustup target add wasm32-unknown-unknown; cargo install wasm-bindgen-cli --version <the wasm-bindgen version
# in Cargo.lock>.
set -euo pipefail
cd "$(dirname "$0")/.."

profile="${WEBR1_WASM_PROFILE:-wasm-release}"
target_dir="${CARGO_TARGET_DIR:-target}"
want="$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/version = |"/, ""); print; exit }' Cargo.lock)"
have="$(wasm-bindgen --version 2>/dev/null | awk '{ print $2 }')" || true
if [ "$have" != "$want" ]; then
  echo "build-web: wasm-bindgen $want is needed (found '${have:-none}'):" >&2
  echo "  cargo install wasm-bindgen-cli --version $want" >&2
  exit 1
fi

cargo build --locked --target wasm32-unknown-unknown --profile "$profile" --lib
wasm="$target_dir/wasm32-unknown-unknown/$profile/webr1.wasm"
wasm-bindgen --target web --out-dir pkg --out-name webr1 --no-typescript "$wasm"

# Binaryen before version 116 corrupts the reference-types table that wasm-bindgen 0.2.130 emits (the module then fails
# to instantiate), so an older wasm-opt is skipped.
opt_version="$(wasm-opt --version 2>/dev/null | grep -oE 'version [0-9]+' | awk '{ print $2 }')" || true
if [ -n "$opt_version" ] && [ "$opt_version" -ge 116 ]; then
  wasm-opt -O --enable-bulk-memory --enable-sign-ext --enable-nontrapping-float-to-int --enable-mutable-globals \
    --enable-reference-types --enable-multivalue pkg/webr1_bg.wasm -o pkg/webr1_bg.wasm.opt
  mv pkg/webr1_bg.wasm.opt pkg/webr1_bg.wasm
else
  echo "build-web: wasm-opt ${opt_version:-not found} (116 or later is used); the .wasm is not optimised further"
fi

raw=$(stat -c %s pkg/webr1_bg.wasm)
gz=$(gzip -9 -c pkg/webr1_bg.wasm | wc -c)
printf 'build-web: pkg/webr1_bg.wasm %s bytes (%.2f MiB), gzip -9 %s bytes (%.2f MiB)\n' \
  "$raw" "$(echo "$raw / 1048576" | bc -l)" "$gz" "$(echo "$gz / 1048576" | bc -l)"
