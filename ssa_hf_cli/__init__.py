"""`ssa-seg`: train, evaluate, run, convert, export and publish SSA segmentation models (and their demo Spaces) from
the command line.

    ssa-seg demo                                                    # the main job on generated scenes, no download
    ssa-seg train --recipe camvid --data ../shared/data/camvid --output runs/camvid
    ssa-seg evaluate --model runs/camvid/final --data ../shared/data/camvid
    ssa-seg predict photo.jpg more/*.png --model runs/camvid/final --output predictions/
    ssa-seg convert segformer.b0.512x512.ade.160k.pth --output ssa-b0-ade --convention ade20k
    ssa-seg export-onnx --model ssa-b0-ade --output ssa-b0-ade.onnx
    ssa-seg card runs/camvid/final --eval runs/camvid/final/eval_validation.json
    ssa-seg publish runs/camvid/final --repo-id me/ssa-b0-camvid --eval eval.json --dry-run upload/
    ssa-seg space me/ssa-b0-camvid --output space/ --example street.jpg       # a Gradio app for a hub Space

`--model` takes a hub id or a local folder. Errors name the file or value at fault and exit with status 2; nothing
existing is overwritten without `--overwrite`; code inside a model folder runs only with `--trust-remote-code`.

This module only parses arguments: it imports neither torch nor transformers, so `--help` is fast. The work is done
by `ssa_hf.commands`, imported once a command runs.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

CONVENTION_NAMES = ("ade20k", "camvid", "coco_stuff_10k", "pascal_context_59")  # ssa_hf.data.CONVENTIONS


def _package_dir() -> Path:
    """The ssa_hf source folder, found without importing it (importing it imports torch)."""
    spec = importlib.util.find_spec("ssa_hf")
    return Path(next(iter(spec.submodule_search_locations)))


def recipe_names() -> list[str]:
    return sorted(p.stem for p in (_package_dir() / "recipes").glob("*.json"))


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed_version

    try:
        return installed_version("ssa-hf")
    except PackageNotFoundError:  # a source checkout on sys.path
        text = (_package_dir() / "version.py").read_text()
        return text.split('__version__ = "')[1].split('"')[0]


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    args.argv = ["ssa-seg", *argv]  # recorded in run.json
    from ssa_hf.commands import CommandError

    try:
        result = args.handler(args)
    except (CommandError, ValueError, OSError, ImportError, RuntimeError) as error:  # clear messages already
        print(f"ssa-seg {args.command}: error: {error}", file=sys.stderr)
        return 2
    return result if isinstance(result, int) else 0


def _handler(name: str):
    """The function of `ssa_hf.commands` that runs a command, imported only when it runs."""

    def run(args):
        from ssa_hf import commands

        return getattr(commands, name)(args)

    return run


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ssa-seg", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"ssa-seg (ssa-hf) {version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = commands.add_parser("train", help="train SSA (or --baseline SegFormer) with a recipe, on one or more "
                                              "devices (accelerate launch)")
    _add_train_arguments(train)
    train.set_defaults(handler=_handler("cmd_train"))

    demo = commands.add_parser("demo", help="the main job: SSA-B0 vs SegFormer-B0 on generated scenes (or --data "
                                            "CamVid), overlays, a pipeline check")
    demo.add_argument("--data", type=Path, help="a CamVid-layout folder; default: generated street scenes")
    demo.add_argument("--iterations", type=int, default=300)
    demo.add_argument("--output", type=Path, default=Path("outputs/demo"),
                      help="a new run-<time> folder is made inside it")
    demo.add_argument("--num-workers", type=int, default=1)
    demo.add_argument("--eval-limit", type=int, help="evaluate on the first N validation images only")
    demo.set_defaults(handler=_handler("cmd_demo"))

    evaluate = commands.add_parser("evaluate", help="mIoU on a dataset split with the model folder's preprocessing "
                                                    "(or sliding window, multi-scale, flip)")
    _add_evaluate_arguments(evaluate)
    evaluate.set_defaults(handler=_handler("cmd_evaluate"))

    predict = commands.add_parser("predict", help="segment images: colour overlay with a legend + label PNG each")
    predict.add_argument("images", nargs="+", type=Path, help="image files or folders of images")
    predict.add_argument("--model", required=True, help="hub id or save_pretrained folder")
    predict.add_argument("--output", "--out", dest="output", required=True, type=Path, help="output folder")
    predict.add_argument("--alpha", type=float, default=0.5, help="opacity of the class colours in the overlay")
    predict.add_argument("--device", default=None, help="torch device (default: cuda when available)")
    predict.add_argument("--overwrite", action="store_true", help="replace existing output files")
    _add_trust_argument(predict)
    predict.set_defaults(handler=_handler("cmd_predict"))

    convert = commands.add_parser("convert", help="NVlabs/mmseg SegFormer, official SSA, or transformers SegFormer "
                                                  "/ UperNet -> SSA save_pretrained folder with its processor")
    convert.add_argument("source", help=".pth/.bin/.safetensors file, or a transformers SegFormer or UperNet hub id "
                                        "or folder")
    convert.add_argument("--output", required=True, type=Path)
    convert.add_argument("--format", dest="source_format", help="source layout (default: detected from the keys)")
    convert.add_argument("--num-labels", type=int, help="class count (needed for encoder-only checkpoints)")
    convert.add_argument("--id2label", type=Path, help="JSON file {index: name} of the classes")
    convert.add_argument("--convention", choices=CONVENTION_NAMES,
                         help="label convention saved in the image processor (default: the source folder's)")
    convert.add_argument("--allow-mismatch", action="store_true",
                         help="convert even with unexpected or missing keys (they are listed)")
    convert.add_argument("--overwrite", action="store_true")
    convert.set_defaults(handler=_handler("cmd_convert"))

    export = commands.add_parser("export-onnx", help="ONNX graph with dynamic height/width, checked with onnxruntime")
    export.add_argument("--model", required=True)
    export.add_argument("--output", required=True, type=Path)
    export.add_argument("--height", type=int, default=512, help="example input height")
    export.add_argument("--width", type=int, default=512, help="example input width")
    export.add_argument("--static", action="store_true",
                        help="fixed height and width (for backbones/decoders that do not export with dynamic sizes)")
    export.add_argument("--opset", type=int, default=20, help="ONNX opset (20: GELU as one Gelu node)")
    export.add_argument("--tolerance", type=float, default=1e-4, help="max |logit difference| against PyTorch")
    export.add_argument("--overwrite", action="store_true")
    _add_trust_argument(export)
    export.set_defaults(handler=_handler("cmd_export_onnx"))

    build = commands.add_parser("build-dataset", help="ADE20K / COCO-Stuff-10K / PASCAL-Context-59 official "
                                                      "download -> DatasetDict in the training convention")
    build.add_argument("name", choices=["ade20k", "coco_stuff_10k", "pascal_context_59"])
    build.add_argument("sources", nargs="+", type=Path,
                       help="ade20k: ADEChallengeData2016.zip or folder; coco_stuff_10k: cocostuff-10k-v1.1.zip or "
                            "folder; pascal_context_59: the VOC2010 folder (or tar), then the PASCAL-Context "
                            "annotations (trainval.tar.gz or folder)")
    build.add_argument("--output", required=True, type=Path, help="save_to_disk folder (with README.md card)")
    build.add_argument("--overwrite", action="store_true")
    build.add_argument("--push-to-hub", metavar="REPO_ID", help="then upload as parquet shards with the card")
    build.add_argument("--private", action="store_true")
    build.add_argument("--token")
    build.set_defaults(handler=_handler("cmd_build_dataset"))

    card = commands.add_parser("card", help="write a model card (README.md) from the run and evaluation JSONs")
    _add_card_arguments(card)
    card.add_argument("--output", type=Path, help="default: MODEL/README.md")
    card.add_argument("--overwrite", action="store_true")
    card.set_defaults(handler=_handler("cmd_card"))

    publish = commands.add_parser("publish", help="parity check, card, then upload to the hub (or --dry-run)")
    _add_card_arguments(publish)
    publish.add_argument("--repo-id", required=True, help="user/name on the hub")
    publish.add_argument("--private", action="store_true")
    publish.add_argument("--create-pr", action="store_true", help="open a pull request instead of committing")
    publish.add_argument("--token", help="hub token (default: the logged-in one)")
    publish.add_argument("--commit-message", default="Upload SSA segmentation model")
    publish.add_argument("--dry-run", type=Path, metavar="DIR",
                         help="write exactly the folder that would be uploaded to DIR and stop")
    publish.add_argument("--overwrite", action="store_true")
    publish.add_argument("--space", action="store_true",
                         help="also create a Gradio Space beside the model (as `ssa-seg space`); with --dry-run, "
                              "DIR/model and DIR/space are written")
    publish.add_argument("--space-id", help="user/name of the Space (default: REPO_ID-demo)")
    publish.add_argument("--space-example", type=Path, action="append", default=[], metavar="IMAGE",
                         help="an example image for the Space (repeatable; default: one generated scene)")
    _add_space_loading_arguments(publish)
    publish.set_defaults(handler=_handler("cmd_publish"))

    space = commands.add_parser("space", help="write a Gradio app for a hub Space (app.py, requirements.txt, "
                                              "README with Space metadata, examples)")
    space.add_argument("model", help="hub id of the model the Space demonstrates, or a local SSA folder to try it")
    space.add_argument("--output", type=Path, required=True, help="the Space folder to write")
    space.add_argument("--example", type=Path, action="append", default=[], metavar="IMAGE",
                       help="an example image offered by the app (repeatable; default: one generated scene)")
    space.add_argument("--title", help="the Space's title (default: from the model name)")
    space.add_argument("--overwrite", action="store_true", help="replace an earlier Space folder")
    _add_space_loading_arguments(space)
    space.set_defaults(handler=_handler("cmd_space"))
    return parser


def _add_space_loading_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--app-trusts-remote-code", action="store_true",
                        help="the app loads the model with trust_remote_code=True (the code in the model's "
                             "repository) instead of the ssa_hf package")
    parser.add_argument("--requirement", help="the pip requirement that provides ssa_hf in the Space "
                                              "(default: ssa-hf==VERSION), e.g. a git URL")


def _add_trust_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--trust-remote-code", action="store_true",
                        help="allow a model folder's own Python code to run (needed for non-SSA custom models)")


def _add_train_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--recipe", required=True,
                        help=f"a shipped recipe ({', '.join(recipe_names())}) or a recipe JSON file")
    parser.add_argument("--data", required=True, help="dataset folder, save_to_disk folder, parquet copy or hub id")
    parser.add_argument("--output", required=True, type=Path, help="the run folder (new, or the run to --resume)")
    parser.add_argument("--resume", help="a checkpoints/step_N folder of this run, or 'latest'")
    parser.add_argument("--baseline", action="store_true", help="train the plain model with the same recipe")
    parser.add_argument("--mixed-precision", default="no", choices=["no", "fp16", "bf16"])
    overrides = parser.add_argument_group("recipe overrides (stored in run.json)")
    overrides.add_argument("--iterations", type=int, help="schedule length")
    overrides.add_argument("--lr", type=float, help="base learning rate")
    overrides.add_argument("--warmup-iters", type=int, help="linear warm-up length")
    overrides.add_argument("--seed", type=int)
    overrides.add_argument("--batch-size", type=int)
    overrides.add_argument("--gradient-accumulation-steps", type=int)
    overrides.add_argument("--eval-every", type=int)
    overrides.add_argument("--save-every", type=int)
    overrides.add_argument("--encoder", help="MiT variant (b0..b5) or a SegFormer hub id / folder")
    parser.add_argument("--max-iterations", type=int, help="stop after N iterations (the schedule keeps its length)")
    parser.add_argument("--eval-limit", type=int, help="evaluate on the first N validation images only")
    parser.add_argument("--streaming", action="store_true",
                        help="read a hub dataset or parquet copy as a stream (datasets larger than the disk)")
    parser.add_argument("--num-workers", type=int, default=2, help="data-loading processes")
    parser.add_argument("--cpu", action="store_true", help="train on the CPU even where a GPU is present")
    parser.add_argument("--log-with", default="auto",
                        help="accelerate tracker: tensorboard, wandb, ... or none (default: tensorboard if installed)")


def _add_evaluate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="a save_pretrained folder or hub id")
    parser.add_argument("--data", required=True, help="dataset folder, save_to_disk folder or hub id")
    parser.add_argument("--split", default="validation")
    parser.add_argument("--convention", choices=CONVENTION_NAMES,
                        help="label convention of raw annotations (default: the model folder's image processor's)")
    parser.add_argument("--scale", type=int, nargs=2, help="keep-ratio test scale (default: the folder's processor)")
    parser.add_argument("--size-divisor", type=int, help="round the test size up to multiples (0: none)")
    parser.add_argument("--mode", default="whole", choices=["whole", "slide"])
    parser.add_argument("--crop", type=int, nargs=2, default=(512, 512), help="sliding window (height, width)")
    parser.add_argument("--stride", type=int, nargs=2, default=(341, 341))
    parser.add_argument("--scales", type=float, nargs="+", default=(1.0,))
    parser.add_argument("--flip", action="store_true")
    parser.add_argument("--limit", type=int, help="evaluate only the first N images (cards refuse such results)")
    parser.add_argument("--streaming", action="store_true", help="read a hub dataset or parquet copy as a stream")
    parser.add_argument("--device", default=None)
    parser.add_argument("--output", type=Path, help="JSON file (default: <model>/eval_<split>.json when local)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing evaluation JSON")
    _add_trust_argument(parser)


def _add_card_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="save_pretrained folder of the model")
    parser.add_argument("--eval", type=Path, action="append", default=[],
                        help="evaluation JSON from `ssa-seg evaluate` (repeatable: one per protocol)")
    parser.add_argument("--allow-partial-eval", action="store_true",
                        help="accept an evaluation made with --limit (the card marks it partial)")
    parser.add_argument("--dataset", help="hub dataset id the model was trained/evaluated on (card metadata)")
    parser.add_argument("--recipe", type=Path, help="recipe JSON (default: the run's effective recipe, from "
                                                    "MODEL/training_run.json)")
    parser.add_argument("--license", default="apache-2.0")
    parser.add_argument("--model-name", help="title of the card (default: the run's name, else the folder name)")
    _add_trust_argument(parser)
