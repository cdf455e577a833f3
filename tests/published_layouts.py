"""The published PATN (Pose-Transfer) and XingGAN generators as plain state dicts under their authors' key names,
and functional forwards over those dicts written from the architecture notes (§2, §3.2, §5.2-5.3), in the
published computation order. Tests import such a dict and compare reidaug's generator with these forwards."""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F

M = "model."


class Layout:
    """Random tensors under published names: convs, transposed convs, BatchNorm (or IN: conv biases)."""

    def __init__(self, batch: bool = True, counters: bool = False, seed: int = 0):
        self.sd: OrderedDict[str, torch.Tensor] = OrderedDict()
        self.batch, self.counters = batch, counters
        self.g = torch.Generator().manual_seed(seed)

    def rand(self, *shape, scale=1.0):
        return torch.randn(*shape, generator=self.g) * scale

    def conv(self, name, out, inp, k, bias=None, transposed=False):
        shape = (inp, out, k, k) if transposed else (out, inp, k, k)
        self.sd[name + ".weight"] = self.rand(*shape, scale=(inp * k * k) ** -0.5)
        if bias if bias is not None else not self.batch:
            self.sd[name + ".bias"] = self.rand(out, scale=0.1)

    def norm(self, name, c):
        if not self.batch:
            return
        self.sd[name + ".weight"] = 1 + self.rand(c, scale=0.1)
        self.sd[name + ".bias"] = self.rand(c, scale=0.1)
        self.sd[name + ".running_mean"] = self.rand(c, scale=0.1)
        self.sd[name + ".running_var"] = 0.5 + self.rand(c).abs()
        if self.counters:
            self.sd[name + ".num_batches_tracked"] = torch.tensor(1000)

    def encoder(self, name, inp, ngf):
        self.conv(f"{name}.1", ngf, inp, 7)
        self.norm(f"{name}.2", ngf)
        for i, c in enumerate((ngf, 2 * ngf)):
            self.conv(f"{name}.{4 + 3 * i}", 2 * c, c, 3)
            self.norm(f"{name}.{5 + 3 * i}", 2 * c)

    def block_bodies(self, p, dim, pose_in, dropout):
        second = 6 if dropout else 5
        self.conv(p + "conv_block_stream1.1", dim, dim, 3)
        self.norm(p + "conv_block_stream1.2", dim)
        self.conv(p + f"conv_block_stream1.{second}", dim, dim, 3)
        self.norm(p + f"conv_block_stream1.{second + 1}", dim)
        self.conv(p + "conv_block_stream2.1", pose_in, pose_in, 3)
        self.norm(p + "conv_block_stream2.2", pose_in)
        self.conv(p + f"conv_block_stream2.{second}", dim, pose_in, 3)

    def decoder(self, name, ngf, out):
        self.conv(f"{name}.0", 2 * ngf, 4 * ngf, 3, transposed=True)
        self.norm(f"{name}.1", 2 * ngf)
        self.conv(f"{name}.3", ngf, 2 * ngf, 3, transposed=True)
        self.norm(f"{name}.4", ngf)
        self.conv(f"{name}.7", out, ngf, 7, bias=True)


def patn_state(ngf=8, n_blocks=2, dropout=True, batch=True, counters=False, seed=0) -> OrderedDict:
    """A Pose-Transfer `PATNetwork` state dict (what `latest_net_netG.pth` holds)."""
    lay = Layout(batch, counters, seed)
    lay.encoder(M + "stream1_down", 3, ngf)
    lay.encoder(M + "stream2_down", 36, ngf)
    dim = 4 * ngf
    for b in range(n_blocks):
        lay.block_bodies(f"{M}att.{b}.", dim, dim if b == 0 else 2 * dim, dropout)
    lay.decoder(M + "stream1_up", ngf, 3)
    return lay.sd


def xinggan_state(ngf=8, n_blocks=2, n_images=10, batch=True, counters=False, seed=0) -> OrderedDict:
    """A XingGAN `XingNetwork` state dict (Market options: dropout 0.5)."""
    lay = Layout(batch, counters, seed)
    lay.encoder(M + "stream1_down", 3, ngf)
    lay.encoder(M + "stream2_down", 36, ngf)
    dim = 4 * ngf
    for b in range(n_blocks):
        p = f"{M}att.{b}."
        lay.block_bodies(p, dim, dim if b == 0 else 2 * dim, True)
        lay.conv(p + "query_conv", dim // 8, dim, 1, bias=True)
        lay.conv(p + "key_conv", dim // 8, dim, 1, bias=True)
        lay.conv(p + "value_conv", dim, dim, 1, bias=True)
        lay.sd[p + "gamma"] = torch.tensor([0.3 + 0.1 * b])
    lay.decoder(M + "stream1_up", ngf, 3 * n_images)
    lay.decoder(M + "stream2_up", ngf, 3 * n_images)
    lay.conv(M + "x2_con", dim, 2 * dim, 1, transposed=True)
    lay.norm(M + "x2_norm", dim)
    lay.conv(M + "atte_con", dim, 3 * dim, 3, transposed=True)
    lay.norm(M + "atte_norm", dim)
    lay.conv(M + "atte_con1", dim // 2, dim, 3, transposed=True)
    lay.norm(M + "atte_norm1", dim // 2)
    lay.conv(M + "atte_con2", 2 * n_images + 1, dim // 2, 1, transposed=True)
    return lay.sd


class Forward:
    """Eval-mode layers over a published state dict `W` (BN with running statistics, or non-affine IN)."""

    def __init__(self, W):
        self.W = W

    def n(self, x, p):
        W = self.W
        if p + ".running_mean" in W:
            return F.batch_norm(
                x, W[p + ".running_mean"], W[p + ".running_var"], W[p + ".weight"], W[p + ".bias"]
            )
        return F.instance_norm(x)

    def c(self, x, p, pad=0, stride=1, reflect=0):
        if reflect:
            x = F.pad(x, (reflect,) * 4, mode="reflect")
        return F.conv2d(x, self.W[p + ".weight"], self.W.get(p + ".bias"), stride=stride, padding=pad)

    def ct(self, x, p, k=3):
        s = (2, 1, 1) if k == 3 else (1, 0, 0)
        return F.conv_transpose2d(x, self.W[p + ".weight"], self.W.get(p + ".bias"), stride=s[0], padding=s[1],
                                  output_padding=s[2])  # fmt: skip

    def down(self, x, p):  # notes 2.1
        x = F.relu(self.n(self.c(x, p + ".1", reflect=3), p + ".2"))
        x = F.relu(self.n(self.c(x, p + ".4", pad=1, stride=2), p + ".5"))
        return F.relu(self.n(self.c(x, p + ".7", pad=1, stride=2), p + ".8"))

    def up(self, x, p):  # notes 2.2
        x = F.relu(self.n(self.ct(x, p + ".0"), p + ".1"))
        x = F.relu(self.n(self.ct(x, p + ".3"), p + ".4"))
        return torch.tanh(self.c(x, p + ".7", reflect=3))

    def bodies(self, x1, x2, p):  # notes 2.3: image-type and pose-type conv blocks (dropout off in eval)
        second = 6 if p + "conv_block_stream1.6.weight" in self.W else 5
        a = p + "conv_block_stream1."
        o1 = self.n(self.c(F.relu(self.n(self.c(x1, a + "1", reflect=1), a + "2")), a + f"{second}", reflect=1),
                    a + f"{second + 1}")  # fmt: skip
        b = p + "conv_block_stream2."
        o2 = self.c(F.relu(self.n(self.c(x2, b + "1", reflect=1), b + "2")), b + f"{second}", reflect=1)
        return o1, o2

    def blocks(self):
        return sorted({int(k.split(".")[2]) for k in self.W if k.startswith(M + "att.")})


def patn_forward(W, img, src_maps, tgt_maps):
    """PATN (§3.2): F^P_t = F^P + sigmoid(conv^S) * conv^P; F^S_t = [conv^S, F^P_t]; decoder on F^P."""
    f = Forward(W)
    x1, x2 = f.down(img, M + "stream1_down"), f.down(torch.cat([src_maps, tgt_maps], 1), M + "stream2_down")
    for b in f.blocks():
        o1, o2 = f.bodies(x1, x2, f"{M}att.{b}.")
        x1 = x1 + o1 * torch.sigmoid(o2)
        x2 = torch.cat([o2, x1], 1)
    return f.up(x1, M + "stream1_up")


def xinggan_forward(W, img, src_maps, tgt_maps):
    """XingGAN (§5.2-5.3) as the published code wires it: SA then AS with shared projections (AS keys from the
    un-updated appearance), F^S = [F^I, S^]; two decoders, 2N + 1 softmax co-attention maps over them and P_c."""
    f = Forward(W)

    def attend(target, guide, p):  # target + gamma * V(target) softmax(Q(target)^T K(guide))
        b, c, h, w = target.shape
        q = f.c(target, p + "query_conv").flatten(2).transpose(1, 2)
        k = f.c(guide, p + "key_conv").flatten(2)
        v = f.c(target, p + "value_conv").flatten(2)
        return target + W[p + "gamma"] * torch.bmm(v, torch.softmax(q @ k, -1).transpose(1, 2)).view(
            b, c, h, w
        )

    x1, x2 = f.down(img, M + "stream1_down"), f.down(torch.cat([src_maps, tgt_maps], 1), M + "stream2_down")
    for b in f.blocks():
        p = f"{M}att.{b}."
        o1, o2 = f.bodies(x1, x2, p)
        u1, u2 = attend(o1, o2, p), attend(o2, o1, p)
        x1, x2 = u1, torch.cat([u1, u2], 1)
    maps = F.relu(f.n(f.ct(torch.cat([x1, x2], 1), M + "atte_con"), M + "atte_norm"))
    maps = F.relu(f.n(f.ct(maps, M + "atte_con1"), M + "atte_norm1"))
    maps = torch.softmax(f.ct(maps, M + "atte_con2", k=1), 1)
    images = torch.cat([f.up(x1, M + "stream1_up"),
                        f.up(F.relu(f.n(f.ct(x2, M + "x2_con", k=1), M + "x2_norm")), M + "stream2_up")], 1)  # fmt: skip
    n = images.shape[1] // 3
    return sum(images[:, 3 * k : 3 * k + 3] * maps[:, k : k + 1] for k in range(n)) + img * maps[:, n:]
