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
