#!/usr/bin/env python3
"""Trains models/resnet8_28.yaml (ResNet-8 for 1x28x28) on Fashion-MNIST with exact ReLU in PyTorch,
and writes it as the spec's weights and as a PyTorch ONNX export.

    python3 train_resnet8_fashion.py [--data DIR] [--epochs E] [--out DIR] [--weights FILE]

--data holds the Fashion-MNIST IDX files (train-*, t10k-*) that scripts/fetch-datasets.sh writes;
default: data/fashion-mnist under the repository root.

Training: the 60,000 training images split into 55,000 for training and the last 5,000 for
validation; SGD with momentum 0.9, Nesterov, weight decay 5e-4 on conv and dense weights, batch 128,
learning rate 0.1 warmed up over the first epoch then cosine-annealed to 0; no augmentation (the
images are centred and upright); the weights of the epoch with the best validation accuracy are
kept (early stopping without cutting the schedule short). Inputs are normalised outside the model
with the spec's mean and std, as hecc's input node does.

Writes:
  OUT/resnet8_fashion_torch.onnx        torch.onnx.export (opset 14, dynamic batch axis, eval mode)
  OUT/resnet8_fashion_torch.logits.npy  float32 [256, 10]: PyTorch's outputs on the bundled first
                                        256 test images (models/data)
  OUT/resnet8_fashion_torch.json        versions, parameters, recipe, per-epoch log, accuracies, time
  WEIGHTS (models/resnet8_28.safetensors)  the same weights under the spec's layer names

Deterministic for a given thread count (seeded). Needs torch (Debian's python3-torch 1.13) and numpy.
"""
import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "2")

import argparse
import json
import math
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from export_models import read_idx
from export_resnet20 import Block, spec_name, write_safetensors

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(HERE)))
SEED = 20261207
MEAN, STD = 0.2860, 0.3530  # models/resnet8_28.yaml's input normalisation


class ResNet8(nn.Module):
    """The spec's network: stem, one basic block per stage (16, 32, 64 channels), pool, dense."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.layer1 = Block(16, 16, 1)
        self.layer2 = Block(16, 32, 2)
        self.layer3 = Block(32, 64, 2)
        self.fc = nn.Linear(64, 10)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


def normalise(images):
    return ((images.astype(np.float32) / 255.0 - MEAN) / STD)[:, None, :, :]


def evaluate(model, x, y, batch=1000):
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(x), batch):
            out = model(torch.from_numpy(x[i:i + batch]))
            correct += int((out.argmax(1).numpy() == y[i:i + batch]).sum())
    return correct / len(x)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=os.path.join(ROOT, "data", "fashion-mnist"))
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--out", default=HERE)
    ap.add_argument("--weights", default=os.path.join(ROOT, "models", "resnet8_28.safetensors"))
    args = ap.parse_args()

    torch.manual_seed(SEED)
    threads = int(os.environ["OMP_NUM_THREADS"])
    torch.set_num_threads(threads)
    xs = normalise(read_idx(os.path.join(args.data, "train-images-idx3-ubyte")))
    ys = read_idx(os.path.join(args.data, "train-labels-idx1-ubyte")).astype(np.int64)
    xt = normalise(read_idx(os.path.join(args.data, "t10k-images-idx3-ubyte")))
    yt = read_idx(os.path.join(args.data, "t10k-labels-idx1-ubyte")).astype(np.int64)
    x_tr, y_tr, x_va, y_va = xs[:55000], ys[:55000], xs[55000:], ys[55000:]

    model = ResNet8()
    decay = [p for n, p in model.named_parameters() if p.dim() > 1]
    rest = [p for n, p in model.named_parameters() if p.dim() <= 1]
    opt = torch.optim.SGD([{"params": decay, "weight_decay": 5e-4}, {"params": rest, "weight_decay": 0}],
                          lr=0.1, momentum=0.9, nesterov=True)
    batch = 128
    steps_per_epoch = math.ceil(len(x_tr) / batch)
    total = args.epochs * steps_per_epoch

    def lr_at(step):
        if step < steps_per_epoch:
            return 0.1 * (step + 1) / steps_per_epoch
        return 0.05 * (1 + math.cos(math.pi * (step - steps_per_epoch) / (total - steps_per_epoch)))

    rng = np.random.default_rng(SEED)
    log, best, best_state, step = [], -1.0, None, 0
    start = time.time()
    for epoch in range(1, args.epochs + 1):
        model.train()
        order = rng.permutation(len(x_tr))
        loss_sum, seen = 0.0, 0
        for i in range(0, len(order), batch):
            idx = order[i:i + batch]
            for g in opt.param_groups:
                g["lr"] = lr_at(step)
            out = model(torch.from_numpy(x_tr[idx]))
            loss = F.cross_entropy(out, torch.from_numpy(y_tr[idx]))
            opt.zero_grad()
            loss.backward()
            opt.step()
            loss_sum += float(loss) * len(idx)
            seen += len(idx)
            step += 1
        val = evaluate(model, x_va, y_va)
        log.append({"epoch": epoch, "loss": loss_sum / seen, "val_accuracy": val,
                    "seconds": round(time.time() - start, 1)})
        print(f"epoch {epoch}: loss {loss_sum / seen:.4f}, validation {val:.4f}, "
              f"{time.time() - start:.0f} s", flush=True)
        if val > best:
            best = val
            best_state = {k: v.clone() for k, v in model.state_dict().items()}
    seconds = time.time() - start
    model.load_state_dict(best_state)
    model.eval()
    test = evaluate(model, xt, yt)
    print(f"best validation {best:.4f}; test accuracy {test:.4f} on {len(xt)} images; {seconds:.0f} s")

    first = normalise(read_idx(os.path.join(ROOT, "models", "data",
                                            "fashion-mnist-t10k-first256-images-idx3-ubyte")))
    with torch.no_grad():
        logits = model(torch.from_numpy(first)).numpy().astype(np.float32)
    np.save(os.path.join(args.out, "resnet8_fashion_torch.logits.npy"), logits)
    torch.onnx.export(model, torch.from_numpy(first[:1]),
                      os.path.join(args.out, "resnet8_fashion_torch.onnx"), opset_version=14,
                      input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    tensors = {spec_name(k): v.numpy() for k, v in model.state_dict().items()
               if not k.endswith("num_batches_tracked")}
    write_safetensors(args.weights, tensors)
    params = sum(p.numel() for p in model.parameters())
    record = {
        "model": "resnet8_fashion_torch",
        "framework": {"name": "torch", "version": torch.__version__, "threads": threads},
        "exporter": "torch.onnx.export (TorchScript), opset 14, eval mode, dynamic batch axis",
        "spec": "models/resnet8_28.yaml (weights: models/resnet8_28.safetensors)",
        "parameters": params,
        "relus": 7,
        "recipe": {"train": 55000, "validation": 5000, "optimizer": "SGD momentum 0.9 nesterov",
                   "weight_decay": 5e-4, "batch": batch, "lr": "0.1, 1-epoch warm-up, cosine to 0",
                   "epochs": args.epochs, "augmentation": "none", "seed": SEED,
                   "kept": "the epoch with the best validation accuracy"},
        "epochs": log,
        "best_validation_accuracy": best,
        "test_accuracy": test,
        "test_images": len(xt),
        "training_seconds": round(seconds, 1),
        "preprocessing": {"mean": MEAN, "std": STD, "formula": "x = (pixel/255 - mean)/std, outside the model",
                          "layout": "NCHW, float32"},
        "logits_npy": {"file": "resnet8_fashion_torch.logits.npy", "shape": list(logits.shape),
                       "content": "PyTorch outputs in eval mode on models/data/fashion-mnist-t10k-first256"},
    }
    with open(os.path.join(args.out, "resnet8_fashion_torch.json"), "w") as f:
        json.dump(record, f, indent=2)
        f.write("\n")


if __name__ == "__main__":
    main()
