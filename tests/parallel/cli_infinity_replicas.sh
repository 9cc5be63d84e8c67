#!/usr/bin/env bash
# cli_infinity_replicas.sh - `scalekv generate` on an Infinity model under mpirun splits the prompts
# across data-parallel replicas as VAR does: 2 replicas of TP 1 and 2 replicas of TP 2 write the images
# of the one-process run (identical pixels with TP 1, within 1 level with TP 2), each image once, each
# replica its own contiguous share (it used to redo every prompt and write every PNG on every replica).
# Sampled, not greedy, so the per-image RNG ids must stay global. Also `bench serve` on the same model
# (the engine under arrivals, ScaleKV, TP 2) writes generate's images. Skipped (77) without the golden folder.
#   cli_infinity_replicas.sh SCALEKV PNG_DIFF MPIEXEC NUMPROC_FLAG OVERSUBSCRIBE_FLAG GOLDEN_DIR
set -uo pipefail
. "$(dirname "$0")/cli_common.sh"
G=$6
[ -f "$G/infinity-tiny.config.json" ] || { echo "SKIP: $G/infinity-tiny.config.json is absent"; exit 77; }
# 5 prompts of 3..7 tokens (the embeddings format of scripts/encode_prompts.py): an uneven 3 + 2 split.
write_text_embeddings "$WORK/text.safetensors" 1 3 7 5 4 6
args=(generate --model "$G/infinity-tiny.config.json" --weights "$G/infinity-tiny.model.safetensors"
      --vae "$G/infinity-tiny.vae.safetensors" --text-embeddings "$WORK/text.safetensors" --resolution 256
      --top-k 0 --top-p 0 --seed 3 --batch 2)

"$SCALEKV" "${args[@]}" --out "$WORK/one" > "$WORK/one.log" || { cat "$WORK/one.log"; fail "one-process run failed"; }
cat "$WORK/one.log"
grep -q "wrote 5 PNGs" "$WORK/one.log" || fail "the one-process run did not write 5 PNGs"

# run NAME RANKS TP MAXDIFF: the same request under mpirun; every replica reports its share once.
run() {
  local name=$1 ranks=$2 tp=$3 maxdiff=$4
  mpirun_n "$ranks" "$SCALEKV" "${args[@]}" --tp "$tp" --out "$WORK/$name" > "$WORK/$name.log" 2>&1 ||
    { cat "$WORK/$name.log"; fail "$name run failed"; }
  cat "$WORK/$name.log"
  grep -q "replica 0/2: images 0-2 of 5; .*wrote 3 PNGs" "$WORK/$name.log" || fail "$name: replica 0 did not write prompts 0-2"
  grep -q "replica 1/2: images 3-4 of 5; .*wrote 2 PNGs" "$WORK/$name.log" || fail "$name: replica 1 did not write prompts 3-4"
  [ "$(grep -c "^replica\|generated" "$WORK/$name.log")" -eq 2 ] || fail "$name: expected exactly 2 reports (one per replica)"
  [ "$(ls "$WORK/$name"/*.png | wc -l)" -eq 5 ] || fail "$name: expected 5 PNGs"
  "$PNG_DIFF" "$WORK/one" "$WORK/$name" "$maxdiff" || fail "$name differs from the one-process run"
}
run replicas_tp1 2 1 0
run replicas_tp2 4 2 1

sargs=(--model "$G/infinity-tiny.config.json" --weights "$G/infinity-tiny.model.safetensors"
       --vae "$G/infinity-tiny.vae.safetensors" --text-embeddings "$WORK/text.safetensors" --resolution 256 --seed 3
       --kv-policy scalekv --kv-budget 25%)
"$SCALEKV" generate "${sargs[@]}" --out "$WORK/gen_skv" > /dev/null || fail "generate (ScaleKV) failed"
mpirun_n 2 "$SCALEKV" bench serve "${sargs[@]}" --tp 2 --rate 50 --kv-memory 64MiB --out "$WORK/serve_skv" \
  --json "$WORK/serve_skv.json" || fail "bench serve (Infinity, TP 2) failed"
"$PNG_DIFF" "$WORK/gen_skv" "$WORK/serve_skv" 1 || fail "bench serve differs from generate"
python3 -c "import json, sys; j = json.load(open(sys.argv[1])); assert j['images'] == 5 and j['family'] == 'infinity' \
  and 0 < j['kv_peak_bytes'] <= j['kv_cap_bytes'], j" "$WORK/serve_skv.json" || fail "bad bench serve summary"
echo "PASS"
