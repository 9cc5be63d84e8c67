#!/usr/bin/env bash
# test_t5_bad_input.sh SCALEKV T5_GOLDEN PYTHON - bad input to the T5 text encoder (`encode-text`, `generate --t5`):
# every case exits non-zero with ONE line "error: ..." naming the file, field, tensor or line at fault.
# The broken checkpoints are copies of the tiny golden (scripts/make_t5_golden.py) with one thing changed.
set -uo pipefail
bin=$1 G=$2 PY=$3
HERE=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
source "$HERE/expect_error.sh"
copy() { rm -rf "$work/$1"; cp -r "$G/$2" "$work/$1"; }
json_edit() {  # json_edit FILE PYTHON-STATEMENT-ON-c
  "$PY" - "$1" "$2" <<'PY'
import json, sys
p, stmt = sys.argv[1], sys.argv[2]
c = json.load(open(p))
exec(stmt)
json.dump(c, open(p, "w"))
PY
}
printf 'a red fox\n' >"$work/p.txt"

# Prompts.
: >"$work/empty.txt"
expect_error "empty.txt: no prompts" encode-text --t5 "$G/f32" --prompts "$work/empty.txt" --out "$work/o.safetensors"
printf '\n  \n\t\n' >"$work/blank.txt"
expect_error "blank.txt: no prompts" encode-text --t5 "$G/f32" --prompts "$work/blank.txt" --out "$work/o.safetensors"
printf 'fine\ncaf\xe9 latin-1\n' >"$work/latin1.txt"
expect_error "latin1.txt: line 2: not valid UTF-8 (byte 3 is 0xe9" encode-text --t5 "$G/f32" --prompts "$work/latin1.txt" --out "$work/o.safetensors"
expect_error "--prompt 1: not valid UTF-8" encode-text --t5 "$G/f32" --prompt "$(printf 'bad \xff byte')" --out "$work/o.safetensors"
expect_error "no such file" encode-text --t5 "$G/f32" --prompts "$work/none.txt" --out "$work/o.safetensors"
expect_error "either --prompts FILE or --prompt TEXT" encode-text --t5 "$G/f32" --out "$work/o.safetensors"

# Config.
expect_error "not a folder" encode-text --t5 "$work/nothere" --prompts "$work/p.txt" --out "$work/o.safetensors"
copy bert f32; json_edit "$work/bert/config.json" 'c["model_type"] = "bert"'
expect_error "bert/config.json: model_type is 'bert', not 't5'" encode-text --t5 "$work/bert" --prompts "$work/p.txt" --out "$work/o.safetensors"
copy nodm f32; json_edit "$work/nodm/config.json" 'del c["d_model"]'
expect_error "nodm/config.json.*d_model" encode-text --t5 "$work/nodm" --prompts "$work/p.txt" --out "$work/o.safetensors"
copy gelu f32; json_edit "$work/gelu/config.json" 'c["feed_forward_proj"] = "gelu"'
expect_error "feed_forward_proj 'gelu' is not supported" encode-text --t5 "$work/gelu" --prompts "$work/p.txt" --out "$work/o.safetensors"
copy noconf f32; rm "$work/noconf/config.json"
expect_error "noconf/config.json: no such file" encode-text --t5 "$work/noconf" --prompts "$work/p.txt" --out "$work/o.safetensors"

# Tensors.
copy wide f32; json_edit "$work/wide/config.json" 'c["d_ff"] = 256'
expect_error "tensor 'encoder.block.0.layer.1.DenseReluDense.wi_0.weight' has shape \[192, 128\], expected \[256, 128\]" encode-text --t5 "$work/wide" --prompts "$work/p.txt" --out "$work/o.safetensors"
copy deep f32; json_edit "$work/deep/config.json" 'c["num_layers"] = 4'
expect_error "tensor 'encoder.block.3.layer.0.layer_norm.weight' is missing" encode-text --t5 "$work/deep" --prompts "$work/p.txt" --out "$work/o.safetensors"
copy noweights f32; rm "$work/noweights/model.safetensors"
expect_error "neither model.safetensors nor model.safetensors.index.json" encode-text --t5 "$work/noweights" --prompts "$work/p.txt" --out "$work/o.safetensors"
copy shard sharded; rm "$work/shard/model-00002-of-"*.safetensors
expect_error "model.safetensors.index.json: names shard 'model-00002-of-.*which is missing" encode-text --t5 "$work/shard" --prompts "$work/p.txt" --out "$work/o.safetensors"
copy badidx sharded; json_edit "$work/badidx/model.safetensors.index.json" 'k = "encoder.final_layer_norm.weight"; f = c["weight_map"][k]; c["weight_map"][k] = [x for x in sorted(set(c["weight_map"].values())) if x != f][0]'
expect_error "tensor 'encoder.final_layer_norm.weight' is mapped to .* but is not in it" encode-text --t5 "$work/badidx" --prompts "$work/p.txt" --out "$work/o.safetensors"
copy nospm f32; rm "$work/nospm/spiece.model"
expect_error "nospm/spiece.model: no such file" encode-text --t5 "$work/nospm" --prompts "$work/p.txt" --out "$work/o.safetensors"
copy badspm f32; head -c 300 "$G/f32/spiece.model" >"$work/badspm/spiece.model"
expect_error "badspm/spiece.model: not a SentencePiece model" encode-text --t5 "$work/badspm" --prompts "$work/p.txt" --out "$work/o.safetensors"

# generate --t5: the T5 must be the model's text encoder; one source of text.
"$bin" random-checkpoint --model "$HERE/../t5/infinity-t5tiny.config.json" --out "$work/m" >/dev/null
M=(--model "$work/m/infinity-t5tiny.config.json" --weights "$work/m/infinity-t5tiny.model.safetensors" --vae "$work/m/infinity-t5tiny.vae.safetensors")
copy narrow f32; json_edit "$work/narrow/config.json" 'c["d_model"] = 256'
expect_error "d_model 256 but .* expects text_channels 128" generate "${M[@]}" --t5 "$work/narrow" --prompt "a fox" --out "$work/g"
expect_error "--t5 needs the prompts" generate "${M[@]}" --t5 "$G/f32" --out "$work/g"
expect_error "--prompt / --prompts need --t5 DIR" generate "${M[@]}" --prompt "a fox" --out "$work/g"
expect_error "not --text-embeddings" generate "${M[@]}" --t5 "$G/f32" --prompt "a fox" --text-embeddings "$work/x" --out "$work/g"
expect_error "empty.txt: no prompts" generate "${M[@]}" --t5 "$G/f32" --prompts "$work/empty.txt" --out "$work/g"

if [ $fails -ne 0 ]; then echo "$fails case(s) failed"; exit 1; fi
echo "test_t5_bad_input: OK"
