#!/usr/bin/env python3
"""t5_encoder_bench.py - the C++ Flan-T5 encoder at the full flan-t5-xl shape vs transformers' T5EncoderModel, same
random weights, same prompts, same thread count, on the CPU, in one run. Prints a markdown table.

    .venv-hf/bin/python scripts/bench/t5_encoder_bench.py --scalekv build/bin/scalekv --tokenizer build/t5-golden/f32 \
        --work /tmp/t5xl --threads 2 [--layers 24] [--prompts 8]

The checkpoint (config of google/flan-t5-xl: d_model 2048, 24 layers, 32 heads of 64, d_ff 5120 gated-gelu, vocab
32128; random weights, BF16 on disk = 2.4 GB) is written once to --work and reused; the tokenizer files are copied
from --tokenizer (token ids do not change the cost, only the prompt lengths do). Each side runs in its own process;
memory is that process's peak resident set (wait4 ru_maxrss), time is the encoder alone (after loading):
  transformers unpadded - T5EncoderModel on each prompt alone (what scalekv computes),
  transformers padded   - scripts/encode_prompts.py's batches of 8 padded to 512 tokens (what the Python path runs),
  scalekv               - `scalekv encode-text` (its own timing line: load, encode).
"""
import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time

PROMPTS = [
    "a red fox in the snow",
    "a photo of a cat sitting on a wooden table next to a cup of coffee, soft warm light, detailed",
    "an oil painting of an old city at night with neon signs reflected in the rain, people walking with umbrellas",
    "castle",
    "a watercolor of mountains and rivers at sunrise, golden light, cinematic, high quality, bokeh",
    "a robot knight and a dragon on a stone bridge over the ocean, cartoon style sketch",
    "a detailed realistic portrait of a dog in a garden with flowers and trees, sunset",
    "street market in a village, people, umbrellas, lamps, glass windows, metal and wooden houses, soft shadows, "
    "a train on the road and a car by the forest, dark sky with light",
]


def make_checkpoint(work, tokdir, layers):
    import torch
    from transformers import T5Config, T5EncoderModel
    d = os.path.join(work, f"flan-t5-xl-shape-{layers}l")
    if os.path.exists(os.path.join(d, "model.safetensors")):
        return d
    cfg = T5Config(vocab_size=32128, d_model=2048, d_kv=64, num_heads=32, d_ff=5120, num_layers=layers,
                   relative_attention_num_buckets=32, relative_attention_max_distance=128, feed_forward_proj="gated-gelu",
                   tie_word_embeddings=False, layer_norm_epsilon=1e-6, dropout_rate=0.0)
    torch.manual_seed(0)
    m = T5EncoderModel(cfg).to(torch.bfloat16).eval()
    m.save_pretrained(d, safe_serialization=True, max_shard_size="20GB")
    for f in ("spiece.model", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if os.path.exists(os.path.join(tokdir, f)):
            shutil.copy(os.path.join(tokdir, f), d)
    return d


def torch_worker(a):
    import torch
    from transformers import AutoTokenizer, T5EncoderModel
    torch.set_num_threads(a.threads)
    prompts = PROMPTS[:a.prompts]
    tok = AutoTokenizer.from_pretrained(a.ckpt, legacy=True)
    m = T5EncoderModel.from_pretrained(a.ckpt, torch_dtype=torch.float32).eval()
    out = {"tokens": 0}
    with torch.no_grad():
        t0 = time.perf_counter()
        for p in prompts:
            ids = tok(text=[p], max_length=512, truncation=True, return_tensors="pt").input_ids
            out["tokens"] += ids.shape[1]
            m(input_ids=ids)
        out["unpadded_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        for i in range(0, len(prompts), 8):
            t = tok(text=prompts[i:i + 8], max_length=512, padding="max_length", truncation=True, return_tensors="pt")
            m(input_ids=t.input_ids, attention_mask=t.attention_mask)
        out["padded_s"] = time.perf_counter() - t0
    print("RESULT " + json.dumps(out))


def run_measured(cmd, env):
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    out = p.stdout.read()
    _, status, ru = os.wait4(p.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"t5_encoder_bench.py: {' '.join(cmd)} failed:\n{out}")
    return out, ru.ru_maxrss / 1024 / 1024  # GiB


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scalekv")
    ap.add_argument("--tokenizer", help="a T5 folder whose tokenizer files are copied (e.g. build/t5-golden/f32)")
    ap.add_argument("--work", default="/tmp/t5xl")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--layers", type=int, default=24)
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--torch-worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--ckpt", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.torch_worker:
        return torch_worker(a)
    os.makedirs(a.work, exist_ok=True)
    t0 = time.perf_counter()
    ckpt = make_checkpoint(a.work, a.tokenizer, a.layers)
    print(f"checkpoint {ckpt} ready in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    env = dict(os.environ, OMP_NUM_THREADS=str(a.threads), OPENBLAS_NUM_THREADS=str(a.threads), SKV_PROGRESS="0")
    pfile = os.path.join(a.work, "prompts.txt")
    with open(pfile, "w") as f:
        f.write("\n".join(PROMPTS[:a.prompts]) + "\n")
    out_t, rss_t = run_measured([sys.executable, os.path.abspath(__file__), "--torch-worker", "--ckpt", ckpt,
                                 "--threads", str(a.threads), "--prompts", str(a.prompts)], env)
    res = json.loads(re.search(r"RESULT (.*)", out_t).group(1))
    out_s, rss_s = run_measured([a.scalekv, "encode-text", "--t5", ckpt, "--prompts", pfile, "--out",
                                 os.path.join(a.work, "out.safetensors")], env)
    m = re.search(r"(\d+) tokens x .* load ([\d.]+) s, encode ([\d.]+) s", out_s)
    if not m:
        sys.exit(f"t5_encoder_bench.py: unexpected scalekv output:\n{out_s}")
    tokens, load_s, enc_s = int(m.group(1)), float(m.group(2)), float(m.group(3))
    n = a.prompts
    print(f"flan-t5-xl shape ({a.layers} layers, d_model 2048, 32 heads, d_ff 5120, vocab 32128; random weights, BF16 on "
          f"disk, F32 compute), {n} prompts / {tokens} tokens, {a.threads} threads, CPU\n")
    print("| encoder | time per prompt (s) | total (s) | peak RSS (GiB) |")
    print("|---|---|---|---|")
    print(f"| scalekv encode-text (load {load_s:.1f} s not counted) | {enc_s / n:.3f} | {enc_s:.2f} | {rss_s:.2f} |")
    print(f"| transformers T5EncoderModel, each prompt unpadded | {res['unpadded_s'] / n:.3f} | {res['unpadded_s']:.2f} | "
          f"{rss_t:.2f} |")
    print(f"| transformers, encode_prompts.py batches of 8 padded to 512 | {res['padded_s'] / n:.3f} | {res['padded_s']:.2f} "
          f"| (same process) |")
    if tokens != res["tokens"]:
        sys.exit(f"t5_encoder_bench.py: token counts differ: scalekv {tokens}, transformers {res['tokens']}")


if __name__ == "__main__":
    main()
