#!/usr/bin/python3
"""var_torch_ref.py - a PyTorch reference of VAR inference, written for scalekv's benchmarks.

Our own re-implementation of the official VAR architecture (class-conditional next-scale prediction
with a KV cache, AdaLN blocks with L2-normalised attention, the multi-scale VQ-VAE decoder), on the CPU
or on a GPU (--device cuda), in float32 (TF32 off) or bfloat16 (--dtype bf16: weights and activations,
as the official GPU runs), so `scalekv bench` can be compared with PyTorch on the same shapes in the
same run. On a GPU, attention uses F.scaled_dot_product_attention when this torch has it (PyTorch's
fused kernels), else the plain matmul-softmax-matmul. Full KV cache only (no ScaleKV here).
It loads the official key layout; --check-golden proves it is faithful by reproducing a golden's
teacher-forced logits (on either device, float32).

    /usr/bin/python3 scripts/bench/var_torch_ref.py --model configs/var-d16.json --batch 1,8 --repeats 3
    /usr/bin/python3 scripts/bench/var_torch_ref.py --device cuda --dtype bf16 --model configs/var-d30.json --batch 1,8,16
    /usr/bin/python3 scripts/bench/var_torch_ref.py --check-golden ../shared/golden/var-tiny-a [--device cuda]
"""
import argparse
import json
import math
import os
import statistics
import struct
import sys
import time

import torch
import torch.nn.functional as F

DEV = torch.device("cpu")  # set by --device
FLOAT = torch.float32      # set by --dtype
DT = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "I64": torch.int64, "I32": torch.int32}


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for k, e in header.items():
        if k == "__metadata__":
            continue
        a, b = e["data_offsets"]
        out[k] = torch.frombuffer(bytearray(data[a:b]), dtype=torch.uint8).view(DT[e["dtype"]]).reshape(e["shape"]).float() \
            if e["dtype"] != "I64" else torch.frombuffer(bytearray(data[a:b]), dtype=torch.int64).reshape(e["shape"])
    return out


def random_weights(cfg, seed=0):
    """Random tensors in the official layout: linear ~ N(0, 1/fan_in), norms ~ 1, biases and embeddings small."""
    g = torch.Generator().manual_seed(seed)
    C, D, H, F_, V, Cv = cfg["embed_dim"], cfg["embed_dim"], cfg["num_heads"], round(cfg["embed_dim"] * cfg.get("mlp_ratio", 4)), cfg["V"], cfg["Cvae"]
    L = sum(p * p for p in cfg["patch_nums"])
    lin = lambda o, i: torch.randn(o, i, generator=g) / math.sqrt(i)
    sm = lambda *s: 0.02 * torch.randn(*s, generator=g)
    w = {"word_embed.weight": lin(C, Cv), "word_embed.bias": sm(C), "class_emb.weight": sm(cfg["num_classes"] + 1, C),
         "pos_start": sm(1, 1, C), "pos_1LC": sm(1, L, C), "lvl_embed.weight": sm(len(cfg["patch_nums"]), C),
         "head_nm.ada_lin.1.weight": sm(2 * C, D), "head_nm.ada_lin.1.bias": sm(2 * C), "head.weight": lin(V, C), "head.bias": sm(V)}
    if cfg.get("shared_aln"):
        w.update({"shared_ada_lin.1.weight": sm(6 * C, D), "shared_ada_lin.1.bias": sm(6 * C)})
    for i in range(cfg["depth"]):
        p = f"blocks.{i}."
        w.update({p + "attn.mat_qkv.weight": lin(3 * C, C), p + "attn.q_bias": sm(C), p + "attn.v_bias": sm(C),
                  p + "attn.scale_mul_1H11": torch.full((1, H, 1, 1), math.log(4.0)), p + "attn.proj.weight": lin(C, C),
                  p + "attn.proj.bias": sm(C), p + "ffn.fc1.weight": lin(F_, C), p + "ffn.fc1.bias": sm(F_),
                  p + "ffn.fc2.weight": lin(C, F_), p + "ffn.fc2.bias": sm(C)})
        if cfg.get("shared_aln"):
            w[p + "ada_gss"] = sm(1, 1, 6, C)
        else:
            w.update({p + "ada_lin.1.weight": sm(6 * C, D), p + "ada_lin.1.bias": sm(6 * C)})
    ch, mult = cfg["ch"], cfg["vae_ch_mult"]
    conv = lambda o, i, k: torch.randn(o, i, k, k, generator=g) / math.sqrt(i * k * k)
    v = {"quantize.embedding.weight": torch.randn(V, Cv, generator=g), "post_quant_conv.weight": conv(Cv, Cv, 3),
         "post_quant_conv.bias": sm(Cv)}
    for i in range(cfg.get("share_quant_resi", 4)):
        v[f"quantize.quant_resi.qresi_ls.{i}.weight"] = conv(Cv, Cv, 3)
        v[f"quantize.quant_resi.qresi_ls.{i}.bias"] = sm(Cv)

    def norm(p, c):
        v[p + ".weight"] = 1 + sm(c)
        v[p + ".bias"] = sm(c)

    def res(p, i, o):
        norm(p + ".norm1", i); v[p + ".conv1.weight"] = conv(o, i, 3); v[p + ".conv1.bias"] = sm(o)
        norm(p + ".norm2", o); v[p + ".conv2.weight"] = conv(o, o, 3); v[p + ".conv2.bias"] = sm(o)
        if i != o:
            v[p + ".nin_shortcut.weight"] = conv(o, i, 1); v[p + ".nin_shortcut.bias"] = sm(o)

    def att(p, c):
        norm(p + ".norm", c); v[p + ".qkv.weight"] = conv(3 * c, c, 1); v[p + ".qkv.bias"] = sm(3 * c)
        v[p + ".proj_out.weight"] = conv(c, c, 1); v[p + ".proj_out.bias"] = sm(c)

    top = ch * mult[-1]
    v["decoder.conv_in.weight"] = conv(top, Cv, 3); v["decoder.conv_in.bias"] = sm(top)
    res("decoder.mid.block_1", top, top)
    if cfg.get("vae_using_mid_sa", True):
        att("decoder.mid.attn_1", top)
    res("decoder.mid.block_2", top, top)
    c = top
    for lvl in reversed(range(len(mult))):
        o = ch * mult[lvl]
        for b in range(cfg.get("vae_num_res_blocks", 2) + 1):
            res(f"decoder.up.{lvl}.block.{b}", c, o); c = o
            if lvl == len(mult) - 1 and cfg.get("vae_using_sa", True):
                att(f"decoder.up.{lvl}.attn.{b}", c)
        if lvl:
            v[f"decoder.up.{lvl}.upsample.conv.weight"] = conv(c, c, 3); v[f"decoder.up.{lvl}.upsample.conv.bias"] = sm(c)
    norm("decoder.norm_out", c); v["decoder.conv_out.weight"] = conv(3, c, 3); v["decoder.conv_out.bias"] = sm(3)
    return w, v


class VarRef:
    """VAR inference from a state dict (official key names), float32."""

    def __init__(self, cfg, w, v):
        move = lambda d: {k: t.to(DEV, FLOAT if t.is_floating_point() else t.dtype) for k, t in d.items()}
        w, v = move(w), move(v)
        self.c, self.w, self.v = cfg, w, v
        self.C, self.H = cfg["embed_dim"], cfg["num_heads"]
        self.pn = cfg["patch_nums"]
        L = sum(p * p for p in self.pn)
        lvl = torch.cat([torch.full((p * p,), i) for i, p in enumerate(self.pn)]).to(DEV)
        self.lvl_pos = w["lvl_embed.weight"][lvl].unsqueeze(0) + w["pos_1LC"]
        assert self.lvl_pos.shape[1] == L
        K = cfg.get("share_quant_resi", 4)
        self.ticks = torch.linspace(1 / 3 / K, 1 - 1 / 3 / K, K) if K == 4 else torch.linspace(1 / 2 / K, 1 - 1 / 2 / K, K)

    def ln(self, x):
        return F.layer_norm(x, (x.shape[-1],), eps=self.c.get("norm_eps", 1e-6))

    def block(self, i, x, ada, cache):
        w, p, C, H = self.w, f"blocks.{i}.", self.C, self.H
        g1, g2, s1, s2, b1, b2 = ada.unbind(2)
        h = self.ln(x) * (1 + s1) + b1
        B, L, _ = h.shape
        bias = torch.cat((w[p + "attn.q_bias"], torch.zeros(C, device=DEV, dtype=FLOAT), w[p + "attn.v_bias"]))
        qkv = F.linear(h, w[p + "attn.mat_qkv.weight"], bias).view(B, L, 3, H, C // H).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        q = F.normalize(q, dim=-1) * w[p + "attn.scale_mul_1H11"].clamp_max(math.log(100)).exp()
        k = F.normalize(k, dim=-1)
        if cache[i] is not None:
            k = torch.cat((cache[i][0], k), 2); v = torch.cat((cache[i][1], v), 2)
        cache[i] = (k, v)
        a = attend(q, k, v)
        x = x + F.linear(a.transpose(1, 2).reshape(B, L, C), w[p + "attn.proj.weight"], w[p + "attn.proj.bias"]) * g1
        h = self.ln(x) * (1 + s2) + b2
        f = F.linear(F.gelu(F.linear(h, w[p + "ffn.fc1.weight"], w[p + "ffn.fc1.bias"]), approximate="tanh"),
                     w[p + "ffn.fc2.weight"], w[p + "ffn.fc2.bias"])
        return x + f * g2

    def phi(self, si, h):
        S = len(self.pn)
        i = int(torch.argmin((self.ticks - si / (S - 1)).abs()))
        c = F.conv2d(h, self.v[f"quantize.quant_resi.qresi_ls.{i}.weight"], self.v[f"quantize.quant_resi.qresi_ls.{i}.bias"], padding=1)
        return h * 0.5 + c * 0.5

    @torch.no_grad()
    def generate(self, labels, cfg_scale, top_k, top_p, seed, teacher=None, record=None, decode=True, times=None):
        w, C, B, S = self.w, self.C, len(labels), len(self.pn)
        g = torch.Generator(device=DEV).manual_seed(seed)
        nc = self.c["num_classes"]
        cond = w["class_emb.weight"][torch.tensor(list(labels) + [nc] * B, device=DEV)]
        sc = F.silu(cond)
        if self.c.get("shared_aln"):
            shared = F.linear(sc, w["shared_ada_lin.1.weight"], w["shared_ada_lin.1.bias"]).view(-1, 1, 6, C)
            adas = [w[f"blocks.{i}.ada_gss"] + shared for i in range(self.c["depth"])]
        else:
            adas = [F.linear(sc, w[f"blocks.{i}.ada_lin.1.weight"], w[f"blocks.{i}.ada_lin.1.bias"]).view(-1, 1, 6, C) for i in range(self.c["depth"])]
        hs, hb = F.linear(sc, w["head_nm.ada_lin.1.weight"], w["head_nm.ada_lin.1.bias"]).view(-1, 1, 2, C).unbind(2)
        x = cond.unsqueeze(1) + w["pos_start"] + self.lvl_pos[:, :1]
        HW = self.pn[-1]
        f_hat = torch.zeros(B, self.c["Cvae"], HW, HW, device=DEV, dtype=FLOAT)
        cache = [None] * self.c["depth"]
        cur = 0
        for si, pn in enumerate(self.pn):
            t0 = time.perf_counter()
            cur += pn * pn
            for i in range(self.c["depth"]):
                x = self.block(i, x, adas[i], cache)
            logits = F.linear(self.ln(x) * (1 + hs) + hb, w["head.weight"], w["head.bias"])
            t = cfg_scale * si / (S - 1)
            mixed = (1 + t) * logits[:B] - t * logits[B:]
            if record is not None:
                record[si] = mixed
            if teacher is not None:
                idx = teacher[si].to(DEV)
            elif top_k == 1:
                idx = mixed.argmax(-1)
            else:
                lg = mixed.clone()
                if top_k > 0:
                    lg[lg < lg.topk(top_k, dim=-1)[0][..., -1:]] = -math.inf
                if top_p > 0:
                    s, order = lg.sort(-1)
                    drop = s.softmax(-1).cumsum(-1) <= 1 - top_p
                    drop[..., -1] = False
                    lg.scatter_(-1, order, s.masked_fill(drop, -math.inf))
                idx = torch.multinomial(lg.softmax(-1).view(-1, lg.shape[-1]), 1, generator=g).view(B, -1)
            h = self.v["quantize.embedding.weight"][idx].transpose(1, 2).reshape(B, -1, pn, pn)
            if si != S - 1:
                f_hat += self.phi(si, F.interpolate(h, size=(HW, HW), mode="bicubic"))
                nxt = F.interpolate(f_hat, size=(self.pn[si + 1],) * 2, mode="area").view(B, self.c["Cvae"], -1).transpose(1, 2)
                x = (F.linear(nxt, w["word_embed.weight"], w["word_embed.bias"]) + self.lvl_pos[:, cur:cur + self.pn[si + 1] ** 2]).repeat(2, 1, 1)
            else:
                f_hat += self.phi(si, h)
            if times is not None:
                sync()
                times.append(time.perf_counter() - t0)
        return self.decode(f_hat) if decode else None

    def decode(self, f_hat):
        v = self.v
        conv = lambda x, p, pad=1: F.conv2d(x, v[p + ".weight"], v[p + ".bias"], padding=pad)
        gn = lambda x, p: F.group_norm(x, 32, v[p + ".weight"], v[p + ".bias"], eps=1e-6)

        def res(x, p):
            h = conv(F.silu(gn(x, p + ".norm1")), p + ".conv1")
            h = conv(F.silu(gn(h, p + ".norm2")), p + ".conv2")
            return (conv(x, p + ".nin_shortcut", 0) if p + ".nin_shortcut.weight" in v else x) + h

        def att(x, p):
            B, C, H, W = x.shape
            q, k, vv = conv(gn(x, p + ".norm"), p + ".qkv", 0).reshape(B, 3, C, H * W).unbind(1)
            a = (q.transpose(1, 2) @ k / math.sqrt(C)).softmax(-1)
            return x + conv((vv @ a.transpose(1, 2)).view(B, C, H, W), p + ".proj_out", 0)

        h = conv(conv(f_hat, "post_quant_conv"), "decoder.conv_in")
        h = res(h, "decoder.mid.block_1")
        if "decoder.mid.attn_1.qkv.weight" in v:
            h = att(h, "decoder.mid.attn_1")
        h = res(h, "decoder.mid.block_2")
        nlev = len(self.c["vae_ch_mult"])
        for lvl in reversed(range(nlev)):
            for b in range(self.c.get("vae_num_res_blocks", 2) + 1):
                h = res(h, f"decoder.up.{lvl}.block.{b}")
                if f"decoder.up.{lvl}.attn.{b}.qkv.weight" in v:
                    h = att(h, f"decoder.up.{lvl}.attn.{b}")
            if lvl:
                h = conv(F.interpolate(h, scale_factor=2, mode="nearest"), f"decoder.up.{lvl}.upsample.conv")
        h = conv(F.silu(gn(h, "decoder.norm_out")), "decoder.conv_out")
        return (h.clamp(-1, 1) + 1) * 0.5


def sync():
    if DEV.type == "cuda":
        torch.cuda.synchronize()


def attend(q, k, v):
    """softmax(q k^T) v (the L2-normalised attention has scale 1); PyTorch's fused kernel on a GPU."""
    if DEV.type == "cuda" and hasattr(F, "scaled_dot_product_attention"):
        try:
            return F.scaled_dot_product_attention(q, k, v, scale=1.0)
        except TypeError:  # torch < 2.1: no scale argument; fold it into q
            return F.scaled_dot_product_attention(q * math.sqrt(q.shape[-1]), k, v)
    return (q @ k.transpose(-2, -1)).softmax(-1) @ v


def check_golden(base):
    if not os.path.exists(base + ".config.json"):
        print(f"SKIP: golden {base} is absent")
        return 77
    cfg = json.load(open(base + ".config.json"))
    exp = read_safetensors(base + ".expected.safetensors")
    ref = VarRef(cfg, read_safetensors(base + ".var.safetensors"), read_safetensors(base + ".vae.safetensors"))
    S = len(cfg["patch_nums"])
    teacher = [exp[f"idx.{si}"] for si in range(S)]
    rec = {}
    img = ref.generate(exp["labels"].tolist(), cfg["cfg"], 1, 0.0, 0, teacher=teacher, record=rec)
    worst = max(float((rec[si].float().cpu() - exp[f"logits.{si}"]).abs().max()) for si in range(S))
    img_err = float((img.float().cpu() - exp["image"]).abs().max())
    print(f"golden {os.path.basename(base)}: max |logit err| {worst:.3g}, max |image err| {img_err:.3g}")
    return 0 if worst < 1e-4 and img_err < 1e-4 else 1


def main():
    ap = argparse.ArgumentParser(description="PyTorch reference of VAR inference (benchmark baseline)")
    ap.add_argument("--model", default="configs/var-d16.json")
    ap.add_argument("--batch", default="1,8")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--depth", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    ap.add_argument("--no-decode", action="store_true")
    ap.add_argument("--json", help="write results here")
    ap.add_argument("--check-golden", help="DIR/NAME of a VAR golden: verify this reference against it")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--dtype", default="f32", choices=["f32", "bf16"], help="weights and activations")
    a = ap.parse_args()
    global DEV, FLOAT
    if a.device == "cuda" and not torch.cuda.is_available():
        print("SKIP: --device cuda but torch sees no GPU")
        return 77
    DEV = torch.device(a.device)
    FLOAT = torch.bfloat16 if a.dtype == "bf16" else torch.float32
    if a.check_golden and FLOAT != torch.float32:
        print("error: --check-golden compares float32 numbers; drop --dtype bf16")
        return 2
    torch.backends.cuda.matmul.allow_tf32 = False  # float32 means float32 (as scalekv's SGEMM)
    torch.backends.cudnn.allow_tf32 = False
    if a.threads:
        torch.set_num_threads(a.threads)
    if a.check_golden:
        return check_golden(a.check_golden)
    cfg = json.load(open(a.model))
    if a.depth:
        cfg["depth"] = a.depth
    ref = VarRef(cfg, *random_weights(cfg))
    results = {"model": a.model, "depth": cfg["depth"], "threads": torch.get_num_threads(), "torch": torch.__version__,
               "device": torch.cuda.get_device_name() if DEV.type == "cuda" else "cpu", "dtype": a.dtype,
               "sdpa": DEV.type == "cuda" and hasattr(F, "scaled_dot_product_attention"), "batches": {}}
    for B in [int(b) for b in a.batch.split(",")]:
        tot, trans, dec, per = [], [], [], []
        if DEV.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        for r in range(a.warmup + a.repeats):
            times = []
            sync()
            t0 = time.perf_counter()
            ref.generate([b % cfg["num_classes"] for b in range(B)], cfg.get("cfg", 1.5), cfg.get("top_k", 900),
                         cfg.get("top_p", 0.95), r, decode=False, times=times)
            sync()
            t1 = time.perf_counter()
            if not a.no_decode:
                ref.decode(torch.zeros(B, cfg["Cvae"], cfg["patch_nums"][-1], cfg["patch_nums"][-1], device=DEV, dtype=FLOAT))
            sync()
            t2 = time.perf_counter()
            if r >= a.warmup:
                trans.append(t1 - t0); dec.append(t2 - t1); tot.append(t2 - t0); per.append(times)
        results["batches"][B] = {"total": statistics.median(tot), "transformer": statistics.median(trans),
                                 "decoder": statistics.median(dec),
                                 "per_scale": [statistics.median(p[i] for p in per) for i in range(len(per[0]))],
                                 "peak_bytes": torch.cuda.max_memory_allocated() if DEV.type == "cuda" else 0}
        print(f"torch batch {B}: total {results['batches'][B]['total']:.3f} s, transformer {results['batches'][B]['transformer']:.3f} s, "
              f"decoder {results['batches'][B]['decoder']:.3f} s (median of {a.repeats})", flush=True)
    if a.json:
        json.dump(results, open(a.json, "w"), indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
