"""Every precision a user brings: a model in bfloat16, float16 or float64 (`.to(dtype)` or `from_pretrained(...,
dtype=...)`) runs inference and a training step. The SSA similarities and losses are computed in at least float32
(float64 stays float64), so the logits come back in that dtype and stay close to the float32 model's."""

import pytest
import torch
from helpers import TINY_SEGFORMER

from ssa_hf import SSAConfig, SSAForSemanticSegmentation

DTYPES = [torch.bfloat16, torch.float16, torch.float64]


def tiny_model() -> SSAForSemanticSegmentation:
    torch.manual_seed(0)
    return SSAForSemanticSegmentation(SSAConfig.from_segformer_config(dict(TINY_SEGFORMER), num_labels=5))


def inputs(dtype):
    generator = torch.Generator().manual_seed(1)
    pixel_values = torch.randn(2, 3, 64, 64, generator=generator)
    labels = torch.randint(0, 5, (2, 64, 64), generator=generator)
    return pixel_values.to(dtype), labels


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_inference_in_every_precision_is_close_to_float32(dtype):
    reference = tiny_model().eval()
    model = tiny_model().eval().to(dtype)
    pixel_values, _ = inputs(dtype)
    with torch.no_grad():
        expected = reference(pixel_values=pixel_values.float()).logits
        out = model(pixel_values=pixel_values)
    compute_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    assert out.logits.dtype == compute_dtype and out.coarse_logits.dtype == compute_dtype
    assert torch.isfinite(out.logits).all()
    # Half precisions keep about 3 significant digits through the encoder; float64 agrees to float32 round-off.
    tolerance = 1e-4 if dtype == torch.float64 else 0.1
    assert (out.logits.double() - expected.double()).abs().max() <= tolerance * expected.abs().max()


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_a_training_step_in_every_precision(dtype):
    model = tiny_model().train().to(dtype)
    pixel_values, labels = inputs(dtype)
    out = model(pixel_values=pixel_values, labels=labels)
    assert out.loss.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    assert torch.isfinite(out.loss) and all(torch.isfinite(t) for t in out.loss_terms.values())
    out.loss.backward()
    parameters = [p for p in model.parameters() if p.requires_grad]
    assert all(p.dtype == dtype for p in parameters)  # stored as the user asked
    assert all(p.grad is not None and p.grad.dtype == dtype for p in parameters)
    assert all(torch.isfinite(p.grad.float()).all() for p in parameters)
    before = [p.detach().clone() for p in parameters]
    torch.optim.SGD(parameters, lr=0.1).step()
    assert any(not torch.equal(a, p.detach()) for a, p in zip(before, parameters))


def test_from_pretrained_in_bfloat16(tmp_path):
    tiny_model().save_pretrained(tmp_path / "model")
    model = SSAForSemanticSegmentation.from_pretrained(tmp_path / "model", dtype=torch.bfloat16).eval()
    assert model.dtype == torch.bfloat16
    pixel_values, _ = inputs(torch.bfloat16)
    with torch.no_grad():
        logits = model(pixel_values=pixel_values).logits
    assert logits.dtype == torch.float32 and torch.isfinite(logits).all()


def test_autocast_keeps_the_ssa_computation_in_float32():
    model = tiny_model().train()
    pixel_values, labels = inputs(torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(pixel_values=pixel_values, labels=labels)
    assert out.logits.dtype == torch.float32 and out.loss.dtype == torch.float32
    out.loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
