# cli_common.sh - shared by the multi-rank CLI tests: arguments, a tiny VAR model, mpiexec.
# Arguments: SCALEKV PNG_DIFF MPIEXEC NUMPROC_FLAG OVERSUBSCRIBE_FLAG (may be empty).
SCALEKV=$1 PNG_DIFF=$2 MPIEXEC=$3 NP=$4 OVERSUB=$5
WORK=$(mktemp -d "${TMPDIR:-/tmp}/skv_cli_XXXXXX")
trap 'rm -rf "$WORK"' EXIT

# mpirun N ARGS...: N ranks of scalekv (oversubscribed where the MPI supports it).
mpirun_n() {
  local n=$1
  shift
  "$MPIEXEC" "$NP" "$n" $OVERSUB "$@"
}

# A 4-head VAR model (TP 1, 2 and 4 are valid) with random weights, written by scalekv itself.
make_tiny_model() {
  cat > "$WORK/tiny.config.json" <<JSON
{"family": "var", "depth": 2, "embed_dim": 64, "num_heads": 4, "patch_nums": [1, 2, 3, 4], "V": 32, "Cvae": 8,
 "num_classes": 5, "ch": 32, "vae_ch_mult": [1, 2], "vae_num_res_blocks": 1, "image_size": 8,
 "cfg": 1.5, "top_k": 3, "top_p": 0.0}
JSON
  "$SCALEKV" random-checkpoint --model "$WORK/tiny.config.json" --out "$WORK" --seed 4 >/dev/null
  MODEL_ARGS=(--model "$WORK/tiny.config.json" --weights "$WORK/tiny.var.safetensors" --vae "$WORK/tiny.vae.safetensors")
}

fail() {
  echo "FAIL: $*" >&2
  exit 1
}

# write_text_embeddings FILE SEED LEN...: prompt embeddings in scripts/encode_prompts.py's format (kv_compact F32
# [sum of LEN, 512], lens I64), random N(0, 0.3) values from SEED: prompts for the tiny Infinity model.
write_text_embeddings() {
  python3 - "$@" <<'PY' || fail "could not write the prompt embeddings $1"
import json, random, struct, sys
random.seed(int(sys.argv[2]))
lens, ch = [int(x) for x in sys.argv[3:]], 512
n = sum(lens)
kv = struct.pack(f"<{n * ch}f", *[random.gauss(0, 0.3) for _ in range(n * ch)])
ln = struct.pack(f"<{len(lens)}q", *lens)
hdr = {"kv_compact": {"dtype": "F32", "shape": [n, ch], "data_offsets": [0, len(kv)]},
       "lens": {"dtype": "I64", "shape": [len(lens)], "data_offsets": [len(kv), len(kv) + len(ln)]}}
h = json.dumps(hdr).encode()
h += b" " * (-len(h) % 8)
open(sys.argv[1], "wb").write(struct.pack("<Q", len(h)) + h + kv + ln)
PY
}

# expect_bench_serve_error TEXT ARGS...: `bench serve` of the tiny model (labels 0-4) with ARGS fails with one
# line containing TEXT.
expect_bench_serve_error() {
  local want=$1
  shift
  local out
  out=$("$SCALEKV" bench serve "${MODEL_ARGS[@]}" --labels 0-4 "$@" 2>&1) && fail "succeeded: $*"
  grep -q -- "$want" <<<"$out" || fail "'$*': expected '$want' in: $out"
  [ "$(wc -l <<<"$out")" -le 2 ] || fail "'$*': more than one line: $out"
}
