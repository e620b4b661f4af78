#!/usr/bin/env python3
"""Trains three small MNIST classifiers with mainstream frameworks and exports them to ONNX
exactly as those frameworks write them, so that hecc can be tested on unmodified exports.

    python export_models.py [--mnist DIR] [--out DIR] [--models NAME,NAME]

--mnist is the folder holding the four raw MNIST IDX files (train-images-idx3-ubyte, ...);
default: $MNIST_DIR, else ../datasets/mnist beside the repository root.
--out defaults to this script's folder.

Writes, for NAME in lenet5_torch, resnet_torch, mlp_sklearn:
  NAME.onnx         the exported model
  NAME.logits.npy   float32 [256, 10]: the framework's own outputs on the 256 test images
                    bundled in models/data (see the README for what that means per model)
  NAME.json         versions, opset, preprocessing, input/output names and shapes,
                    accuracies, op-type counts of the exported graph

Deterministic: fixed seeds, one CPU thread, deterministic torch algorithms. Training times are
printed, not stored, so that a rerun with the same package versions rewrites identical files.
"""
import os

# One thread everywhere: determinism of BLAS reductions, and a light footprint.
for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import argparse
import collections
import hashlib
import json
import struct
import sys
import time
import warnings

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(HERE)))
BUNDLED_IMAGES = os.path.join(ROOT, "models", "data", "mnist-t10k-first256-images-idx3-ubyte")
BUNDLED_LABELS = os.path.join(ROOT, "models", "data", "mnist-t10k-first256-labels-idx1-ubyte")

MEAN, STD = 0.1307, 0.3081  # the usual MNIST normalisation of the PyTorch tutorials
SEED = 20261204
MODELS = ("lenet5_torch", "resnet_torch", "mlp_sklearn")


# ----------------------------------------------------------------------------- data

def read_idx(path):
    with open(path, "rb") as f:
        data = f.read()
    zero, dtype, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte IDX file")
    dims = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
    arr = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    return arr.reshape(dims)


def load_mnist(folder):
    def get(stem):
        return read_idx(os.path.join(folder, stem))
    train = (get("train-images-idx3-ubyte"), get("train-labels-idx1-ubyte"))
    test = (get("t10k-images-idx3-ubyte"), get("t10k-labels-idx1-ubyte"))
    bundled = (read_idx(BUNDLED_IMAGES), read_idx(BUNDLED_LABELS))
    assert train[0].shape == (60000, 28, 28) and test[0].shape == (10000, 28, 28)
    assert bundled[0].shape == (256, 28, 28) and bundled[1].shape == (256,)
    # The bundled images are the first 256 test records.
    assert np.array_equal(bundled[0], test[0][:256]) and np.array_equal(bundled[1], test[1][:256])
    return train, test, bundled


def cnn_input(images):
    """uint8 [N,28,28] -> float32 [N,1,28,28], (pixel/255 - MEAN)/STD."""
    x = images.astype(np.float32) / np.float32(255.0)
    x = (x - np.float32(MEAN)) / np.float32(STD)
    return np.ascontiguousarray(x[:, None, :, :], dtype=np.float32)


def mlp_input(images):
    """uint8 [N,28,28] -> float32 [N,784], pixel/255."""
    return (images.reshape(len(images), -1).astype(np.float32) / np.float32(255.0))


# ----------------------------------------------------------------------------- ONNX facts

def onnx_facts(path):
    import onnx
    model = onnx.load(path)
    onnx.checker.check_model(model)

    def shape_of(vi):
        dims = []
        for d in vi.type.tensor_type.shape.dim:
            dims.append(d.dim_param if d.HasField("dim_param") else
                        (d.dim_value if d.HasField("dim_value") else None))
        return dims

    def dtype_of(vi):
        return onnx.TensorProto.DataType.Name(vi.type.tensor_type.elem_type).lower()

    counts = collections.Counter(
        (n.op_type if n.domain in ("", "ai.onnx") else f"{n.domain}.{n.op_type}")
        for n in model.graph.node)
    init_names = {i.name for i in model.graph.initializer}
    with open(path, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    return {
        "file": os.path.basename(path),
        "sha256": digest,
        "bytes": os.path.getsize(path),
        "ir_version": model.ir_version,
        "producer": f"{model.producer_name} {model.producer_version}".strip(),
        "opset_import": {(o.domain or "ai.onnx"): o.version for o in model.opset_import},
        "inputs": [{"name": i.name, "dtype": dtype_of(i), "shape": shape_of(i)}
                   for i in model.graph.input if i.name not in init_names],
        "outputs": [{"name": o.name, "dtype": dtype_of(o), "shape": shape_of(o)}
                    for o in model.graph.output],
        "node_count": len(model.graph.node),
        "op_types": dict(sorted(counts.items())),
        "initializer_count": len(model.graph.initializer),
    }


def run_onnxruntime(path, feeds):
    try:
        import onnxruntime as ort
    except ImportError:
        return None, None
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    return sess.run(None, feeds), ort.__version__


def tool_versions():
    """Versions of the helper packages that shape the files (the exporters are recorded apart)."""
    import platform
    import subprocess
    tools = {"python": platform.python_version(), "numpy": np.__version__}
    for mod in ("onnx", "onnxruntime"):
        try:
            tools[mod] = __import__(mod).__version__
        except ImportError:
            pass
    try:  # torch from Debian reports a pre-release version; name the package too.
        deb = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "python3-torch"],
                             capture_output=True, text=True, check=False)
        if deb.returncode == 0 and deb.stdout:
            tools["debian_python3_torch"] = deb.stdout.strip()
    except OSError:
        pass
    return tools


def write_record(out, name, record, logits):
    record["tools"] = tool_versions()
    logits = np.ascontiguousarray(logits, dtype=np.float32)
    assert logits.shape == (256, 10), logits.shape
    np.save(os.path.join(out, f"{name}.logits.npy"), logits)
    with open(os.path.join(out, f"{name}.json"), "w") as f:
        json.dump(record, f, indent=2)
        f.write("\n")


# ----------------------------------------------------------------------------- torch models

def torch_setup():
    import torch
    torch.set_num_threads(1)
    torch.manual_seed(SEED)
    torch.use_deterministic_algorithms(True)
    return torch


def define_torch_models(torch):
    import torch.nn as nn
    import torch.nn.functional as F

    class LeNet5(nn.Module):
        """The classic tutorial LeNet-5, written the usual way."""

        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(1, 6, 5, padding=2)
            self.conv2 = nn.Conv2d(6, 16, 5)
            self.pool = nn.MaxPool2d(2)
            self.fc1 = nn.Linear(16 * 5 * 5, 120)
            self.fc2 = nn.Linear(120, 84)
            self.fc3 = nn.Linear(84, 10)

        def forward(self, x):
            x = self.pool(F.relu(self.conv1(x)))
            x = self.pool(F.relu(self.conv2(x)))
            x = x.view(x.size(0), -1)
            x = F.relu(self.fc1(x))
            x = F.relu(self.fc2(x))
            return self.fc3(x)

    class BasicBlock(nn.Module):
        def __init__(self, channels):
            super().__init__()
            self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
            self.bn1 = nn.BatchNorm2d(channels)
            self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
            self.bn2 = nn.BatchNorm2d(channels)

        def forward(self, x):
            out = F.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            return F.relu(out + x)

    class SmallResNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 8, 3, padding=1, bias=False)
            self.bn = nn.BatchNorm2d(8)
            self.pool1 = nn.AvgPool2d(2)
            self.block = BasicBlock(8)
            self.pool2 = nn.AvgPool2d(2)
            self.fc = nn.Linear(8 * 7 * 7, 10)

        def forward(self, x):
            x = F.relu(self.bn(self.conv(x)))
            x = self.pool1(x)
            x = self.block(x)
            x = self.pool2(x)
            x = torch.flatten(x, 1)
            return self.fc(x)

    return {"lenet5_torch": LeNet5, "resnet_torch": SmallResNet}


def torch_train(torch, model, x, y, epochs, batch, lr, seed):
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=lr, epochs=epochs, steps_per_epoch=(len(x) + batch - 1) // batch)
    loss_fn = torch.nn.CrossEntropyLoss()
    xt, yt = torch.from_numpy(x), torch.from_numpy(y.astype(np.int64))
    model.train()
    for epoch in range(epochs):
        perm = torch.randperm(len(xt), generator=gen)
        total = 0.0
        for i in range(0, len(xt), batch):
            idx = perm[i:i + batch]
            opt.zero_grad()
            loss = loss_fn(model(xt[idx]), yt[idx])
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss) * len(idx)
        print(f"    epoch {epoch + 1}/{epochs}: mean loss {total / len(xt):.4f}", flush=True)
    model.eval()


def torch_predict(torch, model, x, batch=1000):
    with torch.no_grad():
        return np.concatenate([model(torch.from_numpy(x[i:i + batch])).numpy()
                               for i in range(0, len(x), batch)])


def export_torch(name, out, data, epochs):
    torch = torch_setup()
    (xtr, ytr), (xte, yte), (xb, yb) = data
    seed = SEED + MODELS.index(name)
    torch.manual_seed(seed)
    model = define_torch_models(torch)[name]()
    train_x, test_x, b_x = cnn_input(xtr), cnn_input(xte), cnn_input(xb)

    t0 = time.time()
    torch_train(torch, model, train_x, ytr, epochs=epochs, batch=128, lr=3e-3, seed=seed)
    train_s = time.time() - t0
    model.eval()

    test_acc = float((torch_predict(torch, model, test_x).argmax(1) == yte).mean())
    logits = torch_predict(torch, model, b_x)
    b_acc = float((logits.argmax(1) == yb).mean())

    path = os.path.join(out, f"{name}.onnx")
    from torch.onnx import _constants
    default_opset = _constants.ONNX_DEFAULT_OPSET
    export_kwargs = dict(input_names=["input"], output_names=["logits"],
                         dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    # The TorchScript exporter; newer torch versions need dynamo=False to pick it.
    import inspect
    if "dynamo" in inspect.signature(torch.onnx.export).parameters:
        export_kwargs["dynamo"] = False
    torch.onnx.export(model, torch.from_numpy(b_x[:2]), path, **export_kwargs)

    facts = onnx_facts(path)
    record = {
        "model": name,
        "framework": {"name": "torch", "version": torch.__version__},
        "exporter": "torch.onnx.export (TorchScript), default opset, do_constant_folding default (True), "
                    "training default (eval), dynamic batch axis",
        "opset": default_opset,
        "preprocessing": {"scale": 1 / 255, "mean": MEAN, "std": STD,
                          "formula": "x = (pixel/255 - mean)/std, applied outside the model",
                          "layout": "NCHW, float32"},
        "input_shape": ["batch", 1, 28, 28],
        "training": {"data": "MNIST train, 60000", "optimizer": "Adam + OneCycleLR, max lr 3e-3",
                     "epochs": epochs, "batch": 128, "seed": seed},
        "test_accuracy_10k": test_acc,
        "bundled_256_accuracy": b_acc,
        "logits_npy": {"file": f"{name}.logits.npy", "shape": [256, 10], "dtype": "float32",
                       "content": "torch model outputs (logits) in eval mode on the 256 bundled images"},
        "onnx": facts,
    }
    ort_out, ort_version = run_onnxruntime(path, {"input": b_x})
    if ort_out is not None:
        record["onnxruntime_check"] = {
            "version": ort_version,
            "max_abs_diff_vs_logits": float(np.abs(ort_out[0] - logits).max()),
            "argmax_agree": int((ort_out[0].argmax(1) == logits.argmax(1)).sum()),
        }
    write_record(out, name, record, logits)
    return record, train_s


# ----------------------------------------------------------------------------- sklearn model

def export_sklearn(name, out, data, max_iter):
    import sklearn
    import skl2onnx
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType

    (xtr, ytr), (xte, yte), (xb, yb) = data
    train_x, test_x, b_x = mlp_input(xtr), mlp_input(xte), mlp_input(xb)
    seed = SEED + MODELS.index(name)
    clf = MLPClassifier(hidden_layer_sizes=(64,), activation="relu", max_iter=max_iter,
                        random_state=seed)
    t0 = time.time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(train_x, ytr)
    train_s = time.time() - t0

    test_acc = float(clf.score(test_x, yte))
    proba = clf.predict_proba(b_x).astype(np.float32)

    # name= fixes the graph name, which skl2onnx otherwise draws at random (a UUID).
    onx = convert_sklearn(clf, name=name, initial_types=[("input", FloatTensorType([None, 784]))],
                          options={id(clf): {"zipmap": False}})
    path = os.path.join(out, f"{name}.onnx")
    with open(path, "wb") as f:
        f.write(onx.SerializeToString())
    facts = onnx_facts(path)

    ort_out, ort_version = run_onnxruntime(path, {"input": b_x})
    if ort_out is not None:
        # First float output of the ONNX model: the class probabilities.
        float_idx = next(i for i, o in enumerate(facts["outputs"]) if o["dtype"] == "float")
        logits = np.asarray(ort_out[float_idx], dtype=np.float32)
        source = (f"onnxruntime {ort_version} on {name}.onnx: output "
                  f"'{facts['outputs'][float_idx]['name']}' (softmax probabilities, not logits)")
    else:
        logits = proba
        source = "sklearn MLPClassifier.predict_proba (softmax probabilities, not logits)"
    b_acc = float((logits.argmax(1) == yb).mean())

    record = {
        "model": name,
        "framework": {"name": "scikit-learn", "version": sklearn.__version__,
                      "converter": "skl2onnx", "converter_version": skl2onnx.__version__},
        "exporter": "skl2onnx.convert_sklearn, name=<model>, initial_types=[('input', FloatTensorType([None, 784]))], "
                    "options={'zipmap': False}, default target opset",
        "opset": facts["opset_import"].get("ai.onnx"),
        "preprocessing": {"scale": 1 / 255, "mean": 0.0, "std": 1.0,
                          "formula": "x = pixel/255, flattened row-major, applied outside the model",
                          "layout": "[N, 784], float32"},
        "input_shape": ["N", 784],
        "training": {"data": "MNIST train, 60000",
                     "estimator": f"MLPClassifier(hidden_layer_sizes=(64,), activation='relu', "
                                  f"solver='adam', max_iter={max_iter}, random_state={seed})",
                     "iterations_run": int(clf.n_iter_)},
        "test_accuracy_10k": test_acc,
        "bundled_256_accuracy": b_acc,
        "logits_npy": {"file": f"{name}.logits.npy", "shape": [256, 10], "dtype": "float32",
                       "content": source},
        "onnx": facts,
    }
    if ort_out is not None:
        record["onnxruntime_check"] = {
            "version": ort_version,
            "max_abs_diff_vs_predict_proba": float(np.abs(logits - proba).max()),
            "argmax_agree": int((logits.argmax(1) == proba.argmax(1)).sum()),
        }
    write_record(out, name, record, logits)
    return record, train_s


# ----------------------------------------------------------------------------- main

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mnist", default=os.environ.get(
        "MNIST_DIR", os.path.join(os.path.dirname(ROOT), "datasets", "mnist")))
    ap.add_argument("--out", default=HERE)
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--cnn-epochs", type=int, default=8)
    ap.add_argument("--mlp-iter", type=int, default=30)
    args = ap.parse_args()

    data = load_mnist(args.mnist)
    os.makedirs(args.out, exist_ok=True)
    for name in args.models.split(","):
        if name not in MODELS:
            sys.exit(f"unknown model {name}; choose from {', '.join(MODELS)}")
        print(f"== {name}", flush=True)
        if name.endswith("_torch"):
            record, train_s = export_torch(name, args.out, data, args.cnn_epochs)
        else:
            record, train_s = export_sklearn(name, args.out, data, args.mlp_iter)
        facts = record["onnx"]
        print(f"   trained in {train_s:.0f} s; test accuracy {record['test_accuracy_10k']:.4f}, "
              f"bundled-256 accuracy {record['bundled_256_accuracy']:.4f}")
        print(f"   {facts['file']}: {facts['bytes']} bytes, opsets {facts['opset_import']}, "
              f"ops {facts['op_types']}")
        print(f"   inputs {facts['inputs']}; outputs {facts['outputs']}")
        if "onnxruntime_check" in record:
            print(f"   onnxruntime check: {record['onnxruntime_check']}", flush=True)


if __name__ == "__main__":
    main()
