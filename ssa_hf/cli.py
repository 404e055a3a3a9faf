"""`ssa-seg`: run, evaluate, convert, export and publish SSA segmentation models from the command line.

    ssa-seg predict photo.jpg more/*.png --model runs/ade20k/final --out predictions/
    ssa-seg evaluate --model runs/camvid/final --data ../shared/data/camvid --convention camvid
    ssa-seg convert segformer.b0.512x512.ade.160k.pth --output ssa-b0-ade        # or an official SSA checkpoint
    ssa-seg export-onnx --model ssa-b0-ade --output ssa-b0-ade.onnx
    ssa-seg card ssa-b0-ade --eval ssa-b0-ade/eval_validation.json --output ssa-b0-ade/README.md
    ssa-seg publish ssa-b0-ade --repo-id me/ssa-b0-ade --eval eval.json --dry-run upload/

Every command accepts a hub id or a local folder for `--model`. Errors name the file or value at fault and exit
with status 2; nothing existing is overwritten without `--overwrite`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np


class CommandError(Exception):
    """A user-facing error: printed without a traceback, exit status 2."""


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result = args.handler(args)
    except CommandError as error:
        print(f"ssa-seg {args.command}: error: {error}", file=sys.stderr)
        return 2
    except (ValueError, OSError, ImportError, RuntimeError) as error:  # clear messages already
        print(f"ssa-seg {args.command}: error: {error}", file=sys.stderr)
        return 2
    return 0 if result is None or not isinstance(result, int) else result


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ssa-seg", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    predict = commands.add_parser("predict", help="segment images: colour overlay with a legend + label PNG each")
    predict.add_argument("images", nargs="+", type=Path, help="image files or folders of images")
    predict.add_argument("--model", required=True, help="hub id or save_pretrained folder")
    predict.add_argument("--out", required=True, type=Path, help="output folder")
    predict.add_argument("--alpha", type=float, default=0.5, help="opacity of the class colours in the overlay")
    predict.add_argument("--device", default=None, help="torch device (default: cuda when available)")
    predict.add_argument("--overwrite", action="store_true", help="replace existing output files")
    predict.set_defaults(handler=cmd_predict)

    evaluate = commands.add_parser("evaluate", help="mIoU on a dataset split (whole/slide, multi-scale, flip)")
    _add_evaluate_arguments(evaluate)
    evaluate.set_defaults(handler=cmd_evaluate)

    convert = commands.add_parser("convert", help="NVlabs/mmseg SegFormer, official SSA or transformers SegFormer "
                                                  "checkpoint -> SSA save_pretrained folder")
    convert.add_argument("source", help=".pth/.bin/.safetensors file, or a transformers SegFormer hub id / folder")
    convert.add_argument("--output", required=True, type=Path)
    convert.add_argument("--format", dest="source_format", help="source layout (default: detected from the keys)")
    convert.add_argument("--num-labels", type=int, help="class count (needed for encoder-only checkpoints)")
    convert.add_argument("--id2label", type=Path, help="JSON file {index: name} of the classes")
    convert.add_argument("--allow-mismatch", action="store_true",
                         help="convert even with unexpected or missing keys (they are listed)")
    convert.add_argument("--overwrite", action="store_true")
    convert.set_defaults(handler=cmd_convert)

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
    export.set_defaults(handler=cmd_export_onnx)

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
    build.set_defaults(handler=cmd_build_dataset)

    card = commands.add_parser("card", help="write a model card (README.md) from an evaluation JSON")
    _add_card_arguments(card)
    card.add_argument("--output", type=Path, help="default: MODEL/README.md")
    card.add_argument("--overwrite", action="store_true")
    card.set_defaults(handler=cmd_card)

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
    publish.set_defaults(handler=cmd_publish)
    return parser


# --- shared helpers ------------------------------------------------------------------------------------------------


def load_model(model_id: str, device: str | None = None):
    """An eval-mode segmentation model (SSA or any transformers one) and its image processor."""
    import torch
    from transformers import AutoImageProcessor, AutoModelForSemanticSegmentation, SegformerImageProcessor

    import ssa_hf  # noqa: F401  (registers SSA with the Auto classes)

    try:
        model = AutoModelForSemanticSegmentation.from_pretrained(model_id, trust_remote_code=True)
    except OSError as error:
        raise CommandError(f"cannot load a model from '{model_id}': {str(error).splitlines()[0]}") from error
    try:
        processor = AutoImageProcessor.from_pretrained(model_id)
    except (OSError, ValueError):
        processor = SegformerImageProcessor()
        print(f"note: '{model_id}' has no image processor; using SegformerImageProcessor defaults "
              f"(512x512, ImageNet normalisation)", file=sys.stderr)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    return model.to(device).eval(), processor


def _check_output_dir(path: Path, overwrite: bool) -> None:
    if path.exists() and not path.is_dir():
        raise CommandError(f"{path} exists and is not a folder.")
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        raise CommandError(f"{path} exists and is not empty; choose another folder or pass --overwrite.")


def _check_output_file(path: Path, overwrite: bool) -> None:
    if path.exists() and not overwrite:
        raise CommandError(f"{path} exists; pass --overwrite to replace it.")


# --- predict -------------------------------------------------------------------------------------------------------


def _collect_images(paths: list[Path]) -> list[Path]:
    from .data import IMAGE_SUFFIXES

    images, missing = [], []
    for path in paths:
        if path.is_dir():
            images += sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        elif path.is_file():
            images.append(path)
        else:
            missing.append(str(path))
    if missing:
        raise CommandError(f"not found: {', '.join(missing)}")
    if not images:
        raise CommandError("no images given (folders are searched for " + ", ".join(sorted(IMAGE_SUFFIXES)) + ").")
    return images


def _read_image(path: Path):
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image.load()
            return image.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError) as error:
        raise CommandError(f"cannot read image {path}: {error}") from error


def palette(num_classes: int) -> np.ndarray:
    """(K, 3) uint8 colours: the PASCAL VOC bit-interleaved palette from its second entry (its first is black, a poor
    colour for a real class), distinct for the first 255 classes."""
    colours = np.zeros((num_classes, 3), dtype=np.uint8)
    for index in range(min(num_classes, 255)):
        value, red, green, blue = index + 1, 0, 0, 0
        for shift in range(8):
            red |= ((value >> 0) & 1) << (7 - shift)
            green |= ((value >> 1) & 1) << (7 - shift)
            blue |= ((value >> 2) & 1) << (7 - shift)
            value >>= 3
        colours[index] = (red, green, blue)
    if num_classes > 255:  # beyond the palette: deterministic pseudo-random colours
        colours[255:] = np.random.default_rng(0).integers(0, 256, (num_classes - 255, 3), dtype=np.uint8)
    return colours


def overlay_with_legend(image, label_map: np.ndarray, id2label: dict[int, str], alpha: float = 0.5,
                        max_legend_rows: int = 24):
    """The image blended with the class colours, and a legend panel (colour, name, pixel share) of the classes
    present, largest first."""
    from PIL import Image, ImageDraw, ImageFont

    colours = palette(max(len(id2label), int(label_map.max()) + 1))
    rgb = np.asarray(image, dtype=np.float32)
    blended = (1 - alpha) * rgb + alpha * colours[label_map].astype(np.float32)
    blended = Image.fromarray(blended.round().clip(0, 255).astype(np.uint8))

    classes, counts = np.unique(label_map, return_counts=True)
    order = np.argsort(-counts)
    rows = [(int(classes[i]), counts[i] / label_map.size) for i in order]
    shown = rows[:max_legend_rows]
    font = ImageFont.load_default()
    row_height, swatch = 18, 14
    lines = [f"{id2label.get(k, str(k))} ({100 * share:.1f}%)" for k, share in shown]
    if len(rows) > len(shown):
        lines.append(f"+{len(rows) - len(shown)} more classes")
    text_width = max(int(ImageDraw.Draw(blended).textlength(line, font=font)) for line in lines)
    panel_width = swatch + 16 + text_width
    height = max(blended.height, row_height * len(lines) + 8)
    canvas = Image.new("RGB", (blended.width + panel_width, height), (255, 255, 255))
    canvas.paste(blended, (0, 0))
    draw = ImageDraw.Draw(canvas)
    for row, line in enumerate(lines):
        top = 4 + row * row_height
        if row < len(shown):
            draw.rectangle([blended.width + 4, top + 2, blended.width + 4 + swatch, top + 2 + swatch],
                           fill=tuple(int(c) for c in colours[shown[row][0]]), outline=(0, 0, 0))
        draw.text((blended.width + swatch + 10, top + 3), line, fill=(0, 0, 0), font=font)
    return canvas


def label_image(label_map: np.ndarray, num_labels: int):
    """Raw class indices as a PNG-able image: 8-bit for up to 256 classes, else 16-bit."""
    from PIL import Image

    if num_labels <= 256:
        return Image.fromarray(label_map.astype(np.uint8), mode="L")
    return Image.fromarray(label_map.astype(np.uint16))


def predict_label_map(model, processor, image) -> np.ndarray:
    """Argmax class per pixel at the image's own size."""
    import torch

    inputs = processor(images=image, return_tensors="pt")
    pixel_values = inputs["pixel_values"].to(next(model.parameters()).device)
    with torch.inference_mode():
        logits = model(pixel_values=pixel_values).logits
        logits = torch.nn.functional.interpolate(logits.float(), size=(image.height, image.width), mode="bilinear",
                                                 align_corners=False)
    return logits.argmax(1)[0].cpu().numpy()


def cmd_predict(args) -> None:
    from tqdm.auto import tqdm

    images = _collect_images(args.images)
    for path in images:  # fail before loading the model, naming every bad file
        _read_image(path)
    args.out.mkdir(parents=True, exist_ok=True)
    stems, targets = {}, []
    for path in images:
        count = stems.get(path.stem, 0)
        stems[path.stem] = count + 1
        stem = path.stem if count == 0 else f"{path.stem}_{count}"
        targets.append((args.out / f"{stem}_overlay.png", args.out / f"{stem}_labels.png"))
    for overlay_path, labels_path in targets:
        _check_output_file(overlay_path, args.overwrite)
        _check_output_file(labels_path, args.overwrite)

    model, processor = load_model(args.model, args.device)
    id2label = {int(k): v for k, v in model.config.id2label.items()}
    for path, (overlay_path, labels_path) in zip(tqdm(images, desc="predicting", disable=len(images) < 2), targets):
        image = _read_image(path)
        label_map = predict_label_map(model, processor, image)
        label_image(label_map, model.config.num_labels).save(labels_path)
        overlay_with_legend(image, label_map, id2label, alpha=args.alpha).save(overlay_path)
    print(f"wrote {2 * len(images)} files to {args.out}")


# --- evaluate ------------------------------------------------------------------------------------------------------


def _add_evaluate_arguments(parser: argparse.ArgumentParser) -> None:
    from .data import CONVENTIONS

    parser.add_argument("--model", required=True, help="a save_pretrained folder or hub id")
    parser.add_argument("--data", required=True, help="dataset folder, save_to_disk folder or hub id")
    parser.add_argument("--split", default="validation")
    parser.add_argument("--convention", choices=sorted(CONVENTIONS),
                        help="label convention of raw annotations (not needed for datasets built by build-dataset)")
    parser.add_argument("--scale", type=int, nargs=2, default=(2048, 512), help="keep-ratio test scale")
    parser.add_argument("--size-divisor", type=int)
    parser.add_argument("--mode", default="whole", choices=["whole", "slide"])
    parser.add_argument("--crop", type=int, nargs=2, default=(512, 512), help="sliding window (height, width)")
    parser.add_argument("--stride", type=int, nargs=2, default=(341, 341))
    parser.add_argument("--scales", type=float, nargs="+", default=(1.0,))
    parser.add_argument("--flip", action="store_true")
    parser.add_argument("--limit", type=int, help="evaluate only the first N images")
    parser.add_argument("--device", default=None)
    parser.add_argument("--output", type=Path, help="JSON file (default: <model>/eval_<split>.json when local)")


def cmd_evaluate(args) -> dict:
    from tqdm.auto import tqdm

    from .data import CONVENTIONS, SegmentationDataset, load_split, training_convention
    from .evaluation import StreamingMeanIoU, predict_probabilities
    from .transforms import EvalTransform

    model, _ = load_model(args.model, args.device)
    rows = load_split(args.data, args.split)
    convention = training_convention(rows, CONVENTIONS[args.convention] if args.convention else None, args.data)
    if model.config.num_labels != convention.num_labels:
        raise CommandError(f"the model has {model.config.num_labels} classes, the data ({args.convention or 'built'} "
                           f"convention) {convention.num_labels}: mismatched num_labels")
    if args.limit:
        rows = rows.select(range(min(args.limit, len(rows))))
    dataset = SegmentationDataset(rows, convention, EvalTransform(scale=tuple(args.scale),
                                                                  size_divisor=args.size_divisor))
    device = next(model.parameters()).device
    metric = StreamingMeanIoU(convention.num_labels, ignore_index=convention.ignore_index, device=device)
    for index in tqdm(range(len(dataset)), desc="evaluating"):
        item = dataset[index]
        probabilities = predict_probabilities(model, item["pixel_values"][None].to(device),
                                              output_size=item["labels"].shape, mode=args.mode,
                                              crop_size=tuple(args.crop), stride=tuple(args.stride),
                                              scales=tuple(args.scales), flip=args.flip)
        metric.update(probabilities.argmax(1)[0], item["labels"].to(device))
    result = metric.compute()
    names = [model.config.id2label[i] for i in range(convention.num_labels)]
    width = max(len(n) for n in names)
    print(f"| {'class'.ljust(width)} | IoU   | Acc   |\n|{'-' * (width + 2)}|-------|-------|")
    for name, iou, acc in zip(names, result["per_category_iou"], result["per_category_accuracy"]):
        print(f"| {name.ljust(width)} | {100 * iou:5.2f} | {100 * acc:5.2f} |" if not np.isnan(iou) else
              f"| {name.ljust(width)} |   -   |   -   |")
    print(f"mIoU {100 * result['mean_iou']:.2f}  mAcc {100 * result['mean_accuracy']:.2f}  "
          f"aAcc {100 * result['overall_accuracy']:.2f}  ({len(dataset)} images, {args.mode}, scales "
          f"{list(args.scales)}{', flip' if args.flip else ''})")
    report = {"model": args.model, "data": args.data, "split": args.split, "convention": args.convention,
              "protocol": {"mode": args.mode, "scale": list(args.scale), "crop": list(args.crop),
                           "stride": list(args.stride), "scales": list(args.scales), "flip": args.flip,
                           "size_divisor": args.size_divisor},
              "images": len(dataset), **dict(result.items()),
              "per_category": {n: {"iou": i, "accuracy": a} for n, i, a in
                               zip(names, result["per_category_iou"], result["per_category_accuracy"])}}
    output = args.output or (Path(args.model) / f"eval_{args.split}.json" if Path(args.model).is_dir() else None)
    if output is not None:
        Path(output).write_text(json.dumps(_nan_to_none(report), indent=1))
        print(f"written {output}")
    return report


def _nan_to_none(value):
    """JSON has no NaN: classes absent from the split are written as null."""
    if isinstance(value, float) and np.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _nan_to_none(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_nan_to_none(v) for v in value]
    return value


# --- convert -------------------------------------------------------------------------------------------------------


def _read_id2label(path: Path | None) -> dict[int, str] | None:
    if path is None:
        return None
    try:
        return {int(k): str(v) for k, v in json.loads(path.read_text()).items()}
    except (OSError, ValueError, AttributeError) as error:
        raise CommandError(f"{path}: expected a JSON object {{index: name}}: {error}") from error


def save_model_folder(model, folder: Path, processor=None) -> None:
    """save_pretrained (safetensors + config + remote code) and the image processor."""
    from transformers import SegformerImageProcessor

    model.save_pretrained(folder)
    (processor or SegformerImageProcessor()).save_pretrained(folder)


def cmd_convert(args):
    from .convert import ConversionError, convert_checkpoint, parity_check
    from .modeling_ssa import SSAForSemanticSegmentation

    _check_output_dir(args.output, args.overwrite)
    id2label = _read_id2label(args.id2label)
    source = Path(args.source)
    if source.is_file():
        model, report = convert_checkpoint(source, num_labels=args.num_labels, id2label=id2label,
                                           source_format=args.source_format, allow_mismatch=args.allow_mismatch)
    else:  # a transformers SegFormer: hub id or folder
        try:
            model = SSAForSemanticSegmentation.from_segformer(args.source, num_labels=args.num_labels,
                                                              id2label=id2label)
        except OSError as error:
            raise ConversionError(f"'{args.source}' is neither a checkpoint file nor a loadable transformers "
                                  f"SegFormer (folder or hub id): {str(error).splitlines()[0]}") from error
        report = None
    save_model_folder(model.eval(), args.output)
    difference = parity_check(model, args.output)
    if report is not None:
        report.max_abs_logit_difference = difference
        print(report.summary())
        (args.output / "conversion_report.json").write_text(
            json.dumps({"source": str(source), **dataclasses.asdict(report)}, indent=1))
    else:
        print(f"converted transformers SegFormer '{args.source}'; parity: reloaded from disk, max |logit difference|"
              f" = {difference:.2e}")
    if difference > 0:
        raise CommandError(f"parity check failed: the folder reloaded from disk differs by {difference:.2e}")
    print(f"saved {args.output}")
    return 0


# --- ONNX ----------------------------------------------------------------------------------------------------------


def cmd_export_onnx(args) -> dict:
    from .onnx_export import export_onnx

    _check_output_file(args.output, args.overwrite)
    model, _ = load_model(args.model, "cpu")
    result = export_onnx(model, args.output, example_size=(args.height, args.width), opset=args.opset,
                         tolerance=args.tolerance, dynamic_size=not args.static)
    for size, difference in result["checks"].items():
        print(f"onnxruntime vs PyTorch at {size}: max |logit difference| = {difference:.2e}")
    print(f"saved {args.output}")
    return result


# --- datasets ------------------------------------------------------------------------------------------------------


def cmd_build_dataset(args):
    from .dataset_builders import BUILDERS, push_dataset

    wanted = {"pascal_context_59": "the VOC2010 folder (or tar) and the PASCAL-Context annotations (folder or tar)"}
    expected = 2 if args.name in wanted else 1
    if len(args.sources) != expected:
        raise CommandError(f"{args.name} takes {wanted.get(args.name, 'the official zip or its folder')}; got "
                           f"{len(args.sources)} sources.")
    dataset_dict = BUILDERS[args.name](*args.sources, output=args.output, overwrite=args.overwrite)
    sizes = ", ".join(f"{split} {len(rows)}" for split, rows in dataset_dict.items())
    num_classes = len(next(iter(dataset_dict.values())).features["classes"].feature.names)
    print(f"saved {args.output} ({sizes}; {num_classes} classes)")
    if args.push_to_hub:
        push_dataset(args.output, args.push_to_hub, private=args.private, token=args.token)
        print(f"uploaded to {args.push_to_hub}")
    return dataset_dict


# --- model card and publishing -------------------------------------------------------------------------------------


def _add_card_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="save_pretrained folder of the model")
    parser.add_argument("--eval", type=Path, action="append", default=[],
                        help="evaluation JSON from `ssa-seg evaluate` (repeatable: one per protocol)")
    parser.add_argument("--dataset", help="hub dataset id the model was trained/evaluated on (card metadata)")
    parser.add_argument("--recipe", type=Path, help="training recipe JSON (training/recipes/*.json)")
    parser.add_argument("--license", default="apache-2.0")
    parser.add_argument("--model-name", help="title of the card (default: the folder name)")


def _card_text(args, config=None, repo_id: str | None = None) -> str:
    """The model card of `args.model` (its config is read unless given)."""
    from .model_card import build_model_card

    evaluations = []
    for path in args.eval:
        try:
            evaluations.append(json.loads(Path(path).read_text()))
        except (OSError, ValueError) as error:
            raise CommandError(f"cannot read evaluation JSON {path}: {error}") from error
    recipe = None
    if args.recipe is not None:
        try:
            recipe = json.loads(args.recipe.read_text())
        except (OSError, ValueError) as error:
            raise CommandError(f"cannot read recipe {args.recipe}: {error}") from error
    if config is None:
        from transformers import AutoConfig

        import ssa_hf  # noqa: F401

        config = AutoConfig.from_pretrained(args.model, trust_remote_code=True)
    return build_model_card(config, evaluations=evaluations, recipe=recipe, dataset=args.dataset,
                            license=args.license, repo_id=repo_id,
                            model_name=args.model_name or Path(args.model).resolve().name)


def cmd_card(args) -> None:
    output = args.output or Path(args.model) / "README.md"
    _check_output_file(output, args.overwrite)
    output.write_text(_card_text(args))
    print(f"written {output}")


def build_upload_folder(args, folder: Path) -> float:
    """Write weights (safetensors), config, remote code, image processor and card to `folder`; return the parity
    difference of the written folder against the source model."""
    from .convert import parity_check

    model, processor = load_model(args.model, "cpu")
    if model.config.model_type != "ssa":
        raise CommandError(f"{args.model} is a '{model.config.model_type}' model; publish SSA models "
                           f"(convert it first with `ssa-seg convert`).")
    save_model_folder(model, folder, processor)
    difference = parity_check(model, folder)
    if difference > 0:
        raise CommandError(f"parity check failed: the upload folder's model differs by {difference:.2e}")
    (folder / "README.md").write_text(_card_text(args, model.config, repo_id=args.repo_id))
    return difference


def cmd_publish(args) -> None:
    import tempfile

    if args.dry_run is not None:
        _check_output_dir(args.dry_run, args.overwrite)
        args.dry_run.mkdir(parents=True, exist_ok=True)
        build_upload_folder(args, args.dry_run)
        files = sorted(p.relative_to(args.dry_run).as_posix() for p in args.dry_run.rglob("*") if p.is_file())
        print(f"dry run: the upload to {args.repo_id} would contain {len(files)} files, written to {args.dry_run}:")
        for name in files:
            print(f"  {name}")
        return
    from huggingface_hub import HfApi

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        build_upload_folder(args, folder)
        api = HfApi(token=args.token)
        api.create_repo(args.repo_id, private=args.private, exist_ok=True, repo_type="model")
        commit = api.upload_folder(folder_path=str(folder), repo_id=args.repo_id, repo_type="model",
                                   commit_message=args.commit_message, create_pr=args.create_pr)
    print(f"uploaded to {args.repo_id}: {getattr(commit, 'pr_url', None) or getattr(commit, 'commit_url', commit)}")


if __name__ == "__main__":
    sys.exit(main())
