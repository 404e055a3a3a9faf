"""One preprocessing and label contract: the number `ssa-seg evaluate` reports is the number `pipeline` users get.

A model folder saved the way training saves it (weights, config, SSAImageProcessor with the recipe's keep-ratio test
resize and label convention) is scored twice: by `ssa-seg evaluate` with no protocol flags (its defaults come from the
folder), and by `pipeline("image-segmentation")` masks rebuilt into label maps and scored independently. The two
mIoUs must be equal, on the non-square ADE20K samples and on CamVid val, and the card must show that number.
"""

import json

import numpy as np
import pytest
import torch
from helpers import TINY_SEGFORMER
from PIL import Image
from transformers import pipeline

from ssa_hf import SSAConfig, SSAForSemanticSegmentation
from ssa_hf.data import load_folder, named_convention
from ssa_hf.training import Recipe
from ssa_hf_cli import main as cli_main


def save_model(folder, recipe_name: str, id2label: dict) -> None:
    """A tiny SSA model with the recipe's processor, as `ssa-seg train` saves its final folder."""
    torch.manual_seed(0)
    config = SSAConfig.from_segformer_config(dict(TINY_SEGFORMER), id2label=id2label)
    model = SSAForSemanticSegmentation(config).eval()
    with torch.no_grad():  # spread the predictions over several classes
        for parameter in model.parameters():
            parameter.normal_(0, 0.5)
    model.save_pretrained(folder)
    recipe = Recipe.load(recipe_name)
    recipe.image_processor(recipe.label_convention()).save_pretrained(folder)


def pipeline_mean_iou(folder, data, split: str, convention) -> tuple[float, int]:
    """mIoU of the pipeline's masks, computed here with its own confusion matrix (numpy, no ssa_hf evaluation)."""
    segmenter = pipeline("image-segmentation", model=str(folder))
    label2id = {name: int(index) for index, name in segmenter.model.config.id2label.items()}
    rows = load_folder(data, split=split, check_sizes=False)
    k = convention.num_labels
    confusion = np.zeros((k, k), np.int64)
    classes_seen = set()
    for row in rows:
        image = row["image"].convert("RGB")
        predicted = np.full((image.height, image.width), -1)
        for result in segmenter(image):
            predicted[np.array(result["mask"]) == 255] = label2id[result["label"]]
        assert (predicted >= 0).all()
        classes_seen |= set(np.unique(predicted).tolist())
        truth = convention.apply(np.array(row["annotation"]))
        valid = truth != convention.ignore_index
        confusion += np.bincount(truth[valid] * k + predicted[valid], minlength=k * k).reshape(k, k)
    intersection = np.diag(confusion)
    union = confusion.sum(0) + confusion.sum(1) - intersection
    with np.errstate(invalid="ignore", divide="ignore"):
        return float(np.nanmean(intersection / union)), len(classes_seen)


def check_evaluate_equals_pipeline(tmp_path, data, recipe_name, id2label, convention, capsys):
    folder = tmp_path / "model"
    save_model(folder, recipe_name, id2label)
    assert cli_main(["evaluate", "--model", str(folder), "--data", str(data), "--device", "cpu"]) == 0
    report = json.loads((folder / "eval_validation.json").read_text())
    expected, classes_predicted = pipeline_mean_iou(folder, data, "validation", convention)
    assert classes_predicted >= 2  # a real comparison, not one constant class
    assert report["mean_iou"] == expected
    capsys.readouterr()
    assert cli_main(["card", str(folder), "--eval", str(folder / "eval_validation.json")]) == 0
    assert f"| {100 * expected:.2f} |" in (folder / "README.md").read_text()
    return report


def test_evaluate_equals_pipeline_on_the_non_square_ade20k_samples(shared_data, tmp_path, capsys):
    ade = shared_data / "ade20k_samples"
    names = [line.split("\t")[-1].split(",")[0].strip() for line in
             (ade / "objectInfo150.txt").read_text().splitlines()[1:]]
    assert len(names) == 150
    report = check_evaluate_equals_pipeline(tmp_path, ade, "ade20k", dict(enumerate(names)),
                                            named_convention("ade20k"), capsys)
    assert report["images"] == 3 and report["protocol"]["resize"] == "keep ratio to fit 2048x512, multiple of 32"
    assert report["label_convention"]["reduce_zero_label"] is True  # taken from the folder, no --convention


def test_evaluate_equals_pipeline_on_camvid_val(shared_data, tmp_path, capsys):
    names = ["Sky", "Building", "Pole", "Road", "Pavement", "Tree", "SignSymbol", "Fence", "Car", "Pedestrian",
             "Bicyclist"]
    report = check_evaluate_equals_pipeline(tmp_path, shared_data / "camvid", "camvid", dict(enumerate(names)),
                                            named_convention("camvid"), capsys)
    assert report["images"] == 101 and report["label_convention"]["remap"] == {"11": 255}


def test_keep_ratio_matters_on_non_square_images(tmp_path):
    """A processor that squashes to the crop size predicts other maps than the keep-ratio one: the contract is not
    a formality."""
    from transformers import SegformerImageProcessor

    from ssa_hf.evaluation import predict_label_map

    save_model(tmp_path / "m", "ade20k", {i: str(i) for i in range(150)})
    model = SSAForSemanticSegmentation.from_pretrained(tmp_path / "m").eval()
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (120, 200, 3), dtype=np.uint8))
    keep = Recipe.load("ade20k").image_processor(named_convention("ade20k"))
    squash = SegformerImageProcessor(size={"height": 512, "width": 512})
    assert not torch.equal(predict_label_map(model, keep, image), predict_label_map(model, squash, image))


def test_pipeline_asks_nothing_and_prints_no_torchvision_warning(tmp_path):
    """With ssa_hf installed, an SSA folder loads through the registered classes: no remote-code question (input()
    is made to fail here), and our processor is the PIL one, so no torchvision fallback warning."""
    import subprocess
    import sys

    save_model(tmp_path / "m", "camvid", {i: f"c{i}" for i in range(11)})
    script = ("import builtins\n"
              "def refuse(*args):\n    raise SystemExit('asked: ' + str(args))\n"
              "builtins.input = refuse\n"
              "import ssa_hf, numpy as np\nfrom PIL import Image\nfrom transformers import pipeline\n"
              f"p = pipeline('image-segmentation', model={str(tmp_path / 'm')!r})\n"
              "print(len(p(Image.new('RGB', (48, 40)))))\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                            env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr[-2000:]
    assert "torchvision" not in result.stderr.lower()


@pytest.fixture(autouse=True)
def _quiet_pipeline_log():
    """transformers logs "not supported for image-segmentation" for every model outside its own tables."""
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity(hf_logging.CRITICAL)
    yield
    hf_logging.set_verbosity(verbosity)
