#!/usr/bin/env python3
"""Generates the small ONNX fixtures used by hecc's front-end tests.

Run from anywhere (needs `onnx` and `numpy`, e.g. in a venv: `pip install onnx numpy`):

    python models/onnx/make_fixtures.py

Writes, next to this script:
  cnn.onnx       conv/batch-norm/relu/avg-pool/grouped conv/x*x/max-pool/flatten/gemm/pow/mul/matmul+add
  branches.onnx  two conv branches concatenated, a residual Add, Identity/Dropout pass-through,
                 global average pool, Reshape from an initializer, Gemm
  <name>.input.npy / <name>.output.npy  a fixed-seed input batch and the output of
                 onnx.reference.ReferenceEvaluator (numpy) on it, for the evaluator comparison
and, in tests/fixtures/front/, malformed ONNX inputs for the diagnostic snapshots.
Everything is deterministic (fixed seeds).
"""
import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
BAD = os.path.join(ROOT, "tests", "fixtures", "front")
rng = np.random.default_rng(20261122)


def init(name, shape, scale=0.3):
    return numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name)


def const(name, values, dtype=np.float32):
    return numpy_helper.from_array(np.asarray(values, dtype=dtype), name)


def save(model, path, batch_shape=None):
    onnx.checker.check_model(model)
    onnx.save(model, path)
    if batch_shape is not None:
        x = rng.uniform(0.0, 1.0, size=batch_shape).astype(np.float32)
        (y,) = ReferenceEvaluator(model).run(None, {"x": x})
        stem = path[: -len(".onnx")]
        np.save(stem + ".input.npy", x)
        np.save(stem + ".output.npy", np.asarray(y, dtype=np.float32))


def opset():
    # Opset 15: BatchNormalization-15 defaults to inference mode (training_mode = 0); the
    # reference evaluator runs BatchNormalization-9 with batch statistics.
    return [helper.make_opsetid("", 15)]


def cnn():
    nodes = [
        helper.make_node("Conv", ["x", "conv1.w", "conv1.b"], ["c1"], name="conv1",
                         kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[1, 1]),
        helper.make_node("BatchNormalization", ["c1", "bn1.g", "bn1.b", "bn1.m", "bn1.v"], ["b1"],
                         name="bn1", epsilon=1e-3),
        helper.make_node("Relu", ["b1"], ["r1"], name="relu1"),
        helper.make_node("AveragePool", ["r1"], ["p1"], name="pool1", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["p1", "conv2.w"], ["c2"], name="conv2", kernel_shape=[3, 3], group=2),
        helper.make_node("Mul", ["c2", "c2"], ["s2"], name="square2"),
        helper.make_node("MaxPool", ["s2"], ["p2"], name="pool2", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Flatten", ["p2"], ["f"], name="flatten", axis=1),
        helper.make_node("Gemm", ["f", "fc1.w", "fc1.b"], ["g1"], name="fc1", transB=1),
        helper.make_node("Pow", ["g1", "two"], ["q1"], name="pow1"),
        helper.make_node("Mul", ["q1", "half"], ["m1"], name="scale1"),
        helper.make_node("Gemm", ["m1", "fc2.w", "fc2.b"], ["g2"], name="fc2", alpha=0.5, beta=2.0),
        helper.make_node("MatMul", ["g2", "fc3.w"], ["mm"], name="fc3"),
        helper.make_node("Add", ["mm", "fc3.b"], ["y"], name="fc3_bias"),
    ]
    inits = [
        init("conv1.w", (4, 1, 3, 3)), init("conv1.b", (4,), 0.1),
        init("bn1.g", (4,), 0.1), init("bn1.b", (4,), 0.1), init("bn1.m", (4,), 0.1),
        numpy_helper.from_array(rng.uniform(0.5, 1.5, 4).astype(np.float32), "bn1.v"),
        init("conv2.w", (6, 2, 3, 3)),
        init("fc1.w", (16, 24)), init("fc1.b", (16,), 0.1),
        const("two", 2.0), const("half", 0.5),
        init("fc2.w", (16, 12)), init("fc2.b", (12,), 0.1),
        init("fc3.w", (12, 10)), init("fc3.b", (10,), 0.1),
    ]
    for t in inits:
        if t.name == "bn1.g":
            t.CopyFrom(numpy_helper.from_array(rng.uniform(0.8, 1.2, 4).astype(np.float32), "bn1.g"))
    graph = helper.make_graph(
        nodes, "cnn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 12, 12])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])],
        inits)
    return helper.make_model(graph, opset_imports=opset(), producer_name="hecc-fixtures")


def branches():
    nodes = [
        helper.make_node("Conv", ["x", "stem.w", "stem.b"], ["s"], name="stem", kernel_shape=[1, 1]),
        helper.make_node("Identity", ["s"], ["s_id"], name="identity"),
        helper.make_node("Conv", ["s_id", "e1.w", "e1.b"], ["e1"], name="expand1", kernel_shape=[1, 1]),
        helper.make_node("Conv", ["s_id", "e3.w", "e3.b"], ["e3"], name="expand3", kernel_shape=[3, 3],
                         pads=[1, 1, 1, 1]),
        helper.make_node("Concat", ["e1", "e3"], ["cat"], name="fire", axis=1),
        helper.make_node("Conv", ["x", "skip.w"], ["skip"], name="skip", kernel_shape=[1, 1]),
        helper.make_node("Add", ["cat", "skip"], ["res"], name="residual"),
        helper.make_node("Dropout", ["res"], ["d"], name="dropout"),
        helper.make_node("Mul", ["d", "d"], ["sq"]),  # unnamed: imported as `Mul_8`
        helper.make_node("GlobalAveragePool", ["sq"], ["gap"], name="gap"),
        helper.make_node("Constant", [], ["shape"], name="target_shape",
                         value=numpy_helper.from_array(np.array([0, -1], np.int64))),
        helper.make_node("Reshape", ["gap", "shape"], ["flat"], name="reshape"),
        helper.make_node("Gemm", ["flat", "fc.w", "fc.b"], ["y"], name="fc", transB=1),
    ]
    inits = [
        init("stem.w", (4, 3, 1, 1)), init("stem.b", (4,), 0.1),
        init("e1.w", (3, 4, 1, 1)), init("e1.b", (3,), 0.1),
        init("e3.w", (5, 4, 3, 3)), init("e3.b", (5,), 0.1),
        init("skip.w", (8, 3, 1, 1)),
        init("fc.w", (5, 8)), init("fc.b", (5,), 0.1),
    ]
    graph = helper.make_graph(
        nodes, "branches",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 5])],
        inits)
    return helper.make_model(graph, opset_imports=opset(), producer_name="hecc-fixtures")


def unsupported():
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv", kernel_shape=[1, 1]),
        helper.make_node("Sigmoid", ["c"], ["s"], name="gate"),
        helper.make_node("Tanh", ["s"], ["t"], name="squash"),
        helper.make_node("Relu", ["t"], ["r"], name="relu"),
        helper.make_node("Flatten", ["r"], ["f"], name="flatten"),
        helper.make_node("Softmax", ["f"], ["y"], name="probs", axis=1),
    ]
    graph = helper.make_graph(
        nodes, "unsupported",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16])],
        [init("w", (1, 1, 1, 1))])
    return helper.make_model(graph, opset_imports=opset())


def simple(w_values=None, fc_in=16, name="simple"):
    """Conv 1x1 -> Flatten -> Gemm; used for the NaN/shape-mismatch fixtures."""
    w = np.full((2, 1, 1, 1), 0.5, np.float32) if w_values is None else np.asarray(w_values, np.float32)
    nodes = [
        helper.make_node("Conv", ["x", "conv.w"], ["c"], name="conv", kernel_shape=[1, 1]),
        helper.make_node("Flatten", ["c"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "fc.w"], ["y"], name="fc", transB=1),
    ]
    graph = helper.make_graph(
        nodes, name,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])],
        [numpy_helper.from_array(w, "conv.w"),
         numpy_helper.from_array(np.ones((3, fc_in), np.float32), "fc.w")])
    return helper.make_model(graph, opset_imports=opset())


def mul_tensors():
    """x * y of two computed tensors (neither a square nor a constant scale)."""
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["a"], name="conv_a", kernel_shape=[1, 1]),
        helper.make_node("Relu", ["x"], ["b"], name="relu_b"),
        helper.make_node("Mul", ["a", "b"], ["y"], name="product"),
    ]
    graph = helper.make_graph(
        nodes, "mul_tensors",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 4, 4])],
        [init("w", (1, 1, 1, 1))])
    return helper.make_model(graph, opset_imports=opset())


def tiny_weights():
    """Weights for the YAML fixtures in tests/fixtures/front (input [1, 6, 6], conv1 3x3 with
    2 maps -> [2, 4, 4], flatten [32], fc 3), plus deliberately bad tensors."""
    r = np.random.default_rng(5)
    nan_w = r.standard_normal((2, 1, 3, 3)).astype(np.float32)
    nan_w[1, 0, 2, 1] = np.nan
    inf_w = r.standard_normal((3, 32)).astype(np.float32)
    inf_w[1, 5] = np.inf
    inf_w[2, 7] = -np.inf
    return {
        "conv1.weight": r.standard_normal((2, 1, 3, 3)).astype(np.float32),
        "conv1.bias": r.standard_normal(2).astype(np.float32),
        "fc.weight": r.standard_normal((3, 32)).astype(np.float32),
        "fc.bias": r.standard_normal(3).astype(np.float32),
        "bad_shape": r.standard_normal((3, 30)).astype(np.float32),
        "nan_w": nan_w,
        "inf_w": inf_w,
    }


def main():
    save(cnn(), os.path.join(HERE, "cnn.onnx"), (3, 1, 12, 12))
    save(branches(), os.path.join(HERE, "branches.onnx"), (2, 3, 8, 8))

    os.makedirs(BAD, exist_ok=True)
    onnx.save(unsupported(), os.path.join(BAD, "onnx_unsupported_ops.onnx"))
    # Flatten gives 2*4*4 = 32 features but fc.w is [3, 16].
    onnx.save(simple(fc_in=16, name="mismatch"), os.path.join(BAD, "onnx_shape_mismatch.onnx"))
    onnx.save(simple(w_values=[[[[np.nan]]], [[[0.5]]]], fc_in=32, name="nan"),
              os.path.join(BAD, "onnx_nan_weight.onnx"))
    onnx.save(mul_tensors(), os.path.join(BAD, "onnx_mul_tensors.onnx"))
    np.savez(os.path.join(BAD, "tiny.npz"), **tiny_weights())
    with open(os.path.join(BAD, "corrupt.npz"), "wb") as f:
        f.write(b"PK\x03\x04 this is not really a zip archive")
    full = cnn().SerializeToString()
    with open(os.path.join(BAD, "onnx_truncated.onnx"), "wb") as f:
        f.write(full[: len(full) // 2])
    with open(os.path.join(BAD, "onnx_random_bytes.onnx"), "wb") as f:
        f.write(np.random.default_rng(7).integers(0, 256, 512, dtype=np.uint8).tobytes())
    print("wrote fixtures to", HERE, "and", BAD)


if __name__ == "__main__":
    main()
