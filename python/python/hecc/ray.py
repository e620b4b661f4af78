"""Spread encrypted batches over a Ray cluster.

Each request (the bytes of an inputs file, one batch) becomes one Ray task that runs the plan
with the evaluation keys through :class:`hecc.Server`. The plan and the keys are put in Ray's
object store once; a node fetches them once and its worker processes keep the prepared server
between tasks. Results come back in the order of the requests. A task whose worker dies (a
crashed process or a lost node) is run again by Ray, up to ``max_retries`` times; a task is a
pure function of its request, so a retry neither loses nor duplicates a result.

Only evaluation keys travel: the secret key stays with the caller, who decrypts.
"""

import hashlib

_SERVERS = {}


def _server(plan_json, eval_keys, insecure):
    from . import Plan, Server

    key = (hashlib.sha256(plan_json.encode()).hexdigest(), hashlib.sha256(eval_keys).hexdigest())
    server = _SERVERS.get(key)
    if server is None:
        server = Server(Plan.from_json(plan_json), eval_keys, insecure=insecure)
        _SERVERS.clear()  # one plan and key set per worker process at a time
        _SERVERS[key] = server
    return server


def _run(plan_json, eval_keys, request, insecure, fail_once_marker):
    import os

    import ray

    if fail_once_marker is not None and not os.path.exists(fail_once_marker):
        # Test hook: the first task to get here kills its worker process once.
        with open(fail_once_marker, "w") as f:
            f.write(str(os.getpid()))
        os._exit(1)
    out = _server(plan_json, eval_keys, insecure).run(request)
    return out, ray.get_runtime_context().get_node_id()


def run_batches(plan, eval_keys, requests, *, insecure=False, cpus_per_task=1,
                max_retries=3, with_nodes=False, _fail_once_marker=None):
    """Runs ``plan`` on every request over the connected Ray cluster (``ray.init`` first);
    returns the outputs bytes in the order of ``requests`` (with ``with_nodes``, also the id of
    the node that ran each). ``_fail_once_marker``: a path; the first task to find it missing
    creates it and kills its worker (to test retries)."""
    import ray

    # Each task's run uses as many threads as the CPUs Ray gives it.
    task = ray.remote(
        num_cpus=cpus_per_task,
        max_retries=max_retries,
        runtime_env={"env_vars": {"RAYON_NUM_THREADS": str(cpus_per_task)}},
    )(_run)
    plan_ref = ray.put(plan.to_json())
    keys_ref = ray.put(bytes(eval_keys))
    refs = [task.remote(plan_ref, keys_ref, r, insecure, _fail_once_marker) for r in requests]
    done = ray.get(refs)
    outputs = [o for o, _ in done]
    return (outputs, [n for _, n in done]) if with_nodes else outputs
