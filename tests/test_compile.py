"""torch.compile and gradient checkpointing: inference compiles with fullgraph=True (inductor); a training step
(forward, teacher and the eight losses) compiles with fullgraph=True, i.e. with no graph break and no host
synchronisation from our code, and gives the eager loss and gradients (aot_eager backend: autograd traced without code
generation, which fits CI's time); `gradient_checkpointing_enable()` recomputes the encoder's blocks and keeps the
gradients."""

import pytest
import torch
from helpers import TINY_SEGFORMER

from ssa_hf import SSAConfig, SSAForSemanticSegmentation


def tiny_model(randomness: bool = True) -> SSAForSemanticSegmentation:
    """The tiny SSA model; without `randomness`, no dropout and no drop path (a compiled graph or a recomputation
    would draw other random numbers)."""
    torch.manual_seed(0)
    rates = {} if randomness else {"drop_path_rate": 0.0}
    config = SSAConfig.from_segformer_config(dict(TINY_SEGFORMER, **rates), num_labels=5,
                                             **({} if randomness else {"classifier_dropout_prob": 0.0}))
    return SSAForSemanticSegmentation(config)


def training_batch():
    generator = torch.Generator().manual_seed(1)
    pixel_values = torch.randn(2, 3, 64, 64, generator=generator)
    labels = torch.randint(0, 5, (2, 64, 64), generator=generator)
    labels[:, :8] = 255
    return pixel_values, labels


def gradients(model, pixel_values, labels):
    model.zero_grad()
    output = model(pixel_values=pixel_values, labels=labels)
    output.loss.backward()
    return output.loss.detach(), {name.removeprefix("_orig_mod."): p.grad.clone() for name, p in model.named_parameters()
                                  if p.grad is not None}


@pytest.mark.slow
def test_inference_compiles_with_fullgraph():
    torch._dynamo.reset()
    model = tiny_model().eval()
    pixel_values = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        expected = model(pixel_values=pixel_values).logits  # the first call installs transformers' output hooks
        compiled = torch.compile(model, fullgraph=True)
        actual = compiled(pixel_values=pixel_values).logits
    torch.testing.assert_close(actual, expected, atol=1e-4, rtol=1e-4)


def test_a_training_step_compiles_with_fullgraph_and_gives_the_eager_gradients():
    torch._dynamo.reset()
    model = tiny_model(randomness=False).train()
    pixel_values, labels = training_batch()
    expected_loss, expected = gradients(model, pixel_values, labels)
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")  # a graph break raises here
    loss, actual = gradients(compiled, pixel_values, labels)
    torch.testing.assert_close(loss, expected_loss, atol=1e-5, rtol=1e-5)
    assert actual.keys() == expected.keys()
    for name, gradient in expected.items():
        torch.testing.assert_close(actual[name], gradient, atol=1e-5, rtol=1e-4)


def test_gradient_checkpointing_recomputes_the_encoder_and_keeps_the_gradients():
    from transformers.modeling_layers import GradientCheckpointingLayer

    model = tiny_model(randomness=False).train()
    pixel_values, labels = training_batch()
    expected_loss, expected = gradients(model, pixel_values, labels)
    model.gradient_checkpointing_enable()
    blocks = [m for m in model.modules() if isinstance(m, GradientCheckpointingLayer)]
    assert blocks and all(block.gradient_checkpointing for block in blocks)
    calls = []
    inner = next(blocks[0].children())  # transformers checkpoints forward: hooks inside it run on recomputation
    hook = inner.register_forward_hook(lambda *_: calls.append(1))
    loss, actual = gradients(model, pixel_values, labels)
    hook.remove()
    assert len(calls) == 2  # the forward pass, and its recomputation in the backward pass
    assert torch.equal(loss, expected_loss) and actual.keys() == expected.keys()
    for name, gradient in expected.items():
        torch.testing.assert_close(actual[name], gradient, atol=1e-6, rtol=1e-6)
