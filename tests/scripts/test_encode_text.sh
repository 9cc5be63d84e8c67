#!/usr/bin/env bash
# test_encode_text.sh SCALEKV GOLDEN PYTHON [MPIEXEC NP_FLAG OVERSUBSCRIBE] - `scalekv encode-text` writes what
# scripts/encode_prompts.py writes on the same T5 folder (the tiny golden of scripts/make_t5_golden.py, sharded
# checkpoint): same metadata, tensors, dtypes and lens, kv_compact within 1e-4 relative; on 1 rank and, when
# mpiexec is given, with the encoder split over 2 tensor-parallel ranks.
set -euo pipefail
SKV=$1 G=$2 PY=$3 MPIEXEC=${4:-} NP=${5:--n} OVERSUB=${6:-}
HERE=$(cd "$(dirname "$0")" && pwd)
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
# Lines as a user writes them: blank lines, CRLF, surrounding whitespace (stripped), tabs and runs of spaces
# inside, special tokens, characters outside the vocabulary, a prompt longer than 512 tokens.
{
  printf 'a red fox in the snow\n\n'
  printf '   leading and trailing spaces   \r\n'
  printf 'tab\tinside and  two  spaces\n'
  printf 'hello <extra_id_0> world </s> end\n'
  printf 'emoji \xf0\x9f\x98\x80 caf\xc3\xa9 \xef\xbc\xa6\xef\xbd\x95\xef\xbd\x8c\xef\xbd\x8c\n'
  printf '\n  \t \n'
  for i in $(seq 1 300); do printf 'golden watercolor '; done
  printf '\n'
} > "$T/prompts.txt"
"$PY" "$HERE/../../scripts/encode_prompts.py" "$T/prompts.txt" --t5 "$G/sharded" --out "$T/ref.safetensors" 2>/dev/null
"$SKV" encode-text --t5 "$G/sharded" --prompts "$T/prompts.txt" --out "$T/ours.safetensors"
"$PY" "$HERE/compare_text_embeddings.py" "$T/ref.safetensors" "$T/ours.safetensors"
if [ -n "$MPIEXEC" ]; then
  "$MPIEXEC" $NP 2 $OVERSUB "$SKV" encode-text --tp 2 --t5 "$G/sharded" --prompts "$T/prompts.txt" --out "$T/tp2.safetensors"
  "$PY" "$HERE/compare_text_embeddings.py" "$T/ref.safetensors" "$T/tp2.safetensors"
fi
echo "test_encode_text: OK"
