"""The preprocessing and label contract saved with every model: SSAImageProcessor's keep-ratio resize and size
divisor (mmcv rounding, by hand), its normalisation, its label convention, the two-step post-processing of mmseg, and
its round trip through save_pretrained / AutoImageProcessor / remote code."""

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoImageProcessor

from ssa_hf import LabelConvention, SSAImageProcessor
from ssa_hf.image_processing_ssa import keep_ratio_size


def test_keep_ratio_size_follows_mmcv_imrescale_by_hand():
    # ADE20K image 683x512 at scale (2048, 512): factor min(2048/683, 512/512) = 1 -> unchanged; x32 -> 704x512.
    assert keep_ratio_size(512, 683, 512, 2048) == (512, 683)
    assert keep_ratio_size(512, 683, 512, 2048, size_divisor=32) == (512, 704)
    # 400x300 at (2048, 512): factor min(2048/400, 512/300) = 1.7067 -> 682.67 + 0.5 -> 683, 512.
    assert keep_ratio_size(300, 400, 512, 2048) == (512, 683)
    # CamVid 480x360 at its own scale (480, 360): unchanged; at (1024, 256): factor 256/360 -> 341.33 -> 341, 256.
    assert keep_ratio_size(360, 480, 360, 480) == (360, 480)
    assert keep_ratio_size(360, 480, 256, 1024) == (256, 341)


def test_pixel_values_are_the_resized_image_normalised():
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8))
    processor = SSAImageProcessor(size={"shortest_edge": 24, "longest_edge": 64}, size_divisor=8)
    pixel_values = processor(image, return_tensors="pt").pixel_values
    # factor min(64/40, 24/30) = 0.8 -> 32x24, already multiples of 8.
    assert pixel_values.shape == (1, 3, 24, 32)
    resized = np.asarray(image.resize((32, 24), Image.BILINEAR), np.float64) / 255
    expected = (resized - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    np.testing.assert_allclose(pixel_values[0].permute(1, 2, 0).numpy(), expected, atol=1e-5)
    # Greyscale and RGBA inputs are read as RGB, like the training data.
    assert processor(image.convert("L"), return_tensors="pt").pixel_values.shape == (1, 3, 24, 32)
    assert processor(image.convert("RGBA"), return_tensors="pt").pixel_values.shape == (1, 3, 24, 32)


def test_segmentation_maps_follow_the_label_convention():
    raw = np.array([[0, 1, 2, 11], [11, 5, 0, 3]], dtype=np.uint8)
    image = Image.new("RGB", (4, 2))
    camvid = SSAImageProcessor(do_resize=False, label_remap={11: 255})
    labels = camvid(image, segmentation_maps=Image.fromarray(raw), return_tensors="pt").labels[0]
    np.testing.assert_array_equal(labels.numpy(), [[0, 1, 2, 255], [255, 5, 0, 3]])
    ade = SSAImageProcessor(do_resize=False, do_reduce_labels=True)
    labels = ade(image, segmentation_maps=Image.fromarray(raw), return_tensors="pt").labels[0]
    np.testing.assert_array_equal(labels.numpy(), [[255, 0, 1, 10], [10, 4, 255, 2]])
    assert ade.label_convention == LabelConvention(None, reduce_zero_label=True)
    # Nearest resize keeps label values (no interpolated classes).
    resized = SSAImageProcessor(size={"height": 4, "width": 8}, label_remap={11: 255})(
        image, segmentation_maps=Image.fromarray(raw), return_tensors="pt").labels[0]
    assert resized.shape == (4, 8) and set(resized.unique().tolist()) <= {0, 1, 2, 3, 5, 255}


def test_label_convention_refuses_a_class_at_the_ignore_index():
    with pytest.raises(ValueError, match="reaches the ignore index 255"):
        LabelConvention(256)
    assert LabelConvention(255).num_labels == 255
    with pytest.raises(ValueError, match=r"mask.png: label values \[7\]"):
        LabelConvention(5).apply(np.array([[1, 7]]), source="mask.png")


def test_post_processing_resizes_through_the_input_size_as_mmseg():
    logits = torch.randn(1, 3, 6, 8)
    processor = SSAImageProcessor(size={"shortest_edge": 24, "longest_edge": 64}, size_divisor=8)
    (label_map,) = processor.post_process_semantic_segmentation(type("Out", (), {"logits": logits}),
                                                                target_sizes=[(30, 40)])
    # The input size of a 40x30 image is 32x24: logits -> 24x32 -> 30x40 (align_corners=False), then argmax.
    step = torch.nn.functional.interpolate(logits, size=(24, 32), mode="bilinear", align_corners=False)
    expected = torch.nn.functional.interpolate(step, size=(30, 40), mode="bilinear", align_corners=False)
    assert torch.equal(label_map, expected[0].argmax(0))
    assert processor.post_process_semantic_segmentation(type("Out", (), {"logits": logits}))[0].shape == (6, 8)


def test_round_trip_through_auto_image_processor(tmp_path):
    processor = SSAImageProcessor(size={"shortest_edge": 360, "longest_edge": 480}, label_remap={11: 255},
                                  size_divisor=16)
    processor.save_pretrained(tmp_path)
    assert (tmp_path / "image_processing_ssa.py").exists()  # remote code for machines without ssa_hf
    loaded = AutoImageProcessor.from_pretrained(tmp_path)
    assert type(loaded) is SSAImageProcessor
    assert loaded.label_convention == processor.label_convention
    assert (loaded.size.shortest_edge, loaded.size.longest_edge, loaded.size_divisor) == (360, 480, 16)


def test_from_source_keeps_a_transformers_processor_and_defaults_without_one(tmp_path):
    from transformers import SegformerImageProcessor

    SegformerImageProcessor(do_reduce_labels=True, image_mean=[0.5, 0.4, 0.3],
                            size={"height": 256, "width": 320}).save_pretrained(tmp_path / "segformer")
    kept = SSAImageProcessor.from_source(tmp_path / "segformer")
    assert type(kept) is SSAImageProcessor and kept.do_reduce_labels and list(kept.image_mean) == [0.5, 0.4, 0.3]
    assert kept.resized_size(100, 700) == (256, 320)  # the source's own squash resize
    overridden = SSAImageProcessor.from_source(str(tmp_path / "segformer"), do_reduce_labels=False, ignore_index=0)
    assert not overridden.do_reduce_labels and overridden.ignore_index == 0
    (tmp_path / "bare").mkdir()  # a model folder without preprocessor_config.json
    default = SSAImageProcessor.from_source(tmp_path / "bare")
    assert default.to_dict() == SSAImageProcessor().to_dict()
