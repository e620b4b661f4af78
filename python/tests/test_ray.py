"""The Ray driver on a local two-node cluster (loopback): 4 batches of CryptoNets spread over
both nodes, a worker killed mid-task and its task retried, results byte-for-byte equal to the
single-process run. Skipped when Ray is not installed."""

import pathlib

import numpy as np
import pytest

import hecc

ray = pytest.importorskip("ray")
import hecc.ray  # noqa: E402
from ray.cluster_utils import Cluster  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[2]
MODEL = ROOT / "models" / "cryptonets.yaml"
IMAGES = ROOT / "models" / "data" / "mnist-t10k-first256-images-idx3-ubyte"


def mnist(n, skip=0):
    px = np.frombuffer(IMAGES.read_bytes(), dtype=np.uint8, offset=16)
    return px[skip * 784 : (skip + n) * 784].reshape(n, 1, 28, 28).astype(np.float64) / 255.0


@pytest.fixture(scope="module")
def cluster():
    c = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 1, "object_store_memory": 200 * 1024 * 1024},
    )
    c.add_node(num_cpus=1, object_store_memory=200 * 1024 * 1024)
    c.wait_for_nodes()
    ray.init(address=c.address, include_dashboard=False, log_to_driver=False)
    try:
        yield c
    finally:
        ray.shutdown()
        c.shutdown()


def test_batches_over_two_nodes_with_a_retry(cluster, tmp_path):
    assert len([n for n in ray.nodes() if n["Alive"]]) == 2
    plan = hecc.compile(MODEL, batch=8, layout="batch", insecure=True)
    client = hecc.Client(plan, insecure=True)
    images = [mnist(8, skip=8 * i) for i in range(4)]
    requests = [client.encrypt(x) for x in images]
    marker = tmp_path / "killed-once"
    outputs, nodes = hecc.ray.run_batches(
        plan, client.eval_keys(), requests, insecure=True, with_nodes=True,
        _fail_once_marker=str(marker),
    )
    assert marker.exists(), "no task ran the failure hook"
    assert len(outputs) == 4
    assert len(set(nodes)) == 2, f"all tasks ran on one node: {nodes}"
    single = hecc.Server(plan, client.eval_keys(), insecure=True)
    for x, request, out in zip(images, requests, outputs):
        # Evaluation is deterministic: the same request and keys give the same bytes.
        assert out == single.run(request)
        got = client.decrypt(out, request)
        want = hecc.evaluate(MODEL, x)
        assert (got.argmax(1) == want.argmax(1)).all()
        assert np.abs(got - want).max() < 1e-3 * max(1.0, np.abs(want).max())
