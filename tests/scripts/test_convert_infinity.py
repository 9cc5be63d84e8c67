#!/usr/bin/python3
"""Round trip of scripts/convert_infinity.py on tiny checkpoints in the official key layout.

Builds random state dicts with the official Infinity / BSQ-VAE key names (checked against the golden's
real state dicts when ../shared/golden is there), saves them as the official files are saved (a plain
.pth; a sharded pytorch_model-*.bin checkpoint with its index; a VAE .pth {'vae': ...} in both the
Conv-wrapper and the older key style), converts, and checks that every tensor comes back unchanged
under the official names, that the config describes the model, that bad inputs fail with a message,
and - given --scalekv - that `scalekv generate` runs the converted model end to end.
Exit 77 (skip) without PyTorch.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "scripts"))

try:
    import torch
except ImportError:
    print("SKIP: PyTorch is not installed (Debian: python3-torch)")
    sys.exit(77)

import convert_infinity  # noqa: E402
import safetensors_io  # noqa: E402

FAILS = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what)
    if not cond:
        FAILS.append(what)


def official_model_shapes(C, H, depth, chunks, Ct5, Lt, dv, F):
    """Infinity.state_dict() key names and shapes (infinity.py / basic.py at 4c27bbb)."""
    D = C
    Hp = Ct5 // (64 if D > 4096 else 128)
    s = {
        "cfg_uncond": [Lt, Ct5], "head.bias": [2 * dv], "head.weight": [2 * dv, C],
        "head_nm.ada_lin.1.bias": [2 * C], "head_nm.ada_lin.1.weight": [2 * C, D], "lvl_embed.weight": [15, C],
        "pos_start": [1, 1, C], "shared_ada_lin.1.bias": [6 * C], "shared_ada_lin.1.weight": [6 * C, D],
        "text_norm.weight": [Ct5], "text_proj_for_ca.0.bias": [D], "text_proj_for_ca.0.weight": [D, Ct5],
        "text_proj_for_ca.2.bias": [D], "text_proj_for_ca.2.weight": [D, D],
        "text_proj_for_sos.ca.mat_kv.weight": [2 * D, Ct5], "text_proj_for_sos.ca.mat_q": [1, Hp, D // Hp],
        "text_proj_for_sos.ca.proj.bias": [D], "text_proj_for_sos.ca.proj.weight": [D, D],
        "text_proj_for_sos.ca.v_bias": [D], "text_proj_for_sos.ca.zero_k_bias": [D],
        "word_embed.bias": [C], "word_embed.weight": [C, dv],
    }
    per = depth // chunks
    for i in range(depth):
        p = f"block_chunks.{i // per}.module.{i % per}." if chunks > 1 else f"blocks.{i}."
        s.update({
            p + "ada_gss": [1, 1, 6, C], p + "ca.mat_kv.weight": [2 * C, D], p + "ca.mat_q.bias": [C],
            p + "ca.mat_q.weight": [C, C], p + "ca.proj.bias": [C], p + "ca.proj.weight": [C, C],
            p + "ca.v_bias": [C], p + "ca.zero_k_bias": [C], p + "ca_norm.bias": [C], p + "ca_norm.weight": [C],
            p + "ffn.fc1.bias": [F], p + "ffn.fc1.weight": [F, C], p + "ffn.fc2.bias": [C], p + "ffn.fc2.weight": [C, F],
            p + "sa.mat_qkv.weight": [3 * C, C], p + "sa.proj.bias": [C], p + "sa.proj.weight": [C, C],
            p + "sa.q_bias": [C], p + "sa.scale_mul_1H11": [1, H, 1, 1], p + "sa.v_bias": [C], p + "sa.zero_k_bias": [C],
        })
    return s


def official_vae_shapes(z, base, mult, nres, patch):
    """AutoEncoder.state_dict() decoder names and shapes plus a few encoder tensors and the masks."""
    s = {}

    def conv(n, cin, cout, k=3):
        s[f"decoder.{n}.conv.weight"] = [cout, cin, k, k]
        s[f"decoder.{n}.conv.bias"] = [cout]

    def norm(n, ch):
        s[f"decoder.{n}.norm.weight"] = [ch]
        s[f"decoder.{n}.norm.bias"] = [ch]

    def res(n, cin, cout):
        norm(n + ".norm1", cin), conv(n + ".conv1", cin, cout), norm(n + ".norm2", cout), conv(n + ".conv2", cout, cout)
        if cin != cout:
            conv(n + ".nin_shortcut", cin, cout, 1)

    block_in = base * mult[-1]
    conv("conv_in", z, block_in)
    res("mid.block_1", block_in, block_in)
    res("mid.block_2", block_in, block_in)
    max_up = patch.bit_length() - 1
    for lvl in reversed(range(len(mult))):
        for i in range(nres + 1):
            res(f"up.{lvl}.block.{i}", block_in, base * mult[lvl])
            block_in = base * mult[lvl]
        if 1 <= lvl <= max_up:
            conv(f"up.{lvl}.upsample.conv", block_in, block_in)
    norm("norm_out", block_in)
    conv("conv_out", block_in, 3)
    s["encoder.conv_in.conv.weight"] = [base, 3, 3, 3]
    s["encoder.conv_in.conv.bias"] = [base]
    s["quantizer.lfq.mask"] = [z]
    s["quantize.lfq.mask"] = [z]
    return s


def random_sd(shapes, seed, bf16_keys=()):
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k, shp in shapes.items():
        if k.endswith("lfq.mask"):
            out[k] = 2 ** torch.arange(shp[0] - 1, -1, -1)
        elif k.endswith("zero_k_bias"):
            out[k] = torch.zeros(shp)
        elif k.endswith("scale_mul_1H11"):
            out[k] = torch.full(shp, 4.0).log()
        elif k.endswith("norm.weight") or k.endswith("norm1.norm.weight") or k.endswith("norm2.norm.weight"):
            out[k] = 1 + 0.05 * torch.randn(shp, generator=g)
        else:
            fan = shp[1] if len(shp) >= 2 else 1
            if len(shp) == 4 and "conv" in k:
                fan = shp[1] * shp[2] * shp[3]
            out[k] = torch.randn(shp, generator=g) * (0.02 if len(shp) == 1 else 1.0 / max(fan, 1) ** 0.5)
        if k in bf16_keys:
            out[k] = out[k].to(torch.bfloat16)
    return out


def old_style(vsd):
    """The pre-wrapper key style load_cnn accepts: conv1.weight instead of conv1.conv.weight, etc."""
    out = {}
    for k, v in vsd.items():
        out[k.replace(".conv.weight", ".weight").replace(".conv.bias", ".bias").replace(".norm.weight", ".weight")
            .replace(".norm.bias", ".bias") if k.startswith("decoder.") else k] = v
    return out


def run_convert(args, expect_ok=True):
    p = subprocess.run([sys.executable, os.path.join(REPO, "scripts", "convert_infinity.py")] + args,
                       capture_output=True, text=True)
    if expect_ok and p.returncode != 0:
        print(p.stdout, p.stderr)
    return p


def compare_files(got_path, want_sd, what):
    got = safetensors_io.load(got_path)
    check(set(got) == set(want_sd), f"{what}: key set ({len(got)} tensors)")
    same = all(got[k].dtype == want_sd[k].dtype and torch.equal(got[k], want_sd[k]) for k in want_sd if k in got)
    check(same, f"{what}: every tensor unchanged (values and dtype)")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--scalekv", help="path of the scalekv binary: also run `scalekv generate` on the result")
    ap.add_argument("--golden", default=os.path.join(REPO, "..", "shared", "golden"))
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="skv_convert_")
    try:
        # The key generators against the golden's real state dicts (official code @ 4c27bbb).
        gm = os.path.join(a.golden, "infinity-tiny.model.safetensors")
        gv = os.path.join(a.golden, "infinity-tiny.vae.safetensors")
        if os.path.exists(gm) and os.path.exists(gv):
            real = safetensors_io.load(gm)
            mine = official_model_shapes(256, 2, 4, 2, 512, 512, 32, 1024)
            check({k: list(v.shape) for k, v in real.items()} == mine, "model key layout == the golden's Infinity.state_dict()")
            realv = {k: list(v.shape) for k, v in safetensors_io.load(gv).items() if k.startswith("decoder.")}
            minev = {k: v for k, v in official_vae_shapes(32, 32, [1, 2, 4, 4, 4], 2, 16).items() if k.startswith("decoder.")}
            check(realv == minev, "VAE decoder key layout == the golden's AutoEncoder.state_dict()")
        else:
            print("note: no golden state dicts to check the key layout against")

        # 2B-style: plain .pth, block_chunks, one bf16 tensor; VAE in the old key style.
        C, H, depth, chunks, Ct5, Lt, d = 64, 2, 2, 2, 128, 16, 8
        msd = random_sd(official_model_shapes(C, H, depth, chunks, Ct5, Lt, d, 256), 1,
                        bf16_keys=("block_chunks.1.module.0.ffn.fc2.weight",))
        vsd = random_sd(official_vae_shapes(d, 32, [1, 1, 2], 1, 4), 2)
        torch.save(msd, os.path.join(tmp, "tiny_2b.pth"))
        torch.save({"vae": old_style(vsd)}, os.path.join(tmp, "tiny_vae.pth"))
        out = os.path.join(tmp, "out")
        p = run_convert(["--model", os.path.join(tmp, "tiny_2b.pth"), "--vae", os.path.join(tmp, "tiny_vae.pth"),
                         "--out-dir", out, "--name", "tiny"])
        check(p.returncode == 0, "convert a plain .pth + old-style VAE")
        compare_files(os.path.join(out, "tiny.model.safetensors"), msd, "model")
        compare_files(os.path.join(out, "tiny.vae.safetensors"), {k: v for k, v in vsd.items() if k.startswith("decoder.")},
                      "VAE decoder (old key style mapped to the official names)")
        with open(os.path.join(out, "tiny.config.json")) as f:
            cfg = json.load(f)
        k = cfg["infinity_kwargs"]
        check(cfg["family"] == "infinity" and k["embed_dim"] == C and k["depth"] == depth and k["num_heads"] == H
              and k["block_chunks"] == chunks and k["text_channels"] == Ct5 and k["text_maxlen"] == Lt
              and k["apply_spatial_patchify"] == 0 and k["mlp_ratio"] == 4.0, "config: transformer shapes")
        v = cfg["vae"]
        check(v["codebook_dim"] == d and v["base_ch"] == 32 and v["decoder_ch_mult"] == [1, 1, 2]
              and v["num_res_blocks"] == 1 and v["patch_size"] == 4, "config: VAE shapes")

        # 8B-style: sharded .bin checkpoint with index, 2x2 patchify (4d bits per token), blocks.* layout.
        msd8 = random_sd(official_model_shapes(C, H, 3, 1, Ct5, Lt, 4 * d, 256), 3)
        shard_dir = os.path.join(tmp, "tiny_8b_weights")
        os.makedirs(shard_dir)
        names = sorted(msd8)
        half = len(names) // 2
        wm = {}
        for i, part in enumerate((names[:half], names[half:])):
            fn = f"pytorch_model-0000{i + 1}-of-00002.bin"
            torch.save({n: msd8[n] for n in part}, os.path.join(shard_dir, fn))
            wm.update({n: fn for n in part})
        with open(os.path.join(shard_dir, "pytorch_model.bin.index.json"), "w") as f:
            json.dump({"metadata": {"total_size": 0}, "weight_map": wm}, f)
        torch.save({"vae": vsd}, os.path.join(tmp, "tiny_vae_new.pth"))
        out8 = os.path.join(tmp, "out8")
        p = run_convert(["--model", shard_dir, "--vae", os.path.join(tmp, "tiny_vae_new.pth"), "--out-dir", out8,
                         "--name", "tiny8", "--dtype", "f32"])
        check(p.returncode == 0, "convert a sharded checkpoint + official-style VAE")
        compare_files(os.path.join(out8, "tiny8.model.safetensors"), msd8, "sharded model")
        with open(os.path.join(out8, "tiny8.config.json")) as f:
            cfg8 = json.load(f)
        check(cfg8["infinity_kwargs"]["apply_spatial_patchify"] == 1 and cfg8["infinity_kwargs"]["block_chunks"] == 1
              and cfg8["infinity_kwargs"]["depth"] == 3, "config: patchify and blocks.* layout detected")

        # Errors a user can cause.
        bad = dict(vsd)
        bad["decoder.up.0.block.0.extra.weight"] = torch.zeros(3)
        torch.save({"vae": bad}, os.path.join(tmp, "bad_vae.pth"))
        p = run_convert(["--model", os.path.join(tmp, "tiny_2b.pth"), "--vae", os.path.join(tmp, "bad_vae.pth"),
                         "--out-dir", out, "--name", "bad"], expect_ok=False)
        check(p.returncode != 0 and "decoder.up.0.block.0.extra.weight" in p.stderr, "unknown VAE tensor is named")
        nomodel = {k: t for k, t in msd.items() if k != "word_embed.weight"}
        torch.save(nomodel, os.path.join(tmp, "bad.pth"))
        p = run_convert(["--model", os.path.join(tmp, "bad.pth"), "--vae", os.path.join(tmp, "tiny_vae.pth"),
                         "--out-dir", out, "--name", "bad"], expect_ok=False)
        check(p.returncode != 0 and "word_embed.weight" in p.stderr, "missing transformer tensor is named")

        # End to end: the converted files run in scalekv.
        if a.scalekv:
            g = torch.Generator().manual_seed(5)
            lens = [3, 6]
            emb = os.path.join(tmp, "prompts.safetensors")
            safetensors_io.save(emb, {"kv_compact": torch.randn(sum(lens), Ct5, generator=g) * 0.3,
                                      "lens": torch.tensor(lens, dtype=torch.int64)},
                                {"prompts": json.dumps(["a", "b"])})
            for stem, o in (("tiny", out), ("tiny8", out8)):
                png = os.path.join(tmp, "png_" + stem)
                r = subprocess.run([a.scalekv, "generate", "--model", os.path.join(o, stem + ".config.json"),
                                    "--weights", os.path.join(o, stem + ".model.safetensors"),
                                    "--vae", os.path.join(o, stem + ".vae.safetensors"), "--text-embeddings", emb,
                                    "--resolution", "256", "--h-div-w", "1.0", "--cfg", "3", "--tau", "0.5",
                                    "--out", png], capture_output=True, text=True)
                if r.returncode != 0:
                    print(r.stdout, r.stderr)
                ok = r.returncode == 0 and sorted(os.listdir(png)) == ["0000.png", "0001.png"]
                check(ok, f"scalekv generate runs the converted {stem} model")
                if ok:
                    with open(os.path.join(png, "0000.png"), "rb") as f:
                        head = f.read(24)
                    w, h = int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
                    want = 64 if stem == "tiny" else 128
                    check((w, h) == (want, want), f"{stem}: PNG is {w}x{h}, expected {want}x{want}")
            r = subprocess.run([a.scalekv, "generate", "--model", os.path.join(out, "tiny.config.json"), "--weights",
                                os.path.join(out, "tiny.model.safetensors"), "--vae",
                                os.path.join(out, "tiny.vae.safetensors"), "--text-embeddings", emb, "--h-div-w", "1.1",
                                "--out", os.path.join(tmp, "x")], capture_output=True, text=True)
            check(r.returncode != 0 and "1.333" in r.stderr, "unknown aspect ratio lists the valid ones")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if FAILS:
        print(f"{len(FAILS)} check(s) failed")
        sys.exit(1)
    print("all checks passed")


if __name__ == "__main__":
    main()
