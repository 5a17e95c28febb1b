#!/usr/bin/env bash
# Makes what tests/big_models.rs reads, then runs it: synthetic r1-qwen-7b, r1-llama-8b and r1-qwen-14b files (random
# weights at the exact shapes, `webr1 synth`), the token ids fed to them, and llama.cpp CPU's teacher-forced logits
# for 7B and 8B (scripts/llamacpp-logits.c built against llama.cpp's library), on each file and on a copy converted to
# F16 with llama-quantize (made, used and deleted one at a time: ~16 GB each).
#
#   scripts/big-models.sh DIR [LLAMACPP]
#
# DIR receives ~19 GB of files (delete them afterwards). LLAMACPP is a llama.cpp tree built for CPU, as
# ../shared/scripts/build-llamacpp.sh cpu leaves it (default ${WEBR1_LLAMACPP:-$HOME/.cache/webr1-llamacpp}:
# src/vendor/llama.cpp, build-cpu/bin/libllama.so and llama-quantize). r1-llama-8b needs llama.cpp's Llama-3 vocabulary ($WEBR1_VOCAB_TESTS, default
# ~/.cache/webr1-vocab-tests; ../shared/scripts/fetch-vocab-tests.sh). Takes about an hour on 2 cores with lavapipe.
set -euo pipefail
cd "$(dirname "$0")/.."
dir="${1:?usage: big-models.sh DIR [LLAMACPP]}"
llama="${2:-${WEBR1_LLAMACPP:-$HOME/.cache/webr1-llamacpp}}"
vocab="${WEBR1_VOCAB_TESTS:-$HOME/.cache/webr1-vocab-tests}/ggml-vocab-llama-bpe.gguf"
mkdir -p "$dir"
cargo build --release --locked
webr1="${CARGO_TARGET_DIR:-target}/release/webr1"

cc -O2 -o "$dir/llamacpp-logits" scripts/llamacpp-logits.c -I "$llama/src/vendor/llama.cpp/include" \
  -I "$llama/src/vendor/llama.cpp/ggml/include" -L "$llama/build-cpu/bin" -lllama -lggml -lggml-base -lm \
  -Wl,-rpath,"$llama/build-cpu/bin"

# The text fed to both: BOS and the first tokens of a sentence, 32 positions.
text="The history of all hitherto existing society is the history of class struggles. Freeman and slave, patrician and plebeian, lord and serf"
for name in r1-qwen-7b r1-llama-8b r1-qwen-14b; do
  args=()
  [ "$name" = r1-llama-8b ] && args=(--vocab "$vocab")
  [ -f "$dir/$name.gguf" ] || "$webr1" synth "$name" "${args[@]}" -o "$dir/$name.gguf"
  [ "$name" = r1-qwen-14b ] && continue
  printf '%s' "$text" | "$webr1" tokenize "$dir/$name.gguf" --bos --json \
    | python3 -c 'import json, sys; print(" ".join(map(str, json.load(sys.stdin)[:32])))' > "$dir/$name.ids"
  start=$(date +%s)
  "$dir/llamacpp-logits" "$dir/$name.gguf" "$dir/$name.ids" 5 "$(nproc)" > "$dir/$name.llamacpp.jsonl"
  echo "big-models: llama.cpp's logits of $name in $(( $(date +%s) - start )) s"
  "$llama/build-cpu/bin/llama-quantize" --allow-requantize "$dir/$name.gguf" "$dir/$name-f16.gguf" F16 "$(nproc)" >/dev/null
  "$dir/llamacpp-logits" "$dir/$name-f16.gguf" "$dir/$name.ids" 5 "$(nproc)" > "$dir/$name.llamacpp-f16.jsonl"
  rm "$dir/$name-f16.gguf"
done
WEBR1_SLOW=1 WEBR1_BIG_MODELS="$dir" cargo test --release --locked --test big_models -- --nocapture --test-threads=1
