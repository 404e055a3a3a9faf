"""The forward pass, the teacher, the eight losses and the backward pass never read a tensor's values on the host.

On the `meta` device tensors have shapes but no data, so any host synchronisation (`.item()`, `bool(tensor)`,
`.tolist()`, `.unique()`, `.cpu()`) fails; running a whole training step there proves the hot path has none. The one
deliberate synchronisation, the label check, is switched off with `validate_labels=False`.
"""

import torch
from helpers import TINY_SEGFORMER

from ssa_hf import SSAConfig, SSAForSemanticSegmentation


def tiny_config(**kwargs):
    return SSAConfig.from_segformer_config(
        dict(TINY_SEGFORMER),
        num_labels=5, **kwargs,
    )


def test_training_step_runs_on_meta_tensors_without_host_syncs():
    model = SSAForSemanticSegmentation(tiny_config(validate_labels=False, teacher_group_size=2)).train().to("meta")
    pixel_values = torch.empty(4, 3, 64, 96, device="meta")
    labels = torch.empty(4, 64, 96, dtype=torch.long, device="meta")
    out = model(pixel_values=pixel_values, labels=labels)
    assert out.loss.device.type == "meta" and out.logits.shape == (4, 5, 16, 24)
    out.loss.backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_inference_runs_on_meta_tensors_without_host_syncs():
    model = SSAForSemanticSegmentation(tiny_config()).eval().to("meta")
    with torch.no_grad():
        out = model(pixel_values=torch.empty(2, 3, 64, 64, device="meta"))
    assert out.logits.shape == (2, 5, 16, 16)


def test_label_validation_is_the_only_synchronisation():
    model = SSAForSemanticSegmentation(tiny_config()).train().to("meta")  # validate_labels=True
    pixel_values = torch.empty(1, 3, 64, 64, device="meta")
    labels = torch.empty(1, 64, 64, dtype=torch.long, device="meta")
    try:
        model(pixel_values=pixel_values, labels=labels)
    except (RuntimeError, NotImplementedError) as error:
        assert "meta" in str(error).lower() or "data" in str(error).lower()
    else:
        raise AssertionError("the label check should need the labels' values")
