"""SSAForSemanticSegmentation as a transformers user meets it: shapes, training, bad input, init, SegFormer weights,
save/load and the Auto classes."""

import math
import re

import pytest
import torch
from transformers import (
    AutoConfig,
    AutoModelForSemanticSegmentation,
    SegformerConfig,
    SegformerForSemanticSegmentation,
)
from transformers.testing_utils import CaptureLogger
from transformers.utils import logging

from ssa_hf import SSAConfig, SSAForSemanticSegmentation
from ssa_hf.configuration_ssa import MIT_VARIANTS

NUM_LABELS = 5


def tiny_segformer_config(**kwargs) -> SegformerConfig:
    values = dict(
        hidden_sizes=[8, 16, 24, 32], depths=[1, 1, 1, 1], num_attention_heads=[1, 2, 4, 4],
        decoder_hidden_size=16, num_labels=NUM_LABELS, drop_path_rate=0.0,
    )
    values.update(kwargs)
    return SegformerConfig(**values)


def tiny_model(**kwargs) -> SSAForSemanticSegmentation:
    return SSAForSemanticSegmentation(SSAConfig.from_segformer_config(tiny_segformer_config(), **kwargs))


def batch(size=2, height=64, width=64, num_labels=NUM_LABELS):
    pixel_values = torch.randn(size, 3, height, width)
    labels = torch.randint(0, num_labels, (size, height, width))
    labels[:, :4] = 255
    return pixel_values, labels


def test_inference_returns_adapted_logits_without_running_the_teacher():
    model = tiny_model().eval()
    calls = []
    for name in ("teacher_semantic_fusion", "teacher_spatial_fusion", "teacher_prototype_projection"):
        getattr(model.decode_head.classifier, name).register_forward_hook(lambda *args, n=name: calls.append(n))
    pixel_values, _ = batch()
    with torch.no_grad():
        out = model(pixel_values=pixel_values)
    assert out.logits.shape == (2, NUM_LABELS, 16, 16)
    assert out.coarse_logits.shape == out.logits.shape
    assert out.loss is None and out.loss_terms is None and out.teacher_logits is None
    assert out.logits.abs().max() <= model.config.logit_scale + 1e-4
    assert calls == []


def test_training_output_has_total_and_eight_detached_terms():
    model = tiny_model().train()
    pixel_values, labels = batch()
    out = model(pixel_values=pixel_values, labels=labels)
    assert set(out.loss_terms) == {
        "main", "coarse", "teacher", "response_distillation", "dice_student", "dice_teacher",
        "semantic_distillation", "spatial_distillation",
    }
    assert all(not t.requires_grad for t in out.loss_terms.values())
    torch.testing.assert_close(out.loss.detach(), sum(out.loss_terms.values()))
    assert out.teacher_logits.shape == out.logits.shape
    out.loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_config_weights_scale_their_terms():
    pixel_values, labels = batch()
    terms = {}
    for weight in (1.0, 3.0):
        torch.manual_seed(0)
        model = tiny_model(semantic_distillation_weight=weight, classifier_dropout_prob=0.0).train()
        terms[weight] = model(pixel_values=pixel_values, labels=labels).loss_terms
    torch.testing.assert_close(terms[3.0]["semantic_distillation"], 3 * terms[1.0]["semantic_distillation"])
    torch.testing.assert_close(terms[3.0]["main"], terms[1.0]["main"])


def learnable_batch(size=2, side=64):
    """Block labels and images whose colour depends on the class, so a model can fit them."""
    blocks = torch.randint(0, NUM_LABELS, (size, 4, 4))
    labels = blocks.repeat_interleave(side // 4, 1).repeat_interleave(side // 4, 2)
    colours = torch.randn(NUM_LABELS, 3)
    pixel_values = colours[labels].permute(0, 3, 1, 2) + 0.1 * torch.randn(size, 3, side, side)
    return pixel_values, labels


def test_loss_decreases_when_fitting_one_batch():
    model = tiny_model().train()
    pixel_values, labels = learnable_batch()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses, main = [], []
    for _ in range(30):
        optimizer.zero_grad()
        out = model(pixel_values=pixel_values, labels=labels)
        out.loss.backward()
        optimizer.step()
        losses.append(out.loss.item())
        main.append(out.loss_terms["main"].item())
    assert losses[-1] < 0.6 * losses[0], losses
    assert main[-1] < 0.5 * main[0], main


@pytest.mark.parametrize("height,width", [(50, 70), (96, 33), (64, 128)])
def test_any_image_size_works_as_in_segformer(height, width):
    torch.manual_seed(0)
    segformer = SegformerForSemanticSegmentation(tiny_segformer_config()).eval()
    model = SSAForSemanticSegmentation.from_segformer(segformer).eval()
    pixel_values, labels = batch(height=height, width=width)
    with torch.no_grad():
        expected = segformer(pixel_values=pixel_values).logits
        out = model(pixel_values=pixel_values)
    assert out.logits.shape == expected.shape
    torch.testing.assert_close(out.coarse_logits, expected, atol=1e-5, rtol=1e-5)
    loss = model.train()(pixel_values=pixel_values, labels=labels).loss
    assert torch.isfinite(loss)


def test_wrong_channels_and_shapes_are_clear_errors():
    model = tiny_model()
    with pytest.raises(ValueError, match="4 channels but the encoder expects 3"):
        model(pixel_values=torch.randn(1, 4, 64, 64))
    with pytest.raises(ValueError, match=r"\(batch, channels, height, width\)"):
        model(pixel_values=torch.randn(3, 64, 64))
    with pytest.raises(ValueError, match="labels must have shape"):
        model(pixel_values=torch.randn(2, 3, 64, 64), labels=torch.zeros(1, 64, 64, dtype=torch.long))
    with pytest.raises(ValueError, match="integer tensor"):
        model(pixel_values=torch.randn(1, 3, 64, 64), labels=torch.zeros(1, 64, 64))


def test_images_too_small_for_the_encoder_are_a_clear_error():
    model = tiny_model()
    segformer = SegformerForSemanticSegmentation(tiny_segformer_config()).eval()
    with pytest.raises(RuntimeError):  # what plain SegFormer does: a failure deep inside a convolution
        segformer(pixel_values=torch.randn(1, 3, 16, 40))
    with pytest.raises(ValueError, match=r"16x40 are too small .* at least 29x29"):
        model(pixel_values=torch.randn(1, 3, 16, 40))
    model(pixel_values=torch.randn(1, 3, 29, 29))  # the smallest size that works
    with pytest.raises(RuntimeError):
        segformer(pixel_values=torch.randn(1, 3, 28, 40))


def test_label_values_out_of_range_are_named():
    model = tiny_model()
    pixel_values, labels = batch()
    labels[0, 10, 10] = 7
    labels[1, 20, 20] = -3
    with pytest.raises(ValueError, match=r"values -3, 7 .*\[0, 5\).*ignore index 255"):
        model(pixel_values=pixel_values, labels=labels)


def test_all_ignored_batch_gives_a_finite_loss():
    model = tiny_model().train()
    pixel_values, labels = batch()
    labels[:] = 255
    out = model(pixel_values=pixel_values, labels=labels)
    assert torch.isfinite(out.loss)
    out.loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_ssa_runs_in_float32_under_autocast():
    model = tiny_model().train()
    pixel_values, labels = batch()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(pixel_values=pixel_values, labels=labels)
    assert out.logits.dtype == torch.float32 and out.teacher_logits.dtype == torch.float32
    assert out.loss.dtype == torch.float32 and torch.isfinite(out.loss)
    assert all(t.dtype == torch.float32 for t in out.loss_terms.values())
    out.loss.backward()


def test_teacher_group_size_changes_only_grouped_quantities():
    pixel_values, labels = batch(size=4)
    results = {}
    for group_size in (None, 2):
        torch.manual_seed(0)
        model = tiny_model(teacher_group_size=group_size, classifier_dropout_prob=0.0).train()
        results[group_size] = model(pixel_values=pixel_values, labels=labels)
    whole, grouped = results[None], results[2]
    torch.testing.assert_close(whole.logits, grouped.logits)
    torch.testing.assert_close(whole.loss_terms["main"], grouped.loss_terms["main"])
    assert not torch.allclose(whole.teacher_logits, grouped.teacher_logits)


def test_init_follows_the_original_code():
    config = SSAConfig.from_segformer_config("b0", num_labels=150)
    model = SSAForSemanticSegmentation(config)
    classifier = model.decode_head.classifier
    assert abs(classifier.weight.std().item() - 0.01) < 0.0005
    assert classifier.bias.abs().max() == 0
    assert abs(classifier.class_position_basis.weight.std().item() - 1.0) < 0.02
    # PyTorch's default Linear init: uniform within 1/sqrt(fan_in) (Kaiming uniform, a=sqrt(5)).
    reduce = classifier.semantic_fusion.reduce.weight
    bound = 1 / math.sqrt(reduce.shape[1])
    assert reduce.abs().max() <= bound and reduce.std().item() > 0.8 * bound / math.sqrt(3)
    assert abs(model.decode_head.linear_fuse.weight.std().item() - 0.02) < 0.001
    assert abs(model.decode_head.batch_norm.weight.mean().item() - 1.0) < 1e-6


def test_from_segformer_folder_copies_weights_and_keeps_coarse_path(tmp_path):
    segformer = SegformerForSemanticSegmentation(tiny_segformer_config()).eval()
    segformer.save_pretrained(tmp_path / "segformer")
    model = SSAForSemanticSegmentation.from_segformer(str(tmp_path / "segformer")).eval()
    assert model.config.num_labels == NUM_LABELS and model.config.decoder_hidden_size == 16
    # The encoder is `encoder.` here and `segformer.` in transformers; every source weight is copied.
    source = {re.sub(r"^segformer\.", "encoder.", name): tensor for name, tensor in segformer.state_dict().items()}
    ours = model.state_dict()
    assert source.keys() <= ours.keys()
    for name, tensor in source.items():
        torch.testing.assert_close(ours[name], tensor, msg=name)
    pixel_values, _ = batch()
    with torch.no_grad():
        torch.testing.assert_close(model(pixel_values).coarse_logits, segformer(pixel_values).logits)


def test_from_segformer_with_new_classes_reinitialises_the_classifier():
    segformer = SegformerForSemanticSegmentation(tiny_segformer_config())
    logger = logging.get_logger("ssa_hf.model.modeling_ssa")
    names = {0: "road", 1: "sky", 2: "car"}
    with CaptureLogger(logger) as captured:
        model = SSAForSemanticSegmentation.from_segformer(segformer, id2label=names)
    assert "re-initialised" in captured.out
    assert model.config.num_labels == 3 and model.config.id2label == names
    assert model.config.label2id == {"road": 0, "sky": 1, "car": 2}
    assert model.decode_head.classifier.weight.shape[0] == 3
    torch.testing.assert_close(
        model.encoder.state_dict()["stages.0.patch_embeddings.proj.weight"],
        segformer.segformer.state_dict()["stages.0.patch_embeddings.proj.weight"],
    )
    with pytest.raises(TypeError, match="SegformerForSemanticSegmentation"):
        SSAForSemanticSegmentation.from_segformer(torch.nn.Linear(2, 2))


def test_save_and_load_round_trip_through_auto_classes(tmp_path):
    model = tiny_model(teacher_group_size=4).eval()
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    for name in ("configuration_ssa.py", "modeling_ssa.py", "loss_ssa.py"):
        assert (tmp_path / name).exists(), name
    config = AutoConfig.from_pretrained(tmp_path)
    assert isinstance(config, SSAConfig) and config.teacher_group_size == 4
    without_path = lambda d: {k: v for k, v in d.items() if k != "_name_or_path"}  # noqa: E731
    assert without_path(config.to_dict()) == without_path(model.config.to_dict())
    loaded = AutoModelForSemanticSegmentation.from_pretrained(tmp_path).eval()
    assert isinstance(loaded, SSAForSemanticSegmentation)
    pixel_values, _ = batch()
    with torch.no_grad():
        torch.testing.assert_close(loaded(pixel_values).logits, model(pixel_values).logits, atol=0, rtol=0)


def test_hidden_states_and_tuple_output():
    model = tiny_model().eval()
    pixel_values, _ = batch()
    out = model(pixel_values, output_hidden_states=True)
    assert [h.shape[1] for h in out.hidden_states] == [8, 16, 24, 32]
    assert model(pixel_values).hidden_states is None
    as_tuple = model(pixel_values, return_dict=False)
    assert isinstance(as_tuple, tuple)
    torch.testing.assert_close(as_tuple[0], out.logits)


@pytest.mark.parametrize("variant", sorted(MIT_VARIANTS))
def test_config_from_segformer_variants(variant, tmp_path):
    config = SSAConfig.from_segformer_config(variant, num_labels=150, teacher_group_size=4)
    expected = MIT_VARIANTS[variant]
    assert list(config.backbone_config.hidden_sizes) == expected["hidden_sizes"]
    assert list(config.backbone_config.depths) == expected["depths"]
    assert config.decoder_hidden_size == expected["decoder_hidden_size"]
    config.save_pretrained(tmp_path)
    assert SSAConfig.from_pretrained(tmp_path).to_dict() == config.to_dict()


def test_config_errors_name_the_problem():
    with pytest.raises(ValueError, match="Unknown MiT variant 'b9'"):
        SSAConfig.from_segformer_config("b9", num_labels=3)
    with pytest.raises(ValueError, match="num_labels=4 does not match the 3 names"):
        SSAConfig.from_segformer_config("b0", num_labels=4, id2label={0: "a", 1: "b", 2: "c"})
    with pytest.raises(Exception, match="teacher_group_size"):
        SSAConfig(teacher_group_size=0)
    with pytest.raises(Exception, match="boundary_dilation_size"):
        SSAConfig(boundary_dilation_size=4)


@pytest.mark.parametrize("legacy_prefix", ["segformer.", "backbone."])
def test_folders_and_state_dicts_with_transformers_encoder_names_still_load(tmp_path, legacy_prefix):
    """The encoder is `encoder.` whatever the backbone. SSA folders and training checkpoints written when it was
    `segformer.` (MiT) or `backbone.` (other backbones) load unchanged, and are saved again under `encoder.`."""
    from safetensors.torch import load_file, save_file

    model = tiny_model().eval()
    model.save_pretrained(tmp_path / "current")
    saved = load_file(tmp_path / "current" / "model.safetensors")
    assert any(k.startswith("encoder.") for k in saved) and not any(k.startswith(legacy_prefix) for k in saved)
    legacy = {re.sub(r"^encoder\.", legacy_prefix, k): v for k, v in saved.items()}
    save_file(legacy, tmp_path / "current" / "model.safetensors", metadata={"format": "pt"})

    loaded = SSAForSemanticSegmentation.from_pretrained(tmp_path / "current").eval()
    auto = AutoModelForSemanticSegmentation.from_pretrained(tmp_path / "current").eval()
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[name], tensor, rtol=0, atol=0, msg=name)
        torch.testing.assert_close(auto.state_dict()[name], tensor, rtol=0, atol=0, msg=name)
    loaded.save_pretrained(tmp_path / "resaved")
    assert load_file(tmp_path / "resaved" / "model.safetensors").keys() == saved.keys()

    # A training checkpoint's model.safetensors holds the model's state_dict as it was, without transformers' renames.
    fresh = tiny_model()
    result = fresh.load_state_dict({re.sub(r"^encoder\.", legacy_prefix, k): v for k, v in model.state_dict().items()})
    assert not result.missing_keys and not result.unexpected_keys
    torch.testing.assert_close(fresh.encoder.state_dict(), model.encoder.state_dict(), rtol=0, atol=0)
