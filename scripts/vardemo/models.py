"""VQ-VAE (multi-scale residual quantizer) and class-conditional VAR transformer.

Written for this project, but the module tree -- hence every state-dict key -- and the forward math
follow the official FoundationVision/VAR layout (models/var.py, basic_var.py, vqvae.py, quant.py,
basic_vae.py), because scalekv's C++ runtime loads checkpoints in that layout. The one design choice
to know: everything the runtime needs at inference (decoder, post_quant_conv, quantizer embedding and
Phi convs, transformer) has the official names and math; training-only parts (encoder losses, dead-code
restarts, initialisation) are our own.
"""
import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


# ----------------------------------------------------------------------------------------------
# VQ-VAE building blocks (basic_vae.py layout)
# ----------------------------------------------------------------------------------------------

def group_norm(channels):
    return nn.GroupNorm(num_groups=32, num_channels=channels, eps=1e-6, affine=True)


class ResnetBlock(nn.Module):
    def __init__(self, in_channels, out_channels):
        super().__init__()
        self.norm1 = group_norm(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, 1, 1)
        self.norm2 = group_norm(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1)
        self.nin_shortcut = (nn.Conv2d(in_channels, out_channels, 1, 1, 0)
                             if in_channels != out_channels else nn.Identity())

    def forward(self, x):
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return self.nin_shortcut(x) + h


class AttnBlock(nn.Module):
    """Single-head self-attention over the H*W positions; qkv channels are [q | k | v]."""

    def __init__(self, channels):
        super().__init__()
        self.C = channels
        self.norm = group_norm(channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1, 1, 0)
        self.proj_out = nn.Conv2d(channels, channels, 1, 1, 0)

    def forward(self, x):
        B, C, H, W = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(B, 3, C, H * W).unbind(1)
        w = torch.bmm(q.transpose(1, 2), k).mul_(C ** -0.5).softmax(dim=2)  # [B, HWq, HWk]
        h = torch.bmm(v, w.transpose(1, 2)).view(B, C, H, W)
        return x + self.proj_out(h)


class Upsample2x(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, 1, 1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


class Downsample2x(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, 2, 0)

    def forward(self, x):
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Encoder(nn.Module):
    def __init__(self, ch, ch_mult, num_res_blocks, z_channels, using_sa, using_mid_sa, in_channels=3):
        super().__init__()
        self.num_resolutions = len(ch_mult)
        self.num_res_blocks = num_res_blocks
        self.conv_in = nn.Conv2d(in_channels, ch, 3, 1, 1)
        in_ch_mult = (1,) + tuple(ch_mult)
        self.down = nn.ModuleList()
        block_in = ch
        for i_level in range(self.num_resolutions):
            block, attn = nn.ModuleList(), nn.ModuleList()
            block_in = ch * in_ch_mult[i_level]
            block_out = ch * ch_mult[i_level]
            for _ in range(num_res_blocks):
                block.append(ResnetBlock(block_in, block_out))
                block_in = block_out
                if i_level == self.num_resolutions - 1 and using_sa:
                    attn.append(AttnBlock(block_in))
            down = nn.Module()
            down.block, down.attn = block, attn
            if i_level != self.num_resolutions - 1:
                down.downsample = Downsample2x(block_in)
            self.down.append(down)
        self.mid = nn.Module()
        self.mid.block_1 = ResnetBlock(block_in, block_in)
        self.mid.attn_1 = AttnBlock(block_in) if using_mid_sa else nn.Identity()
        self.mid.block_2 = ResnetBlock(block_in, block_in)
        self.norm_out = group_norm(block_in)
        self.conv_out = nn.Conv2d(block_in, z_channels, 3, 1, 1)

    def forward(self, x):
        h = self.conv_in(x)
        for i_level in range(self.num_resolutions):
            lvl = self.down[i_level]
            for i_block in range(self.num_res_blocks):
                h = lvl.block[i_block](h)
                if len(lvl.attn) > 0:
                    h = lvl.attn[i_block](h)
            if i_level != self.num_resolutions - 1:
                h = lvl.downsample(h)
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(h)))
        return self.conv_out(F.silu(self.norm_out(h)))


class Decoder(nn.Module):
    """Official basic_vae.Decoder: num_res_blocks + 1 ResnetBlocks per level, AttnBlocks after each
    block of the lowest-resolution level, nearest-2x + 3x3 conv upsampling."""

    def __init__(self, ch, ch_mult, num_res_blocks, z_channels, using_sa, using_mid_sa, out_channels=3):
        super().__init__()
        self.num_resolutions = len(ch_mult)
        self.num_res_blocks = num_res_blocks
        block_in = ch * ch_mult[-1]
        self.conv_in = nn.Conv2d(z_channels, block_in, 3, 1, 1)
        self.mid = nn.Module()
        self.mid.block_1 = ResnetBlock(block_in, block_in)
        self.mid.attn_1 = AttnBlock(block_in) if using_mid_sa else nn.Identity()
        self.mid.block_2 = ResnetBlock(block_in, block_in)
        ups = []
        for i_level in reversed(range(self.num_resolutions)):
            block, attn = nn.ModuleList(), nn.ModuleList()
            block_out = ch * ch_mult[i_level]
            for _ in range(num_res_blocks + 1):
                block.append(ResnetBlock(block_in, block_out))
                block_in = block_out
                if i_level == self.num_resolutions - 1 and using_sa:
                    attn.append(AttnBlock(block_in))
            up = nn.Module()
            up.block, up.attn = block, attn
            if i_level != 0:
                up.upsample = Upsample2x(block_in)
            ups.insert(0, up)
        self.up = nn.ModuleList(ups)
        self.norm_out = group_norm(block_in)
        self.conv_out = nn.Conv2d(block_in, out_channels, 3, 1, 1)

    def forward(self, z):
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(self.conv_in(z))))
        for i_level in reversed(range(self.num_resolutions)):
            lvl = self.up[i_level]
            for i_block in range(self.num_res_blocks + 1):
                h = lvl.block[i_block](h)
                if len(lvl.attn) > 0:
                    h = lvl.attn[i_block](h)
            if i_level != 0:
                h = lvl.upsample(h)
        return self.conv_out(F.silu(self.norm_out(h)))


# ----------------------------------------------------------------------------------------------
# Multi-scale residual quantizer (quant.py layout)
# ----------------------------------------------------------------------------------------------

class Phi(nn.Conv2d):
    """phi(h) = (1 - r) * h + r * conv3x3(h)."""

    def __init__(self, channels, quant_resi):
        super().__init__(channels, channels, 3, 1, 1)
        self.resi_ratio = abs(quant_resi)

    def forward(self, h):
        return h.mul(1 - self.resi_ratio) + super().forward(h).mul_(self.resi_ratio)


class PhiPartiallyShared(nn.Module):
    """K shared Phi convs; scale si of S uses the one whose tick is nearest to si / (S - 1)."""

    def __init__(self, qresi_ls):
        super().__init__()
        self.qresi_ls = qresi_ls
        K = len(qresi_ls)
        self.ticks = np.linspace(1 / 3 / K, 1 - 1 / 3 / K, K) if K == 4 else np.linspace(1 / 2 / K, 1 - 1 / 2 / K, K)

    def __getitem__(self, at_from_0_to_1):
        return self.qresi_ls[int(np.argmin(np.abs(self.ticks - at_from_0_to_1)))]


class MultiScaleQuantizer(nn.Module):
    def __init__(self, vocab_size, Cvae, patch_nums, quant_resi=0.5, share_quant_resi=4, beta=0.25):
        super().__init__()
        self.vocab_size, self.Cvae, self.beta = vocab_size, Cvae, beta
        self.patch_nums = tuple(patch_nums)
        self.quant_resi = PhiPartiallyShared(nn.ModuleList(
            [Phi(Cvae, quant_resi) for _ in range(share_quant_resi)]))
        # Kept for layout parity with the official state dict (per-scale codebook usage statistics).
        self.register_buffer("ema_vocab_hit_SV", torch.zeros(len(self.patch_nums), vocab_size))
        self.embedding = nn.Embedding(vocab_size, Cvae)
        nn.init.uniform_(self.embedding.weight, -1.0 / vocab_size, 1.0 / vocab_size)

    def phi(self, si):
        return self.quant_resi[si / (len(self.patch_nums) - 1)]

    def nearest(self, rest_NC):
        emb = self.embedding.weight.detach()
        d = rest_NC.square().sum(1, keepdim=True) + emb.square().sum(1)
        d.addmm_(rest_NC, emb.T, alpha=-2, beta=1)
        return d.argmin(dim=1)

    def forward(self, f):
        """Returns (f_hat with straight-through gradient, vq_loss, list of idx [B, pn*pn] per scale,
        list of the residual vectors [N, C] that were quantised at each scale)."""
        B, C, H, W = f.shape
        f_no_grad = f.detach()
        f_rest = f_no_grad.clone()
        f_hat = torch.zeros_like(f_rest)
        S = len(self.patch_nums)
        vq_loss = 0.0
        idx_list, rest_list = [], []
        for si, pn in enumerate(self.patch_nums):
            last = si == S - 1
            rest = f_rest if last else F.interpolate(f_rest, size=(pn, pn), mode="area")
            rest_NC = rest.permute(0, 2, 3, 1).reshape(-1, C)
            idx = self.nearest(rest_NC)
            idx_list.append(idx.view(B, pn * pn))
            rest_list.append(rest_NC)
            h = self.embedding(idx.view(B, pn, pn)).permute(0, 3, 1, 2)
            if not last:
                h = F.interpolate(h, size=(H, W), mode="bicubic", align_corners=False)
            h = self.phi(si)(h)
            f_hat = f_hat + h
            f_rest = f_rest - h.detach()
            # codebook + phi are pulled towards the encoder output, the encoder is committed (beta).
            vq_loss = vq_loss + F.mse_loss(f_hat, f_no_grad) + self.beta * F.mse_loss(f_hat.detach(), f)
        vq_loss = vq_loss / S
        f_hat_st = (f_hat.detach() - f_no_grad) + f  # straight-through estimator
        # Let the decoder's gradient also reach the codebook / phi through f_hat (as in the official code
        # the decoder sees f_hat.data - f_no_grad + f; codebook learns from the vq loss only).
        return f_hat_st, vq_loss, idx_list, rest_list

    @torch.no_grad()
    def f_to_idx(self, f):
        _, _, idx_list, _ = self.forward(f)
        return idx_list

    @torch.no_grad()
    def idx_to_var_input(self, idx_list):
        """Teacher-forcing input (official idxBl_to_var_input): [B, L - 1, Cvae]."""
        B = idx_list[0].shape[0]
        C, HW, S = self.Cvae, self.patch_nums[-1], len(self.patch_nums)
        f_hat = torch.zeros(B, C, HW, HW)
        nxt = []
        for si in range(S - 1):
            pn = self.patch_nums[si]
            h = self.embedding(idx_list[si]).transpose(1, 2).reshape(B, C, pn, pn)
            h = F.interpolate(h, size=(HW, HW), mode="bicubic", align_corners=False)
            f_hat = f_hat + self.phi(si)(h)
            pn_next = self.patch_nums[si + 1]
            nxt.append(F.interpolate(f_hat, size=(pn_next, pn_next), mode="area").view(B, C, -1).transpose(1, 2))
        return torch.cat(nxt, dim=1)

    def next_autoregressive_input(self, si, f_hat, h_BChw):
        """Official get_next_autoregressive_input: returns (f_hat, input map for scale si + 1)."""
        HW, S = self.patch_nums[-1], len(self.patch_nums)
        if si != S - 1:
            h = self.phi(si)(F.interpolate(h_BChw, size=(HW, HW), mode="bicubic", align_corners=False))
            f_hat = f_hat + h
            pn = self.patch_nums[si + 1]
            return f_hat, F.interpolate(f_hat, size=(pn, pn), mode="area")
        f_hat = f_hat + self.phi(si)(h_BChw)
        return f_hat, f_hat


class VQVAE(nn.Module):
    def __init__(self, vocab_size, Cvae, ch, ch_mult, num_res_blocks, using_sa, using_mid_sa,
                 patch_nums, quant_resi=0.5, share_quant_resi=4, beta=0.25):
        super().__init__()
        self.encoder = Encoder(ch, ch_mult, num_res_blocks, Cvae, using_sa, using_mid_sa)
        self.decoder = Decoder(ch, ch_mult, num_res_blocks, Cvae, using_sa, using_mid_sa)
        self.quantize = MultiScaleQuantizer(vocab_size, Cvae, patch_nums, quant_resi, share_quant_resi, beta)
        self.quant_conv = nn.Conv2d(Cvae, Cvae, 3, 1, 1)
        self.post_quant_conv = nn.Conv2d(Cvae, Cvae, 3, 1, 1)

    def encode(self, img):
        return self.quant_conv(self.encoder(img))

    def fhat_to_img(self, f_hat):
        return self.decoder(self.post_quant_conv(f_hat)).clamp(-1, 1)

    def forward(self, img):
        f = self.encode(img)
        f_hat, vq_loss, idx_list, rest_list = self.quantize(f)
        rec = self.decoder(self.post_quant_conv(f_hat))
        return rec, vq_loss, idx_list, rest_list, f

    @torch.no_grad()
    def img_to_idx(self, img):
        return self.quantize.f_to_idx(self.encode(img))


# ----------------------------------------------------------------------------------------------
# VAR transformer (var.py / basic_var.py layout)
# ----------------------------------------------------------------------------------------------

class FFN(nn.Module):
    def __init__(self, C, hidden):
        super().__init__()
        self.fc1 = nn.Linear(C, hidden)
        self.act = nn.GELU(approximate="tanh")
        self.fc2 = nn.Linear(hidden, C)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class SelfAttention(nn.Module):
    """attn_l2_norm attention: q, k L2-normalised per head, q scaled by exp(min(s, log 100)), scale 1.
    Optional KV cache for autoregressive inference (list [K, V] per block)."""

    def __init__(self, C, num_heads):
        super().__init__()
        self.C, self.H, self.hd = C, num_heads, C // num_heads
        self.mat_qkv = nn.Linear(C, 3 * C, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(C))
        self.v_bias = nn.Parameter(torch.zeros(C))
        self.register_buffer("zero_k_bias", torch.zeros(C))
        self.scale_mul_1H11 = nn.Parameter(torch.full((1, num_heads, 1, 1), 4.0).log())
        self.max_scale_mul = math.log(100.0)
        self.proj = nn.Linear(C, C)
        self.kv_cache = None  # None = no caching; else a list [K or None, V or None]

    def forward(self, x, attn_bias):
        B, L, C = x.shape
        bias = torch.cat((self.q_bias, self.zero_k_bias, self.v_bias))
        qkv = F.linear(x, self.mat_qkv.weight, bias).view(B, L, 3, self.H, self.hd)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # [B, H, L, hd]
        q = F.normalize(q, dim=-1).mul(self.scale_mul_1H11.clamp_max(self.max_scale_mul).exp())
        k = F.normalize(k, dim=-1)
        if self.kv_cache is not None:
            if self.kv_cache[0] is not None:
                k = torch.cat((self.kv_cache[0], k), dim=2)
                v = torch.cat((self.kv_cache[1], v), dim=2)
            self.kv_cache[0], self.kv_cache[1] = k, v
        att = q @ k.transpose(-2, -1)
        if attn_bias is not None:
            att = att + attn_bias
        out = att.softmax(dim=-1) @ v
        return self.proj(out.transpose(1, 2).reshape(B, L, C))


class AdaLNSelfAttn(nn.Module):
    def __init__(self, C, num_heads, mlp_ratio, norm_eps):
        super().__init__()
        self.C = C
        self.attn = SelfAttention(C, num_heads)
        self.ffn = FFN(C, round(C * mlp_ratio))
        self.ln_wo_grad = nn.LayerNorm(C, eps=norm_eps, elementwise_affine=False)
        self.ada_lin = nn.Sequential(nn.SiLU(), nn.Linear(C, 6 * C))

    def forward(self, x, cond, attn_bias):
        gamma1, gamma2, scale1, scale2, shift1, shift2 = self.ada_lin(cond).view(-1, 1, 6, self.C).unbind(2)
        x = x + self.attn(self.ln_wo_grad(x).mul(scale1.add(1)).add_(shift1), attn_bias).mul_(gamma1)
        x = x + self.ffn(self.ln_wo_grad(x).mul(scale2.add(1)).add_(shift2)).mul(gamma2)
        return x


class AdaLNBeforeHead(nn.Module):
    def __init__(self, C, norm_eps):
        super().__init__()
        self.C = C
        self.ln_wo_grad = nn.LayerNorm(C, eps=norm_eps, elementwise_affine=False)
        self.ada_lin = nn.Sequential(nn.SiLU(), nn.Linear(C, 2 * C))

    def forward(self, x, cond):
        scale, shift = self.ada_lin(cond).view(-1, 1, 2, self.C).unbind(2)
        return self.ln_wo_grad(x).mul(scale.add(1)).add_(shift)


class VAR(nn.Module):
    def __init__(self, vocab_size, Cvae, num_classes, depth, embed_dim, num_heads, patch_nums,
                 mlp_ratio=4.0, norm_eps=1e-6):
        super().__init__()
        self.V, self.Cvae, self.num_classes = vocab_size, Cvae, num_classes
        self.C, self.depth = embed_dim, depth
        self.patch_nums = tuple(patch_nums)
        self.L = sum(pn * pn for pn in self.patch_nums)
        C = embed_dim
        init_std = math.sqrt(1 / C / 3)

        self.word_embed = nn.Linear(Cvae, C)
        self.class_emb = nn.Embedding(num_classes + 1, C)
        self.pos_start = nn.Parameter(torch.empty(1, 1, C))
        self.pos_1LC = nn.Parameter(torch.empty(1, self.L, C))
        self.lvl_embed = nn.Embedding(len(self.patch_nums), C)
        self.blocks = nn.ModuleList([AdaLNSelfAttn(C, num_heads, mlp_ratio, norm_eps) for _ in range(depth)])
        self.head_nm = AdaLNBeforeHead(C, norm_eps)
        self.head = nn.Linear(C, vocab_size)

        lvl = torch.cat([torch.full((pn * pn,), i) for i, pn in enumerate(self.patch_nums)]).view(1, self.L)
        self.register_buffer("lvl_1L", lvl)  # persistent (int64), as in the official state dict
        # Block-causal mask: a token of scale s sees every token of scales <= s. Persistent, like the
        # official `attn_bias_for_masking`.
        mask = torch.where(lvl.view(self.L, 1) >= lvl.view(1, self.L), 0.0, -torch.inf)
        self.register_buffer("attn_bias_for_masking", mask.view(1, 1, self.L, self.L).contiguous())

        self._init_weights(init_std)

    def _init_weights(self, init_std):
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=init_std)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Embedding):
                nn.init.trunc_normal_(m.weight, std=init_std)
        nn.init.trunc_normal_(self.pos_start, std=init_std)
        nn.init.trunc_normal_(self.pos_1LC, std=init_std)
        C = self.C
        with torch.no_grad():
            self.head.weight.mul_(0.02)
            self.head_nm.ada_lin[-1].weight.mul_(0.5)
            for b in self.blocks:
                b.attn.proj.weight.div_(math.sqrt(2 * self.depth))
                b.ffn.fc2.weight.div_(math.sqrt(2 * self.depth))
                lin = b.ada_lin[-1]
                # gamma rows start as a plain pre-LN residual (gamma = 1), scale/shift near 0: this
                # trains faster in the short CPU budget than the official near-zero gamma init.
                lin.weight[:2 * C].mul_(0.1)
                lin.weight[2 * C:].mul_(0.5)
                lin.bias[:2 * C].fill_(1.0)

    def embed_inputs(self, label_B, x_BLCv_wo_first):
        B = label_B.shape[0]
        cond = self.class_emb(label_B)
        sos = cond.unsqueeze(1) + self.pos_start.expand(B, 1, -1)
        x = torch.cat((sos, self.word_embed(x_BLCv_wo_first.float())), dim=1)
        L = x.shape[1]
        x = x + self.lvl_embed(self.lvl_1L[:, :L].expand(B, -1)) + self.pos_1LC[:, :L]
        return x, cond

    def forward(self, label_B, x_BLCv_wo_first):
        """Training graph (teacher forcing): logits [B, L, V]."""
        x, cond = self.embed_inputs(label_B, x_BLCv_wo_first)
        L = x.shape[1]
        bias = self.attn_bias_for_masking[:, :, :L, :L]
        for b in self.blocks:
            x = b(x, cond, bias)
        return self.head(self.head_nm(x, cond))

    @torch.no_grad()
    def autoregressive_infer_cfg(self, vae, label_B, cfg=1.5, top_k=0, top_p=0.0, generator=None, trace=None):
        """Official sampling loop with a KV cache: CFG t = cfg * si / (S - 1),
        logits = (1 + t) * cond - t * uncond. Returns images in [0, 1], [B, 3, H, W].
        If `trace` is a list, (mixed logits [B, pn*pn, V], idx [B, pn*pn]) of every scale is appended."""
        B = label_B.shape[0]
        S = len(self.patch_nums)
        quant = vae.quantize
        labels = torch.cat((label_B, torch.full_like(label_B, self.num_classes)))
        cond = self.class_emb(labels)
        lvl_pos = self.lvl_embed(self.lvl_1L) + self.pos_1LC
        x = cond.unsqueeze(1) + self.pos_start.expand(2 * B, 1, -1) + lvl_pos[:, :1]
        HW = self.patch_nums[-1]
        f_hat = torch.zeros(B, self.Cvae, HW, HW)
        for b in self.blocks:
            b.attn.kv_cache = [None, None]
        cur = 0
        try:
            for si, pn in enumerate(self.patch_nums):
                cur += pn * pn
                h = x
                for b in self.blocks:
                    h = b(h, cond, None)
                logits = self.head(self.head_nm(h, cond))
                t = cfg * si / (S - 1)
                logits = (1 + t) * logits[:B] - t * logits[B:]
                idx = sample_top_k_top_p(logits, top_k, top_p, generator)
                if trace is not None:
                    trace.append((logits, idx))
                h_BChw = quant.embedding(idx).transpose(1, 2).reshape(B, self.Cvae, pn, pn)
                f_hat, nxt = quant.next_autoregressive_input(si, f_hat, h_BChw)
                if si != S - 1:
                    nxt = nxt.view(B, self.Cvae, -1).transpose(1, 2)
                    x = self.word_embed(nxt) + lvl_pos[:, cur:cur + self.patch_nums[si + 1] ** 2]
                    x = x.repeat(2, 1, 1)
        finally:
            for b in self.blocks:
                b.attn.kv_cache = None
        return vae.fhat_to_img(f_hat).add(1).mul(0.5)


def sample_top_k_top_p(logits_BlV, top_k=0, top_p=0.0, generator=None):
    """top_k == 1 is greedy (argmax); otherwise top-k / nucleus filtering then multinomial."""
    B, l, V = logits_BlV.shape
    if top_k == 1:
        return logits_BlV.argmax(dim=-1)
    logits = logits_BlV.clone()
    if top_k > 0:
        kth = logits.topk(top_k, dim=-1).values[..., -1:]
        logits.masked_fill_(logits < kth, -torch.inf)
    if top_p > 0:
        srt, order = logits.sort(dim=-1, descending=False)
        drop = srt.softmax(dim=-1).cumsum(dim=-1) <= (1 - top_p)
        drop[..., -1:] = False
        logits.masked_fill_(drop.scatter(-1, order, drop), -torch.inf)
    probs = logits.softmax(dim=-1).view(-1, V)
    return torch.multinomial(probs, 1, generator=generator).view(B, l)


# ----------------------------------------------------------------------------------------------
# Config helpers
# ----------------------------------------------------------------------------------------------

def build_vae(cfg):
    return VQVAE(cfg["V"], cfg["Cvae"], cfg["ch"], cfg["vae_ch_mult"], cfg["vae_num_res_blocks"],
                 cfg["vae_using_sa"], cfg["vae_using_mid_sa"], cfg["patch_nums"],
                 cfg["quant_resi"], cfg["share_quant_resi"], cfg.get("beta", 0.25))


def build_var(cfg):
    return VAR(cfg["V"], cfg["Cvae"], cfg["num_classes"], cfg["depth"], cfg["embed_dim"],
               cfg["num_heads"], cfg["patch_nums"], cfg["mlp_ratio"], cfg["norm_eps"])


def load_demo(model_dir, name="var-fmnist"):
    """Build the models from DIR/NAME.config.json and load the (fp16) safetensors as float32."""
    import json
    import os
    from . import st
    with open(os.path.join(model_dir, f"{name}.config.json")) as f:
        cfg = json.load(f)
    vae, var = build_vae(cfg), build_var(cfg)
    vae.load_state_dict(st.load_file(os.path.join(model_dir, f"{name}.vae.safetensors"), torch.float32))
    var.load_state_dict(st.load_file(os.path.join(model_dir, f"{name}.var.safetensors"), torch.float32))
    return cfg, vae.eval(), var.eval()
