#!/usr/bin/env bash
# The hostile-input suite (issue 15), grouped by the issue's classes. It generates every input itself
# (FIFOs, oversized integers, duplicate names, corrupted goldens, a full filesystem) and asserts, for
# each case: a non-zero exit within a time bound (`timeout`), one line "error: ..." on stderr, and a
# message naming the input (file, key, tensor or option). A few cases assert the opposite: that a
# harmless problem only warns, or that a partial output is complete.
#   test_hostile_inputs.sh SCALEKV_BINARY GOLDEN_DIR [CLASS...]    (no CLASS: all of them)
# The multi-rank cases (bad file on one rank, killed or stopped rank) are tests/parallel/cli_rank_failure.sh.
set -uo pipefail
bin=$1 golden=$2
shift 2
only=" $* "
work=$(mktemp -d)
mnt=""
cleanup() {
  [ -n "$mnt" ] && umount "$mnt" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
LIMIT=${SKV_HOSTILE_LIMIT:-20}  # seconds per case: every one of them fails fast or hangs

want() { [ "$only" = "  " ] || [[ "$only" == *" $1 "* ]]; }
section() { echo; echo "== class $1: $2"; }
bad() { echo "FAIL: $*"; fails=$((fails + 1)); }

EXPECT_LIMIT=$LIMIT
source "$(dirname "$0")/expect_error.sh"  # expect_error PATTERN ARGS...

# expect_ok_warning PATTERN ARGS... : exit 0, a "warning: ...PATTERN..." line
expect_warning() {
  local pat=$1; shift
  cases=$((cases + 1))
  timeout -k 5 "$LIMIT" "$bin" "$@" >"$work/out" 2>"$work/err"
  local rc=$?
  if [ $rc -ne 0 ] || ! grep -q -- "^warning: .*$pat" "$work/err"; then
    bad "(rc=$rc, want a warning /$pat/): scalekv $*"; sed 's/^/  stderr: /' "$work/err" | head -5
  else
    echo "ok (warns): $(grep '^warning' "$work/err" | head -1 | cut -c1-200)"
  fi
}

src=$(cd "$(dirname "$0")/../.." && pwd)
demo_dir="$src/models/demo"
cfg="$demo_dir/var-fmnist.config.json" w="$demo_dir/var-fmnist.var.safetensors" v="$demo_dir/var-fmnist.vae.safetensors"
[ -f "$cfg" ] || { echo "SKIP: the demo model is absent ($cfg)"; exit 77; }
M=(--model "$cfg" --weights "$w" --vae "$v")

# A JSON file with one top-level key set to a raw JSON value (python3 is part of the build's dependencies).
json_set() {  # json_set IN OUT KEY VALUE [SUBOBJECT]
  python3 - "$@" <<'PY'
import json, sys
src, dst, key, value = sys.argv[1:5]
j = json.load(open(src))
obj = j[sys.argv[5]] if len(sys.argv) > 5 else j
obj[key] = json.loads(value)
open(dst, "w").write(json.dumps(j, indent=1))
PY
}

# safetensors surgery without torch: keep/drop/overwrite tensors of a file.
st_edit() {  # st_edit IN OUT 'python statements on dict t of name -> (dtype, shape, bytes)'
  python3 - "$@" <<'PY'
import json, struct, sys
src, dst, code = sys.argv[1:4]
d = open(src, "rb").read()
n = struct.unpack("<Q", d[:8])[0]
h = json.loads(d[8:8 + n])
meta = h.pop("__metadata__", None)
t = {k: (v["dtype"], v["shape"], d[8 + n + v["data_offsets"][0]:8 + n + v["data_offsets"][1]]) for k, v in h.items()}
exec(code)
hdr, blobs, off = {}, [], 0
for k, (dt, shape, b) in t.items():
    hdr[k] = {"dtype": dt, "shape": shape, "data_offsets": [off, off + len(b)]}
    blobs.append(b); off += len(b)
if meta: hdr["__metadata__"] = meta
hb = json.dumps(hdr).encode(); hb += b" " * (-len(hb) % 8)
open(dst, "wb").write(struct.pack("<Q", len(hb)) + hb + b"".join(blobs))
PY
}

if want 1; then
  section 1 "special files are refused at once, never opened in a way that blocks"
  mkfifo "$work/fifo.safetensors" "$work/fifo.json" "$work/fifo.txt"
  mkdir -p "$work/dir.safetensors"
  expect_error "fifo.safetensors: is a FIFO (named pipe), not a regular file" generate --model "$cfg" --weights "$work/fifo.safetensors" --vae "$v" --out "$work/o1"
  expect_error "fifo.safetensors: is a FIFO" generate --model "$cfg" --weights "$w" --vae "$work/fifo.safetensors" --out "$work/o1"
  expect_error "fifo.json: is a FIFO" generate --model "$work/fifo.json" --weights "$w" --vae "$v" --out "$work/o1"
  expect_error "fifo.safetensors: is a FIFO" inspect "$work/fifo.safetensors"
  expect_error "dir.safetensors: is a directory, not a regular file" inspect "$work/dir.safetensors"
  expect_error "/dev/zero: is a character device" generate --model "$cfg" --weights /dev/zero --vae "$v" --out "$work/o1"
  expect_error "fifo.json: is a FIFO" generate "${M[@]}" --kv-policy scalekv --kv-budget-table "$work/fifo.json" --out "$work/o1"
  expect_error "fifo.json: is a FIFO" plan --model "$cfg" --kv-policy scalekv --kv-budget-table "$work/fifo.json"
  expect_error "fifo.txt: is a FIFO" calibrate "${M[@]}" --prompts "$work/fifo.txt" --out "$work/t.json"
  if [ -f "$golden/var-tiny-a.config.json" ]; then
    mkdir -p "$work/g1"
    for f in config.json var.safetensors vae.safetensors; do ln -s "$golden/var-tiny-a.$f" "$work/g1/x.$f"; done
    mkfifo "$work/g1/x.expected.safetensors"
    expect_error "x.expected.safetensors: is a FIFO" verify-golden --dir "$work/g1" --name x
  fi
fi

if want 2; then
  section 2 "NaN and Inf in weights, inputs and activations stop the run naming the tensor, block or scale"
  st_edit "$w" "$work/nan.safetensors" 'import struct; dt, sh, b = t["blocks.3.attn.proj.weight"]; t["blocks.3.attn.proj.weight"] = (dt, sh, struct.pack("<H", 0x7e00) * (len(b) // 2))'
  expect_error "nan.safetensors: tensor 'blocks.3.attn.proj.weight' holds 65536 non-finite values (first: nan" generate --model "$cfg" --weights "$work/nan.safetensors" --vae "$v" --labels 0-3 --out "$work/o2"
  st_edit "$v" "$work/infvae.safetensors" 'import struct; k = [n for n in t if n.endswith("conv_out.weight")][0]; dt, sh, b = t[k]; t[k] = (dt, sh, struct.pack("<H", 0x7c00) + b[2:])'
  expect_error "infvae.safetensors: tensor '.*conv_out.weight' holds 1 non-finite value (first: inf" generate --model "$cfg" --weights "$w" --vae "$work/infvae.safetensors" --labels 0 --out "$work/o2"
  if [ -f "$golden/infinity-tiny.config.json" ]; then
    python3 - "$work/nantext.safetensors" <<'PY'
import json, struct, sys
n, length, ch = 1, 3, 512
vals = [0.01] * (n * length * ch); vals[700] = float("nan")
kv = struct.pack(f"<{len(vals)}f", *vals)
lens = struct.pack("<q", length)
hdr = {"kv_compact": {"dtype": "F32", "shape": [n * length, ch], "data_offsets": [0, len(kv)]},
       "lens": {"dtype": "I64", "shape": [n], "data_offsets": [len(kv), len(kv) + len(lens)]}}
h = json.dumps(hdr).encode(); h += b" " * (-len(h) % 8)
open(sys.argv[1], "wb").write(struct.pack("<Q", len(h)) + h + kv + lens)
PY
    expect_error "nantext.safetensors: tensor 'kv_compact' (the prompt embeddings) holds 1 non-finite value (first: nan at element 700" generate --model "$golden/infinity-tiny.config.json" --weights "$golden/infinity-tiny.model.safetensors" --vae "$golden/infinity-tiny.vae.safetensors" --text-embeddings "$work/nantext.safetensors" --resolution 256 --out "$work/o2"
  fi
fi

if want 3; then
  section 3 "config integers are 64-bit, range-checked; misspelt keys are named"
  json_set "$cfg" "$work/depth.json" depth 4294967302
  expect_error "depth.json: field 'depth' is 4294967302, outside \[1, 4096\]" generate --model "$work/depth.json" --weights "$w" --vae "$v" --out "$work/o3"
  json_set "$cfg" "$work/embed.json" embed_dim 4294967552
  expect_error "embed.json: field 'embed_dim' is 4294967552" plan --model "$work/embed.json"
  json_set "$cfg" "$work/huge.json" V 18446744073709551615
  expect_error "huge.json: field 'V' is 18446744073709551615, which is not a 64-bit integer" plan --model "$work/huge.json"
  json_set "$cfg" "$work/pn.json" patch_nums "[1, 2, 4294967299]"
  expect_error "pn.json: field 'patch_nums' holds 4294967299" plan --model "$work/pn.json"
  json_set "$cfg" "$work/float.json" depth 6.5
  expect_error "float.json: field 'depth' is 6.5" plan --model "$work/float.json"
  json_set "$cfg" "$work/topk.json" top_k 1e300
  expect_error "topk.json: field 'top_k' is 1e+300" generate --model "$work/topk.json" --weights "$w" --vae "$v" --out "$work/o3"
  json_set "$cfg" "$work/typo.json" kv_windw 4
  expect_error "typo.json: unknown field 'kv_windw': did you mean 'kv_window'?" generate --model "$work/typo.json" --weights "$w" --vae "$v" --out "$work/o3"
  sed 's/"depth": 6,/"depth": 6, "depth": 4,/' "$cfg" > "$work/dupkey.json"
  expect_error "dupkey.json: key 'depth' appears twice" plan --model "$work/dupkey.json"
  json_set "$cfg" "$work/extra.json" trained_by '"someone"'
  expect_warning "extra.json: unknown field 'trained_by' is ignored" plan --model "$work/extra.json"
  if [ -f "$golden/infinity-tiny.config.json" ]; then
    json_set "$golden/infinity-tiny.config.json" "$work/inf.json" embed_dim 4294967552 infinity_kwargs
    expect_error "field 'embed_dim' is 4294967552" plan --model "$work/inf.json"
    json_set "$golden/infinity-tiny.config.json" "$work/inf2.json" num_head 2 infinity_kwargs
    expect_error "unknown field 'num_head': did you mean 'num_heads'?" plan --model "$work/inf2.json"
  fi
  echo '{"format": "scalekv-budget-table", "depth": 6, "base_capacity": 18446744073709551615, "scales": []}' > "$work/bt.json"
  expect_error "bt.json: 'base_capacity' must be an integer" generate "${M[@]}" --kv-policy scalekv --kv-budget-table "$work/bt.json" --out "$work/o3"
  echo '{"format": "scalekv-budget-table", "depth": 4294967302, "base_capacity": 10, "scales": []}' > "$work/bt2.json"
  expect_error "bt2.json: 'depth' is 4294967302, outside" plan --model "$cfg" --kv-policy scalekv --kv-budget-table "$work/bt2.json"
  echo '{"Scale 99999999999": {"Block 0": 1}}' > "$work/bt3.json"
  expect_error "bt3.json: unexpected entry 'Scale 99999999999'" plan --model "$cfg" --kv-policy scalekv --kv-budget-table "$work/bt3.json"
fi

if want 4; then
  section 4 "requests are validated and bounded before anything is allocated"
  expect_error "--labels '0-999999999': class label 999999999 outside \[0, 10)" generate "${M[@]}" --labels 0-999999999 --out "$work/o4"
  expect_error "--labels '0-9x100000,0-9x100000' asks for 2000000 images" generate "${M[@]}" --labels 0-9x100000,0-9x100000 --out "$work/o4"
  expect_error "images in one forward pass need .* GiB of KV cache alone" generate "${M[@]}" --labels 0-9x100000 --out "$work/o4"
  expect_error "--labels '99999999999999999'" generate "${M[@]}" --labels 99999999999999999 --out "$work/o4"
fi

if want 5; then
  section 5 "invalid values are errors (or warnings where harmless), never replaced by defaults"
  for b in 0 -1; do expect_error "--batch $b must be >= 1" generate "${M[@]}" --batch "$b" --labels 0-1 --out "$work/o5"; done
  expect_error "--cfg nan must be a finite number" generate "${M[@]}" --cfg nan --out "$work/o5"
  expect_error "--cfg -1 must be a finite number >= 0" generate "${M[@]}" --cfg -1 --out "$work/o5"
  expect_error "--top-k -1 must be >= 0" generate "${M[@]}" --top-k -1 --out "$work/o5"
  expect_error "--top-p nan must be in \[0, 1\]" generate "${M[@]}" --top-p nan --out "$work/o5"
  expect_error "--kv-window 0 must be >= 1" generate "${M[@]}" --kv-policy snapkv --kv-window 0 --out "$work/o5"
  expect_error "--seed '-1' must be a non-negative integer" generate "${M[@]}" --seed -1 --out "$work/o5"
  expect_error "--seed '18446744073709551616' must be" generate "${M[@]}" --seed 18446744073709551616 --out "$work/o5"
  expect_error "--resolution applies to Infinity models" generate "${M[@]}" --resolution 512 --out "$work/o5"
  expect_error "--h-div-w applies to Infinity models" generate "${M[@]}" --h-div-w 1.0 --out "$work/o5"
  expect_error "--kv-budget 10% has no effect with --kv-policy full" generate "${M[@]}" --kv-budget 10% --out "$work/o5"
  expect_error "--kv-budget 10% has no effect with --kv-policy full" plan --model "$cfg" --kv-budget 10%
  if [ -f "$golden/infinity-tiny.config.json" ]; then
    ic="$golden/infinity-tiny.config.json"
    expect_error "--resolution 0 must be one of 256, 512, 768, 1024" plan --model "$ic" --resolution 0
    expect_error "--h-div-w -1 must be a positive aspect ratio" plan --model "$ic" --h-div-w -1
    expect_error "--h-div-w nan must be a positive aspect ratio" plan --model "$ic" --h-div-w nan
    python3 - "$work/text.safetensors" <<'PY'
import json, struct, sys
n, length, ch = 1, 3, 512
kv = struct.pack(f"<{n * length * ch}f", *([0.01] * (n * length * ch)))
lens = struct.pack("<q", length)
hdr = {"kv_compact": {"dtype": "F32", "shape": [n * length, ch], "data_offsets": [0, len(kv)]},
       "lens": {"dtype": "I64", "shape": [n], "data_offsets": [len(kv), len(kv) + len(lens)]}}
h = json.dumps(hdr).encode(); h += b" " * (-len(h) % 8)
open(sys.argv[1], "wb").write(struct.pack("<Q", len(h)) + h + kv + lens)
PY
    IM=(--model "$ic" --weights "$golden/infinity-tiny.model.safetensors" --vae "$golden/infinity-tiny.vae.safetensors" --text-embeddings "$work/text.safetensors")
    expect_error "--resolution 0 must be one of 256, 512, 768, 1024" generate "${IM[@]}" --resolution 0 --out "$work/o5"
    expect_error "--h-div-w -1 must be a positive aspect ratio" generate "${IM[@]}" --h-div-w -1 --out "$work/o5"
    expect_error "--h-div-w nan must be a positive aspect ratio" generate "${IM[@]}" --h-div-w nan --out "$work/o5"
    expect_error "--labels is for class-conditional VAR models" generate "${IM[@]}" --labels 3 --out "$work/o5"
  fi
  expect_error "--depth -1 must be >= 1" bench --model "$cfg" --depth -1
  expect_error "--batch 1,0 must hold sizes >= 1" bench --model "$cfg" --batch 1,0
  expect_error "--warmup -1 must be >= 0" bench --model "$cfg" --warmup -1
  expect_error "--resolution 0 must be one of 256, 512, 768, 1024" bench --model "$src/configs/infinity-2b.json" --resolution 0
  expect_warning "--kv-window 3 has no effect with --kv-policy sliding-window" plan --model "$cfg" --kv-policy sliding-window --kv-window 3
  expect_warning "--kv-sinks 2 has no effect with --kv-policy snapkv" plan --model "$cfg" --kv-policy snapkv --kv-sinks 2
  expect_error "Could not convert: --top-k = abc" generate "${M[@]}" --top-k abc --out "$work/o5"
  : > "$work/ro_target"
  expect_error "--out $work/ro_target: cannot create the folder" generate "${M[@]}" --labels 0 --out "$work/ro_target"
  if mkdir -p "$work/romnt" && mount -t tmpfs -o ro,size=64k tmpfs "$work/romnt" 2>/dev/null; then
    mnt="$work/romnt"
    expect_error "--out $work/romnt/x: cannot create the folder (Read-only file system)" generate "${M[@]}" --labels 0 --out "$work/romnt/x"
    expect_error "--out $work/romnt/t.json: cannot create files there (Read-only file system)" calibrate "${M[@]}" --prompts /dev/null --out "$work/romnt/t.json"
    umount "$work/romnt"; mnt=""
  else
    echo "note: cannot mount a read-only tmpfs here; /proc stands in"
    expect_error "--out /proc/scalekv-out: cannot create the folder" generate "${M[@]}" --labels 0 --out /proc/scalekv-out
  fi
fi

if want 6; then
  section 6 "the memory plan's arithmetic is checked"
  expect_error "overflows 64 bits.*--batch 2000000000 is past what a 64-bit plan can count" plan --model "$src/configs/infinity-2b.json" --batch 2000000000
  expect_error "--device-memory '1e30GiB' is more than 4 EiB" plan --model "$cfg" --device-memory 1e30GiB
  expect_error "--device-memory 'inf' is not a size" plan --model "$cfg" --device-memory inf
  prev=0
  for m in 1GiB 64GiB 4TiB 256TiB 16000TiB; do
    cases=$((cases + 1))
    mb=$(timeout "$LIMIT" "$bin" plan --model "$cfg" --batch 8 --device-memory "$m" --json | python3 -c "import json,sys; print(json.load(sys.stdin)['max_batch'])")
    if [ -z "$mb" ] || [ "$mb" -lt "$prev" ]; then bad "largest batch $mb at $m is below $prev"; else echo "ok: $m -> largest batch $mb"; fi
    prev=${mb:-0}
  done
fi

if want 8 && [ -f "$golden/var-tiny-a.config.json" ]; then
  section 8 "verify-golden fails on missing required tensors and names corrupted indices"
  mkg() {  # mkg NAME 'python edit' : a copy of var-tiny-a with its expected tensors edited
    mkdir -p "$work/g8"
    for f in config.json var.safetensors vae.safetensors; do ln -sf "$golden/var-tiny-a.$f" "$work/g8/$1.$f"; done
    st_edit "$golden/var-tiny-a.expected.safetensors" "$work/g8/$1.expected.safetensors" "$2"
  }
  expect_fail() {  # expect_fail NAME PATTERN : exit 1, the report says FAIL and PATTERN
    cases=$((cases + 1))
    timeout -k 5 120 "$bin" verify-golden --dir "$work/g8" --name "$1" >"$work/out" 2>&1
    local rc=$?
    if [ $rc -ne 1 ] || ! grep -q "^FAIL $1" "$work/out" || ! grep -q -- "$2" "$work/out"; then
      bad "(rc=$rc) verify-golden $1 should FAIL with /$2/"; grep -E "FAIL|error" "$work/out" | head -5
    else
      echo "ok: $1: $(grep -m1 -- "$2" "$work/out" | sed 's/  */ /g')"
    fi
  }
  mkg noimage 'del t["image"]; del t["tf_input"]'
  expect_fail noimage "image .*FAIL: required tensor is missing from .*noimage.expected.safetensors"
  mkg noxin 'del t["x_in.3"]'
  expect_fail noxin "x_in.3 .*FAIL: required tensor is missing"
  mkg nologits 'del t["logits.2"]'
  expect_fail nologits "logits.2 .*FAIL: required tensor is missing"
  mkg notfl 'del t["tf_logits"]'
  cases=$((cases + 1))
  timeout -k 5 120 "$bin" verify-golden --dir "$work/g8" --name notfl >"$work/out" 2>&1
  if [ $? -eq 0 ] && grep -q "tf_logits .*not checked: absent from" "$work/out" && grep -q "^PASS (1 optional tensor group not checked) notfl" "$work/out"; then
    echo "ok: notfl: an absent optional tensor is reported 'not checked'"
  else
    bad "verify-golden notfl should PASS reporting tf_logits as not checked"; tail -3 "$work/out"
  fi
  mkg badidx 'import struct; dt, sh, b = t["idx.3"]; t["idx.3"] = (dt, sh, struct.pack("<q", 70000) + b[8:])'
  expect_error "badidx.expected.safetensors: tensor 'idx.3' holds 70000 at position 0, outside \[0, 512)" verify-golden --dir "$work/g8" --name badidx
  mkg badlabel 'import struct; dt, sh, b = t["labels"]; t["labels"] = (dt, sh, struct.pack("<q", -5) + b[8:])'
  expect_error "badlabel.expected.safetensors: tensor 'labels' holds -5" verify-golden --dir "$work/g8" --name badlabel
  mkg shortidx 'dt, sh, b = t["idx.1"]; t["idx.1"] = (dt, [1], b[:8])'
  expect_error "shortidx.expected.safetensors: tensor 'idx.1' has 1 values, the golden's run needs 8" verify-golden --dir "$work/g8" --name shortidx
  mkdir -p "$work/g8b"
  for f in config.json var.safetensors vae.safetensors; do ln -sf "$golden/var-tiny-a.$f" "$work/g8b/lost.$f"; done
  cases=$((cases + 1))
  timeout -k 5 60 "$bin" verify-golden --dir "$work/g8b" >"$work/out" 2>&1
  rc=$?
  if [ $rc -eq 1 ] && grep -q "FAIL lost: .*lost.expected.safetensors is missing" "$work/out"; then
    echo "ok: a golden without its expected file FAILs (not skipped)"
  else
    bad "(rc=$rc) a golden without its expected file must fail"; cat "$work/out" | head -3
  fi
fi

if want 9; then
  section 9 "duplicate names in a safetensors header are refused"
  printf '{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"w":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}' > "$work/h"
  python3 -c "import struct,sys; h=open('$work/h','rb').read(); open('$work/dup.safetensors','wb').write(struct.pack('<Q',len(h))+h+bytes(8))"
  expect_error "dup.safetensors: header: tensor 'w' appears twice" inspect "$work/dup.safetensors"
  cp "$w" "$work/dupw.safetensors"
  python3 - "$work/dupw.safetensors" <<'PY'
import sys, struct
p = sys.argv[1]; d = open(p, "rb").read(); n = struct.unpack("<Q", d[:8])[0]; h = d[8:8 + n].decode()
i = h.index('"word_embed.weight"'); j = h.index("}", i) + 1
h2 = h[:j] + "," + h[i:j] + h[j:]   # the same entry twice (same offsets)
h2 = h2.rstrip(); h2 += " " * (-len(h2) % 8)
open(p, "wb").write(struct.pack("<Q", len(h2)) + h2.encode() + d[8 + n:])
PY
  expect_error "dupw.safetensors: header: tensor 'word_embed.weight' appears twice" generate --model "$cfg" --weights "$work/dupw.safetensors" --vae "$v" --out "$work/o9"
fi

if want 10; then
  section 10 "messages name the option and what would work"
  expect_error "--kv-budget 1% gives 1 tokens per layer, below the observation window of 4 tokens: give at least 4 tokens (--kv-budget 5%) or a smaller --kv-window" generate "${M[@]}" --kv-policy scalekv --kv-budget 1% --out "$work/o10"
  expect_error "--kv-budget 2 gives 2 tokens per layer, below the 4 sink tokens plus one" plan --model "$cfg" --kv-policy streamingllm --kv-budget 2
  expect_error "--kv-budget '0x0A%' is not a percentage" plan --model "$cfg" --kv-policy snapkv --kv-budget 0x0A%
  expect_error "--out is empty: give the folder to write to, e.g. --out out/" generate "${M[@]}" --out ""
  expect_error "--out is empty: give the file to write" calibrate "${M[@]}" --prompts /dev/null --out ""
fi

if want 11; then
  section 11 "failing writes end non-zero naming the file and the OS error; what exists is complete"
  full="$work/full"
  mkdir -p "$full"
  if mount -t tmpfs -o size=48k tmpfs "$full" 2>/dev/null; then
    mnt="$full"
    echo "a 48 KiB tmpfs stands for a nearly full disk"
    pat="write failed (No space left on device); [0-9]* of 40 images were written to $full/o/ before it"
    runner=()
  else
    echo "note: cannot mount a tmpfs here; RLIMIT_FSIZE (ulimit -f, SIGXFSZ ignored) stands in"
    pat="write failed (File too large); [0-9]* of 40 images were written to $full/o/ before it"
    runner=(bash -c 'trap "" XFSZ; ulimit -f 1; exec "$@"' _)
  fi
  cases=$((cases + 1))
  timeout -k 5 60 "${runner[@]}" "$bin" generate "${M[@]}" --labels 0-9x4 --out "$full/o" >"$work/out" 2>"$work/err"
  rc=$?
  if [ $rc -ne 0 ] && [ $rc -lt 124 ] && [ "$(wc -l <"$work/err")" -eq 1 ] && grep -q "^error: $full/o/[0-9]*_c[0-9].png: $pat" "$work/err"; then
    echo "ok: $(cut -c1-200 "$work/err")"
  else
    bad "(rc=$rc) generate on a full disk"; cat "$work/err" | head -3
  fi
  cases=$((cases + 1))
  python3 - "$full/o" "$work/err" <<'PY' && echo "ok: every PNG under its final name is complete; no temporary file is left" || bad "partial outputs after a failed write"
import os, re, sys
d = sys.argv[1]
n = 0
for f in os.listdir(d):
    p = os.path.join(d, f)
    assert not f.startswith("."), f"temporary file left behind: {f}"
    data = open(p, "rb").read()
    assert data.startswith(b"\x89PNG") and data.endswith(b"IEND\xaeB`\x82"), f"incomplete PNG {f}"
    n += 1
m = re.search(r"; (\d+) of 40 images", open(sys.argv[2]).read())
assert m and int(m.group(1)) == n, f"{n} PNGs on disk, the message says {m.group(1) if m else '?'}"
PY
  rm -rf "$full/o"
  if [ -n "$mnt" ]; then
    cat /dev/zero > "$full/filler" 2>/dev/null  # now it is full
    printf '0-9\n' > "$work/p.txt"
    expect_error "--out $full/t.json: cannot write there (No space left on device)" calibrate "${M[@]}" --prompts "$work/p.txt" --out "$full/t.json"
    expect_error "--md $full/b.md: cannot write there (No space left on device)" bench --model "$cfg" --batch 1 --repeats 1 --md "$full/b.md"
    # The converters (scripts/convert_*.py, encode_prompts.py) write through safetensors_io.atomic_write.
    if /usr/bin/python3 -c "import torch" 2>/dev/null; then
      cases=$((cases + 1))
      /usr/bin/python3 - "$src/scripts" "$full/conv.safetensors" > "$work/out" 2> "$work/err" <<'PY'
import sys
sys.path.insert(0, sys.argv[1])
import torch, safetensors_io
safetensors_io.save(sys.argv[2], {"w": torch.zeros(50000)})
PY
      rc=$?
      if [ $rc -ne 0 ] && grep -q "conv.safetensors: write failed (No space left on device)" "$work/err" && \
         [ "$(ls -A "$full" | grep -v '^filler$' | wc -l)" -eq 0 ]; then
        echo "ok: converter output: $(tail -1 "$work/err"); nothing left behind"
      else
        bad "(rc=$rc) a converter write to a full disk"; tail -2 "$work/err"; ls -A "$full"
      fi
    fi
    umount "$full"; mnt=""
  fi
  expect_error "--out /dev/full: exists and is a character device; give the path of a regular file" calibrate "${M[@]}" --prompts /dev/null --out /dev/full
  expect_error "--md /dev/full: exists and is a character device" bench --model "$cfg" --batch 1 --repeats 1 --md /dev/full
  cases=$((cases + 1))
  timeout -k 5 60 "$bin" generate "${M[@]}" --labels 0-2 --out "$work/o11" >"$work/out" 2>"$work/err"
  if [ $? -eq 0 ] && grep -q "wrote 3 PNGs and labels.json to $work/o11/" "$work/out"; then
    echo "ok: a good run says how many images it wrote and where"
  else
    bad "generate did not report what it wrote"; cat "$work/out" "$work/err" | head -3
  fi
fi

echo
[ $fails -eq 0 ] && echo "hostile inputs: all $cases cases pass" || { echo "hostile inputs: $fails of $cases case(s) failed"; exit 1; }
