"""Run by test_training.py under `torchrun --nproc_per_node 2` (gloo, CPU): a short training run, then each rank
writes its world size, a parameter checksum and the evaluation's pixel count."""

import json
import sys
from pathlib import Path

import torch

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parent)]

from test_training import tiny_recipe  # noqa: E402

from ssa_hf.training import train  # noqa: E402

data, output = sys.argv[1], Path(sys.argv[2])
result = train(tiny_recipe(iterations=3, eval_every=3, save_every=3, teacher_group_size=1), data, output,
               num_workers=0, progress=False, cpu=True)
rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else -1
parameters = torch.cat([p.detach().flatten() for p in result["model"].parameters()])
(output / f"rank{rank}.json").write_text(json.dumps({
    "world_size": result["world_size"],
    "checksum": parameters.double().sum().item(),
    "first_values": parameters[:50].tolist(),
    "labelled_pixels": result["metrics"]["labelled_pixels"],
    "mean_iou": result["metrics"]["mean_iou"],
}))
