#!/usr/bin/python3
"""convert_infinity.py - official Infinity checkpoints -> scalekv safetensors + model config.

    scripts/convert_infinity.py --model weights/infinity_2b_reg.pth --vae weights/infinity_vae_d32reg.pth \
        --out-dir models/infinity-2b --name infinity-2b
    scripts/convert_infinity.py --model weights/infinity_8b_weights --vae weights/infinity_vae_d56_f8_14_patchify.pth \
        --out-dir models/infinity-8b --name infinity-8b

Writes OUT/NAME.model.safetensors (the transformer's state dict, official key names, dtype kept unless
--dtype), OUT/NAME.vae.safetensors (the BSQ-VAE decoder, keys as the official AutoEncoder.state_dict()
names them: `decoder.up.<l>.block.<i>.conv1.conv.weight`, `...norm1.norm.weight`) and OUT/NAME.config.json
(the golden config layout: family, infinity_kwargs, vae, sampling), which `scalekv generate --model` reads.

--model takes a .pth file (a plain state dict as infinity_2b_reg.pth, or a training checkpoint with
['trainer']['gpt_fsdp']), or a sharded checkpoint (a folder or *.index.json of `pytorch_model*.bin` /
`model*.safetensors` shards, as transformers' load_sharded_checkpoint reads for the 8B model).
--vae takes the official VAE .pth ({'vae': state_dict} or a plain state dict); pre-`Conv`-wrapper key
names (`conv1.weight`, `norm1.weight`) are mapped the way vae.py's load_cnn maps them.
Shapes (width, depth, heads, text channels, VAE channels, patchify) are read from the tensors; the
remaining constructor arguments come from configs/infinity-2b.json or -8b.json (tools/run_infinity.py).
"""
import argparse
import copy
import json
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

try:
    import torch
except ImportError:
    sys.exit("convert_infinity.py: needs PyTorch (Debian: apt-get install python3-torch; run with /usr/bin/python3)")

import safetensors_io  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def fail(msg):
    sys.exit(f"convert_infinity.py: {msg}")


# ---------------------------------------------------------------------------------------------- reading

def _load_pth(path):
    try:
        obj = torch.load(path, map_location="cpu")
    except Exception as e:  # noqa: BLE001
        fail(f"{path}: cannot be read by torch.load ({e})")
    return obj


def _unwrap_state_dict(obj, path):
    if isinstance(obj, dict) and "trainer" in obj and isinstance(obj["trainer"], dict):
        tr = obj["trainer"]
        for k in ("gpt_fsdp", "gpt_ema_fsdp", "gpt"):
            if k in tr:
                return tr[k]
        fail(f"{path}: a training checkpoint without ['trainer']['gpt_fsdp']")
    for k in ("state_dict", "model"):
        if isinstance(obj, dict) and k in obj and isinstance(obj[k], dict):
            return obj[k]
    if not isinstance(obj, dict):
        fail(f"{path}: expected a state dict, got {type(obj).__name__}")
    return obj


def load_model_state(path):
    """A .pth state dict, or a sharded checkpoint (folder or index json)."""
    index = None
    if os.path.isdir(path):
        for cand in ("pytorch_model.bin.index.json", "model.safetensors.index.json"):
            if os.path.exists(os.path.join(path, cand)):
                index = os.path.join(path, cand)
                break
        if index is None:
            fail(f"{path}: a folder but no pytorch_model.bin.index.json / model.safetensors.index.json in it")
    elif path.endswith(".index.json"):
        index = path
    if index is None:
        return _unwrap_state_dict(_load_pth(path), path)
    with open(index) as f:
        wm = json.load(f).get("weight_map")
    if not isinstance(wm, dict) or not wm:
        fail(f"{index}: no 'weight_map'")
    folder = os.path.dirname(index)
    sd = {}
    for shard in sorted(set(wm.values())):
        sp = os.path.join(folder, shard)
        if not os.path.exists(sp):
            fail(f"{index}: shard {shard} is missing")
        part = safetensors_io.load(sp) if shard.endswith(".safetensors") else _unwrap_state_dict(_load_pth(sp), sp)
        sd.update(part)
    missing = [k for k in wm if k not in sd]
    if missing:
        fail(f"{index}: {len(missing)} tensors of the weight map are not in the shards (e.g. {missing[0]})")
    return sd


def clean_keys(sd):
    """Tensors only; strips wrapper prefixes (DDP/FSDP `module.`, `_orig_mod.`)."""
    out = {}
    for k, v in sd.items():
        if not torch.is_tensor(v):
            continue
        for p in ("module.", "_orig_mod."):
            if k.startswith(p) and not k.startswith("module.module"):
                k = k[len(p):]
        out[k] = v
    return out


# ------------------------------------------------------------------------------------ the transformer

BLOCK_RE = re.compile(r"^(?:blocks\.(\d+)|block_chunks\.(\d+)\.module\.(\d+))\.(.+)$")


def derive_infinity(sd):
    """Shapes of the transformer from its tensors; checks the block layout."""
    def need(k):
        if k not in sd:
            fail(f"the model checkpoint has no tensor '{k}' (not an Infinity text-to-image state dict?)")
        return sd[k]

    C, d_in = need("word_embed.weight").shape
    blocks = {}
    chunked = plain = False
    for k in sd:
        m = BLOCK_RE.match(k)
        if not m:
            continue
        if m.group(1) is not None:
            plain = True
            blocks.setdefault((0, int(m.group(1))), set()).add(m.group(4))
        else:
            chunked = True
            blocks.setdefault((int(m.group(2)), int(m.group(3))), set()).add(m.group(4))
    if not blocks:
        fail("the model checkpoint has no blocks.* or block_chunks.* tensors")
    if chunked and plain:
        fail("the model checkpoint mixes blocks.* and block_chunks.* keys")
    if chunked:
        chunks = sorted({c for c, _ in blocks})
        per = sorted({i for _, i in blocks})
        if chunks != list(range(len(chunks))) or per != list(range(len(per))) or len(blocks) != len(chunks) * len(per):
            fail(f"block_chunks keys do not form a full chunks x blocks grid ({len(chunks)} chunks, {len(per)} per chunk)")
        n_chunks, depth = len(chunks), len(chunks) * len(per)
        prefix = lambda i: f"block_chunks.{i // len(per)}.module.{i % len(per)}."  # noqa: E731
    else:
        idx = sorted(i for _, i in blocks)
        if idx != list(range(len(idx))):
            fail("blocks.<i> keys are not numbered 0..depth-1")
        n_chunks, depth = 1, len(idx)
        prefix = lambda i: f"blocks.{i}."  # noqa: E731
    p0 = prefix(0)
    heads = need(p0 + "sa.scale_mul_1H11").numel()
    F = need(p0 + "ffn.fc1.weight").shape[0]
    if C % heads:
        fail(f"width {C} is not divisible by {heads} heads")
    mlp_ratio = F / C
    if round(C * mlp_ratio / 256) * 256 != F:
        fail(f"FFN width {F} is not round(C * mlp_ratio / 256) * 256 for C = {C}")
    V = need("head.weight").shape[0]
    if V != 2 * d_in:
        fail(f"head has {V} outputs for {d_in} bits per token: only bitwise labels (V = 2 x bits) are supported")
    return {
        "embed_dim": int(C), "depth": depth, "num_heads": int(heads), "mlp_ratio": mlp_ratio,
        "text_channels": int(need("text_norm.weight").shape[0]), "text_maxlen": int(need("cfg_uncond").shape[0]),
        "block_chunks": n_chunks, "shared_aln": (p0 + "ada_gss") in sd,
        "cross_attn_layer_scale": 1.0 if (p0 + "ca_gamma") in sd else -1.0,
        "_d_vae": int(d_in),
    }


# ------------------------------------------------------------------------------------------- the VAE

def derive_vae(sd, path):
    dec = {k: v for k, v in sd.items() if k.startswith("decoder.")}
    if not dec:
        fail(f"{path}: no decoder.* tensors (not an Infinity BSQ-VAE state dict?)")

    def conv(name):  # either key style
        for k in (f"decoder.{name}.conv.weight", f"decoder.{name}.weight"):
            if k in dec:
                return dec[k]
        fail(f"{path}: no tensor for decoder.{name}")

    z = conv("conv_in").shape[1]
    base = conv("conv_out").shape[1]
    levels = sorted({int(m.group(1)) for k in dec for m in [re.match(r"decoder\.up\.(\d+)\.", k)] if m})
    if levels != list(range(len(levels))):
        fail(f"{path}: decoder.up levels are not numbered 0..n-1")
    mult, nblocks, ups = [], None, 0
    for lvl in levels:
        out_ch = conv(f"up.{lvl}.block.0.conv1").shape[0]
        if out_ch % base:
            fail(f"{path}: decoder level {lvl} has {out_ch} channels, not a multiple of base {base}")
        mult.append(out_ch // base)
        nb = len({int(m.group(1)) for k in dec for m in [re.match(rf"decoder\.up\.{lvl}\.block\.(\d+)\.", k)] if m})
        if nblocks is None:
            nblocks = nb
        elif nb != nblocks:
            fail(f"{path}: decoder levels have different block counts")
        if any(k.startswith(f"decoder.up.{lvl}.upsample.") for k in dec):
            ups += 1
    if mult[0] != 1:
        fail(f"{path}: decoder_ch_mult[0] = {mult[0]}; base_ch is read from conv_out, so it must be 1")
    if any(k.startswith("decoder.mid.attn_1") for k in dec):
        fail(f"{path}: decoder attention blocks (cnn_attention = yes) are not supported")
    return {"codebook_dim": int(z), "base_ch": int(base), "decoder_ch_mult": mult, "num_res_blocks": nblocks - 1,
            "patch_size": 2 ** ups}


def vae_decoder_keys(v):
    """The official decoder state-dict names for these shapes (flux_vqgan.Decoder, Conv/Normalize wrappers)."""
    keys = []

    def c(n):
        keys.extend([f"decoder.{n}.conv.weight", f"decoder.{n}.conv.bias"])

    def g(n):
        keys.extend([f"decoder.{n}.norm.weight", f"decoder.{n}.norm.bias"])

    def res(n, cin, cout):
        g(n + ".norm1"), c(n + ".conv1"), g(n + ".norm2"), c(n + ".conv2")
        if cin != cout:
            c(n + ".nin_shortcut")

    mult, base = v["decoder_ch_mult"], v["base_ch"]
    block_in = base * mult[-1]
    c("conv_in")
    res("mid.block_1", block_in, block_in)
    res("mid.block_2", block_in, block_in)
    max_up = v["patch_size"].bit_length() - 1
    for lvl in reversed(range(len(mult))):
        out = base * mult[lvl]
        for i in range(v["num_res_blocks"] + 1):
            res(f"up.{lvl}.block.{i}", block_in, out)
            block_in = out
        if 1 <= lvl <= max_up:
            c(f"up.{lvl}.upsample.conv")
    g("norm_out")
    c("conv_out")
    return keys


def map_vae_keys(sd, v, path):
    """decoder.* tensors under the official names (load_cnn's .weight -> .conv.weight / .norm.weight)."""
    want = vae_decoder_keys(v)
    wanted = set(want)
    out = {}
    for k, t in sd.items():
        if not k.startswith("decoder."):
            continue
        if k in wanted:
            out[k] = t
            continue
        done = False
        for suf in (".weight", ".bias"):
            if k.endswith(suf):
                for ins in (".conv", ".norm"):
                    k2 = k[: -len(suf)] + ins + suf
                    if k2 in wanted:
                        out[k2] = t
                        done = True
        if not done:
            fail(f"{path}: decoder tensor {k} has no place in the decoder ({len(want)} tensors expected)")
    missing = [k for k in want if k not in out]
    if missing:
        fail(f"{path}: {len(missing)} decoder tensors missing (e.g. {missing[0]})")
    return out


# ------------------------------------------------------------------------------------------------ main

def convert(model_path, vae_path, out_dir, name, preset=None, dtype="keep"):
    sd = clean_keys(load_model_state(model_path))
    inf = derive_infinity(sd)
    vobj = _load_pth(vae_path)
    vsd = vobj.get("vae", vobj.get("ema")) if isinstance(vobj, dict) and ("vae" in vobj or "ema" in vobj) else vobj
    vsd = clean_keys(_unwrap_state_dict(vsd, vae_path))
    v = derive_vae(vsd, vae_path)
    d_vae = inf.pop("_d_vae")
    if d_vae == v["codebook_dim"]:
        patchify = 0
    elif d_vae == 4 * v["codebook_dim"]:
        patchify = 1
    else:
        fail(f"the transformer takes {d_vae} bits per token but the VAE codes {v['codebook_dim']} "
             f"(expected equal, or 4x with the 8B's 2x2 spatial patchify)")
    preset = preset or ("8b" if patchify else "2b")
    with open(os.path.join(REPO, "configs", f"infinity-{preset}.json")) as f:
        cfg = json.load(f)
    cfg = copy.deepcopy(cfg)
    cfg["name"] = name
    cfg["checkpoint"] = os.path.basename(os.path.normpath(model_path))
    cfg["infinity_kwargs"].update(inf)
    cfg["infinity_kwargs"]["apply_spatial_patchify"] = patchify
    vc = cfg["vae"]
    vc.update(v)
    vc["embed_dim"] = v["codebook_dim"]
    vc["codebook_size"] = 2 ** v["codebook_dim"]
    vc["encoder_ch_mult"] = v["decoder_ch_mult"]
    vc["vae_type"] = v["codebook_dim"]
    vc["checkpoint"] = os.path.basename(vae_path)
    vc.setdefault("z_interplote_up", "trilinear")

    def cast(t):
        if dtype == "keep" or not t.is_floating_point():
            return t
        return t.to({"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}[dtype])

    os.makedirs(out_dir, exist_ok=True)
    mp = os.path.join(out_dir, f"{name}.model.safetensors")
    vp = os.path.join(out_dir, f"{name}.vae.safetensors")
    cp = os.path.join(out_dir, f"{name}.config.json")
    safetensors_io.save(mp, {k: cast(t) for k, t in sd.items()},
                        {"format": "pt", "source": f"scripts/convert_infinity.py {os.path.basename(model_path)}"})
    safetensors_io.save(vp, {k: cast(t) for k, t in map_vae_keys(vsd, v, vae_path).items()},
                        {"format": "pt", "source": f"scripts/convert_infinity.py {os.path.basename(vae_path)}"})
    safetensors_io.write_text(cp, json.dumps(cfg, indent=1) + "\n")
    return mp, vp, cp


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="Infinity .pth, or sharded checkpoint folder / *.index.json")
    ap.add_argument("--vae", required=True, help="BSQ-VAE .pth (infinity_vae_d32reg.pth, infinity_vae_d56_f8_14_patchify.pth)")
    ap.add_argument("--out-dir", required=True)
    ap.add_argument("--name", required=True, help="file stem of the outputs")
    ap.add_argument("--preset", choices=["2b", "8b"], help="template config (default: 8b with patchify, else 2b)")
    ap.add_argument("--dtype", choices=["keep", "f32", "f16", "bf16"], default="keep",
                    help="store floating-point tensors as this type (default: as in the checkpoint)")
    a = ap.parse_args()
    for p in (a.model, a.vae):
        if not os.path.exists(p):
            fail(f"{p}: no such file or folder")
    mp, vp, cp = convert(a.model, a.vae, a.out_dir, a.name, a.preset, a.dtype)
    print(f"wrote {mp}\nwrote {vp}\nwrote {cp}")


if __name__ == "__main__":
    main()
