#!/usr/bin/python3
"""Train scalekv's demo model on CPU: a multi-scale residual VQ-VAE, then a class-conditional VAR
transformer, on Fashion-MNIST (28x28 padded to 32x32, grey replicated to RGB, pixels in [-1, 1]).

Writes into --out: var-fmnist.config.json, var-fmnist.vae.safetensors, var-fmnist.var.safetensors
(fp16, official FoundationVision/VAR key names) and train_log.txt.

The design choice to know: each phase anneals its learning rate on progress = max(step / steps,
elapsed / time share), so a --time-budget-min run still ends with a fully decayed learning rate
instead of being cut off mid-schedule.

    /usr/bin/python3 scripts/train_demo_model.py --out models/demo            # full run (~1 h on 2 idle cores)
    /usr/bin/python3 scripts/train_demo_model.py --smoke --out /tmp/demo      # seconds, for CI
"""
import argparse
import json
import math
import os
import sys
import time

THIS_DIR = os.path.dirname(os.path.abspath(__file__))


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="models/demo", help="output folder (default models/demo)")
    p.add_argument("--steps-vae", type=int, default=400)
    p.add_argument("--steps-var", type=int, default=1000)
    p.add_argument("--batch-vae", type=int, default=64)
    p.add_argument("--batch-var", type=int, default=32)
    p.add_argument("--lr-vae", type=float, default=2e-3)
    p.add_argument("--lr-var", type=float, default=1e-3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--time-budget-min", type=float, default=0.0,
                   help="total wall-time budget in minutes (0 = none); the VQ-VAE gets --vae-share of it")
    p.add_argument("--vae-share", type=float, default=0.2)
    p.add_argument("--log-every", type=int, default=25)
    p.add_argument("--smoke", action="store_true", help="a few steps of each phase on a data subset")
    p.add_argument("--data-dir", default="/usr/share/datasets/fashion-mnist")
    # architecture
    p.add_argument("--depth", type=int, default=6)
    p.add_argument("--embed-dim", type=int, default=256)
    p.add_argument("--num-heads", type=int, default=4)
    p.add_argument("--vocab", type=int, default=512)
    p.add_argument("--patch-nums", default="1,2,3,4,5,6,8")
    return p.parse_args()


args = parse_args()
for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = str(args.threads)

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

sys.path.insert(0, THIS_DIR)
from vardemo import fmnist, st  # noqa: E402
from vardemo.models import build_vae, build_var  # noqa: E402

NAME = "var-fmnist"


class Logger:
    def __init__(self, path):
        self.f = open(path, "w")
        self.t0 = time.time()

    def __call__(self, msg):
        line = f"[{time.time() - self.t0:7.1f}s] {msg}"
        print(line, flush=True)
        self.f.write(line + "\n")
        self.f.flush()


def lr_at(progress, base, warmup_frac=0.05, final_frac=0.05):
    if progress < warmup_frac:
        return base * (0.1 + 0.9 * progress / warmup_frac)
    p = (progress - warmup_frac) / max(1e-8, 1 - warmup_frac)
    return base * (final_frac + (1 - final_frac) * 0.5 * (1 + math.cos(math.pi * min(1.0, p))))


def make_config(a):
    return {
        "family": "var", "depth": a.depth, "embed_dim": a.embed_dim, "num_heads": a.num_heads,
        "patch_nums": [int(x) for x in a.patch_nums.split(",")], "V": a.vocab, "Cvae": 32, "ch": 32,
        "num_classes": 10, "shared_aln": False, "attn_l2_norm": True, "mlp_ratio": 4.0, "norm_eps": 1e-06,
        "share_quant_resi": 4, "image_size": 32, "vae_ch_mult": [1, 2, 2], "vae_num_res_blocks": 1,
        "vae_using_sa": True, "vae_using_mid_sa": True, "quant_resi": 0.5, "beta": 0.25,
        "cfg": 3.0, "top_k": 20, "top_p": 0.0, "class_names": list(fmnist.CLASS_NAMES),
        # Observation window of the windowed KV policies: the released 16 is nearly half of this
        # model's largest cached scale (6x6) and larger than its 10 % budget (10 tokens).
        "kv_window": 4,
    }


def fp16_state(module):
    return {k: (v.half() if v.is_floating_point() else v) for k, v in module.state_dict().items()}


def psnr(a, b):
    """a, b in [-1, 1]; PSNR on the [0, 255] scale."""
    mse = ((a - b) * 127.5).square().mean().item()
    return 10 * math.log10(255 ** 2 / max(mse, 1e-10))


# ------------------------------------------------------------------------------------------------
def train_vae(cfg, x_train, x_test, log, steps, budget_s):
    torch.manual_seed(args.seed)
    vae = build_vae(cfg)
    q = vae.quantize
    log(f"VQ-VAE: {sum(p.numel() for p in vae.parameters()) / 1e6:.2f}M params, V={cfg['V']} "
        f"Cvae={cfg['Cvae']} ch={cfg['ch']} ch_mult={cfg['vae_ch_mult']} patch_nums={cfg['patch_nums']}")
    opt = torch.optim.AdamW(vae.parameters(), lr=args.lr_vae, betas=(0.9, 0.99), weight_decay=0.0)
    g = torch.Generator().manual_seed(args.seed + 1)
    S, V = len(cfg["patch_nums"]), cfg["V"]
    t0 = time.time()
    acc = {"l1": 0.0, "mse": 0.0, "vq": 0.0, "n": 0}
    step = 0
    while True:
        progress = max(step / steps, (time.time() - t0) / budget_s if budget_s else 0.0)
        if progress >= 1.0:
            break
        for grp in opt.param_groups:
            grp["lr"] = lr_at(progress, args.lr_vae)
        idx = torch.randint(0, x_train.shape[0], (args.batch_vae,), generator=g)
        img = fmnist.to_model_input(x_train[idx.numpy()])
        rec, vq_loss, idx_list, rest_list, _ = vae(img)
        l1 = (rec - img).abs().mean()
        mse = (rec - img).square().mean()
        loss = l1 + mse + vq_loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        with torch.no_grad():
            # Per-scale usage statistics (the official `ema_vocab_hit_SV` buffer) drive dead-code restarts.
            for si, ids in enumerate(idx_list):
                hits = torch.bincount(ids.flatten(), minlength=V).float()
                q.ema_vocab_hit_SV[si].mul_(0.9).add_(hits, alpha=0.1)
            if step % 20 == 0 and progress < 0.8:
                usage = q.ema_vocab_hit_SV.sum(0)
                dead = (usage < 0.03).nonzero().flatten()
                if dead.numel() > 0:
                    pool = torch.cat(rest_list, 0)
                    pick = torch.randint(0, pool.shape[0], (dead.numel(),), generator=g)
                    q.embedding.weight[dead] = pool[pick] + 0.01 * torch.randn(dead.numel(), pool.shape[1], generator=g)
                    q.ema_vocab_hit_SV[:, dead] = 0.1
        acc["l1"] += l1.item(); acc["mse"] += mse.item(); acc["vq"] += float(vq_loss); acc["n"] += 1
        if step % args.log_every == 0 or step == 1:
            n = acc["n"]
            used = int((q.ema_vocab_hit_SV.sum(0) > 0.03).sum())
            log(f"vae step {step:5d} lr {opt.param_groups[0]['lr']:.2e} l1 {acc['l1'] / n:.4f} "
                f"mse {acc['mse'] / n:.4f} vq {acc['vq'] / n:.4f} codes_in_use {used}/{V}")
            acc = {"l1": 0.0, "mse": 0.0, "vq": 0.0, "n": 0}
    vae.eval()
    with torch.no_grad():
        img = fmnist.to_model_input(x_test[:500])
        rec = vae(img)[0].clamp(-1, 1)
    log(f"vae done: {step} steps in {time.time() - t0:.0f}s; test PSNR (quantised, 500 imgs) {psnr(rec, img):.2f} dB")
    return vae, step


class TokenCache:
    """Multi-scale token maps of the training images, encoded on first use: the VAR sees each image
    at most a few times, so encoding all 60k up front would be wasted work."""

    def __init__(self, vae, images, L):
        self.vae, self.images = vae, images
        self.tokens = torch.zeros(images.shape[0], L, dtype=torch.int16)
        self.have = torch.zeros(images.shape[0], dtype=torch.bool)

    @torch.no_grad()
    def get(self, bi):
        todo = bi[~self.have[bi]]
        if todo.numel():
            ids = self.vae.img_to_idx(fmnist.to_model_input(self.images[todo.numpy()]))
            self.tokens[todo] = torch.cat(ids, 1).to(torch.int16)
            self.have[todo] = True
        return self.tokens[bi].long()


def train_var(cfg, vae, images, labels, log, steps, budget_s):
    torch.manual_seed(args.seed + 2)
    var = build_var(cfg)
    log(f"VAR: {sum(p.numel() for p in var.parameters()) / 1e6:.2f}M params, depth {cfg['depth']} "
        f"width {cfg['embed_dim']} heads {cfg['num_heads']} L={var.L}")
    decay, no_decay = [], []
    for n, p in var.named_parameters():
        (decay if p.ndim >= 2 and "emb" not in n and "pos" not in n else no_decay).append(p)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr_var, betas=(0.9, 0.95))
    g = torch.Generator().manual_seed(args.seed + 3)
    splits = np.cumsum([0] + [pn * pn for pn in cfg["patch_nums"]])
    labels_t = torch.from_numpy(labels)
    cache = TokenCache(vae, images, var.L)
    N = images.shape[0]
    perm, pos = torch.randperm(N, generator=g), 0
    t0 = time.time()
    acc = {"loss": 0.0, "last": 0.0, "first": 0.0, "acc": 0.0, "n": 0}
    step = 0
    while True:
        progress = max(step / steps, (time.time() - t0) / budget_s if budget_s else 0.0)
        if progress >= 1.0:
            break
        for grp in opt.param_groups:
            grp["lr"] = lr_at(progress, args.lr_var)
        if pos + args.batch_var > N:
            perm, pos = torch.randperm(N, generator=g), 0
        bi = perm[pos:pos + args.batch_var]
        pos += args.batch_var
        gt = cache.get(bi)
        idx_list = [gt[:, splits[i]:splits[i + 1]] for i in range(len(splits) - 1)]
        x_in = vae.quantize.idx_to_var_input(idx_list)
        lab = labels_t[bi].clone()
        drop = torch.rand(lab.shape[0], generator=g) < 0.1  # unconditional rows for CFG
        lab[drop] = cfg["num_classes"]
        logits = var(lab, x_in)
        ce = F.cross_entropy(logits.reshape(-1, cfg["V"]), gt.reshape(-1), reduction="none").view(gt.shape)
        loss = ce.mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(var.parameters(), 2.0)
        opt.step()
        step += 1
        with torch.no_grad():
            acc["loss"] += loss.item()
            acc["first"] += ce[:, :splits[4]].mean().item()
            acc["last"] += ce[:, splits[-2]:].mean().item()
            acc["acc"] += (logits.argmax(-1) == gt).float().mean().item()
            acc["n"] += 1
        if step % args.log_every == 0 or step == 1:
            n = acc["n"]
            log(f"var step {step:5d} lr {opt.param_groups[0]['lr']:.2e} loss {acc['loss'] / n:.4f} "
                f"(scales<=4x4 {acc['first'] / n:.4f}, last scale {acc['last'] / n:.4f}) "
                f"token_acc {acc['acc'] / n:.3f} ({(time.time() - t0) / step:.2f}s/step)")
            acc = {"loss": 0.0, "last": 0.0, "first": 0.0, "acc": 0.0, "n": 0}
    log(f"var done: {step} steps in {time.time() - t0:.0f}s ({int(cache.have.sum())} distinct images seen)")
    return var.eval(), step


def main():
    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    os.makedirs(args.out, exist_ok=True)
    log = Logger(os.path.join(args.out, "train_log.txt"))
    log("command: " + " ".join([os.path.basename(sys.executable)] + sys.argv))
    log(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    cfg = make_config(args)

    x_train, y_train = fmnist.load_split("train", args.data_dir)
    x_test, _ = fmnist.load_split("t10k", args.data_dir)
    steps_vae, steps_var = args.steps_vae, args.steps_var
    if args.smoke:
        args.batch_vae, args.batch_var, args.log_every = 8, 8, 1
        steps_vae, steps_var = 3, 3
        x_train, y_train, x_test = x_train[:64], y_train[:64], x_test[:16]
    budget = args.time_budget_min * 60.0
    t_start = time.time()

    vae, n_vae = train_vae(cfg, x_train, x_test, log, steps_vae, budget * args.vae_share)
    st.save_file(fp16_state(vae), os.path.join(args.out, f"{NAME}.vae.safetensors"),
                 {"format": "pt", "source": "scalekv scripts/train_demo_model.py (VQVAE, official VAR layout)"})
    for p in vae.parameters():
        p.requires_grad_(False)

    # Tokenise and train the VAR with the fp16-rounded VQ-VAE that is shipped.
    vae.load_state_dict(st.load_file(os.path.join(args.out, f"{NAME}.vae.safetensors"), torch.float32))
    var_budget = max(1.0, budget - (time.time() - t_start)) if budget else 0.0
    var, n_var = train_var(cfg, vae, x_train, y_train, log, steps_var, var_budget)
    st.save_file(fp16_state(var), os.path.join(args.out, f"{NAME}.var.safetensors"),
                 {"format": "pt", "source": "scalekv scripts/train_demo_model.py (VAR, official layout)"})
    with open(os.path.join(args.out, f"{NAME}.config.json"), "w") as f:
        json.dump(cfg, f, indent=1)
        f.write("\n")
    log(f"wrote {args.out}: {NAME}.config.json, {NAME}.vae.safetensors, {NAME}.var.safetensors "
        f"({n_vae} VQ-VAE steps, {n_var} VAR steps, total {time.time() - t_start:.0f}s)")


if __name__ == "__main__":
    main()
