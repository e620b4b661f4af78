"""hecc: compile neural networks to RNS-CKKS homomorphic circuits and run them encrypted.

The client holds the secret key; the server runs a plan with evaluation keys only::

    import hecc
    plan = hecc.compile("models/cryptonets.yaml", batch=8)
    client = hecc.Client(plan)                       # fresh keys
    request = client.encrypt(images)                 # numpy (n, 1, 28, 28) -> bytes
    server = hecc.Server(plan, client.eval_keys())   # in process ...
    reply = server.run(request)
    logits = client.decrypt(reply, request)          # numpy (n, classes)

or against a ``hecc serve`` server::

    session = hecc.Remote("http://127.0.0.1:8080").open_session("cryptonets", client.eval_keys())
    logits = client.decrypt(session.run(request), request)

Errors raise :class:`HeccError` with hecc's own message.
"""

from ._native import (
    Client,
    HeccError,
    Plan,
    Remote,
    RemoteSession,
    Server,
    __version__,
    compile,
    evaluate,
)
from .torch import compile_module, export_onnx

__all__ = [
    "Client",
    "HeccError",
    "Plan",
    "Remote",
    "RemoteSession",
    "Server",
    "__version__",
    "compile",
    "compile_module",
    "evaluate",
    "export_onnx",
]
