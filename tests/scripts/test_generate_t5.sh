#!/usr/bin/env bash
# test_generate_t5.sh SCALEKV T5_GOLDEN [MPIEXEC NP_FLAG OVERSUBSCRIBE] - text prompts in, images out: a tiny Infinity
# model (tests/t5/infinity-t5tiny.config.json, random weights) conditioned by the tiny T5 of scripts/make_t5_golden.py.
#   1. `generate --t5 DIR --prompts FILE` writes the same PNGs, byte for byte, as `encode-text` followed by
#      `generate --text-embeddings` (encode-text itself is checked against scripts/encode_prompts.py elsewhere);
#      `--prompt TEXT` (repeated) equals the file; different prompts give different images.
#   2. With mpiexec: `generate --tp 2 --t5` writes the TP 1 images, and so do 2 data-parallel replicas
#      (`--tp 1` on 2 ranks), each encoding only its own prompts.
#   3. `calibrate --t5 DIR --prompts FILE` writes the table `calibrate --text-embeddings` writes.
#   4. `plan --t5 DIR` reports the encoder weights encode-text placed.
set -euo pipefail
SKV=$1 G=$2/sharded MPIEXEC=${3:-} NP=${4:--n} OVERSUB=${5:-}
HERE=$(cd "$(dirname "$0")" && pwd)
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
"$SKV" random-checkpoint --model "$HERE/../t5/infinity-t5tiny.config.json" --out "$T/m" --seed 3 >/dev/null
M=(--model "$T/m/infinity-t5tiny.config.json" --weights "$T/m/infinity-t5tiny.model.safetensors"
   --vae "$T/m/infinity-t5tiny.vae.safetensors")
printf 'a red fox in the snow\n\n  a watercolor castle at night  \n' > "$T/prompts.txt"
"$SKV" generate "${M[@]}" --t5 "$G" --prompts "$T/prompts.txt" --seed 5 --out "$T/direct" | tee "$T/log"
grep -q "encoded 2 prompts" "$T/log"
"$SKV" encode-text --t5 "$G" --prompts "$T/prompts.txt" --out "$T/text.safetensors" | tee "$T/enc.log"
# plan --t5 counts the encoder's weights from its config alone: the bytes encode-text placed.
w=$(grep -o '[0-9.]* [KMG]*i*B weights' "$T/enc.log")
"$SKV" plan "${M[0]}" "${M[1]}" --t5 "$G" | grep "text encoder .*: $w and .* activations (512 tokens) per rank; freed"
"$SKV" generate "${M[@]}" --text-embeddings "$T/text.safetensors" --seed 5 --out "$T/via_file"
"$SKV" generate "${M[@]}" --t5 "$G" --prompt "a red fox in the snow" --prompt "a watercolor castle at night" --seed 5 \
  --out "$T/flags"
for f in 0000.png 0001.png; do
  cmp "$T/direct/$f" "$T/via_file/$f"
  cmp "$T/direct/$f" "$T/flags/$f"
done
if cmp -s "$T/direct/0000.png" "$T/direct/0001.png"; then echo "two prompts gave the same image" >&2; exit 1; fi
if [ -n "$MPIEXEC" ]; then
  "$MPIEXEC" $NP 2 $OVERSUB "$SKV" generate --tp 2 "${M[@]}" --t5 "$G" --prompts "$T/prompts.txt" --seed 5 --out "$T/tp2"
  for f in 0000.png 0001.png; do cmp "$T/direct/$f" "$T/tp2/$f"; done
  # Two data-parallel replicas (TP 1): each encodes and draws only its own prompt, the images are the same.
  "$MPIEXEC" $NP 2 $OVERSUB "$SKV" generate --tp 1 "${M[@]}" --t5 "$G" --prompts "$T/prompts.txt" --seed 5 --out "$T/dp2" \
    > "$T/dp2.log"
  for f in 0000.png 0001.png; do cmp "$T/direct/$f" "$T/dp2/$f"; done
  [ "$(grep -c '^replica ' "$T/dp2.log")" = 2 ] || { echo "expected a report from each of 2 replicas:" >&2; cat "$T/dp2.log" >&2; exit 1; }
fi
"$SKV" calibrate "${M[@]}" --t5 "$G" --prompts "$T/prompts.txt" --out "$T/b1.json" >/dev/null
"$SKV" calibrate "${M[@]}" --text-embeddings "$T/text.safetensors" --out "$T/b2.json" >/dev/null
cmp "$T/b1.json" "$T/b2.json"
echo "test_generate_t5: OK"
