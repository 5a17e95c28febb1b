#!/usr/bin/env bash
# Builds the fuzz targets with SanitizerCoverage (stable rustc: LLVM's sancov pass with trace-pc-guard callbacks, which
# tests/fuzz/harness.rs implements) and runs one: fuzz/run.sh TARGET [EXECUTIONS] [SECONDS].
# Targets: gguf, gguf_chunked, tokenizer, template, openai. The build has its own target directory
# ($WEBR1_FUZZ_TARGET_DIR, default target/fuzz) so that the instrumented crates never mix with the normal build.
set -euo pipefail
cd "$(dirname "$0")"
export CARGO_TARGET_DIR="${WEBR1_FUZZ_TARGET_DIR:-../target/fuzz}"
export RUSTFLAGS="-C passes=sancov-module -C llvm-args=-sanitizer-coverage-level=3 \
  -C llvm-args=-sanitizer-coverage-trace-pc-guard -C llvm-args=-sanitizer-coverage-prune-blocks=0"
# An explicit --target keeps RUSTFLAGS off the build scripts and proc macros (they would lack the callbacks).
target="$(rustc -vV | sed -n 's/^host: //p')"
cargo build --release --quiet --target "$target"
exec "$CARGO_TARGET_DIR/$target/release/webr1-fuzz" "$@"
