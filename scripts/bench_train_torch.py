#!/usr/bin/env python3
"""The PyTorch peer of `cargo xtask bench-train`.

Builds the network from the project's own description (the JSON that the
xtask writes from `dgms-arch`: there is no second definition of any network
here), checks that its trainable parameter count is the project's, and times
on random data of the workload's shape, with `--threads` intra-op threads:

- a full-precision training step (forward, cross entropy, backward, SGD with
  momentum 0.9, Nesterov, weight decay 5e-4 on every parameter);
- evaluation (eval mode, no autograd);
- a DGMS training step: every conv the description lists in
  `mixture_layers` computes its weights as the mixture's soft weights, with
  the mixture written as plain PyTorch ops the way the DGMS reference
  computes it (raw normal densities, responsibilities normalised by their
  sum, a temperature softmax over them, soft weight = sum_k a_k mu_k, the
  zero component's mean fixed at 0), K components; weight decay on the
  weights only, as the project's default.

Timing: one warm-up step, then `--steps` timed steps; images/s over them.
Denormals are flushed to zero (PyTorch's fastest setting).
Prints one JSON line.
"""

import argparse
import json
import math
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class ZeroPad(nn.Module):
    """Option-A shortcut: x[:, :, ::s, ::s] and `pad` zero channels on each side."""

    def __init__(self, stride, pad):
        super().__init__()
        self.stride, self.pad = stride, pad

    def forward(self, x):
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, self.pad, self.pad))


class GlobalAvgPool(nn.Module):
    """Mean over the spatial dimensions: N x C x H x W -> N x C."""

    def forward(self, x):
        return x.mean((2, 3))


class Block(nn.Module):
    def __init__(self, body, shortcut):
        super().__init__()
        self.body, self.shortcut = body, shortcut

    def forward(self, x):
        out = self.body(x)
        return out if self.shortcut is None else out + self.shortcut(x)


class MixtureConv(nn.Conv2d):
    """A conv whose weights are the DGMS soft weights of its mixture."""

    def __init__(self, *args, k, tau, **kwargs):
        super().__init__(*args, **kwargs)
        self.k, self.tau = k, tau
        self.mu = nn.Parameter(torch.zeros(k - 1))
        self.sigma = nn.Parameter(torch.zeros(k))
        self.pi = nn.Parameter(torch.full((k,), 1.0 / k))

    def init_mixture(self):
        # Means at evenly spaced quantiles of the weights (0 excluded), every
        # width the weights' spread over K: a valid mixture for timing.
        with torch.no_grad():
            w = self.weight.flatten()
            q = torch.linspace(0.02, 0.98, self.k - 1)
            self.mu.copy_(torch.quantile(w, q))
            self.sigma.fill_(float(w.std()) / self.k)

    def soft_weight(self):
        w = self.weight.flatten()
        mu = torch.cat([torch.zeros(1), self.mu])
        p = self.pi.abs() / self.pi.abs().sum()
        sigma = self.sigma[:, None]
        dens = p[:, None] * torch.exp(-((w[None, :] - mu[:, None]) ** 2) / (2 * sigma**2))
        dens = dens / (math.sqrt(2 * math.pi) * sigma)
        gamma = dens / (dens.sum(0, keepdim=True) + 1e-12)
        a = torch.softmax(gamma / self.tau, dim=0)
        return (a[1:] * mu[1:, None]).sum(0).view_as(self.weight)

    def forward(self, x):
        return self._conv_forward(x, self.soft_weight(), self.bias)


def build(layers, arch, mixture):
    mods = []
    for layer in layers:
        op = layer["op"]
        if op == "conv":
            args = (layer["in"], layer["out"], layer["kernel"])
            kw = dict(
                stride=layer["stride"],
                padding=layer["padding"],
                groups=layer["groups"],
                bias=layer["bias"],
            )
            if mixture and layer["name"] in arch["mixture_layers"]:
                mods.append(MixtureConv(*args, k=mixture["k"], tau=mixture["tau"], **kw))
            else:
                mods.append(nn.Conv2d(*args, **kw))
        elif op == "bn":
            mods.append(
                nn.BatchNorm2d(layer["channels"], eps=arch["eps"], momentum=arch["momentum"])
            )
        elif op == "relu":
            mods.append(nn.ReLU(inplace=True))
        elif op == "relu6":
            mods.append(nn.ReLU6(inplace=True))
        elif op == "maxpool":
            mods.append(nn.MaxPool2d(layer["kernel"], layer["stride"], layer["padding"]))
        elif op == "block":
            body = build(layer["body"], arch, mixture)
            sc = layer["shortcut"]
            if sc is None:
                shortcut = None
            elif sc["kind"] == "identity":
                shortcut = nn.Identity()
            elif sc["kind"] == "zeropad":
                shortcut = ZeroPad(sc["stride"], sc["pad"])
            else:
                shortcut = build(sc["layers"], arch, mixture)
            mods.append(Block(body, shortcut))
        elif op == "gap":
            mods.append(GlobalAvgPool())
        elif op == "flatten":
            mods.append(nn.Flatten(1))
        elif op == "dropout":
            mods.append(nn.Dropout(layer["p"]))
        elif op == "linear":
            mods.append(nn.Linear(layer["in"], layer["out"]))
        else:
            raise SystemExit(f"unknown op {op!r} in the description")
    return nn.Sequential(*mods)


def weight_count(net):
    return sum(
        p.numel()
        for name, p in net.named_parameters()
        if not name.endswith((".mu", ".sigma", ".pi"))
    )


def optimizer(net, mixture):
    weights = [p for n, p in net.named_parameters() if not n.endswith((".mu", ".sigma", ".pi"))]
    groups = [{"params": weights, "weight_decay": 5e-4}]
    if mixture:
        mix = [p for n, p in net.named_parameters() if n.endswith((".mu", ".sigma", ".pi"))]
        groups.append({"params": mix, "weight_decay": 0.0})
    return torch.optim.SGD(groups, lr=0.01, momentum=0.9, nesterov=True)


def time_steps(fn, steps):
    fn()  # warm-up
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    return time.perf_counter() - start


def train_rate(net, x, y, steps, mixture):
    net.train()
    opt = optimizer(net, mixture)

    def step():
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(net(x), y)
        loss.backward()
        opt.step()

    return steps * x.shape[0] / time_steps(step, steps)


def eval_rate(net, x, steps):
    net.eval()

    def run():
        with torch.no_grad():
            net(x)

    return steps * x.shape[0] / time_steps(run, steps)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", required=True, help="the network's JSON description")
    ap.add_argument("--batch", type=int, required=True)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--k", type=int, default=16)
    ap.add_argument("--tau", type=float, default=0.01)
    ap.add_argument("--no-dgms", action="store_true", help="skip the DGMS step")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    # Denormal densities (weights far from a narrow component) are ~100x
    # slower to compute with on x86; flushing them to zero is PyTorch's
    # fastest setting, so the peer is timed at its best.
    torch.set_flush_denormal(True)
    torch.manual_seed(0)
    with open(args.arch) as f:
        arch = json.load(f)
    c, h, w = arch["input_shape"]
    x = torch.randn(args.batch, c, h, w)
    y = torch.randint(0, arch["classes"], (args.batch,))

    net = build(arch["layers"], arch, None)
    count = weight_count(net)
    if count != arch["parameter_count"]:
        sys.exit(
            f"built {count} trainable parameters, the description has {arch['parameter_count']}"
        )
    out = {
        "torch_version": torch.__version__,
        "threads": torch.get_num_threads(),
        "parameter_count": count,
        "train_images_per_s": train_rate(net, x, y, args.steps, None),
        "eval_images_per_s": eval_rate(net, x, args.steps),
    }
    if not args.no_dgms:
        mixture = {"k": args.k, "tau": args.tau}
        net = build(arch["layers"], arch, mixture)
        mixed = [m for m in net.modules() if isinstance(m, MixtureConv)]
        if len(mixed) != len(arch["mixture_layers"]):
            sys.exit(f"{len(mixed)} mixture convs built, {len(arch['mixture_layers'])} listed")
        for m in mixed:
            m.init_mixture()
        out["dgms_train_images_per_s"] = train_rate(net, x, y, args.steps, mixture)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
