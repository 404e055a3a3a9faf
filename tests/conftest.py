import json
import os
from pathlib import Path

import pytest
import torch

SHARED_DATA = Path(os.environ.get("SSA_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


@pytest.fixture
def shared_data() -> Path:
    """The real data beside the project (../shared/data); tests that need it skip when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} is absent (set SSA_SHARED_DATA to point at it)")
    return SHARED_DATA


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    """A tiny generated street-scene dataset (8 training, 3 validation pairs of 64x80)."""
    from ssa_hf.synthetic import generate

    return generate(tmp_path_factory.mktemp("scenes"), num_train=8, num_val=3, size=(64, 80), seed=1)


@pytest.fixture
def recipe_file(tmp_path):
    """A recipe JSON for `scenes`: the b0 encoder, 64x64 crops, 6 iterations of batch 2."""
    from ssa_hf.synthetic import CLASSES

    path = tmp_path / "tiny.json"
    path.write_text(json.dumps({
        "name": "tiny-scenes", "num_labels": len(CLASSES), "id2label": dict(enumerate(CLASSES)), "encoder": "b0",
        "crop_size": [64, 64], "scale": [80, 64], "ratio_range": [0.75, 1.25], "eval_scale": [80, 64],
        "iterations": 6, "batch_size": 2, "warmup_iters": 100, "eval_every": 3, "save_every": 3, "lr": 1e-3}))
    return path


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    torch.set_num_threads(min(2, torch.get_num_threads()))
