#!/usr/bin/env bash
# Bad input through the CLI: every case must exit non-zero with ONE line "error: ..." naming the
# file/field/value at fault - never a crash, a hang or a silent wrong answer.
#   test_cli_errors.sh SCALEKV_BINARY GOLDEN_DIR
set -uo pipefail
bin=$1 golden=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
source "$(dirname "$0")/expect_error.sh"
cfg="$golden/var-tiny-a.config.json" w="$golden/var-tiny-a.var.safetensors" v="$golden/var-tiny-a.vae.safetensors"
if [ ! -f "$cfg" ]; then echo "SKIP: golden folder $golden is absent"; exit 77; fi

head -c 1000 "$w" >"$work/trunc.safetensors"
expect_error "trunc.safetensors.*truncated" generate --model "$cfg" --weights "$work/trunc.safetensors" --vae "$v" --out "$work/o"
printf '\x08\x00\x00\x00\x00\x00\x00\x00{"a": 12' >"$work/badjson.safetensors"
expect_error "badjson.safetensors.*not valid JSON" inspect "$work/badjson.safetensors"
expect_error "var.safetensors: missing tensor 'quantize.embedding.weight'" generate --model "$cfg" --weights "$w" --vae "$w" --out "$work/o"
echo '{"depth": 4' >"$work/bad.json"
expect_error "bad.json: not valid JSON" generate --model "$work/bad.json" --weights "$w" --vae "$v" --out "$work/o"
sed 's/"embed_dim": 256/"embed_dim": 512/' "$cfg" >"$work/wide.json"
expect_error "tensor 'word_embed.weight' has shape \[256, 32\], expected \[512, 32\]" generate --model "$work/wide.json" --weights "$w" --vae "$v" --out "$work/o"
sed 's/"num_heads": 4/"num_heads": 3/' "$cfg" >"$work/heads.json"
expect_error "field 'num_heads'" generate --model "$work/heads.json" --weights "$w" --vae "$v" --out "$work/o"
expect_error "class label 12 outside \[0, 10)" generate --model "$cfg" --weights "$w" --vae "$v" --labels 3,12 --out "$work/o"
expect_error "--labels '3,x'" generate --model "$cfg" --weights "$w" --vae "$v" --labels 3,x --out "$work/o"
expect_error "unknown device 'tpu'" generate --model "$cfg" --weights "$w" --vae "$v" --device tpu --out "$work/o"
expect_error "no such file" generate --model "$cfg" --weights "$work/none.safetensors" --vae "$v" --out "$work/o"
expect_error "--top-p 2 must be in \[0, 1\]" generate --model "$cfg" --weights "$w" --vae "$v" --top-p 2 --out "$work/o"
expect_error "--compute-dtype f16: use f32 or bf16" generate --model "$cfg" --weights "$w" --vae "$v" --compute-dtype f16 --out "$work/o"
expect_error "cannot be combined with --weight-dtype f16" generate --model "$cfg" --weights "$w" --vae "$v" --compute-dtype bf16 --weight-dtype f16 --out "$work/o"
# A CPU without avx512_bf16, as oneDNN sees it when capped to plain AVX-512 (ONEDNN_MAX_CPU_ISA).
ONEDNN_MAX_CPU_ISA=AVX512_CORE expect_error "needs avx512_bf16.*this CPU lacks" generate --model "$cfg" --weights "$w" --vae "$v" --compute-dtype bf16 --out "$work/o"
[ $fails -eq 0 ] && echo "all bad-input cases give one clear line" || { echo "$fails case(s) failed"; exit 1; }
