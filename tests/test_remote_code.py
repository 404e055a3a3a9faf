"""A saved SSA folder used as someone on another machine would: a fresh Python process in another directory, no
PYTHONPATH, `ssa_hf` not importable, the hub offline; loaded with trust_remote_code through the Auto class and the
image-segmentation pipeline."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import torch
from helpers import TINY_SEGFORMER, WITHOUT_SSA_HF
from PIL import Image
from transformers import SegformerImageProcessor, pipeline

from ssa_hf import SSAConfig, SSAForSemanticSegmentation

ID2LABEL = {0: "road", 1: "sky", 2: "tree", 3: "car"}

FRESH_PROCESS = WITHOUT_SSA_HF + textwrap.dedent(
    """
    import json
    import numpy as np
    import torch
    from PIL import Image
    from transformers import AutoModelForSemanticSegmentation, pipeline

    folder = sys.argv[1]
    model = AutoModelForSemanticSegmentation.from_pretrained(folder, trust_remote_code=True).eval()
    assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
    pixel_values = torch.from_numpy(np.load(folder + "/probe_pixels.npy"))
    with torch.no_grad():
        logits = model(pixel_values=pixel_values).logits
    np.save(sys.argv[2] + "/remote_logits.npy", logits.numpy())

    segmenter = pipeline("image-segmentation", model=folder, trust_remote_code=True)
    image = Image.open(folder + "/probe.png")
    results = segmenter(image)
    json.dump(
        {"labels": [r["label"] for r in results], "mask_sizes": [list(r["mask"].size) for r in results],
         "mask_modes": [r["mask"].mode for r in results]},
        open(sys.argv[2] + "/pipeline.json", "w"),
    )
    """
)


def test_saved_folder_loads_as_remote_code_in_a_fresh_process(tmp_path):
    folder, workdir = tmp_path / "ssa-tiny", tmp_path / "elsewhere"
    workdir.mkdir()
    config = SSAConfig.from_segformer_config(
        dict(TINY_SEGFORMER),
        id2label=ID2LABEL,
    )
    model = SSAForSemanticSegmentation(config).eval()
    with torch.no_grad():  # a distinctive classifier so the pipeline's masks use several classes
        model.decode_head.classifier.bias.copy_(torch.tensor([0.0, 0.5, -0.5, 0.2]))
    model.save_pretrained(folder)
    SegformerImageProcessor(size={"height": 64, "width": 64}).save_pretrained(folder)
    saved_config = json.loads((folder / "config.json").read_text())
    assert saved_config["auto_map"] == {
        "AutoConfig": "configuration_ssa.SSAConfig",
        "AutoModelForSemanticSegmentation": "modeling_ssa.SSAForSemanticSegmentation",
    }

    pixel_values = torch.randn(2, 3, 64, 80)
    np.save(folder / "probe_pixels.npy", pixel_values.numpy())
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (48, 72, 3), dtype=np.uint8)).save(folder / "probe.png")
    with torch.no_grad():
        expected = model(pixel_values=pixel_values).logits.numpy()

    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf_home"), TRANSFORMERS_VERBOSITY="error")
    script = workdir / "use_model.py"
    script.write_text(FRESH_PROCESS)
    result = subprocess.run(
        [sys.executable, str(script), str(folder), str(workdir)], cwd=workdir, env=env,
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    np.testing.assert_array_equal(np.load(workdir / "remote_logits.npy"), expected)
    found = json.loads((workdir / "pipeline.json").read_text())
    assert found["labels"] and set(found["labels"]) <= set(ID2LABEL.values())
    assert all(size == [72, 48] for size in found["mask_sizes"])  # PIL size is (width, height)
    assert set(found["mask_modes"]) == {"L"}


def test_pipeline_in_process_matches_the_model_argmax(tmp_path):
    config = SSAConfig.from_segformer_config(
        dict(TINY_SEGFORMER),
        id2label=ID2LABEL,
    )
    model = SSAForSemanticSegmentation(config).eval()
    processor = SegformerImageProcessor(size={"height": 64, "width": 64})
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    image = Image.fromarray(np.random.default_rng(1).integers(0, 255, (40, 56, 3), dtype=np.uint8))
    segmenter = pipeline("image-segmentation", model=str(tmp_path))
    results = segmenter(image)

    inputs = processor(images=image, return_tensors="pt")
    with torch.no_grad():
        logits = model(**inputs).logits
    expected = processor.post_process_semantic_segmentation(
        type("Out", (), {"logits": logits})(), target_sizes=[(40, 56)]
    )[0]
    for result in results:
        class_id = config.label2id[result["label"]]
        np.testing.assert_array_equal(np.array(result["mask"]) > 0, (expected == class_id).numpy())
