"""ONNX export of segmentation models (SSA or any transformers one): dynamic batch, height and width, checked
against PyTorch with onnxruntime."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import torch


class _LogitsOnly(torch.nn.Module):
    """pixel_values -> logits: the graph's one input and one output."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=pixel_values).logits


def export_onnx(model: torch.nn.Module, output: str | Path, example_size: tuple[int, int] = (512, 512),
                opset: int = 20, tolerance: float = 1e-4, check_sizes: list[tuple[int, int]] | None = None,
                dynamic_size: bool = True) -> dict:
    """Export `model` (eval mode, float32, CPU) to `output` with a dynamic batch and, unless `dynamic_size=False`,
    dynamic height and width; check the graph with onnxruntime at the example size (and, when dynamic, at
    two other sizes): raises if any max |logit difference| exceeds `tolerance` or a size fails to run.

    Returns {"path": ..., "checks": {"HxW": max_abs_difference}}.
    """
    try:
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as error:
        raise ImportError("ONNX export needs onnx, onnxscript and onnxruntime: pip install 'ssa-hf[onnx]'") from error

    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    model = model.float().eval().cpu()
    wrapper = _LogitsOnly(model).eval()
    height, width = example_size
    example = torch.randn(2, 3, height, width)  # batch 2: an example size of 1 would be specialised
    dims = {0: torch.export.Dim("batch", min=1, max=64)}
    if dynamic_size:
        dims |= {2: torch.export.Dim.DYNAMIC, 3: torch.export.Dim.DYNAMIC}
    # The exporter logs one line per torchvision operator it cannot find; torchvision is deliberately absent.
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            wrapper, (example,), dynamo=True, opset_version=opset, input_names=["pixel_values"],
            output_names=["logits"], dynamic_shapes=({k: v for k, v in dims.items()},), verbose=False,
        )
    # Written next to the target and moved into place only once checked: a failed export leaves no file behind.
    final, output = output, output.with_name(f".{output.name}.partial")
    program.save(str(output))
    try:
        result = _check(model, output, example_size, check_sizes, dynamic_size, tolerance)
    except BaseException:
        output.unlink(missing_ok=True)
        raise
    output.replace(final)
    return {"path": str(final), **result}


def _check(model, output: Path, example_size, check_sizes, dynamic_size: bool, tolerance: float) -> dict:
    height, width = example_size
    if check_sizes is None:
        # Two other sizes, one not a multiple of 32: window padding or patch grids fixed at the example size fail there.
        other_sizes = [(max(64, height - 96), width + 64), (height + 40, max(64, width - 24))]
        check_sizes = [example_size, *other_sizes] if dynamic_size else [example_size]
    hint = ("" if not dynamic_size else " This architecture does not export with dynamic image sizes (its window "
            "padding or patch-grid reshapes specialise to the example size): export a fixed size instead "
            "(`ssa-seg export-onnx --static --height H --width W`, or dynamic_size=False).")
    checks = {}
    for size in check_sizes:
        try:
            checks[f"{size[0]}x{size[1]}"] = check_onnx(model, output, size)
        except Exception as error:  # noqa: BLE001 - onnxruntime's failures have no common base class
            raise RuntimeError(f"the ONNX graph fails at {size[0]}x{size[1]}: {str(error).splitlines()[0][:300]}."
                               + hint) from error
    worst = max(checks.values())
    if worst > tolerance:
        raise RuntimeError(f"the ONNX graph differs from PyTorch by {worst:.2e} (> {tolerance:.0e}): {checks}."
                           + hint)
    return {"checks": checks, "dynamic_size": dynamic_size}


def onnx_session(path: str | Path, threads: int | None = None, quiet: bool = False):
    """A CPU onnxruntime session without busy-waiting; `quiet` leaves failures to the raised exception alone (no
    log line of its own), for checks that turn them into their own message."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    if quiet:
        options.log_severity_level = 4  # fatal only
    # No busy-waiting between runs: spinning workers would steal the CPU from whatever runs next (e.g. PyTorch).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


@torch.no_grad()
def check_onnx(model: torch.nn.Module, path: str | Path, size: tuple[int, int], batch: int = 2) -> float:
    """Max |logit difference| between `model` and the ONNX graph at `path` on a random batch of `size`."""
    generator = torch.Generator().manual_seed(sum(size))
    pixel_values = torch.randn(batch, 3, *size, generator=generator)
    expected = model(pixel_values=pixel_values).logits.float().numpy()
    (actual,) = onnx_session(path, quiet=True).run(["logits"], {"pixel_values": pixel_values.numpy()})
    if actual.shape != expected.shape:
        raise RuntimeError(f"ONNX logits have shape {actual.shape}, PyTorch {expected.shape} at {size}")
    return float(abs(actual - expected).max())


__all__ = ["check_onnx", "export_onnx", "onnx_session"]
