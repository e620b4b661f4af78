"""PyTorch helpers: export a ``torch.nn.Module`` to ONNX bytes and compile it.

torch is imported only when these functions are called, so ``import hecc`` works without it.
"""

import io


def export_onnx(module, example_input, *, opset=13):
    """The ONNX bytes of ``module`` traced on ``example_input`` (a tensor of shape
    ``(1, C, H, W)`` or ``(1, features)``), exported in evaluation mode with constants folded,
    as hecc's ONNX front end reads them."""
    import torch  # noqa: F401  (a clear ImportError when torch is missing)

    import inspect

    options = dict(
        opset_version=opset,
        input_names=["input"],
        output_names=["output"],
        do_constant_folding=True,
    )
    # Newer torch releases default to the dynamo exporter; keep the TorchScript one, whose
    # graphs (folded constants, the opset asked for) are what hecc's front end reads.
    if "dynamo" in inspect.signature(torch.onnx.export).parameters:
        options["dynamo"] = False
    was_training = module.training
    module.eval()
    buf = io.BytesIO()
    try:
        torch.onnx.export(module, example_input, buf, **options)
    finally:
        module.train(was_training)
    return buf.getvalue()


def compile_module(module, example_input, **options):
    """Exports ``module`` with :func:`export_onnx` and compiles it with :func:`hecc.compile`
    (same keyword options: ``batch``, ``layout``, ``activation``, ``insecure``...)."""
    from . import compile as _compile

    return _compile(export_onnx(module, example_input), **options)
