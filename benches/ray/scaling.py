"""Throughput of the Ray driver against the number of worker nodes, on a local cluster
(loopback): BATCHES encrypted batches of CryptoNets at 128-bit (batch layout, 8192 images each),
each node with one CPU and each task on one thread, against the same batches run one after
another in this process on one thread. Prints a markdown table.

Usage: python benches/ray/scaling.py [--batches 4] [--workers 1,2]
(with the hecc package and ray installed: bash scripts/test.sh sets up .venv-test)."""

import argparse
import os
import pathlib
import time

os.environ.setdefault("RAYON_NUM_THREADS", "1")  # the in-process baseline on one thread

import numpy as np  # noqa: E402

import hecc  # noqa: E402
import hecc.ray  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[2]
MODEL = ROOT / "models" / "cryptonets.yaml"


def images(n, skip):
    path = ROOT / "data" / "mnist" / "t10k-images-idx3-ubyte"
    if not path.exists():
        path = ROOT / "models" / "data" / "mnist-t10k-first256-images-idx3-ubyte"
    px = np.frombuffer(path.read_bytes(), dtype=np.uint8, offset=16).reshape(-1, 1, 28, 28)
    idx = (np.arange(n) + skip) % len(px)
    return px[idx].astype(np.float64) / 255.0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batches", type=int, default=4)
    ap.add_argument("--workers", default="1,2")
    a = ap.parse_args()
    import ray
    from ray.cluster_utils import Cluster

    plan = hecc.compile(MODEL, batch=8192, layout="batch")
    client = hecc.Client(plan)
    keys = client.eval_keys()
    requests = [client.encrypt(images(8192, 8192 * i)) for i in range(a.batches)]
    mib = sum(len(r) for r in requests) / 2**20
    print(f"CryptoNets, 128-bit, batch layout, {a.batches} batches of 8192 images "
          f"({mib:.0f} MiB of ciphertexts), {os.cpu_count()} cores, "
          f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}")
    server = hecc.Server(plan, keys)
    t = time.perf_counter()
    want = [server.run(r) for r in requests]
    base = time.perf_counter() - t
    print("| workers | wall s | images/s | vs one process, one thread |")
    print("|---|---|---|---|")
    print(f"| in process | {base:.1f} | {a.batches * 8192 / base:.0f} | 1.00 |")
    for w in [int(x) for x in a.workers.split(",")]:
        store = 3 * 1024**3
        c = Cluster(initialize_head=True,
                    head_node_args={"num_cpus": 1, "object_store_memory": store})
        for _ in range(w - 1):
            c.add_node(num_cpus=1, object_store_memory=store)
        c.wait_for_nodes()
        ray.init(address=c.address, include_dashboard=False, log_to_driver=False)
        try:
            t = time.perf_counter()
            got, nodes = hecc.ray.run_batches(plan, keys, requests, with_nodes=True)
            wall = time.perf_counter() - t
        finally:
            ray.shutdown()
            c.shutdown()
        assert got == want, "the cluster's results differ from the single-process run"
        print(f"| {w} ({len(set(nodes))} used) | {wall:.1f} | {a.batches * 8192 / wall:.0f} "
              f"| {base / wall:.2f} |")


if __name__ == "__main__":
    main()
