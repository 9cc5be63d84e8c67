# quality_common.sh - sourced by quality_table.sh and quality_bf16.sh: one row of a quality table is one
# `scalekv generate` of the same requests, scored by scripts/eval/evaluate.py (scripts/bench/quality_rows.py
# reads the rows back).
#   quality_setup SCRIPT_NAME   checks the build and PyTorch, sets threads, starts OUT/runs.txt
#   quality_run NAME REF ARGS   generates OUT/NAME, scores it (PSNR/SSIM against OUT/REF unless REF is empty)
# The caller sets bin, out, per_class and seed.
quality_setup() {
  [ -x "$bin" ] || { echo "$1: build first (scripts/test.sh or cmake --build build)"; exit 1; }
  /usr/bin/python3 -c "import torch, PIL" 2>/dev/null ||
    { echo "$1: needs Debian's PyTorch and PIL (scripts/setup.sh --torch)"; exit 1; }
  threads=$(nproc)
  export OMP_NUM_THREADS=$threads OPENBLAS_NUM_THREADS=1 SKV_PROGRESS=0
  mkdir -p "$out"
  : > "$out/runs.txt"
}

quality_run() {
  local name=$1 ref=$2; shift 2
  rm -rf "${out:?}/$name"
  local log
  log=$("$bin" generate --labels "0-9x$per_class" --seed "$seed" --batch 50 --out "$out/$name" "$@")
  echo "$name|$*|$log" | tr '\n' ' ' >> "$out/runs.txt"
  echo >> "$out/runs.txt"
  /usr/bin/python3 scripts/eval/evaluate.py "$out/$name" --threads "$threads" --json "$out/$name.eval.json" \
    $( [ -z "$ref" ] || echo --reference "$out/$ref" ) > /dev/null
  echo "  $name done"
}
