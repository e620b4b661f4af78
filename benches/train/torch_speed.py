#!/usr/bin/env python3
"""PyTorch reference for `hecc train`'s speed: the same network, built from the same hecc YAML
spec, trained with the same settings (batch size, Nesterov SGD, f32, the same thread count) on
the same IDX images; prints training images per second.

Usage: torch_speed.py SPEC DATA_DIR [--images N] [--batch 64] [--threads 2] [--act relu|quadratic]
              [--granularity layer|channel|element] [--epochs 1]

Only the ops the BEAA networks use are built (input normalisation, conv2d, batch_norm, dense,
flatten, avg_pool, global_avg_pool, max_pool, concat, add, relu, quadratic); anything else is
refused by name. Data loading is outside the timed loop, as the images are held in memory.
"""
import argparse
import gzip
import struct
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import yaml


def read_idx(path):
    raw = Path(path).read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    nd = raw[3]
    dims = struct.unpack(">" + "I" * nd, raw[4 : 4 + 4 * nd])
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * nd).reshape(dims)


def find(dir_, stem):
    for p in sorted(Path(dir_).iterdir()):
        if p.name.startswith(stem):
            return p
    sys.exit(f"no {stem}* file in {dir_}")


class Quadratic(nn.Module):
    def __init__(self, shape, granularity):
        super().__init__()
        if granularity == "layer":
            s = [1] * len(shape)
        elif granularity == "channel":
            s = [shape[0]] + [1] * (len(shape) - 1)
        else:
            s = list(shape)
        self.a = nn.Parameter(torch.full(s, 0.2))
        self.b = nn.Parameter(torch.full(s, 0.5))
        self.c = nn.Parameter(torch.full(s, 0.2))

    def forward(self, x):
        return self.a * x * x + self.b * x + self.c


def as_pair(v):
    return list(v) if isinstance(v, list) else [v, v]


def as_pad(v):
    if v is None:
        return [0, 0, 0, 0]
    if isinstance(v, list):
        return v if len(v) == 4 else [v[0], v[1], v[0], v[1]]
    return [v] * 4


class SpecNet(nn.Module):
    """A hecc spec (layers or graph form) as a torch module."""

    def __init__(self, spec, act, granularity):
        super().__init__()
        inp = spec["input"]
        self.shape = list(inp["shape"])
        self.mean = float(np.mean(inp.get("mean", 0.0)))
        self.std = float(np.mean(inp.get("std", 1.0)))
        if "graph" in spec:
            nodes = spec["graph"]
            self.outputs = spec["outputs"]
        else:
            nodes, prev = [], "input"
            for layer in spec["layers"]:
                layer = dict(layer)
                layer.setdefault("inputs", [prev])
                nodes.append(layer)
                prev = layer["name"]
            self.outputs = [prev]
        self.nodes = nodes
        self.mods = nn.ModuleDict()
        shapes = {"input": self.shape}
        for n in nodes:
            op, name = n["op"], n["name"]
            ins = [shapes[i] for i in n["inputs"]]
            s = ins[0]
            key = name.replace(".", "_")
            if op == "conv2d":
                k = as_pair(n["kernel"])
                st = as_pair(n.get("stride", 1))
                p = as_pad(n.get("padding", 0))
                g = n.get("groups", 1)
                self.mods[key] = nn.Conv2d(s[0], n["out_channels"], k, st, 0, groups=g,
                                           bias=n.get("bias", True))
                n["_pad"] = p
                h = (s[1] + p[0] + p[2] - k[0]) // st[0] + 1
                w = (s[2] + p[1] + p[3] - k[1]) // st[1] + 1
                out = [n["out_channels"], h, w]
            elif op == "batch_norm":
                self.mods[key] = nn.BatchNorm2d(s[0]) if len(s) == 3 else nn.BatchNorm1d(s[0])
                out = s
            elif op == "dense":
                self.mods[key] = nn.Linear(s[0], n["out_features"], bias=n.get("bias", True))
                out = [n["out_features"]]
            elif op in ("relu", "quadratic", "square", "poly"):
                if act == "quadratic":
                    self.mods[key] = Quadratic(s, granularity or n.get("granularity", "channel"))
                out = s
            elif op == "flatten":
                out = [int(np.prod(s))]
            elif op in ("avg_pool", "max_pool"):
                k = as_pair(n["kernel"])
                st = as_pair(n.get("stride", n["kernel"]))
                p = as_pad(n.get("padding", 0))
                n["_pad"] = p
                h = (s[1] + p[0] + p[2] - k[0]) // st[0] + 1
                w = (s[2] + p[1] + p[3] - k[1]) // st[1] + 1
                out = [s[0], h, w]
            elif op == "global_avg_pool":
                out = [s[0]]
            elif op == "concat":
                out = [sum(i[0] for i in ins)] + s[1:]
            elif op == "add":
                out = s
            else:
                sys.exit(f"torch_speed.py: op `{op}` ({name}) is not built here")
            shapes[name] = out

    def forward(self, x):
        vals = {"input": (x - self.mean) / self.std}
        for n in self.nodes:
            op, key = n["op"], n["name"].replace(".", "_")
            xs = [vals[i] for i in n["inputs"]]
            x0 = xs[0]
            if op == "conv2d":
                p = n["_pad"]
                if any(p):
                    x0 = F.pad(x0, (p[1], p[3], p[0], p[2]))
                y = self.mods[key](x0)
            elif op in ("batch_norm", "dense"):
                y = self.mods[key](x0)
            elif op in ("relu", "quadratic", "square", "poly"):
                y = self.mods[key](x0) if key in self.mods else F.relu(x0)
            elif op == "flatten":
                y = x0.flatten(1)
            elif op in ("avg_pool", "max_pool"):
                p = n["_pad"]
                if any(p):
                    x0 = F.pad(x0, (p[1], p[3], p[0], p[2]))
                k = as_pair(n["kernel"])
                st = as_pair(n.get("stride", n["kernel"]))
                y = F.avg_pool2d(x0, k, st) if op == "avg_pool" else F.max_pool2d(x0, k, st)
            elif op == "global_avg_pool":
                y = x0.mean(dim=(2, 3))
            elif op == "concat":
                y = torch.cat(xs, dim=n.get("axis", 0) + 1)
            elif op == "add":
                y = sum(xs)
            vals[n["name"]] = y
        return vals[self.outputs[0]]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("spec")
    ap.add_argument("data")
    ap.add_argument("--images", type=int, default=6000)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--act", choices=["relu", "quadratic"], default="quadratic")
    ap.add_argument("--granularity", choices=["layer", "channel", "element"])
    ap.add_argument("--epochs", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    spec = yaml.safe_load(Path(a.spec).read_text())
    net = SpecNet(spec, a.act, a.granularity)
    images = read_idx(find(a.data, "train-images"))[: a.images]
    labels = read_idx(find(a.data, "train-labels"))[: a.images]
    x_all = torch.from_numpy(images.astype(np.float32) / 255.0).reshape(len(images), *net.shape)
    y_all = torch.from_numpy(labels.astype(np.int64))
    opt = torch.optim.SGD(net.parameters(), lr=0.02, momentum=0.9, nesterov=True, weight_decay=5e-4)
    net.train()
    seen = 0
    t0 = time.perf_counter()
    for _ in range(a.epochs):
        perm = torch.randperm(len(x_all))
        for i in range(0, len(x_all), a.batch):
            idx = perm[i : i + a.batch]
            opt.zero_grad()
            loss = F.cross_entropy(net(x_all[idx]), y_all[idx])
            loss.backward()
            nn.utils.clip_grad_norm_(net.parameters(), 5.0)
            opt.step()
            seen += len(idx)
    dt = time.perf_counter() - t0
    print(f"torch {torch.__version__} threads {a.threads} spec {Path(a.spec).stem} act {a.act} "
          f"images {seen} time {dt:.2f} s images/s {seen / dt:.0f} loss {loss.item():.4f}")


if __name__ == "__main__":
    main()
