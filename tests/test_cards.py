"""Model cards that work for their readers: the usage snippets run where ssa_hf is not installed, the metadata passes
the hub's checks (no unknown dataset, no None, partial evaluations left out of the model-index), `base_model` comes
from the checkpoint the model was made from, and the tags name the real encoder and decoder."""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from helpers import TINY_SEGFORMER, WITHOUT_SSA_HF
from huggingface_hub import ModelCard
from PIL import Image
from test_convert import TINY_MIT, to_nvlabs
from transformers import SegformerConfig, SegformerForSemanticSegmentation, SwinConfig

from ssa_hf import SSAConfig, SSAForSemanticSegmentation, SSAImageProcessor
from ssa_hf.convert import convert_checkpoint
from ssa_hf.model_card import build_model_card, validate_card_metadata
from ssa_hf_cli import main as cli_main

ID2LABEL = {0: "road", 1: "sky", 2: "tree", 3: "car"}


def _evaluation(path, limit=None, data="runs/camvid-val", convention=None):
    path.write_text(json.dumps({
        "model": "m", "data": data, "data_on_hub": False, "split": "validation", "convention": convention, "images": limit or 101,
        "limit": limit, "protocol": {"mode": "whole", "scales": [1.0], "flip": False, "resize": "keep ratio"},
        "mean_iou": 0.5 if limit else 0.4321, "mean_accuracy": 0.5, "overall_accuracy": 0.8}))
    return path


@pytest.fixture
def segformer_made(tmp_path):
    """An SSA folder made with from_segformer from a local SegFormer, as a user does before fine-tuning."""
    SegformerForSemanticSegmentation(SegformerConfig(**TINY_SEGFORMER, num_labels=4, id2label=ID2LABEL)) \
        .save_pretrained(tmp_path / "segformer-b0-local")
    model = SSAForSemanticSegmentation.from_segformer(str(tmp_path / "segformer-b0-local"))
    folder = tmp_path / "ssa-tiny"
    model.save_pretrained(folder)
    SSAImageProcessor(size={"shortest_edge": 64, "longest_edge": 96}).save_pretrained(folder)
    return folder


def test_the_cards_snippets_run_without_ssa_hf(tmp_path, segformer_made):
    assert cli_main(["card", str(segformer_made), "--output", str(tmp_path / "card.md")]) == 0
    card = (tmp_path / "card.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", card, re.S)
    assert len(blocks) == 2 and "--output predictions/" in card and " --out " not in card
    image = tmp_path / "image.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (60, 80, 3), dtype=np.uint8)).save(image)
    script = WITHOUT_SSA_HF + "\n".join(
        block.replace("path/to/model", str(segformer_made)).replace('"image.jpg"', repr(str(image)))
        for block in blocks) + "\nprint('masks', len(masks), 'label map', tuple(label_map.shape))\n"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf_home"), TRANSFORMERS_VERBOSITY="error")
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "label map (60, 80)" in result.stdout


def test_metadata_names_real_things_and_leaves_partial_results_out(tmp_path, segformer_made, capsys):
    whole, partial = _evaluation(tmp_path / "whole.json"), _evaluation(tmp_path / "partial.json", limit=10)
    assert cli_main(["card", str(segformer_made), "--eval", str(partial), "--output", str(tmp_path / "c.md")]) == 2
    assert "--allow-partial-eval" in capsys.readouterr().err
    assert cli_main(["card", str(segformer_made), "--eval", str(whole), "--eval", str(partial),
                     "--allow-partial-eval", "--output", str(tmp_path / "card.md")]) == 0
    text = (tmp_path / "card.md").read_text()
    card = ModelCard(text)
    (result,) = card.data.eval_results  # the whole-split result only
    assert result.metric_value == 43.21 and result.dataset_name == "camvid-val" and result.dataset_type == "camvid-val"
    assert "unknown" not in text.split("---")[1] and "None" not in text
    assert "(partial: the first 10 only)" in text and "| 50.00 |" in text
    # From a local folder: no base_model (the hub only takes repository ids), but the card says where it came from.
    assert card.data.base_model is None and "Made from the local checkpoint `segformer-b0-local`" in text
    assert card.data.tags[:4] == ["semantic-segmentation", "ssa", "segformer", "vision"]
    validate_card_metadata(card)


def test_base_model_and_tags_follow_the_source_and_architecture():
    config = SSAConfig(backbone_config=SwinConfig(embed_dim=32, depths=[1, 1, 1, 1], num_heads=[1, 2, 4, 8],
                                                  out_features=["stage1", "stage2", "stage3", "stage4"]),
                       decoder_type="upernet", decoder_hidden_size=32, id2label=ID2LABEL,
                       label2id={v: k for k, v in ID2LABEL.items()},
                       source_checkpoint="openmmlab/upernet-swin-tiny")
    card = ModelCard(build_model_card(config, repo_id="me/ssa-swin"))
    assert card.data.base_model == "openmmlab/upernet-swin-tiny"
    assert {"swin", "upernet"} <= set(card.data.tags) and "segformer" not in card.data.tags
    assert "Swin Transformer" in card.text and "UperNet" in card.text


def test_every_encoder_and_decoder_family_is_named_in_the_card():
    """The architecture table names each family in words (OCRNet on HRNet, a MobileViT from transformers), not by its
    config's model_type."""
    from transformers import MobileViTConfig, MobileViTForSemanticSegmentation

    from ssa_hf import SSAForSemanticSegmentation
    from ssa_hf.model.configuration_ssa import DECODER_TYPES, OWN_BACKBONE_CONFIGS, SUPPORTED_SEGMENTERS
    from ssa_hf.model_card import _DECODER_NAMES, _ENCODER_NAMES

    assert set(DECODER_TYPES) <= set(_DECODER_NAMES)
    assert set(OWN_BACKBONE_CONFIGS) | set(SUPPORTED_SEGMENTERS) - {"upernet"} <= set(_ENCODER_NAMES)
    ocrnet = SSAConfig.from_hrnet_config("w48", id2label=ID2LABEL)
    card = ModelCard(build_model_card(ocrnet, repo_id="me/ssa-ocrnet"))
    assert "HRNetV2 ([48, 96, 192, 384])" in card.text and "OCRNet (soft object regions" in card.text
    assert {"hrnet", "ocr"} <= set(card.data.tags)
    mobilevit = SSAForSemanticSegmentation.from_transformers(MobileViTForSemanticSegmentation(MobileViTConfig(
        image_size=64, hidden_sizes=[16, 24, 32], neck_hidden_sizes=[8, 8, 16, 16, 24, 32, 64], aspp_out_channels=16,
        num_labels=len(ID2LABEL))))
    card = ModelCard(build_model_card(mobilevit.config, repo_id="me/ssa-mobilevit"))
    assert "MobileViT" in card.text and "DeepLabV3 (ASPP)" in card.text and "mobilevit" in card.data.tags


def test_from_segformer_and_convert_record_their_source(tmp_path):
    source = SegformerForSemanticSegmentation(SegformerConfig(**TINY_SEGFORMER, num_labels=4))
    source.config._name_or_path = "nvidia/segformer-b0-finetuned-ade-512-512"  # as from_pretrained of a hub id sets it
    assert SSAForSemanticSegmentation.from_segformer(source).config.source_checkpoint == source.config._name_or_path
    source.save_pretrained(tmp_path / "my-segformer")
    local = SSAForSemanticSegmentation.from_segformer(str(tmp_path / "my-segformer"))
    assert local.config.source_checkpoint == "local:my-segformer"  # a name, never this machine's path
    path = tmp_path / "segformer.b0.512x512.ade.160k.pth"
    mit = SegformerForSemanticSegmentation(SegformerConfig(**TINY_MIT, num_labels=4))
    torch.save({"state_dict": to_nvlabs(mit.state_dict())}, path)
    converted, _ = convert_checkpoint(path)
    assert converted.config.source_checkpoint == f"local:{path.name}"


@pytest.mark.parametrize("field, value, message", [
    ("license", "my-own-licence", "licence identifier"),
    ("base_model", "not a/valid/id", "not a hub repository id"),
    ("datasets", ["../data"], "not a hub repository id"),
])
def test_validation_refuses_what_the_hub_would(field, value, message, segformer_made):
    config = SSAConfig.from_pretrained(segformer_made)
    card = ModelCard(build_model_card(config))
    card.data.__setattr__(field, value)
    with pytest.raises(ValueError, match=message):
        validate_card_metadata(ModelCard(str(card)))


def test_card_refuses_a_baseline_folder_and_an_unknown_licence(tmp_path, segformer_made, capsys):
    SegformerForSemanticSegmentation(SegformerConfig(**TINY_SEGFORMER, num_labels=4)).save_pretrained(tmp_path / "b")
    assert cli_main(["card", str(tmp_path / "b")]) == 2
    assert "'segformer' model" in capsys.readouterr().err
    assert cli_main(["card", str(segformer_made), "--license", "mine", "--output", str(tmp_path / "c.md")]) == 2
    assert "licence identifier" in capsys.readouterr().err and not (tmp_path / "c.md").exists()
