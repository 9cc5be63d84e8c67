#!/usr/bin/python3
"""encode_prompts.py - a text file of prompts -> the Flan-T5-XL embeddings file scalekv's Infinity reads.

    scripts/encode_prompts.py prompts.txt --t5 weights/flan-t5-xl --out prompts.safetensors [--device cuda]

One prompt per line (blank lines are skipped). Each prompt is encoded exactly as FoundationVision/Infinity
tools/run_infinity.py encode_prompt does: T5 tokenizer (max_length 512, padding to max_length, truncation),
T5EncoderModel last_hidden_state in float32, and only the non-padding tokens kept. Output (safetensors):
    kv_compact  F32 [total_tokens, 2048]   the prompts' token features, concatenated in order
    lens        I64 [N]                    tokens of each prompt
    metadata "prompts": JSON list of the prompt strings
so `scalekv generate --text-embeddings prompts.safetensors` needs no Python or text encoder.
Needs the Python packages transformers and sentencepiece and a Flan-T5-XL checkpoint (google/flan-t5-xl,
the one Infinity was trained with); it says so and exits with status 2 when they are missing.
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def die(msg, code=2):
    print(f"encode_prompts.py: {msg}", file=sys.stderr)
    sys.exit(code)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("prompts", help="text file, one prompt per line")
    ap.add_argument("--t5", required=True, help="Flan-T5-XL: a local folder or a Hugging Face name (google/flan-t5-xl)")
    ap.add_argument("--out", required=True, help="output .safetensors")
    ap.add_argument("--device", default="cpu", help="cpu or cuda (cuda runs the encoder in float16, as run_infinity)")
    ap.add_argument("--batch", type=int, default=8, help="prompts per encoder call")
    a = ap.parse_args()

    if not os.path.exists(a.prompts):
        die(f"{a.prompts}: no such file")
    with open(a.prompts, encoding="utf-8") as f:
        prompts = [ln.strip() for ln in f if ln.strip()]
    if not prompts:
        die(f"{a.prompts}: no prompts (one per line)")
    try:
        import torch
    except ImportError:
        die("needs PyTorch (Debian: apt-get install python3-torch, run with /usr/bin/python3; or pip install torch)")
    try:
        from transformers import AutoTokenizer, T5EncoderModel
    except ImportError:
        die("needs the Python packages 'transformers' and 'sentencepiece' (pip install transformers sentencepiece) "
            "and a Flan-T5-XL checkpoint (--t5 google/flan-t5-xl or a local copy); they are not installed here")
    import safetensors_io

    try:
        tok = AutoTokenizer.from_pretrained(a.t5, legacy=True)
        dtype = torch.float16 if a.device.startswith("cuda") else torch.float32
        enc = T5EncoderModel.from_pretrained(a.t5, torch_dtype=dtype).to(a.device).eval()
    except Exception as e:  # noqa: BLE001
        die(f"cannot load the T5 encoder from '{a.t5}' ({e}); pass a Flan-T5-XL folder or google/flan-t5-xl")
    tok.model_max_length = 512
    feats, lens = [], []
    with torch.no_grad():
        for i in range(0, len(prompts), a.batch):
            batch = prompts[i:i + a.batch]
            t = tok(text=batch, max_length=512, padding="max_length", truncation=True, return_tensors="pt")
            ids, mask = t.input_ids.to(a.device), t.attention_mask.to(a.device)
            h = enc(input_ids=ids, attention_mask=mask)["last_hidden_state"].float().cpu()
            for j, n in enumerate(mask.sum(dim=-1).tolist()):
                feats.append(h[j, :n])
                lens.append(int(n))
            print(f"encoded {min(i + a.batch, len(prompts))}/{len(prompts)} prompts", file=sys.stderr)
    kv = torch.cat(feats, dim=0).contiguous()
    safetensors_io.save(a.out, {"kv_compact": kv, "lens": torch.tensor(lens, dtype=torch.int64)},
                        {"format": "scalekv-text-embeddings", "prompts": json.dumps(prompts), "encoder": a.t5})
    print(f"wrote {a.out}: {len(prompts)} prompts, {kv.shape[0]} tokens x {kv.shape[1]} channels")


if __name__ == "__main__":
    main()
