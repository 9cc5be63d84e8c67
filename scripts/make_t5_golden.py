#!/usr/bin/env python3
"""make_t5_golden.py - a tiny Flan-T5-style text encoder in the Hugging Face layout, and what transformers says
about it: the reference the C++ tokenizer and encoder (runtime/models/t5_*) are checked against.

    .venv-hf/bin/python scripts/make_t5_golden.py OUT_DIR

Run at test time (ctest `t5_golden_make`) with the venv scripts/setup.sh --torch makes (transformers 4.36,
sentencepiece); nothing is downloaded. It writes
    OUT_DIR/f32/      config.json, model.safetensors (T5EncoderModel, F32), spiece.model, tokenizer.json, ...
    OUT_DIR/sharded/  the same encoder inside a T5ForConditionalGeneration (decoder too, as flan-t5-xl is
                      published), saved in shards: model-0000x-of-0000y.safetensors + model.safetensors.index.json
    OUT_DIR/bf16/     the encoder rounded to BF16 on disk (its reference is computed from the rounded weights)
    OUT_DIR/f16/      the same in F16
    OUT_DIR/prompts.json       the edge-case prompts (whitespace runs, tabs/newlines, leading/trailing spaces,
                               unknown characters, <extra_id_N>, </s> in the text, a prompt over 512 tokens)
    OUT_DIR/ids.json           T5TokenizerFast ids (AutoTokenizer.from_pretrained(dir, legacy=True), max_length 512,
                               truncation, </s> appended) and plain SentencePiece ids, per prompt; and the fast
                               tokenizer's ids of 400 random strings over the troublesome characters (FUZZ_ATOMS);
                               ws_*: the same from OUT_DIR/tokenizer-ws/, whose tokenizer.json pre-tokenises with
                               Sequence[WhitespaceSplit, Metaspace] as the published google/flan-t5-* files do
    OUT_DIR/<variant>.ref.safetensors  T5EncoderModel last_hidden_state of every prompt's non-padding tokens,
                               batched and padded to 512 exactly as scripts/encode_prompts.py does (kv_compact, lens)
The SentencePiece model is trained here (unigram, 700 pieces) on a generated English corpus plus a few accented and
full-width lines; emoji and CJK characters stay outside it (unknown tokens).
"""
import json
import os
import random
import shutil
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import safetensors_io  # noqa: E402

WORDS = ("a red fox in the snow under blue sky with mountains and rivers painting of an old city at night "
         "photo portrait cat dog bird flower tree forest ocean beach sunset sunrise light dark shadow golden "
         "detailed cinematic realistic cartoon style watercolor oil sketch high quality lens bokeh street market "
         "people walking rain umbrella reflection neon sign robot castle dragon knight village road car train "
         "bridge window house garden table cup coffee book lamp chair wooden stone glass metal soft warm cold").split()
EXTRA_LINES = ["café naïve résumé Ünïcödé Größe Straße", "ﬁne ﬂow ligatures", "Ｆｕｌｌｗｉｄｔｈ text １２３",
               "numbers 0 1 2 3 4 5 6 7 8 9 10 100 2024", "punctuation: (a, b); c! d? e... \"quoted\" 'single'",
               "tab\tseparated and new line", "under_score and hyphen-ated and slash/ed"]

PROMPTS = [
    "a red fox in the snow",
    "A photo of a cat, cinematic lighting, 4k.",
    "two  spaces   and    four",
    "  leading spaces",
    "trailing spaces   ",
    " ",
    "",
    "tab\tinside",
    "new\nline and\r\nwindows line",
    "\tleading tab and trailing newline\n",
    "emoji 😀 and 中文 and 👍🏽 unknown",
    "café naïve e\u0301 combining and Ｆｕｌｌｗｉｄｔｈ ﬁne",
    "no\u00a0break\u3000ideographic\u2003em space",
    "hello <extra_id_0> world",
    "<extra_id_0>start and end<extra_id_99>",
    "a<extra_id_1>b  <extra_id_2>  c",
    "</s> eos in the text and <pad> and <unk>",
    "<extra_id_100> is not a token",
    "\u2581meta \u2581 space",
    "zero\u200bwidth",
    " ".join(random.Random(7).choice(WORDS) for _ in range(700)),  # > 512 tokens: truncated
]


# Random strings over the characters where tokenizers disagree: every kind of whitespace, combining marks,
# zero-width characters, characters outside the vocabulary, NFKC-changed ones, U+2581 and special tokens.
FUZZ_ATOMS = [" ", "  ", "\t", "\n", "\r\n", "\r", "\u00a0", "\u3000", "\u2003", "\u1680", "\u200b", "\u200d", "\ufeff",
              "\u0301", "\u0308", "e\u0301", "\u2581", "a", "b", "the", "fox", "red", "snow", "cat", "ing", "ka", "lo", "X",
              ".", ",", "!", "'", "\"", "-", "(", ")", "1", "23", "ﬁ", "Ｆ", "①", "™", "é", "ß", "😀", "👍🏽", "🇫🇷", "中",
              "\x00", "\x7f", "\x1f", "<", ">", "</s>", "<pad>", "<unk>", "<extra_id_0>", "<extra_id_7>", "<extra_id_99>",
              "<extra_id_>", "<extra_id_100>", "<s>"]


def fuzz_prompts(n=400):
    rng = random.Random(11)
    return ["".join(rng.choice(FUZZ_ATOMS) for _ in range(rng.randint(1, 14))) for _ in range(n)]


def corpus():
    rng = random.Random(0)
    syl = ["ka", "lo", "mi", "ter", "son", "vra", "qui", "ble", "dor", "pha", "zen", "ux", "ight", "ing", "est"]
    made = ["".join(rng.choice(syl) for _ in range(rng.randint(2, 4))) for _ in range(600)]
    lines = [" ".join(rng.choice(WORDS + made) for _ in range(rng.randint(4, 16))) for _ in range(3000)]
    return lines + EXTRA_LINES * 20


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: make_t5_golden.py OUT_DIR")
    out = sys.argv[1]
    import io

    import sentencepiece as spm
    from transformers import AutoTokenizer, T5Config, T5EncoderModel, T5ForConditionalGeneration, T5Tokenizer, T5TokenizerFast

    os.makedirs(out, exist_ok=True)
    tokdir = os.path.join(out, "tokenizer")
    os.makedirs(tokdir, exist_ok=True)
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(corpus()), model_writer=buf, vocab_size=700,
                                   model_type="unigram", pad_id=0, eos_id=1, unk_id=2, bos_id=-1, pad_piece="<pad>",
                                   eos_piece="</s>", unk_piece="<unk>", character_coverage=1.0, minloglevel=2,
                                   num_threads=1, seed_sentencepiece_size=20000)
    with open(os.path.join(tokdir, "spiece.model"), "wb") as f:
        f.write(buf.getvalue())
    T5Tokenizer(os.path.join(tokdir, "spiece.model"), legacy=True).save_pretrained(tokdir)
    # The fast tokenizer converted from the slow one, saved with its tokenizer.json (as published T5 folders are).
    T5TokenizerFast.from_pretrained(tokdir, legacy=True, from_slow=True).save_pretrained(tokdir)
    tok = AutoTokenizer.from_pretrained(tokdir, legacy=True)
    assert type(tok).__name__ == "T5TokenizerFast", type(tok)
    tok.model_max_length = 512
    sp = spm.SentencePieceProcessor(model_file=os.path.join(tokdir, "spiece.model"))

    # The tokenizer.json of T5 folders converted by older transformers (google/flan-t5-* were published so):
    # pre_tokenizer Sequence[WhitespaceSplit, Metaspace(add_prefix_space)]; transformers loads it as is.
    wsdir = os.path.join(out, "tokenizer-ws")
    shutil.rmtree(wsdir, ignore_errors=True)
    shutil.copytree(tokdir, wsdir)
    with open(os.path.join(wsdir, "tokenizer.json"), encoding="utf-8") as f:
        tj = json.load(f)
    tj["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [
        {"type": "WhitespaceSplit"}, {"type": "Metaspace", "replacement": "\u2581", "add_prefix_space": True}]}
    with open(os.path.join(wsdir, "tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump(tj, f, ensure_ascii=False)
    ws_tok = AutoTokenizer.from_pretrained(wsdir, legacy=True)

    enc = tok(text=PROMPTS, max_length=512, padding="max_length", truncation=True, return_tensors="pt")
    ids = [enc.input_ids[i, :int(n)].tolist() for i, n in enumerate(enc.attention_mask.sum(-1).tolist())]
    with open(os.path.join(out, "prompts.json"), "w", encoding="utf-8") as f:
        json.dump(PROMPTS, f, ensure_ascii=False, indent=0)
    with open(os.path.join(out, "ids.json"), "w") as f:
        fuzz = fuzz_prompts()
        fuzz_ids = tok(text=fuzz, max_length=512, truncation=True)["input_ids"]
        ws_ids = ws_tok(text=PROMPTS, max_length=512, truncation=True)["input_ids"]
        ws_fuzz_ids = ws_tok(text=fuzz, max_length=512, truncation=True)["input_ids"]
        json.dump({"fast": ids, "spm": [sp.encode(p)[:511] + [1] for p in PROMPTS], "vocab": len(tok),
                   "fuzz_prompts": fuzz, "fuzz_fast": fuzz_ids, "ws_fast": ws_ids, "ws_fuzz_fast": ws_fuzz_ids}, f)

    vocab = (len(tok) + 7) // 8 * 8 + 8  # unused rows, as flan-t5's 32128 > 32100
    cfg = T5Config(vocab_size=vocab, d_model=128, d_kv=24, num_heads=4, d_ff=192, num_layers=3, num_decoder_layers=2,
                   relative_attention_num_buckets=16, relative_attention_max_distance=24, feed_forward_proj="gated-gelu",
                   tie_word_embeddings=False, layer_norm_epsilon=1e-6, dropout_rate=0.0, decoder_start_token_id=0,
                   pad_token_id=0, eos_token_id=1)
    torch.manual_seed(0)
    full = T5ForConditionalGeneration(cfg).eval()
    with torch.no_grad():  # trained-like magnitudes: the default init leaves the attention almost uniform
        for name, p in full.named_parameters():
            if "layer_norm" in name:
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
            elif "relative_attention_bias" in name:
                p.copy_(torch.randn_like(p))
            elif p.dim() == 2 and "shared" not in name and "lm_head" not in name:
                p.copy_(torch.randn_like(p) * (2.0 / p.shape[1]) ** 0.5)
    encoder = T5EncoderModel(cfg).eval()
    missing = encoder.load_state_dict(full.state_dict(), strict=False)
    assert not missing.missing_keys, missing.missing_keys

    def save_tok(d):
        tok.save_pretrained(d)

    variants = {}
    d = os.path.join(out, "f32")
    encoder.save_pretrained(d, safe_serialization=True)
    save_tok(d)
    variants["f32"] = d
    d = os.path.join(out, "sharded")
    full.save_pretrained(d, safe_serialization=True, max_shard_size="400KB")
    save_tok(d)
    assert os.path.exists(os.path.join(d, "model.safetensors.index.json"))
    variants["sharded"] = d
    d = os.path.join(out, "bf16")
    T5EncoderModel.from_pretrained(variants["f32"]).to(torch.bfloat16).save_pretrained(d, safe_serialization=True)
    save_tok(d)
    variants["bf16"] = d
    d = os.path.join(out, "f16")
    T5EncoderModel.from_pretrained(variants["f32"]).to(torch.float16).save_pretrained(d, safe_serialization=True)
    save_tok(d)
    variants["f16"] = d

    for name, d in variants.items():
        m = T5EncoderModel.from_pretrained(d, torch_dtype=torch.float32).eval()
        feats, lens = [], []
        with torch.no_grad():
            for i in range(0, len(PROMPTS), 8):  # scripts/encode_prompts.py's batching
                t = tok(text=PROMPTS[i:i + 8], max_length=512, padding="max_length", truncation=True, return_tensors="pt")
                h = m(input_ids=t.input_ids, attention_mask=t.attention_mask)["last_hidden_state"].float()
                for j, n in enumerate(t.attention_mask.sum(-1).tolist()):
                    feats.append(h[j, :n])
                    lens.append(int(n))
        safetensors_io.save(os.path.join(out, f"{name}.ref.safetensors"),
                            {"kv_compact": torch.cat(feats).contiguous(), "lens": torch.tensor(lens, dtype=torch.int64)},
                            {"prompts": json.dumps(PROMPTS)})
    print(f"make_t5_golden.py: wrote {out}: {len(PROMPTS)} prompts, variants {', '.join(variants)}")


if __name__ == "__main__":
    main()
