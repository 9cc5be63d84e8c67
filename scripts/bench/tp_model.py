#!/usr/bin/env python3
"""tp_model.py - where tensor parallelism stops paying: an analytic model of one Infinity image at
1024x1024 on 8 GPUs per node over NVLink, with the same quantities scripts/bench/scaling.sh measures
on CPUs (time per scale, bytes all-reduced, communication share).

Per block and scale k (l_k tokens, R = 2 x batch rows with CFG, width C, bf16 activations):
  all-reduce bytes = 3 x R x l_k x C x 2   (self-attention proj, cross-attention proj, fc2: row-parallel)
  comm time(TP t)  = 3 x (alpha + 2 (t-1)/t x R x l_k x C x 2 / bus_bw)     (ring all-reduce)
  compute(TP t)    = [R l_k 28 C^2 + 4 R l_k (L_k + l_k) C + 4 R l_k L_text C] / (t x flops)
(28 C^2 = 2 x (qkv 3 + proj 1 + cross q 1 + cross proj 1 + FFN 8) C^2; L_k = tokens cached before scale k,
full cache; cross-attention K/V, AdaLN, head, sampling and the VAE are left out.) No overlap of
communication with compute is assumed. Every constant is a flag."""
import argparse

SCHEDULE_1024 = [1, 2, 4, 6, 8, 12, 16, 20, 24, 32, 40, 48, 64]  # Infinity 1M, h/w = 1 (13 scales, 10521 tokens)
MODELS = {  # configs/infinity-2b.json, configs/infinity-8b.json
    "Infinity-2B": dict(depth=32, width=2048, heads=16, ffn=4 * 2048),
    "Infinity-8B": dict(depth=40, width=3584, heads=28, ffn=4 * 3584),
}


def model_time(m, tp, batch, a):
    R, C, D = 2 * batch, m["width"], m["depth"]
    comp = comm = bytes_ = 0.0
    cached = 0
    for pn in SCHEDULE_1024:
        l = pn * pn
        flops = R * l * 28 * C * C + 4 * R * l * (cached + l) * C + 4 * R * l * a.text_tokens * C
        comp += D * flops / (tp * a.tflops * 1e12)
        msg = R * l * C * 2
        bytes_ += D * 3 * msg
        if tp > 1:
            comm += D * 3 * (a.alpha_us * 1e-6 + 2 * (tp - 1) / tp * msg / (a.bus_gbs * 1e9))
        cached += l
    return comp, comm, bytes_


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tflops", type=float, default=400, help="sustained bf16 TFLOPS per GPU (H100 SXM peak 989)")
    p.add_argument("--bus-gbs", type=float, default=360, help="NCCL all-reduce bus bandwidth in GB/s within a node")
    p.add_argument("--alpha-us", type=float, default=15, help="latency of one all-reduce in microseconds")
    p.add_argument("--text-tokens", type=int, default=128, help="text tokens of the prompt")
    p.add_argument("--batches", default="1,8")
    a = p.parse_args()
    print(f"Analytic model, 8 GPUs per node over NVLink: {a.tflops:.0f} TFLOPS sustained per GPU, all-reduce bus "
          f"bandwidth {a.bus_gbs:.0f} GB/s, {a.alpha_us:.0f} us per all-reduce, full KV cache, bf16, no overlap "
          f"(scripts/bench/tp_model.py; change the constants with its flags).")
    print()
    print("| model | batch | TP | all-reduced/image | compute ms | comm ms | comm share | ms/image | speed-up vs TP 1 |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, m in MODELS.items():
        for batch in (int(b) for b in a.batches.split(",")):
            c1, _, _ = model_time(m, 1, batch, a)
            t1 = c1 / batch
            for tp in (1, 2, 4, 7, 8):
                if tp == 7 and name != "Infinity-8B":
                    continue
                if m["heads"] % tp or m["ffn"] % tp:
                    print(f"| {name} | {batch} | {tp} | - | - | - | - | - | not valid: {m['heads']} heads |")
                    continue
                comp, comm, b = model_time(m, tp, batch, a)
                per = (comp + comm) / batch
                print(f"| {name} | {batch} | {tp} | {b / batch / 2**30:.2f} GiB | {1e3 * comp / batch:.1f} "
                      f"| {1e3 * comm / batch:.1f} | {100 * comm / (comp + comm):.0f}% | {1e3 * per:.1f} "
                      f"| {t1 / per:.2f}x |")
    print()
    print("Reading it: per token and block, compute falls as 1/TP while the ring all-reduce moves "
          "2(TP-1)/TP x 3 x C x 2 bytes, almost constant in TP, so the communication share grows with TP and "
          "does not shrink with batch (both scale with tokens); only the per-call latency is amortised by larger "
          "batches. Where comm approaches compute, TP stops paying for speed; it still pays for memory "
          "(weights and KV cache per GPU fall as 1/TP), which is what lets Infinity-8B's cache fit.")


if __name__ == "__main__":
    main()
