"""Before/after in one run: the model code of a git revision against the working tree's, with the same weights, timed
as interleaved pairs in one process after warm-up (SSA-B0, 150 classes, CPU): inference at 512x512 and a training step
(batch 2). The revision's remote-code files are copied into a temporary package, so both versions load side by side.

    python benchmarks/bench_revision.py REV [--pairs 16] [--train-pairs 5] [--threads 2]
"""

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_io import write_results  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
def load_revision(revision: str, folder: Path):
    """The revision's SSAConfig and SSAForSemanticSegmentation, from its remote-code files (package `ssa_hf_rev`):
    the flat `ssa_hf/model/` folder, or for older revisions the `*_ssa.py` files at the package's top level."""
    package = folder / "ssa_hf_rev"
    package.mkdir()
    (package / "__init__.py").write_text("")
    listing = subprocess.run(["git", "-C", str(REPO), "ls-tree", "--name-only", revision, "ssa_hf/model/",
                              "ssa_hf/"], capture_output=True, text=True, check=True).stdout.split()
    in_model_folder = any(path.startswith("ssa_hf/model/") for path in listing)
    for path in listing:
        name = Path(path).name
        if path.endswith(".py") and name != "__init__.py" and (path.startswith("ssa_hf/model/") if in_model_folder
                                                                else name.endswith("_ssa.py")):
            shown = subprocess.run(["git", "-C", str(REPO), "show", f"{revision}:{path}"], capture_output=True,
                                   text=True, check=True)
            (package / name).write_text(shown.stdout)
    sys.path.insert(0, str(folder))
    from ssa_hf_rev.configuration_ssa import SSAConfig
    from ssa_hf_rev.modeling_ssa import SSAForSemanticSegmentation

    return SSAConfig, SSAForSemanticSegmentation


def pairs(before, after, count: int, warmup: int = 2) -> list[float]:
    for _ in range(warmup):
        before()
        after()
    ratios = []
    for _ in range(count):
        start = time.perf_counter()
        before()
        middle = time.perf_counter()
        after()
        ratios.append((time.perf_counter() - middle) / (middle - start))
    return ratios


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("revision")
    parser.add_argument("--pairs", type=int, default=16)
    parser.add_argument("--train-pairs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from ssa_hf import SSAConfig, SSAForSemanticSegmentation

    with tempfile.TemporaryDirectory() as folder:
        OldConfig, OldModel = load_revision(args.revision, Path(folder))
        torch.manual_seed(0)
        new = SSAForSemanticSegmentation(SSAConfig.from_segformer_config("b0", num_labels=150)).eval()
        old = OldModel(OldConfig.from_segformer_config("b0", num_labels=150)).eval()
        old.load_state_dict(new.state_dict())
        pixel_values = torch.randn(1, 3, 512, 512)
        with torch.inference_mode():
            difference = (old(pixel_values=pixel_values).logits - new(pixel_values=pixel_values).logits).abs().max()

        def inference(model):
            def run():
                with torch.inference_mode():
                    model(pixel_values=pixel_values)
            return run

        inference_ratios = pairs(inference(old), inference(new), args.pairs)
        batch = torch.randn(2, 3, 512, 512)
        labels = torch.randint(0, 150, (2, 512, 512))
        labels[:, :32] = 255

        def step(model):
            model.train()

            def run():
                model.zero_grad(set_to_none=True)
                model(pixel_values=batch, labels=labels).loss.backward()
            return run

        training_ratios = pairs(step(old), step(new), args.train_pairs, warmup=1)
    lines = [f"Working tree against {args.revision}: SSA-B0, 150 classes, CPU, {args.threads} threads; time of the "
             f"working tree / time of the revision, interleaved pairs (max logit difference {float(difference):.1e})",
             "", "| measurement | median ratio | spread (min - max) | pairs |", "|---|---|---|---|"]
    for name, ratios in (("inference 512x512, batch 1", inference_ratios),
                         ("training step 512x512, batch 2", training_ratios)):
        lines.append(f"| {name} | {statistics.median(ratios):.3f} | {min(ratios):.3f} - {max(ratios):.3f} | "
                     f"{len(ratios)} |")
    lines.append(f"\nCommand: python benchmarks/bench_revision.py {args.revision}")
    write_results("bench_revision", "\n".join(lines),
                  {"revision": args.revision, "inference": inference_ratios, "training": training_ratios})


if __name__ == "__main__":
    main()
