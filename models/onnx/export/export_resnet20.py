#!/usr/bin/env python3
"""Writes ResNet-20 for CIFAR-10 shapes twice: as PyTorch exports it to ONNX, and as the weights of
models/resnet20.yaml, from one PyTorch model.

    python3 export_resnet20.py [--cifar DIR] [--out DIR] [--weights FILE]

--cifar is the folder holding test20-images-idx4-ubyte (the 20 CIFAR-10 test images that
scripts/fetch-datasets.sh extracts); default: data/cifar10-test20 under the repository root.

No CIFAR-10 training set can be obtained here, so the weights are random (Kaiming-normal convs,
PyTorch's default dense layer, seeded) and batch-norm statistics are measured, not learned: the
model runs in training mode over the 20 images with flips and 4-pixel shifted crops (160 inputs,
one cumulative pass), so every batch norm standardises what reaches it, and the dense head is
rescaled to standardised pooled features (so that images differ in their argmax). Values inside the network
then have the spread of a trained one, which is what the compiler's ranges, levels and bootstraps
depend on; the predictions mean nothing.

Writes:
  OUT/resnet20_torch.onnx            torch.onnx.export (opset 14, dynamic batch axis, eval mode)
  OUT/resnet20_torch.logits.npy      float32 [20, 10]: PyTorch's outputs on the 20 images
  OUT/resnet20_torch.json            versions, shapes, parameter count, preprocessing
  WEIGHTS (models/resnet20.safetensors)  the same weights under the spec's layer names

Deterministic: fixed seed, one thread. Needs torch (Debian's python3-torch 1.13 works) and numpy.
"""
import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import argparse
import json
import struct

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from export_models import read_idx  # the IDX reader beside this script

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(HERE)))
SEED = 20261206
# The usual CIFAR-10 per-channel normalisation.
MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)


class Block(nn.Module):
    """Two 3x3 convs with batch norm; a 1x1 stride-s projection shortcut where the shape changes."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.project = stride != 1 or cin != cout
        if self.project:
            self.down = nn.Conv2d(cin, cout, 1, stride=stride, bias=False)
            self.down_bn = nn.BatchNorm2d(cout)

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        s = self.down_bn(self.down(x)) if self.project else x
        return F.relu(y + s)


class ResNet20(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        stages, cin = [], 16
        for cout, stride in ((16, 1), (32, 2), (64, 2)):
            blocks = [Block(cin, cout, stride)] + [Block(cout, cout, 1) for _ in range(2)]
            stages.append(nn.Sequential(*blocks))
            cin = cout
        self.layer1, self.layer2, self.layer3 = stages
        self.fc = nn.Linear(64, 10)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward_features(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return F.adaptive_avg_pool2d(x, 1).flatten(1)

    def forward(self, x):
        return self.fc(self.forward_features(x))


def normalise(images):
    """uint8 N x 32 x 32 x 3 -> float32 N x 3 x 32 x 32, CIFAR mean/std."""
    x = images.astype(np.float32).transpose(0, 3, 1, 2) / 255.0
    m = np.array(MEAN, dtype=np.float32).reshape(1, 3, 1, 1)
    s = np.array(STD, dtype=np.float32).reshape(1, 3, 1, 1)
    return (x - m) / s


def augmented(x, rng):
    """The images, their mirror images, and 6 shifted crops of each (pad 4, crop 32)."""
    out = [x, x[:, :, :, ::-1]]
    padded = np.pad(x, ((0, 0), (0, 0), (4, 4), (4, 4)))
    for _ in range(6):
        dy, dx = rng.integers(0, 9, size=2)
        out.append(padded[:, :, dy:dy + 32, dx:dx + 32])
    return np.ascontiguousarray(np.concatenate(out))


def spec_name(key):
    """`layer2.0.down_bn.running_mean` -> `layer2_0_down_bn.running_mean` (the spec's names)."""
    head, _, tail = key.rpartition(".")
    return head.replace(".", "_") + "." + tail


def write_safetensors(path, tensors):
    header, blobs, offset = {}, [], 0
    for name in sorted(tensors):
        a = np.ascontiguousarray(tensors[name], dtype="<f4")
        header[name] = {"dtype": "F32", "shape": list(a.shape),
                        "data_offsets": [offset, offset + a.nbytes]}
        blobs.append(a.tobytes())
        offset += a.nbytes
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cifar", default=os.path.join(ROOT, "data", "cifar10-test20"))
    ap.add_argument("--out", default=HERE)
    ap.add_argument("--weights", default=os.path.join(ROOT, "models", "resnet20.safetensors"))
    args = ap.parse_args()

    torch.manual_seed(SEED)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    images = read_idx(os.path.join(args.cifar, "test20-images-idx4-ubyte"))
    x = normalise(images)

    model = ResNet20()
    # Batch-norm statistics: one cumulative pass in training mode over the augmented images.
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = None
            m.reset_running_stats()
    model.train()
    with torch.no_grad():
        model(torch.from_numpy(augmented(x, np.random.default_rng(SEED))))
    model.eval()
    with torch.no_grad():
        # The head sees standardised features too: a random dense layer on raw pooled features
        # (all positive after the last ReLU, with a common mean) gives every image the same
        # argmax, which would make argmax agreement an empty check.
        feats = model.forward_features(torch.from_numpy(x))
        mu, sd = feats.mean(0), feats.std(0) + 1e-3
        model.fc.weight /= sd
        model.fc.bias.copy_(-model.fc.weight @ mu)
        logits = model(torch.from_numpy(x)).numpy().astype(np.float32)

    params = sum(p.numel() for p in model.parameters())
    onnx_path = os.path.join(args.out, "resnet20_torch.onnx")
    torch.onnx.export(model, torch.from_numpy(x[:1]), onnx_path, opset_version=14,
                      input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    np.save(os.path.join(args.out, "resnet20_torch.logits.npy"), logits)

    tensors = {spec_name(k): v.numpy() for k, v in model.state_dict().items()
               if not k.endswith("num_batches_tracked")}
    write_safetensors(args.weights, tensors)

    record = {
        "model": "resnet20_torch",
        "framework": {"name": "torch", "version": torch.__version__},
        "exporter": "torch.onnx.export (TorchScript), opset 14, eval mode, dynamic batch axis",
        "weights": "random (seed %d), batch-norm statistics from the 20 CIFAR-10 test images "
                   "with flips and shifted crops; predictions are not meaningful" % SEED,
        "parameters": params,
        "relus": 19,
        "preprocessing": {"mean": MEAN, "std": STD,
                          "formula": "x = (pixel/255 - mean)/std per channel, outside the model",
                          "layout": "NCHW, float32"},
        "input_shape": ["batch", 3, 32, 32],
        "logits_npy": {"file": "resnet20_torch.logits.npy", "shape": list(logits.shape),
                       "content": "PyTorch outputs in eval mode on the 20 CIFAR-10 test images"},
        "spec": "models/resnet20.yaml (weights: models/resnet20.safetensors)",
    }
    with open(os.path.join(args.out, "resnet20_torch.json"), "w") as f:
        json.dump(record, f, indent=2)
        f.write("\n")
    print(f"resnet20: {params} parameters, logits spread {logits.std():.3f}, "
          f"argmax {np.bincount(logits.argmax(1), minlength=10).tolist()}")


if __name__ == "__main__":
    main()
