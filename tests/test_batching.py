"""Batches of images of different sizes: the processor pads them and marks the padding, the model segments each image
on its own pixels, and `pipeline(batch_size=N)` gives the masks of one image at a time (here on the three ADE20K
samples, 683x512, 500x364 and 400x300, whose keep-ratio sizes differ)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from helpers import TINY_SEGFORMER, WITHOUT_SSA_HF
from PIL import Image
from transformers import pipeline

from ssa_hf import SSAConfig, SSAForSemanticSegmentation, SSAImageProcessor
from ssa_hf.pipeline_batching import SSASegmentationPipeline

ID2LABEL = {i: f"class {i}" for i in range(6)}


def spread_model() -> SSAForSemanticSegmentation:
    """A tiny SSA model whose predictions use several classes (a random decoder spreads them)."""
    torch.manual_seed(0)
    model = SSAForSemanticSegmentation(SSAConfig.from_segformer_config(dict(TINY_SEGFORMER), id2label=ID2LABEL))
    with torch.no_grad():
        for parameter in model.decode_head.parameters():
            parameter.normal_(0, 1)
    return model.eval()


@pytest.fixture
def ade_images(shared_data):
    paths = sorted((shared_data / "ade20k_samples" / "images").glob("*.jpg"))
    return [Image.open(path).convert("RGB") for path in paths]


def test_processor_pads_mixed_sizes_and_marks_the_padding():
    processor = SSAImageProcessor(size={"shortest_edge": 48, "longest_edge": 96}, ignore_index=255)
    landscape, portrait = Image.new("RGB", (64, 48), (200, 10, 10)), Image.new("RGB", (48, 64), (10, 200, 10))
    mask = np.zeros((48, 64), np.uint8)
    batch = processor([landscape, portrait], segmentation_maps=[mask, mask.T.copy()], return_tensors="pt")
    assert batch.pixel_values.shape == (2, 3, 64, 64) and batch.pixel_mask.shape == (2, 64, 64)
    assert batch.pixel_mask[0, :48, :].all() and not batch.pixel_mask[0, 48:, :].any()
    assert batch.pixel_mask[1, :, :48].all() and not batch.pixel_mask[1, :, 48:].any()
    assert (batch.pixel_values[0, :, 48:] == 0).all() and (batch.pixel_values[1, :, :, 48:] == 0).all()
    single = processor(portrait, return_tensors="pt")
    assert "pixel_mask" not in single  # one size: nothing padded, nothing marked
    assert torch.equal(batch.pixel_values[1, :, :, :48], single.pixel_values[0])
    assert (batch.labels[0, 48:] == 255).all() and (batch.labels[0, :48] == 0).all()  # padded labels are ignored
    fixed = SSAImageProcessor(size={"shortest_edge": 48, "longest_edge": 96}, pad_size={"height": 80, "width": 96})
    assert fixed(portrait, return_tensors="pt").pixel_mask.shape == (1, 80, 96)


def test_a_padded_batch_gives_the_masks_of_one_image_at_a_time(ade_images):
    model, processor = spread_model(), SSAImageProcessor()  # keep-ratio sizes 512x683, 512x703, 512x683
    sizes = [image.size[::-1] for image in ade_images]
    with torch.no_grad():
        single = [processor.post_process_semantic_segmentation(model(**processor(image, return_tensors="pt")),
                                                               [size])[0] for image, size in zip(ade_images, sizes)]
        batch = processor(ade_images, return_tensors="pt")
        output = model(**batch)
    assert batch.pixel_values.shape[0] == 3 and (batch.pixel_mask == 0).any()
    assert output.logits_sizes.tolist() == [[128, 171], [128, 176], [128, 171]]
    batched = processor.post_process_semantic_segmentation(output, sizes)
    for one, many in zip(single, batched):
        assert torch.equal(one, many)
    assert len(torch.unique(torch.cat([m.flatten() for m in batched]))) >= 3  # the check has several classes to get wrong


def test_padding_never_reaches_the_prototypes():
    """Without the mask, padding changes SSA's image-adapted prototypes and so the logits; with it, they equal the
    unpadded image's."""
    model = spread_model()
    image = torch.randn(1, 3, 64, 96)
    padded = torch.nn.functional.pad(image, (0, 32, 0, 32))
    mask = torch.zeros(1, 96, 128, dtype=torch.long)
    mask[:, :64, :96] = 1
    with torch.no_grad():
        alone = model(pixel_values=image).logits
        masked = model(pixel_values=padded, pixel_mask=mask)
        unmasked = model(pixel_values=padded).logits
    height, width = masked.logits_sizes[0].tolist()
    assert (height, width) == tuple(alone.shape[-2:])
    torch.testing.assert_close(masked.logits[..., :height, :width], alone, rtol=0, atol=0)
    assert not torch.allclose(unmasked[..., :height, :width], alone, atol=1e-3)
    bad = mask.clone()
    bad[:, 0, 0] = 0
    with pytest.raises(ValueError, match="top-left rectangle"):
        model(pixel_values=padded, pixel_mask=bad)
    with pytest.raises(ValueError, match="inference"):
        model(pixel_values=padded, pixel_mask=mask, labels=torch.zeros(1, 96, 128, dtype=torch.long))


def test_pipeline_batches_images_of_different_sizes(tmp_path, ade_images):
    model = spread_model()
    model.save_pretrained(tmp_path)
    SSAImageProcessor().save_pretrained(tmp_path)
    segmenter = pipeline("image-segmentation", model=str(tmp_path))
    assert isinstance(segmenter, SSASegmentationPipeline)
    one_at_a_time = [segmenter(image) for image in ade_images]
    for batch_size in (2, 3):
        batched = segmenter(ade_images, batch_size=batch_size)
        for single, many in zip(one_at_a_time, batched):
            assert [r["label"] for r in single] == [r["label"] for r in many]
            for a, b in zip(single, many):
                assert np.array_equal(np.asarray(a["mask"]), np.asarray(b["mask"]))
    assert sum(len(result) for result in one_at_a_time) >= 6


def test_remote_code_pipeline_batches_with_a_fixed_pad_size(tmp_path, ade_images):
    """Without ssa_hf (remote code), transformers' own pipeline concatenates: a processor with `pad_size` gives it
    images of one size, and the model still segments each on its own pixels."""
    model = spread_model()
    model.save_pretrained(tmp_path / "model")
    SSAImageProcessor(pad_size={"height": 512, "width": 704}).save_pretrained(tmp_path / "model")
    for index, image in enumerate(ade_images):
        image.save(tmp_path / f"{index}.png")
    script = WITHOUT_SSA_HF + (
        "import json, numpy as np\nfrom PIL import Image\nfrom transformers import pipeline\n"
        f"segmenter = pipeline('image-segmentation', model={str(tmp_path / 'model')!r}, trust_remote_code=True)\n"
        f"images = [Image.open({str(tmp_path)!r} + f'/{{i}}.png') for i in range(3)]\n"
        "one = [segmenter(image) for image in images]\n"
        "many = segmenter(images, batch_size=3)\n"
        "same = all([r['label'] for r in a] == [r['label'] for r in b] and all(np.array_equal(np.asarray(x['mask']), "
        "np.asarray(y['mask'])) for x, y in zip(a, b)) for a, b in zip(one, many))\n"
        "print(json.dumps({'same': same, 'pipeline': type(segmenter).__name__}))\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf_home"), TRANSFORMERS_VERBOSITY="error")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, env=env,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report == {"same": True, "pipeline": "ImageSegmentationPipeline"}
