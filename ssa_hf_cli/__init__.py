"""`ssa-seg`: train, evaluate, run, convert, export and publish SSA segmentation models (and their demo Spaces) from
the command line.

    ssa-seg demo                                                    # the main job on generated scenes, no download
    ssa-seg train --recipe camvid --data data/camvid --output runs/camvid
    ssa-seg evaluate --model runs/camvid/final --data data/camvid
    ssa-seg predict photo.jpg more/*.png --model runs/camvid/final --output predictions/
    ssa-seg convert segformer.b0.512x512.ade.160k.pth --output ssa-b0-ade --convention ade20k
    ssa-seg export-onnx --model ssa-b0-ade --output ssa-b0-ade.onnx
    ssa-seg card runs/camvid/final --eval runs/camvid/final/eval_validation.json
    ssa-seg publish runs/camvid/final --repo-id me/ssa-b0-camvid --eval eval.json --dry-run upload/
    ssa-seg space me/ssa-b0-camvid --output space/ --example street.jpg       # a Gradio app for a hub Space

`--model` takes a hub id or a local folder. Errors name the file or value at fault and exit with status 2; nothing
existing is overwritten without `--overwrite`; code inside a model folder runs only with `--trust-remote-code`.
"""
# This module only parses arguments: it imports neither torch nor transformers, so `--help` is fast. The work is done
# by `ssa_hf.commands`, imported once a command runs.

from __future__ import annotations

import argparse
import importlib.util
import sys
import traceback
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
    """Run one command; returns the exit status: 0, 2 for an error we explain in one line (a bad file, value or
    folder), 1 for an unexpected one, whose traceback is printed for a bug report."""
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    args.argv = ["ssa-seg", *argv]  # recorded in run.json
    try:
        result = args.handler(args)
    except KeyboardInterrupt:
        print(f"ssa-seg {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # noqa: BLE001 - sorted below: ours in one line, the rest with the traceback
        if not is_explained(error):
            traceback.print_exc()
            print(f"ssa-seg {args.command}: unexpected error; the traceback above is what a bug report needs",
                  file=sys.stderr)
            return 1
        print(f"ssa-seg {args.command}: error: {error}", file=sys.stderr)
        return 2
    return result if isinstance(result, int) else 0


def is_explained(error: BaseException) -> bool:
    """An error raised on purpose with a message for the user: a `CommandError`, or any error raised by a `raise`
    statement of this package's own code (a bad file, value, folder, a missing extra, an export that cannot work).
    Errors raised inside torch or another library, even when our code called it, are unexpected. The raise site is
    read from the bytecode, not from the source file, which may have changed since it was imported."""
    import dis

    from ssa_hf.commands import CommandError

    if isinstance(error, CommandError):
        return True
    last = error.__traceback__
    if last is None:
        return False
    while last.tb_next is not None:
        last = last.tb_next
    code = last.tb_frame.f_code
    instruction = next((i.opname for i in dis.get_instructions(code) if i.offset == last.tb_lasti), None)
    if instruction not in ("RAISE_VARARGS", "RERAISE"):
        return False
    raised_in = Path(code.co_filename).resolve()
    return any(raised_in.is_relative_to(root) for root in _own_source_folders())


def _own_source_folders() -> list[Path]:
    return [_package_dir().resolve(), Path(__file__).resolve().parent]


def _handler(name: str):
    """The function of `ssa_hf.commands` that runs a command, imported only when it runs."""

    def run(args):
        from ssa_hf import commands

        return getattr(commands, name)(args)

    return run


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the descriptions' line breaks and shows each option's default, where it has one worth showing."""

    def _get_help_string(self, action):
        help_text = action.help or ""
        default = action.default
        if ("%(default)" in help_text or default in (None, False, argparse.SUPPRESS) or default == []
                or not action.option_strings or "default:" in help_text):
            return help_text
        shown = " ".join(map(str, default)) if isinstance(default, (list, tuple)) else default
        return f"{help_text} (default: {shown})"


def _at_least(minimum: int | float, kind=int):
    """An argparse type: a number of `kind` that is at least `minimum`, with a message naming the value."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, got "
                                             f"{text!r}") from None
        if value < minimum or (kind is float and value != value):
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {text}")
        return value

    return parse


def _positive(kind=float):
    def parse(text: str):
        value = _at_least(0, kind)(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be positive, got {text}")
        return value

    return parse


def _fraction(text: str) -> float:
    value = _at_least(0.0, float)(text)
    if value > 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value


POSITIVE_INT, NON_NEGATIVE_INT = _at_least(1), _at_least(0)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ssa-seg", description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--version", action="version", version=f"ssa-seg (ssa-hf) {version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        return commands.add_parser(name, help=help_text, description=help_text, formatter_class=HelpFormatter)

    train = command("train", "train SSA (or --baseline, the plain model) with a recipe, on one or more devices "
                             "(accelerate launch -m ssa_hf_cli train ...)")
    _add_train_arguments(train)
    train.set_defaults(handler=_handler("cmd_train"))

    demo = command("demo", "the main job: SSA-B0 vs SegFormer-B0 on generated scenes (or --data CamVid), overlays, "
                           "a pipeline check")
    demo.add_argument("--data", type=Path, help="a CamVid-layout folder (default: generated street scenes)")
    demo.add_argument("--iterations", type=POSITIVE_INT, default=300, help="training iterations of each model")
    demo.add_argument("--output", type=Path, default=Path("outputs/demo"),
                      help="a new run-<time> folder is made inside it")
    demo.add_argument("--num-workers", type=NON_NEGATIVE_INT, default=1, help="data-loading processes")
    demo.add_argument("--eval-limit", type=POSITIVE_INT, help="evaluate on the first N validation images only")
    demo.add_argument("--seed", type=NON_NEGATIVE_INT, default=0, help="seed of both trainings (the same for each)")
    demo.set_defaults(handler=_handler("cmd_demo"))

    evaluate = command("evaluate", "mIoU on a dataset split with the model folder's preprocessing (or sliding "
                                   "window, multi-scale, flip)")
    _add_evaluate_arguments(evaluate)
    evaluate.set_defaults(handler=_handler("cmd_evaluate"))

    predict = command("predict", "segment images: a colour overlay with a legend and a label PNG for each")
    predict.add_argument("images", nargs="+", type=Path, help="image files or folders of images")
    predict.add_argument("--model", required=True, help="hub id or save_pretrained folder")
    predict.add_argument("--output", "--out", dest="output", required=True, type=Path, help="output folder")
    predict.add_argument("--alpha", type=_fraction, default=0.5, help="opacity of the class colours in the overlay")
    predict.add_argument("--device", help="torch device, e.g. cpu, cuda, cuda:1 (default: cuda when available)")
    predict.add_argument("--overwrite", action="store_true", help="replace existing output files")
    _add_trust_argument(predict)
    predict.set_defaults(handler=_handler("cmd_predict"))

    convert = command("convert", "official SSA (SegFormer, SeaFormer, SegNeXt, CGRSeg, AFFormer) or plain "
                                 "segmenters, NVlabs/mmseg SegFormer, SeaFormer / MSCAN / EfficientFormerV2 / AFFormer "
                                 "ImageNet encoders, or transformers SegFormer / UperNet -> an SSA save_pretrained "
                                 "folder with its image processor")
    convert.add_argument("source", help=".pth/.bin/.safetensors file, or a transformers SegFormer or UperNet hub id "
                                        "or folder")
    convert.add_argument("--output", required=True, type=Path, help="the SSA model folder to write (new or empty)")
    convert.add_argument("--format", dest="source_format", help="source layout (default: detected from the keys)")
    convert.add_argument("--num-labels", type=POSITIVE_INT, help="class count (needed for encoder-only checkpoints)")
    convert.add_argument("--id2label", type=Path, help="JSON file {index: name} of the classes")
    convert.add_argument("--convention", choices=CONVENTION_NAMES,
                         help="label convention saved in the image processor (default: the source folder's)")
    convert.add_argument("--baseline", action="store_true",
                         help="keep a plain segmenter's own classifier (and CGRSeg's second stage): the published "
                              "model, rather than SSA with fresh SSA layers")
    convert.add_argument("--allow-mismatch", action="store_true",
                         help="convert even with unexpected or missing keys (they are listed)")
    convert.add_argument("--overwrite", action="store_true", help="write into a folder that is not empty")
    convert.set_defaults(handler=_handler("cmd_convert"))

    export = command("export-onnx", "an ONNX graph with dynamic height/width, checked against PyTorch with "
                                    "onnxruntime (needs the onnx extra)")
    export.add_argument("--model", required=True, help="hub id or save_pretrained folder of the model")
    export.add_argument("--output", required=True, type=Path, help="the .onnx file to write")
    export.add_argument("--height", type=POSITIVE_INT, default=512, help="example input height")
    export.add_argument("--width", type=POSITIVE_INT, default=512, help="example input width")
    export.add_argument("--static", action="store_true",
                        help="fixed height and width (for backbones/decoders that do not export with dynamic sizes)")
    export.add_argument("--opset", type=POSITIVE_INT, default=20, help="ONNX opset (20: GELU as one Gelu node)")
    export.add_argument("--tolerance", type=_positive(), default=1e-4, help="max |logit difference| against PyTorch")
    export.add_argument("--overwrite", action="store_true", help="replace an existing .onnx file")
    _add_trust_argument(export)
    export.set_defaults(handler=_handler("cmd_export_onnx"))

    build = command("build-dataset", "ADE20K / COCO-Stuff-10K / PASCAL-Context-59 official downloads -> a "
                                     "DatasetDict in the training convention")
    build.add_argument("name", choices=["ade20k", "coco_stuff_10k", "pascal_context_59"], help="the dataset")
    build.add_argument("sources", nargs="+", type=Path,
                       help="ade20k: ADEChallengeData2016.zip or folder; coco_stuff_10k: cocostuff-10k-v1.1.zip or "
                            "folder; pascal_context_59: the VOC2010 folder (or tar), then the PASCAL-Context "
                            "annotations (trainval.tar.gz or folder)")
    build.add_argument("--output", required=True, type=Path, help="save_to_disk folder (with a README.md card)")
    build.add_argument("--overwrite", action="store_true", help="replace an earlier build in --output")
    build.add_argument("--push-to-hub", metavar="REPO_ID", help="then upload as parquet shards with the card")
    build.add_argument("--private", action="store_true", help="make the uploaded dataset private")
    build.add_argument("--token", help="hub token (default: the logged-in one)")
    build.set_defaults(handler=_handler("cmd_build_dataset"))

    card = command("card", "write a model card (README.md) from the run and evaluation JSONs")
    _add_card_arguments(card)
    card.add_argument("--output", type=Path, help="the card file (default: MODEL/README.md)")
    card.add_argument("--overwrite", action="store_true", help="replace an existing card")
    card.set_defaults(handler=_handler("cmd_card"))

    publish = command("publish", "parity check, card, then upload to the hub (or --dry-run)")
    _add_card_arguments(publish)
    publish.add_argument("--repo-id", required=True, help="user/name on the hub")
    publish.add_argument("--private", action="store_true", help="create the repository as private")
    publish.add_argument("--create-pr", action="store_true", help="open a pull request instead of committing")
    publish.add_argument("--token", help="hub token (default: the logged-in one)")
    publish.add_argument("--commit-message", default="Upload SSA segmentation model", help="the commit message")
    publish.add_argument("--dry-run", type=Path, metavar="DIR",
                         help="write exactly the folder that would be uploaded to DIR and stop")
    publish.add_argument("--overwrite", action="store_true", help="write the dry run into a folder that is not empty")
    publish.add_argument("--space", action="store_true",
                         help="also create a Gradio Space beside the model (as `ssa-seg space`); with --dry-run, "
                              "DIR/model and DIR/space are written")
    publish.add_argument("--space-id", help="user/name of the Space (default: REPO_ID-demo)")
    publish.add_argument("--space-example", type=Path, action="append", default=[], metavar="IMAGE",
                         help="an example image for the Space (repeatable; default: one generated scene)")
    _add_space_loading_arguments(publish)
    publish.set_defaults(handler=_handler("cmd_publish"))

    space = command("space", "write a Gradio app for a hub Space (app.py, requirements.txt, README with the Space "
                             "metadata, examples)")
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
    parser.add_argument("--requirement", metavar="SPEC",
                        help="load the model with the ssa_hf package installed from this pip requirement (e.g. "
                             "ssa-hf==0.2.0 or a git URL) instead of the model repository's own code (default: the "
                             "repository's code, trust_remote_code=True)")
    parser.add_argument("--app-trusts-remote-code", action="store_true", help=argparse.SUPPRESS)  # the default now


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
    parser.add_argument("--mixed-precision", default="no", choices=["no", "fp16", "bf16"],
                        help="autocast precision of the forward pass")
    overrides = parser.add_argument_group("recipe overrides (stored in run.json)")
    overrides.add_argument("--iterations", type=POSITIVE_INT, help="schedule length")
    overrides.add_argument("--lr", type=_positive(), help="base learning rate")
    overrides.add_argument("--warmup-iters", type=NON_NEGATIVE_INT, help="linear warm-up length")
    overrides.add_argument("--seed", type=NON_NEGATIVE_INT, help="seed of the data order, augmentation and model")
    overrides.add_argument("--batch-size", type=POSITIVE_INT, help="images per step and process")
    overrides.add_argument("--gradient-accumulation-steps", type=POSITIVE_INT,
                           help="micro-batches per optimiser step")
    overrides.add_argument("--eval-every", type=POSITIVE_INT, help="iterations between evaluations")
    overrides.add_argument("--save-every", type=POSITIVE_INT, help="iterations between checkpoints")
    overrides.add_argument("--encoder", help="MiT variant (b0..b5) or SegFormer hub id / folder; for SeaFormer / "
                                             "SegNeXt recipes a size (seaformer-base, mscan-tiny), an official .pth "
                                             "(ImageNet encoder or whole model) or a converted folder")
    parser.add_argument("--max-iterations", type=POSITIVE_INT,
                        help="stop after N iterations (the schedule keeps its length)")
    parser.add_argument("--eval-limit", type=POSITIVE_INT, help="evaluate on the first N validation images only")
    parser.add_argument("--streaming", action="store_true",
                        help="read a hub dataset or parquet copy as a stream (datasets larger than the disk)")
    parser.add_argument("--num-workers", type=NON_NEGATIVE_INT, default=2, help="data-loading processes")
    parser.add_argument("--cpu", action="store_true", help="train on the CPU even where a GPU is present")
    parser.add_argument("--log-with", default="auto",
                        help="accelerate tracker: tensorboard, wandb, ... or none; auto: tensorboard if installed")


def _add_evaluate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="a save_pretrained folder or hub id")
    parser.add_argument("--data", required=True, help="dataset folder, save_to_disk folder or hub id")
    parser.add_argument("--split", default="validation", help="the split to score (train, validation, test)")
    parser.add_argument("--convention", choices=CONVENTION_NAMES,
                        help="label convention of raw annotations (default: the model folder's image processor's)")
    parser.add_argument("--scale", type=POSITIVE_INT, nargs=2, metavar=("LONG", "SHORT"),
                        help="keep-ratio test scale (default: the folder's processor)")
    parser.add_argument("--size-divisor", type=NON_NEGATIVE_INT,
                        help="round the test size up to multiples (0: none; default: the folder's processor)")
    parser.add_argument("--mode", default="whole", choices=["whole", "slide"],
                        help="whole image, or sliding windows of --crop at --stride")
    parser.add_argument("--crop", type=POSITIVE_INT, nargs=2, default=(512, 512), metavar=("HEIGHT", "WIDTH"),
                        help="sliding window size")
    parser.add_argument("--stride", type=POSITIVE_INT, nargs=2, default=(341, 341), metavar=("HEIGHT", "WIDTH"),
                        help="sliding window step")
    parser.add_argument("--scales", type=_positive(), nargs="+", default=(1.0,),
                        help="test scales, as factors of the resized size (several: multi-scale, averaged)")
    parser.add_argument("--flip", action="store_true", help="also average the horizontally flipped predictions")
    parser.add_argument("--limit", type=POSITIVE_INT,
                        help="evaluate only the first N images (cards refuse such results)")
    parser.add_argument("--streaming", action="store_true", help="read a hub dataset or parquet copy as a stream")
    parser.add_argument("--device", help="torch device, e.g. cpu, cuda (default: cuda when available)")
    parser.add_argument("--output", type=Path, help="JSON file (default: <model>/eval_<split>.json when local)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing evaluation JSON")
    _add_trust_argument(parser)


def _add_card_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="save_pretrained folder of the model")
    parser.add_argument("--eval", type=Path, action="append", default=[],
                        help="evaluation JSON from `ssa-seg evaluate` (repeatable: one per protocol)")
    parser.add_argument("--allow-partial-eval", action="store_true",
                        help="accept an evaluation made with --limit (the card's table marks it partial; the "
                             "metadata leaves it out)")
    parser.add_argument("--dataset", help="hub dataset id the model was trained/evaluated on (card metadata)")
    parser.add_argument("--recipe", type=Path, help="recipe JSON (default: the run's effective recipe, from "
                                                    "MODEL/training_run.json)")
    parser.add_argument("--license", default="apache-2.0", help="the model's licence, as the hub names it")
    parser.add_argument("--model-name", help="title of the card (default: the run's name, else the folder name)")
    _add_trust_argument(parser)
