#!/usr/bin/python3
"""infinity_torch_ref.py - a PyTorch re-implementation of Infinity inference, to time the same shapes
as `scalekv bench` for an Infinity config (float32, CPU, torch.set_num_threads(2) by default).

    scripts/bench/infinity_torch_ref.py --model configs/infinity-2b.json --resolution 512 --batch 1 --depth 1
    scripts/bench/infinity_torch_ref.py --check-golden ../shared/golden/infinity-tiny   # correctness first

Written from the architecture (not the official code): text_norm (RMSNorm) -> attentive pool (cond_BD) and
Linear-GELU-Linear (cross-attention source); per block shared AdaLN, cosine self-attention with per-head
scale_mul, q/v bias and RoPE-2D on the 1M grid, a KV cache concatenated per scale as the official code does,
cross-attention to each row's text, GELU-tanh FFN; head_nm + head, CFG on logits, per-bit sampling,
codes summed on the final grid with trilinear resampling. Weights are random (role-based scales) unless
--check-golden loads a golden's state dict and compares teacher-forced logits with its recording.
Prints a markdown table like scalekv's: median time per scale, total, peak RSS.
"""
import argparse
import json
import math
import os
import platform
import resource
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

try:
    import torch
    import torch.nn.functional as F
except ImportError:
    sys.exit("infinity_torch_ref.py: needs PyTorch (Debian: python3-torch; run with /usr/bin/python3)")

import safetensors_io  # noqa: E402

# The dynamic-resolution table (h, w per scale for h/w >= 1; below 1 swap), t = 1.
RATIO2HWS = {
    1.000: [(1, 1), (2, 2), (4, 4), (6, 6), (8, 8), (12, 12), (16, 16), (20, 20), (24, 24), (32, 32), (40, 40), (48, 48), (64, 64)],
    1.250: [(1, 1), (2, 2), (3, 3), (5, 4), (10, 8), (15, 12), (20, 16), (25, 20), (30, 24), (35, 28), (45, 36), (55, 44), (70, 56)],
    1.333: [(1, 1), (2, 2), (4, 3), (8, 6), (12, 9), (16, 12), (20, 15), (24, 18), (28, 21), (36, 27), (48, 36), (60, 45), (72, 54)],
    1.500: [(1, 1), (2, 2), (3, 2), (6, 4), (9, 6), (15, 10), (21, 14), (27, 18), (33, 22), (39, 26), (48, 32), (63, 42), (78, 52)],
    1.750: [(1, 1), (2, 2), (3, 3), (7, 4), (11, 6), (14, 8), (21, 12), (28, 16), (35, 20), (42, 24), (56, 32), (70, 40), (84, 48)],
    2.000: [(1, 1), (2, 2), (4, 2), (6, 3), (10, 5), (16, 8), (22, 11), (30, 15), (38, 19), (46, 23), (60, 30), (74, 37), (90, 45)],
    2.500: [(1, 1), (2, 2), (5, 2), (10, 4), (15, 6), (20, 8), (25, 10), (30, 12), (40, 16), (50, 20), (65, 26), (80, 32), (100, 40)],
    3.000: [(1, 1), (2, 2), (6, 2), (9, 3), (15, 5), (21, 7), (27, 9), (36, 12), (45, 15), (54, 18), (72, 24), (90, 30), (111, 37)],
}
LENGTHS = {256: 7, 512: 10, 768: 12, 1024: 13}


def table_for(h_div_w):
    for r, hws in RATIO2HWS.items():
        if abs(r - h_div_w) < 1e-3:
            return hws
        if r != 1.0 and abs(int(1 / r * 1000) / 1000 - h_div_w) < 1e-3:
            return [(w, h) for h, w in hws]
    sys.exit(f"infinity_torch_ref.py: h/w {h_div_w} is not in the dynamic-resolution table")


def rope_table(schedule, full_last, head_dim):
    """[2, L, head_dim/2] cos/sin; positions normalised to the 1M grid (rope2d_normalized_by_hw = 2)."""
    half = head_dim // 2
    inv = 1.0 / (10000.0 ** (torch.arange(0, half, 2, dtype=torch.int64).float() / half))
    fh = torch.outer(torch.arange(128).float(), inv)
    grid = torch.cat([fh[:, None, :].expand(-1, 128, -1), fh[None, :, :].expand(128, -1, -1)], dim=-1)
    grid = torch.stack([torch.cos(grid), torch.sin(grid)], dim=0)
    uph, upw = full_last
    parts = []
    for h, w in schedule:
        iy = (torch.arange(h) * (uph / h)).round().long()
        ix = (torch.arange(w) * (upw / w)).round().long()
        parts.append(grid[:, iy[:, None].expand(h, w).reshape(-1), ix[None, :].expand(h, w).reshape(-1), :])
    return torch.cat(parts, dim=1)


class InfinityRef:
    def __init__(self, sd, cfg):
        self.sd, self.c = sd, cfg
        k = cfg["infinity_kwargs"]
        self.C, self.H, self.depth = k["embed_dim"], k["num_heads"], k["depth"]
        self.hd = self.C // self.H
        self.eps = k.get("norm_eps", 1e-6)
        self.Ct5 = k["text_channels"]
        self.Hp = self.Ct5 // (64 if self.C > 4096 else 128)
        chunks = k.get("block_chunks", 1)
        per = self.depth // chunks
        self.prefix = [f"block_chunks.{i // per}.module.{i % per}." if chunks > 1 else f"blocks.{i}." for i in range(self.depth)]
        self.only_first = bool(k.get("add_lvl_embeding_only_first_block", 1))
        self.per_chunk = per
        self.d = cfg["vae"]["codebook_dim"]
        self.scale_mul = [sd[p + "sa.scale_mul_1H11"].clamp_max(math.log(100)).exp() for p in self.prefix]

    def w(self, n):
        return self.sd[n]

    def lin(self, x, n, bias=True):
        return F.linear(x, self.w(n + ".weight"), self.w(n + ".bias") if bias else None)

    def text(self, kv, lens, uncond):
        """cond_BD [R, C], ca_kv [N, C], per-row lengths (prompts, then their unconditional mirrors)."""
        kv_all = torch.cat([kv] + ([self.w("cfg_uncond")[:n] for n in lens] if uncond else []), 0)
        rows = lens + (lens if uncond else [])
        x = kv_all * torch.rsqrt(kv_all.pow(2).mean(-1, keepdim=True) + self.eps) * self.w("text_norm.weight")
        kvp = F.linear(x, self.w("text_proj_for_sos.ca.mat_kv.weight"))
        D = self.C
        k, v = kvp[:, :D], kvp[:, D:] + self.w("text_proj_for_sos.ca.v_bias")
        q = self.w("text_proj_for_sos.ca.mat_q")[0]  # [Hp, hdp]
        hdp = D // self.Hp
        outs, at = [], 0
        for n in rows:
            kk = k[at:at + n].view(n, self.Hp, hdp).transpose(0, 1)
            vv = v[at:at + n].view(n, self.Hp, hdp).transpose(0, 1)
            a = torch.softmax((q[:, None, :] @ kk.transpose(1, 2)) / math.sqrt(hdp), -1) @ vv  # [Hp, 1, hdp]
            outs.append(a.reshape(D))
            at += n
        cond = self.lin(torch.stack(outs), "text_proj_for_sos.ca.proj")
        ca = self.lin(F.gelu(self.lin(x, "text_proj_for_ca.0"), approximate="tanh"), "text_proj_for_ca.2")
        return cond, ca, rows

    def ln(self, x):
        return F.layer_norm(x, (self.C,), eps=self.eps)

    def block(self, i, x, gss, ca_kv, rows, rope, start, cache):
        p = self.prefix[i]
        g1, g2, s1, s2, sh1, sh2 = (self.w(p + "ada_gss") + gss).unbind(2)
        B, L, C = x.shape
        h = self.ln(x).mul(s1.add(1)).add_(sh1)
        qkv = F.linear(h, self.w(p + "sa.mat_qkv.weight"),
                       torch.cat((self.w(p + "sa.q_bias"), torch.zeros(C), self.w(p + "sa.v_bias"))))
        q, k, v = qkv.view(B, L, 3, self.H, self.hd).permute(2, 0, 3, 1, 4).unbind(0)
        q = F.normalize(q, dim=-1).mul(self.scale_mul[i])
        k = F.normalize(k, dim=-1)
        cs = rope[:, start:start + L]
        def rot(t):
            t2 = t.reshape(*t.shape[:-1], -1, 2)
            return torch.stack([cs[0] * t2[..., 0] - cs[1] * t2[..., 1], cs[1] * t2[..., 0] + cs[0] * t2[..., 1]], -1).reshape(t.shape)
        q, k = rot(q), rot(k)
        if cache[i] is not None:
            k = torch.cat((cache[i][0], k), 2)
            v = torch.cat((cache[i][1], v), 2)
        cache[i] = (k, v)
        # scale 1 (cosine attention); per row and 1024-query chunk, so the score matrix stays below
        # H x 1024 x keys floats (one [R, H, L, keys] matrix is 22 GB at 1024x1024, batch 4)
        att = torch.empty_like(q)
        for r in range(B):
            for q0 in range(0, L, 1024):
                att[r, :, q0:q0 + 1024] = torch.softmax(q[r, :, q0:q0 + 1024] @ k[r].transpose(-1, -2), -1) @ v[r]
        x = x + self.lin(att.transpose(1, 2).reshape(B, L, C), p + "sa.proj").mul_(g1)
        # cross-attention, each row to its own text
        hc = F.layer_norm(x, (C,), self.w(p + "ca_norm.weight"), self.w(p + "ca_norm.bias"), self.eps)
        qc = self.lin(hc, p + "ca.mat_q").view(B, L, self.H, self.hd).transpose(1, 2)
        kvc = F.linear(ca_kv, self.w(p + "ca.mat_kv.weight"))
        kc, vc = kvc[:, :C], kvc[:, C:] + self.w(p + "ca.v_bias")
        outs, at = [], 0
        for r, n in enumerate(rows):
            kk = kc[at:at + n].view(n, self.H, self.hd).transpose(0, 1)
            vv = vc[at:at + n].view(n, self.H, self.hd).transpose(0, 1)
            outs.append(torch.softmax(qc[r] @ kk.transpose(1, 2) / math.sqrt(self.hd), -1) @ vv)
            at += n
        ao = torch.stack(outs).transpose(1, 2).reshape(B, L, C)
        x = x + self.lin(ao, p + "ca.proj")
        hf = self.ln(x).mul(s2.add(1)).add_(sh2)
        return x + self.lin(F.gelu(self.lin(hf, p + "ffn.fc1"), approximate="tanh"), p + "ffn.fc2").mul(g2)

    @torch.no_grad()
    def generate(self, kv, lens, schedule, full_last, cfg=3.0, tau=1.0, teacher=None, observer=None, seed=0, top_k=900, top_p=0.97):
        B = len(lens)
        cond, ca_kv, rows = self.text(kv, lens, cfg != 1)
        R = len(rows)
        gss = self.lin(F.silu(cond), "shared_ada_lin.1").view(R, 1, 6, self.C)
        head_ada = self.lin(F.silu(cond), "head_nm.ada_lin.1").view(R, 1, 2, self.C)
        rope = rope_table(schedule, full_last, self.hd)
        offs = [0]
        for h, w in schedule:
            offs.append(offs[-1] + h * w)
        cache = [None] * self.depth
        x = cond[:, None, :] + self.w("pos_start")
        H_, W_ = schedule[-1]
        summed = torch.zeros(B, self.d, 1, H_, W_)
        gen = torch.Generator().manual_seed(seed)
        times, cpu = [], []
        for si, (h, w) in enumerate(schedule):
            t0, c0 = time.perf_counter(), time.process_time()
            for i in range(self.depth):
                if i % self.per_chunk == 0 and (i == 0 or not self.only_first):
                    x = x + self.w("lvl_embed.weight")[si]
                x = self.block(i, x, gss, ca_kv, rows, rope, offs[si], cache)
            sc, sh = head_ada.unbind(2)
            logits = self.lin(self.ln(x).mul(sc.add(1)).add_(sh), "head").mul(1 / tau)
            if observer:
                observer("logits_raw", si, logits)
            if R == 2 * B:
                logits = cfg * logits[:B] + (1 - cfg) * logits[B:]
            if teacher is not None:
                bits = teacher[si]
            else:
                pairs = logits.reshape(-1, 2)
                if top_k == 1:
                    bits = pairs.argmax(-1)
                else:
                    p = torch.softmax(pairs, -1)
                    if top_p > 0:  # drop the smaller of a pair when its probability is <= 1 - top_p
                        p = torch.where(p <= 1 - top_p, torch.zeros_like(p), p)
                    bits = torch.multinomial(p, 1, generator=gen)[:, 0]
                bits = bits.reshape(B, h, w, self.d)
            codes = F.normalize(bits.float() * (2 / math.sqrt(self.d)) - 1 / math.sqrt(self.d), dim=-1)
            codes = codes.permute(0, 3, 1, 2)[:, :, None]  # [B, d, 1, h, w]
            if si + 1 < len(schedule):
                summed += F.interpolate(codes, size=(1, H_, W_), mode="trilinear")
                hn, wn = schedule[si + 1]
                nxt = F.interpolate(summed, size=(1, hn, wn), mode="trilinear")[:, :, 0]
                inp = nxt.reshape(B, self.d, -1).permute(0, 2, 1)
                e = self.lin(inp, "word_embed")
                x = e.repeat(R // B, 1, 1)
            else:
                summed += codes
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
        self.cpu_times = cpu
        return times, summed


def random_state(cfg, seed=0):
    k, v = cfg["infinity_kwargs"], cfg["vae"]
    C, H, depth, Ct5 = k["embed_dim"], k["num_heads"], k["depth"], k["text_channels"]
    F_ = round(C * k.get("mlp_ratio", 4) / 256) * 256
    d = v["codebook_dim"]
    Hp = Ct5 // (64 if C > 4096 else 128)
    g = torch.Generator().manual_seed(seed)

    def r(*shape, s=None):
        fan = shape[-1] if len(shape) >= 2 else 1
        return torch.randn(*shape, generator=g) * (s if s is not None else 1 / math.sqrt(fan))

    sd = {"cfg_uncond": r(k.get("text_maxlen", 512), Ct5), "text_norm.weight": torch.ones(Ct5),
          "text_proj_for_sos.ca.mat_kv.weight": r(2 * C, Ct5), "text_proj_for_sos.ca.mat_q": r(1, Hp, C // Hp),
          "text_proj_for_sos.ca.v_bias": r(C, s=0.02), "text_proj_for_sos.ca.proj.weight": r(C, C),
          "text_proj_for_sos.ca.proj.bias": r(C, s=0.02), "text_proj_for_ca.0.weight": r(C, Ct5),
          "text_proj_for_ca.0.bias": r(C, s=0.02), "text_proj_for_ca.2.weight": r(C, C), "text_proj_for_ca.2.bias": r(C, s=0.02),
          "shared_ada_lin.1.weight": r(6 * C, C, s=0.02), "shared_ada_lin.1.bias": r(6 * C, s=0.02),
          "pos_start": r(1, 1, C, s=0.02), "lvl_embed.weight": r(15, C, s=0.02), "word_embed.weight": r(C, d),
          "word_embed.bias": r(C, s=0.02), "head_nm.ada_lin.1.weight": r(2 * C, C, s=0.02),
          "head_nm.ada_lin.1.bias": r(2 * C, s=0.02), "head.weight": r(2 * d, C), "head.bias": r(2 * d, s=0.02)}
    for i in range(depth):
        p = f"blocks.{i}."
        sd.update({p + "ada_gss": r(1, 1, 6, C, s=0.02), p + "sa.mat_qkv.weight": r(3 * C, C), p + "sa.q_bias": r(C, s=0.02),
                   p + "sa.v_bias": r(C, s=0.02), p + "sa.scale_mul_1H11": torch.full((1, H, 1, 1), math.log(4.0)),
                   p + "sa.proj.weight": r(C, C), p + "sa.proj.bias": r(C, s=0.02), p + "ca_norm.weight": torch.ones(C),
                   p + "ca_norm.bias": r(C, s=0.02), p + "ca.mat_q.weight": r(C, C), p + "ca.mat_q.bias": r(C, s=0.02),
                   p + "ca.mat_kv.weight": r(2 * C, C), p + "ca.v_bias": r(C, s=0.02), p + "ca.proj.weight": r(C, C),
                   p + "ca.proj.bias": r(C, s=0.02), p + "ffn.fc1.weight": r(F_, C), p + "ffn.fc1.bias": r(F_, s=0.02),
                   p + "ffn.fc2.weight": r(C, F_), p + "ffn.fc2.bias": r(C, s=0.02)})
    return sd


def check_golden(base):
    """Teacher-forced logits of this implementation vs a golden's recording (NAME = path without suffix)."""
    with open(base + ".config.json") as f:
        cfg = json.load(f)
    sd = {k: v.float() for k, v in safetensors_io.load(base + ".model.safetensors").items()}
    exp = safetensors_io.load(base + ".expected.safetensors")
    sched = [(s[1], s[2]) for s in cfg["scale_schedule"]]
    ratio = cfg["config"]["h_div_w"]
    full_last = table_for(ratio)[-1]
    m = InfinityRef(sd, cfg)
    cu = exp["text.cu_seqlens_k"].tolist()
    lens = [cu[i + 1] - cu[i] for i in range(len(cu) - 1)]
    teacher = [exp[f"bits.{i}"].long() for i in range(len(sched))]
    worst = {}

    def obs(name, si, t):
        if f"{name}.{si}" in exp:
            worst[si] = (t - exp[f"{name}.{si}"]).abs().max().item()

    s = cfg["sampling"]
    m.generate(exp["text.kv_compact"].float(), lens, sched, full_last, cfg=s["cfg_list"][0], tau=s["tau_list"][0],
               teacher=teacher, observer=obs)
    for si in sorted(worst):
        print(f"  logits_raw.{si}: max |err| {worst[si]:.3g}")
    ok = max(worst.values()) < 1e-4
    print(("PASS" if ok else "FAIL") + f" {os.path.basename(base)} (PyTorch reference vs golden, teacher-forced)")
    return 0 if ok else 1


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=os.path.join(os.path.dirname(os.path.dirname(HERE)), "configs", "infinity-2b.json"))
    ap.add_argument("--resolution", type=int, default=1024, choices=sorted(LENGTHS))
    ap.add_argument("--h-div-w", type=float, default=1.0)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--depth", type=int, default=0, help="run only this many blocks (for time)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-warmup", action="store_true")
    ap.add_argument("--text-len", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--check-golden", metavar="DIR/NAME", help="compare with a golden instead of timing")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    if a.check_golden:
        sys.exit(check_golden(a.check_golden))
    with open(a.model) as f:
        cfg = json.load(f)
    full_depth = cfg["infinity_kwargs"]["depth"]
    if a.depth > 0:
        cfg["infinity_kwargs"]["depth"] = a.depth
        cfg["infinity_kwargs"]["block_chunks"] = 1
    if cfg["infinity_kwargs"].get("apply_spatial_patchify", 0):
        sys.exit("infinity_torch_ref.py: the 2x2 patchify (8B) is not part of this reference; use a 2B-shaped config")
    full = table_for(a.h_div_w)
    sched = full[:LENGTHS[a.resolution]]
    m = InfinityRef(random_state(cfg), cfg)
    g = torch.Generator().manual_seed(1)
    kv = torch.randn(a.batch * a.text_len, cfg["infinity_kwargs"]["text_channels"], generator=g) * 0.3
    s = cfg.get("sampling", {})
    per, cpus, totals, cpu_totals, loads = [[] for _ in sched], [[] for _ in sched], [], [], []
    for rep in range(a.repeats + (0 if a.no_warmup else 1)):
        loads.append(os.getloadavg()[0])
        t0, c0 = time.perf_counter(), time.process_time()
        times, _ = m.generate(kv, [a.text_len] * a.batch, sched, full[-1], cfg=s.get("cfg", 3.0), tau=s.get("tau", 1.0),
                              top_k=s.get("top_k", 900), top_p=s.get("top_p", 0.97))
        total, cpu_total = time.perf_counter() - t0, time.process_time() - c0
        if rep == 0 and not a.no_warmup:
            continue
        for i, t in enumerate(times):
            per[i].append(t)
            cpus[i].append(m.cpu_times[i])
        totals.append(total)
        cpu_totals.append(cpu_total)
    k = cfg["infinity_kwargs"]
    px = sched[-1][0] * 16
    print(f"\n### PyTorch reference: {cfg.get('name', 'infinity')} shape (width {k['embed_dim']}, {k['num_heads']} heads, "
          f"depth {k['depth']} of {full_depth}), {sched[-1][1] * 16}x{px} (h/w {a.h_div_w}), batch {a.batch} "
          f"(+CFG: {2 * a.batch} rows), full KV cache (concatenated per scale)\n")
    print(f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, float32; random weights; text {a.text_len} tokens/prompt; median of "
          f"{a.repeats} run(s){'' if a.no_warmup else ' after 1 warm-up'}; load average at the starts: "
          f"{statistics.median(loads):.1f}")
    print(f"command: `{' '.join(['scripts/bench/infinity_torch_ref.py'] + sys.argv[1:])}`\n")
    print("| scale | tokens | time (s) | CPU time, all threads (s) |\n|---:|---:|---:|---:|")
    for i, (h, w) in enumerate(sched):
        print(f"| {i} | {h}x{w} | {statistics.median(per[i]):.4f} | {statistics.median(cpus[i]):.4f} |")
    print(f"| **total** | {sum(h * w for h, w in sched)} | **{statistics.median(totals):.3f}** | "
          f"**{statistics.median(cpu_totals):.3f}** |")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(f"\npeak RSS (whole process, weights included): {rss:.1f} MiB")


if __name__ == "__main__":
    main()
