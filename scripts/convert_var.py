#!/usr/bin/python3
"""convert_var.py - official VAR checkpoints (var_d16.pth ... var_d36.pth, vae_ch160v4096z32.pth) to
scalekv's safetensors + config.

    /usr/bin/python3 scripts/convert_var.py --var var_d16.pth --vae vae_ch160v4096z32.pth --out models/var-d16
    /usr/bin/python3 scripts/convert_var.py --self-test [--golden ../shared/golden/var-tiny-a]

Writes OUT/NAME.var.safetensors, OUT/NAME.vae.safetensors and OUT/NAME.config.json. Tensor names are
kept exactly (the runtime reads the official key layout); everything the architecture needs is inferred
from the state dict's shapes, so any depth, width, schedule and VQ-VAE variant converts. Only the patch
schedule cannot always be inferred (pos_1LC holds sum(pn^2)); known schedules are recognised and
--patch-nums overrides. Needs Debian's PyTorch (/usr/bin/python3); the safetensors writer is built in.
"""
import argparse
import json
import math
import os
import struct
import sys
import tempfile

try:
    import torch
except ImportError:  # pragma: no cover
    sys.exit("convert_var.py: needs PyTorch - run it with Debian's /usr/bin/python3 (apt-get install python3-torch)")

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import safetensors_io  # noqa: E402  (atomic_write, write_text)

KNOWN_SCHEDULES = [
    [1, 2, 3, 4, 5, 6, 8, 10, 13, 16],      # 256 x 256
    [1, 2, 3, 4, 6, 9, 13, 18, 24, 32],     # 512 x 512 (d36)
]
DTYPES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.int64: "I64", torch.int32: "I32",
          torch.uint8: "U8"}


def write_safetensors(path, tensors, metadata=None):
    header, offset, blobs = {}, 0, []
    if metadata:
        header["__metadata__"] = metadata
    for name, t in tensors.items():
        t = t.detach().contiguous().cpu()
        if t.dtype not in DTYPES:
            raise SystemExit(f"{path}: tensor '{name}' has unsupported dtype {t.dtype}")
        raw = t.view(torch.uint8).numpy().tobytes() if t.numel() else b""
        header[name] = {"dtype": DTYPES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + len(raw)]}
        offset += len(raw)
        blobs.append(raw)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with safetensors_io.atomic_write(path) as f:  # temporary name, fsync, rename: never half a checkpoint
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def read_safetensors(path):
    inv = {v: k for k, v in DTYPES.items()}
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        a, b = e["data_offsets"]
        t = torch.frombuffer(bytearray(data[a:b]), dtype=torch.uint8) if b > a else torch.empty(0, dtype=torch.uint8)
        out[name] = t.view(inv[e["dtype"]]).reshape(e["shape"])
    return out


def load_state_dict(path):
    obj = torch.load(path, map_location="cpu")
    for key in ("model", "state_dict", "trainer"):  # training checkpoints nest the weights
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            obj = obj[key]
            if key == "trainer" and "var_wo_ddp" in obj:
                obj = obj["var_wo_ddp"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise SystemExit(f"{path}: not a state dict of tensors")
    return {k.replace("_orig_mod.", ""): v for k, v in obj.items()}


def need(sd, key, path):
    if key not in sd:
        raise SystemExit(f"{path}: missing tensor '{key}' (not an official VAR/VQVAE state dict?)")
    return sd[key]


def infer_var(sd, path, patch_nums=None):
    word = need(sd, "word_embed.weight", path)
    C, Cvae = word.shape
    depth = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks."))
    shared = "shared_ada_lin.1.weight" in sd
    l2 = "blocks.0.attn.scale_mul_1H11" in sd
    heads = need(sd, "blocks.0.attn.scale_mul_1H11", path).shape[1] if l2 else depth
    L = need(sd, "pos_1LC", path).shape[1]
    S = need(sd, "lvl_embed.weight", path).shape[0]
    if patch_nums is None:
        for cand in KNOWN_SCHEDULES:
            if len(cand) == S and sum(p * p for p in cand) == L:
                patch_nums = cand
        if patch_nums is None:
            raise SystemExit(f"{path}: {S} scales with {L} tokens is not a known schedule; pass --patch-nums")
    if len(patch_nums) != S or sum(p * p for p in patch_nums) != L:
        raise SystemExit(f"--patch-nums {patch_nums} does not give {S} scales / {L} tokens of {path}")
    fc1 = need(sd, "blocks.0.ffn.fc1.weight", path)
    return dict(depth=depth, embed_dim=C, num_heads=heads, mlp_ratio=fc1.shape[0] / C, shared_aln=shared,
                attn_l2_norm=l2, patch_nums=list(patch_nums), V=need(sd, "head.weight", path).shape[0], Cvae=Cvae,
                num_classes=need(sd, "class_emb.weight", path).shape[0] - 1, norm_eps=1e-6)


def infer_vae(sd, path):
    out_ch = need(sd, "decoder.conv_out.weight", path).shape[1]
    levels = sorted({int(k.split(".")[2]) for k in sd if k.startswith("decoder.up.")})
    ch_mult = [sd[f"decoder.up.{i}.block.0.conv1.weight"].shape[0] for i in levels]
    ch = ch_mult[0] if ch_mult else out_ch
    blocks = 1 + max(int(k.split(".")[4]) for k in sd if k.startswith("decoder.up.0.block."))
    top = levels[-1]
    if "quantize.quant_resi.qresi_ls.0.weight" in sd:
        share = len({k.split(".")[3] for k in sd if k.startswith("quantize.quant_resi.qresi_ls.")})
    elif "quantize.quant_resi.qresi.weight" in sd:
        share = 1
    else:
        share = 0
    return dict(ch=ch, vae_ch_mult=[m // ch for m in ch_mult], vae_num_res_blocks=blocks - 1,
                vae_using_sa=f"decoder.up.{top}.attn.0.qkv.weight" in sd,
                vae_using_mid_sa="decoder.mid.attn_1.qkv.weight" in sd, quant_resi=0.5, share_quant_resi=share)


def convert(var_path, vae_path, out_dir, name, patch_nums=None, dtype=None):
    var_sd, vae_sd = load_state_dict(var_path), load_state_dict(vae_path)
    cfg = {"family": "var", "name": name}
    cfg.update(infer_var(var_sd, var_path, patch_nums))
    cfg.update(infer_vae(vae_sd, vae_path))
    if vae_sd["quantize.embedding.weight"].shape != (cfg["V"], cfg["Cvae"]):
        raise SystemExit(f"{vae_path}: codebook {tuple(vae_sd['quantize.embedding.weight'].shape)} does not fit "
                         f"{var_path} (V={cfg['V']}, Cvae={cfg['Cvae']})")
    cfg["image_size"] = cfg["patch_nums"][-1] * 2 ** (len(cfg["vae_ch_mult"]) - 1)
    cfg.update(cfg=1.5, top_k=900, top_p=0.95)
    if dtype is not None:
        cast = lambda sd: {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in sd.items()}
        var_sd, vae_sd = cast(var_sd), cast(vae_sd)
    os.makedirs(out_dir, exist_ok=True)
    meta = {"format": "pt", "converted_by": "scalekv scripts/convert_var.py"}
    write_safetensors(os.path.join(out_dir, f"{name}.var.safetensors"), var_sd, dict(meta, source=os.path.basename(var_path)))
    write_safetensors(os.path.join(out_dir, f"{name}.vae.safetensors"), vae_sd, dict(meta, source=os.path.basename(vae_path)))
    safetensors_io.write_text(os.path.join(out_dir, f"{name}.config.json"), json.dumps(cfg, indent=1))
    return cfg


def synthetic_state_dicts(depth=2, C=64, heads=4, V=16, Cvae=8, patch_nums=(1, 2, 3, 4, 5, 6, 8, 10, 13, 16), ch=32,
                          ch_mult=(1, 2), shared=False, num_classes=10, std=1.0, encoder=False):
    """A state dict in the official key layout with random values (no download needed). std scales the
    values (a full-width model needs ~0.02 to stay finite through its depth); encoder adds the VQVAE
    encoder's keys, which the official vae_ch160v4096z32.pth carries and the runtime never reads."""
    g = torch.Generator().manual_seed(0)
    r = lambda *s: torch.randn(*s, generator=g) * std
    L, S = sum(p * p for p in patch_nums), len(patch_nums)
    var = {"word_embed.weight": r(C, Cvae), "word_embed.bias": r(C), "class_emb.weight": r(num_classes + 1, C),
           "pos_start": r(1, 1, C), "pos_1LC": r(1, L, C), "lvl_embed.weight": r(S, C),
           "head_nm.ada_lin.1.weight": r(2 * C, C), "head_nm.ada_lin.1.bias": r(2 * C), "head.weight": r(V, C),
           "head.bias": r(V), "lvl_1L": torch.zeros(1, L, dtype=torch.int64),
           "attn_bias_for_masking": torch.zeros(1, 1, L, L)}
    if shared:
        var.update({"shared_ada_lin.1.weight": r(6 * C, C), "shared_ada_lin.1.bias": r(6 * C)})
    for i in range(depth):
        p = f"blocks.{i}."
        var.update({p + "attn.mat_qkv.weight": r(3 * C, C), p + "attn.q_bias": r(C), p + "attn.v_bias": r(C),
                    p + "attn.zero_k_bias": torch.zeros(C), p + "attn.scale_mul_1H11": r(1, heads, 1, 1),
                    p + "attn.proj.weight": r(C, C), p + "attn.proj.bias": r(C), p + "ffn.fc1.weight": r(4 * C, C),
                    p + "ffn.fc1.bias": r(4 * C), p + "ffn.fc2.weight": r(C, 4 * C), p + "ffn.fc2.bias": r(C)})
        if shared:
            var[p + "ada_gss"] = r(1, 1, 6, C)
        else:
            var.update({p + "ada_lin.1.weight": r(6 * C, C), p + "ada_lin.1.bias": r(6 * C)})
    vae = {"quantize.embedding.weight": r(V, Cvae), "post_quant_conv.weight": r(Cvae, Cvae, 3, 3),
           "post_quant_conv.bias": r(Cvae), "quant_conv.weight": r(Cvae, Cvae, 3, 3), "quant_conv.bias": r(Cvae),
           "quantize.ema_vocab_hit_SV": torch.zeros(S, V)}
    for i in range(4):
        vae.update({f"quantize.quant_resi.qresi_ls.{i}.weight": r(Cvae, Cvae, 3, 3), f"quantize.quant_resi.qresi_ls.{i}.bias": r(Cvae)})

    def res(prefix, cin, cout):
        d = {f"{prefix}.norm1.weight": r(cin), f"{prefix}.norm1.bias": r(cin), f"{prefix}.conv1.weight": r(cout, cin, 3, 3),
             f"{prefix}.conv1.bias": r(cout), f"{prefix}.norm2.weight": r(cout), f"{prefix}.norm2.bias": r(cout),
             f"{prefix}.conv2.weight": r(cout, cout, 3, 3), f"{prefix}.conv2.bias": r(cout)}
        if cin != cout:
            d.update({f"{prefix}.nin_shortcut.weight": r(cout, cin, 1, 1), f"{prefix}.nin_shortcut.bias": r(cout)})
        return d

    def attn(prefix, c):
        return {f"{prefix}.norm.weight": r(c), f"{prefix}.norm.bias": r(c), f"{prefix}.qkv.weight": r(3 * c, c, 1, 1),
                f"{prefix}.qkv.bias": r(3 * c), f"{prefix}.proj_out.weight": r(c, c, 1, 1), f"{prefix}.proj_out.bias": r(c)}

    top = ch * ch_mult[-1]
    vae.update({"decoder.conv_in.weight": r(top, Cvae, 3, 3), "decoder.conv_in.bias": r(top)})
    vae.update(res("decoder.mid.block_1", top, top)); vae.update(attn("decoder.mid.attn_1", top))
    vae.update(res("decoder.mid.block_2", top, top))
    cin = top
    for lvl in reversed(range(len(ch_mult))):
        cout = ch * ch_mult[lvl]
        for b in range(3):
            vae.update(res(f"decoder.up.{lvl}.block.{b}", cin, cout)); cin = cout
            if lvl == len(ch_mult) - 1:
                vae.update(attn(f"decoder.up.{lvl}.attn.{b}", cout))
        if lvl:
            vae.update({f"decoder.up.{lvl}.upsample.conv.weight": r(cout, cout, 3, 3), f"decoder.up.{lvl}.upsample.conv.bias": r(cout)})
    vae.update({"decoder.norm_out.weight": r(cin), "decoder.norm_out.bias": r(cin), "decoder.conv_out.weight": r(3, cin, 3, 3),
                "decoder.conv_out.bias": r(3)})
    if encoder:  # models/basic_vae.py Encoder: conv_in, down levels (2 res blocks, attn at the top), mid, out
        vae.update({"encoder.conv_in.weight": r(ch, 3, 3, 3), "encoder.conv_in.bias": r(ch)})
        cin = ch
        for lvl, m in enumerate(ch_mult):
            cout = ch * m
            for b in range(2):
                vae.update(res(f"encoder.down.{lvl}.block.{b}", cin, cout)); cin = cout
                if lvl == len(ch_mult) - 1:
                    vae.update(attn(f"encoder.down.{lvl}.attn.{b}", cout))
            if lvl != len(ch_mult) - 1:
                vae.update({f"encoder.down.{lvl}.downsample.conv.weight": r(cout, cout, 3, 3),
                            f"encoder.down.{lvl}.downsample.conv.bias": r(cout)})
        vae.update(res("encoder.mid.block_1", cin, cin)); vae.update(attn("encoder.mid.attn_1", cin))
        vae.update(res("encoder.mid.block_2", cin, cin))
        vae.update({"encoder.norm_out.weight": r(cin), "encoder.norm_out.bias": r(cin),
                    "encoder.conv_out.weight": r(Cvae, cin, 3, 3), "encoder.conv_out.bias": r(Cvae)})
    return var, vae


def full_size_test(out_dir, reference_config):
    """VAR-d16 at its real shape (depth 16, width 1024, 16 heads, V 4096, the 10-scale 256 px schedule, the
    ch 160 VQVAE with its encoder): official-layout .pth files in, converted, and the inferred config must
    equal the shipped configs/var-d16.json on every architecture key. The caller then runs the result."""
    ref = json.load(open(reference_config))
    var, vae = synthetic_state_dicts(depth=ref["depth"], C=ref["embed_dim"], heads=ref["num_heads"], V=ref["V"],
                                     Cvae=ref["Cvae"], patch_nums=ref["patch_nums"], ch=ref["ch"],
                                     ch_mult=ref["vae_ch_mult"], num_classes=ref["num_classes"], std=0.02, encoder=True)
    os.makedirs(out_dir, exist_ok=True)
    var_pth, vae_pth = os.path.join(out_dir, "var_d16.pth"), os.path.join(out_dir, "vae_ch160v4096z32.pth")
    torch.save(var, var_pth)
    torch.save(vae, vae_pth)
    n_var, n_vae = sum(v.numel() for v in var.values()), sum(v.numel() for v in vae.values())
    del var, vae
    cfg = convert(var_pth, vae_pth, out_dir, "var-d16")
    os.remove(var_pth), os.remove(vae_pth)
    for k, v in ref.items():
        if k in ("name", "checkpoint", "vae_checkpoint", "cfg", "top_k", "top_p"):
            continue
        if cfg.get(k) != v:
            raise SystemExit(f"full-size test: inferred {k}={cfg.get(k)}, {reference_config} says {v}")
    print(f"full-size test: VAR-d16 shape, {n_var / 1e6:.1f} M + {n_vae / 1e6:.1f} M parameters converted, "
          f"config equals {os.path.basename(reference_config)}")
    return 0


def self_test(golden, keep=None):
    """Round trip: official-layout state dicts -> .pth -> convert -> safetensors equal, config inferred."""
    cases = [("synthetic", *synthetic_state_dicts()), ("synthetic-shared", *synthetic_state_dicts(shared=True))]
    if golden and os.path.exists(golden + ".var.safetensors"):
        cases.append(("golden", read_safetensors(golden + ".var.safetensors"), read_safetensors(golden + ".vae.safetensors")))
        gcfg = json.load(open(golden + ".config.json"))
    with tempfile.TemporaryDirectory() as tmp:
        d = keep or tmp
        os.makedirs(d, exist_ok=True)
        for label, var, vae in cases:
            torch.save(var, os.path.join(d, "var.pth"))
            torch.save({"model": vae}, os.path.join(d, "vae.pth"))  # nested, as training checkpoints are
            pn = gcfg["patch_nums"] if label == "golden" else None
            cfg = convert(os.path.join(d, "var.pth"), os.path.join(d, "vae.pth"), d, label, patch_nums=pn)
            for sd, suffix in ((var, "var"), (vae, "vae")):
                back = read_safetensors(os.path.join(d, f"{label}.{suffix}.safetensors"))
                assert set(back) == set(sd), f"{label}: key sets differ"
                for k in sd:
                    assert back[k].dtype == sd[k].dtype and torch.equal(back[k], sd[k]), f"{label}: tensor {k} differs"
            if label == "golden":
                for k in ("depth", "embed_dim", "num_heads", "patch_nums", "V", "Cvae", "num_classes", "ch", "vae_ch_mult",
                          "vae_num_res_blocks", "vae_using_sa", "vae_using_mid_sa", "share_quant_resi", "shared_aln",
                          "attn_l2_norm", "image_size"):
                    assert cfg[k] == gcfg[k], f"golden: inferred {k}={cfg[k]}, the golden says {gcfg[k]}"
            else:
                assert cfg["shared_aln"] == (label == "synthetic-shared") and cfg["depth"] == 2 and cfg["vae_ch_mult"] == [1, 2]
            print(f"self-test {label}: {len(var)} + {len(vae)} tensors round-trip, config {cfg['depth']}x{cfg['embed_dim']} ok")
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--var", help="official VAR transformer checkpoint (var_dNN.pth)")
    ap.add_argument("--vae", help="official VQVAE checkpoint (vae_ch160v4096z32.pth)")
    ap.add_argument("--out", help="output folder")
    ap.add_argument("--name", help="output name (default: from the --var file name)")
    ap.add_argument("--patch-nums", help="comma-separated schedule when it cannot be inferred")
    ap.add_argument("--dtype", choices=["f32", "f16", "bf16"], help="cast float tensors (default: keep)")
    ap.add_argument("--self-test", action="store_true", help="round-trip check, no checkpoints needed")
    ap.add_argument("--golden", help="with --self-test: also round-trip this golden (DIR/NAME)")
    ap.add_argument("--keep", help="with --self-test: leave the converted models in this folder")
    ap.add_argument("--full-size-test", metavar="DIR",
                    help="convert random official-layout checkpoints of the VAR-d16 shape into DIR and check the config")
    ap.add_argument("--reference-config", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..",
                                                               "configs", "var-d16.json"),
                    help="with --full-size-test: the config the converted one must equal (default: configs/var-d16.json)")
    a = ap.parse_args()
    if a.self_test:
        return self_test(a.golden, a.keep)
    if a.full_size_test:
        return full_size_test(a.full_size_test, a.reference_config)
    if not (a.var and a.vae and a.out):
        ap.error("--var, --vae and --out are required (or --self-test)")
    name = a.name or os.path.splitext(os.path.basename(a.var))[0].replace("_", "-")
    pn = [int(x) for x in a.patch_nums.split(",")] if a.patch_nums else None
    dt = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}.get(a.dtype)
    cfg = convert(a.var, a.vae, a.out, name, pn, dt)
    print(f"wrote {a.out}/{name}.{{var,vae}}.safetensors and {name}.config.json "
          f"(depth {cfg['depth']}, width {cfg['embed_dim']}, {len(cfg['patch_nums'])} scales, {cfg['image_size']}px)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
