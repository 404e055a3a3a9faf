"""What each `ssa-seg` command does. The parser lives in `ssa_hf_cli`, which imports this module only once the
arguments are parsed, so `ssa-seg --help` stays fast; every function here takes the parsed `argparse.Namespace`.

Errors a user can fix are `CommandError`s (or `ValueError`/`OSError` with a clear message): the command line prints
them without a traceback and exits with status 2. Nothing existing is overwritten without `--overwrite`.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import numpy as np


class CommandError(Exception):
    """A user-facing error: printed without a traceback, exit status 2."""


# --- shared helpers ------------------------------------------------------------------------------------------------


def load_model(model_id: str, device: str | None = None, trust_remote_code: bool = False,
               require_processor: bool = False):
    """An eval-mode segmentation model (SSA or any transformers one) and its image processor. SSA folders load
    through the classes this package registers; code inside a model folder runs only with `trust_remote_code`.
    A model without an image processor gets `SSAImageProcessor`'s defaults (with a note), or None with
    `require_processor` (what is published must preprocess as it was evaluated: the caller refuses it)."""
    from transformers import AutoImageProcessor, AutoModelForSemanticSegmentation

    import ssa_hf  # noqa: F401  (registers SSA with the Auto classes)

    from .model.image_processing_ssa import SSAImageProcessor

    device = torch_device(device)
    if not Path(model_id).exists() and _looks_like_a_path(model_id):
        raise CommandError(f"no such model folder: {model_id} ({Path(model_id).resolve()} does not exist)")
    try:
        model, loading = AutoModelForSemanticSegmentation.from_pretrained(
            model_id, trust_remote_code=trust_remote_code, output_loading_info=True)
    except Exception as error:  # noqa: BLE001 - damaged, refused or foreign files: whatever the loader raises
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        hint = " (the folder's own code runs only with --trust-remote-code)" if "trust_remote_code" in str(error) else ""
        if not Path(model_id).exists():
            hint += f"; there is no local folder {model_id} either"
        raise CommandError(f"cannot load a model from '{model_id}': {message}{hint}") from error
    # transformers only warns when weights and config disagree, and leaves the rest randomly initialised.
    problems = {kind: loading.get(kind) for kind in ("missing_keys", "unexpected_keys", "mismatched_keys")
                if loading.get(kind)}
    if problems:
        details = "; ".join(f"{kind.replace('_', ' ')}: {sorted(map(str, keys))[:5]}" for kind, keys in
                            problems.items())
        raise CommandError(f"the weights of '{model_id}' do not fit its config ({details}); the config may "
                           f"describe another architecture (e.g. other depths or hidden sizes).")
    try:
        processor = AutoImageProcessor.from_pretrained(model_id, trust_remote_code=trust_remote_code)
    except OSError:  # no preprocessor_config.json
        if require_processor:
            return model.to(device).eval(), None
        processor = SSAImageProcessor()
        print(f"note: '{model_id}' has no image processor; using SSAImageProcessor defaults (keep-ratio resize to "
              f"fit 2048x512, ImageNet normalisation)", file=sys.stderr)
    except Exception as error:  # noqa: BLE001 - refused, damaged or broken processors, whatever is raised
        hint = " (the folder's own code runs only with --trust-remote-code)" if "trust_remote_code" in str(error) else ""
        raise CommandError(f"cannot load the image processor of '{model_id}': "
                           f"{str(error).strip().splitlines()[0]}{hint}") from error
    return model.to(device).eval(), processor


def torch_device(name: str | None):
    """The torch device named by --device (default: cuda when available), refused by name when this torch cannot
    use it."""
    import torch

    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise CommandError(f"--device {name}: not a torch device name (e.g. cpu, cuda, cuda:1, mps)") from None
    available = {"cuda": torch.cuda.is_available, "mps": lambda: torch.backends.mps.is_available(),
                 "xpu": lambda: hasattr(torch, "xpu") and torch.xpu.is_available()}
    if device.type in available and not available[device.type]():
        raise CommandError(f"--device {name}: this torch ({torch.__version__}) has no usable {device.type} device; "
                           f"use --device cpu, or install a torch build for your accelerator.")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise CommandError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) are visible.")
    return device


def _looks_like_a_path(name: str) -> bool:
    """A --model value that can only be a local path: hub ids are `name` or `owner/name`, without `./`, `~`,
    a leading `/` or more than one slash."""
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or "\\" in name


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
    """The RGB image as it is shown (EXIF orientation applied, as `pipeline`'s `load_image` does)."""
    from PIL import ImageOps

    from .data import _HIGH_BIT_DEPTH_MODES, DataError, open_image

    try:
        image, _ = open_image(path, "image")
    except DataError as error:
        raise CommandError(f"cannot read image {path}: {error}") from None
    if image.mode in _HIGH_BIT_DEPTH_MODES:
        raise CommandError(f"cannot read image {path}: a {image.mode} image (more than 8 bits per channel); "
                           f"convert it to 8-bit RGB first.")
    return ImageOps.exif_transpose(image).convert("RGB")


def cmd_predict(args) -> None:
    from tqdm.auto import tqdm

    from .evaluation import predict_label_map
    from .visualization import label_image, overlay_with_legend

    images = _collect_images(args.images)
    for path in images:  # fail before loading the model, naming every bad file
        _read_image(path)
    used, targets = set(), []
    for path in images:  # unique output names: a.png, a.jpg and a_1.png give a, a_1 and a_1_1
        stem, count = path.stem, 0
        while stem in used:
            count += 1
            stem = f"{path.stem}_{count}"
        used.add(stem)
        targets.append((args.output / f"{stem}_overlay.png", args.output / f"{stem}_labels.png"))
    for overlay_path, labels_path in targets:
        _check_output_file(overlay_path, args.overwrite)
        _check_output_file(labels_path, args.overwrite)

    model, processor = load_model(args.model, args.device, args.trust_remote_code)
    args.output.mkdir(parents=True, exist_ok=True)
    id2label = {int(k): v for k, v in model.config.id2label.items()}
    undrawable = []
    for path, (overlay_path, labels_path) in zip(tqdm(images, desc="predicting", disable=len(images) < 2), targets):
        image = _read_image(path)
        label_map = predict_label_map(model, processor, image).cpu().numpy()
        label_image(label_map, model.config.num_labels).save(labels_path)
        overlay_with_legend(image, label_map, id2label, alpha=args.alpha, undrawable=undrawable).save(overlay_path)
    if undrawable:
        print(f"note: no font on this machine has the glyphs of {sorted(set(undrawable))}; the legends show boxes "
              f"for them (install a font that covers them, e.g. Noto CJK)", file=sys.stderr)
    print(f"wrote {2 * len(images)} files to {args.output}")


# --- evaluate ------------------------------------------------------------------------------------------------------


def evaluation_convention(rows, model, processor, convention_name: str | None, source: str):
    """The label convention to score `rows` with: identity for a dataset built by `build-dataset`; else the named one
    when given, else the model folder's image processor's (the convention it was trained with)."""
    from .data import named_convention, training_convention
    from .model.image_processing_ssa import LabelConvention

    if convention_name is not None:
        convention = named_convention(convention_name)
    else:
        own = getattr(processor, "label_convention", None)  # SSAImageProcessor; SegformerImageProcessor has no remap
        convention = LabelConvention(model.config.num_labels,
                                     reduce_zero_label=bool(getattr(processor, "do_reduce_labels", False)),
                                     remap=own.remap if own is not None else {},
                                     ignore_index=own.ignore_index if own is not None else
                                     model.config.semantic_loss_ignore_index)
    convention = training_convention(rows, convention, source)
    if model.config.num_labels != convention.num_labels:
        raise CommandError(f"the model has {model.config.num_labels} classes, the data ({convention_name or 'its'} "
                           f"convention) {convention.num_labels}: mismatched num_labels")
    return convention


def cmd_evaluate(args) -> dict:
    from transformers.image_utils import SizeDict

    from .data import load_split
    from .evaluation import EvaluationProtocol, evaluate_dataset, results_table

    output = args.output or (Path(args.model) / f"eval_{args.split}.json" if Path(args.model).is_dir() else None)
    if output is not None:
        _check_output_file(Path(output), args.overwrite)
    model, processor = load_model(args.model, args.device, args.trust_remote_code)
    if args.scale is not None:  # another test scale than the folder's
        processor.size = SizeDict(shortest_edge=min(args.scale), longest_edge=max(args.scale))
        processor.do_resize = True
    if args.size_divisor is not None:
        processor.size_divisor = args.size_divisor or None
    rows = load_split(args.data, args.split, streaming=args.streaming)
    convention = evaluation_convention(rows, model, processor, args.convention, args.data)
    protocol = EvaluationProtocol(mode=args.mode, crop_size=tuple(args.crop), stride=tuple(args.stride),
                                  scales=tuple(args.scales), flip=args.flip)
    result = evaluate_dataset(model, processor, rows, convention, protocol, limit=args.limit)
    names = [model.config.id2label[i] for i in range(convention.num_labels)]
    print(results_table(result, names))
    print(f"protocol: {args.mode}, scales {list(args.scales)}{', flip' if args.flip else ''}, resize "
          f"{_resize_text(processor)}" + (f"; first {args.limit} images only" if args.limit else ""))
    report = {"model": args.model, "data": args.data, "data_on_hub": not Path(args.data).exists(),
              "split": args.split, "convention": args.convention,
              "label_convention": dataclasses.asdict(convention),
              "protocol": {**result["protocol"], "resize": _resize_text(processor),
                           "scale": _processor_scale(processor), "size_divisor": getattr(processor, "size_divisor",
                                                                                         None)},
              "limit": args.limit, "images": result["images"],
              **{k: v for k, v in result.items() if k not in ("protocol", "images")},
              "per_category": {n: {"iou": i, "accuracy": a} for n, i, a in
                               zip(names, result["per_category_iou"], result["per_category_accuracy"])}}
    if output is not None:
        Path(output).write_text(json.dumps(_nan_to_none(report), indent=1))
        print(f"written {output}")
    return report


def _processor_scale(processor) -> list[int] | None:
    size = processor.size
    if getattr(size, "shortest_edge", None) and getattr(size, "longest_edge", None):
        return [size.longest_edge, size.shortest_edge]
    return None


def _resize_text(processor) -> str:
    if not getattr(processor, "do_resize", True):
        return "none"
    scale = _processor_scale(processor)
    if scale:
        divisor = getattr(processor, "size_divisor", None)
        return f"keep ratio to fit {scale[0]}x{scale[1]}" + (f", multiple of {divisor}" if divisor else "")
    return f"fixed {processor.size.width}x{processor.size.height}"


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


def save_model_folder(model, folder: Path, processor) -> None:
    """save_pretrained (safetensors + config + remote code) and the image processor."""
    model.save_pretrained(folder)
    processor.save_pretrained(folder)


def source_processor(source: str, convention_name: str | None):
    """The image processor of a converted model: for a SegFormer-style source (SegFormer, UperNet) an
    `SSAImageProcessor` with its settings kept (`SSAImageProcessor.from_source`), for another transformers segmenter
    (BEiT, DPT, MobileViT, ...) its own processor unchanged, for a checkpoint file the defaults; `--convention` sets
    the label convention of an `SSAImageProcessor`."""
    from .data import named_convention
    from .model.image_processing_ssa import SSAImageProcessor

    overrides = {}
    if convention_name is not None:
        convention = named_convention(convention_name)
        overrides = dict(do_reduce_labels=convention.reduce_zero_label, label_remap=convention.remap or None,
                         ignore_index=convention.ignore_index)
    if Path(source).is_file():  # a raw checkpoint: no processor to keep
        return SSAImageProcessor(**overrides)
    try:
        kind = SSAImageProcessor.get_image_processor_dict(source)[0].get("image_processor_type") or ""
    except OSError:  # no preprocessor_config.json: the defaults
        kind = ""
    if not kind or kind.startswith(("Segformer", "SSA")):
        return SSAImageProcessor.from_source(source, **overrides)
    # Resizing, cropping or channel order that SSAImageProcessor does not have: the source's processor is kept.
    if overrides:
        raise CommandError(f"--convention sets SSAImageProcessor's label settings; '{source}' keeps its own {kind} "
                           f"(its label settings are the source's). Leave --convention out.")
    from transformers import AutoImageProcessor

    return AutoImageProcessor.from_pretrained(source)


def transformers_source(source: str, num_labels: int | None, id2label: dict | None):
    """SSA on a transformers semantic segmenter (hub id or folder) of any supported type."""
    from transformers import AutoConfig

    from .convert import ConversionError
    from .model.configuration_ssa import SUPPORTED_SEGMENTERS
    from .model.modeling_ssa import SSAForSemanticSegmentation

    try:
        model_type = AutoConfig.from_pretrained(source).model_type
    except (OSError, ValueError) as error:
        raise ConversionError(f"'{source}' is neither a checkpoint file nor a loadable transformers model (folder or "
                              f"hub id): {str(error).splitlines()[0]}") from error
    if model_type not in SUPPORTED_SEGMENTERS:
        raise ConversionError(f"'{source}' is a transformers '{model_type}' model; convert takes a transformers "
                              f"semantic segmenter of type {', '.join(SUPPORTED_SEGMENTERS)} (or an original .pth "
                              f"checkpoint).")
    return SSAForSemanticSegmentation.from_transformers(source, num_labels=num_labels, id2label=id2label)


def cmd_convert(args):
    from .convert import convert_checkpoint, parity_check

    _check_output_dir(args.output, args.overwrite)
    id2label = _read_id2label(args.id2label)
    source = Path(args.source)
    if source.is_file():
        options = {"classifier_type": "plain"} if args.baseline else {}
        model, report = convert_checkpoint(source, num_labels=args.num_labels, id2label=id2label,
                                           source_format=args.source_format, allow_mismatch=args.allow_mismatch,
                                           **options)
    elif args.baseline:
        raise CommandError("--baseline converts a plain segmenter's checkpoint file; a transformers segmenter is "
                           "its own baseline already (use it with transformers as it is)")
    else:  # a transformers semantic segmenter: hub id or folder
        model, report = transformers_source(args.source, args.num_labels, id2label), None
    save_model_folder(model.eval(), args.output, source_processor(args.source, args.convention))
    difference = parity_check(model, args.output)
    if report is not None:
        report.max_abs_logit_difference = difference
        print(report.summary())
        (args.output / "conversion_report.json").write_text(
            json.dumps({"source": str(source), **dataclasses.asdict(report)}, indent=1))
    else:
        print(f"converted transformers {model.config.decoder_type} model '{args.source}'; parity: reloaded from disk, max |logit difference|"
              f" = {difference:.2e}")
    if difference > 0:
        raise CommandError(f"parity check failed: the folder reloaded from disk differs by {difference:.2e}")
    print(f"saved {args.output}")
    return 0


# --- ONNX ----------------------------------------------------------------------------------------------------------


def cmd_export_onnx(args) -> dict:
    from .onnx_export import export_onnx

    _check_output_file(args.output, args.overwrite)
    model, _ = load_model(args.model, "cpu", args.trust_remote_code)
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


def _card_text(args, config=None, repo_id: str | None = None) -> str:
    """The model card of `args.model` (its config is read unless given)."""
    from .model_card import build_model_card

    evaluations = []
    for path in args.eval:
        try:
            evaluation = json.loads(Path(path).read_text())
        except (OSError, ValueError) as error:
            raise CommandError(f"cannot read evaluation JSON {path}: {error}") from error
        if evaluation.get("limit") and not args.allow_partial_eval:
            raise CommandError(f"{path} scored only the first {evaluation['limit']} images (--limit): a card states "
                               f"whole-split numbers; evaluate without --limit, or pass --allow-partial-eval")
        evaluations.append(evaluation)
    run = _training_run(Path(args.model))
    recipe = run["recipe"] if run else None
    if args.recipe is not None:
        try:
            recipe = json.loads(args.recipe.read_text())
        except (OSError, ValueError) as error:
            raise CommandError(f"cannot read recipe {args.recipe}: {error}") from error
    if config is None:
        from transformers import AutoConfig

        import ssa_hf  # noqa: F401

        try:
            config = AutoConfig.from_pretrained(args.model, trust_remote_code=args.trust_remote_code)
        except (OSError, ValueError) as error:
            hint = " (its own code runs only with --trust-remote-code)" if "trust_remote_code" in str(error) else ""
            raise CommandError(f"cannot read the config of '{args.model}': {str(error).splitlines()[0]}{hint}") \
                from error
    if config.model_type != "ssa":
        raise CommandError(f"{args.model} is a '{config.model_type}' model (a --baseline run?); cards are written "
                           f"for SSA models.")
    name = args.model_name or (run or {}).get("name") or Path(args.model).resolve().name
    try:
        return build_model_card(config, evaluations=evaluations, recipe=recipe, dataset=args.dataset,
                                license=args.license, repo_id=repo_id, model_name=name, training_run=run)
    except ValueError as error:  # metadata the hub would refuse (licence, dataset id, ...)
        raise CommandError(str(error)) from None


def _training_run(model: Path) -> dict | None:
    """The `training_run.json` that `ssa-seg train` writes into its final folder (effective recipe, seed, version,
    commit, iterations trained), or None for models trained elsewhere."""
    path = model / "training_run.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except ValueError as error:
        raise CommandError(f"cannot read {path}: {error}") from error


def cmd_card(args) -> None:
    output = args.output or Path(args.model) / "README.md"
    _check_output_file(output, args.overwrite)
    output.write_text(_card_text(args))
    print(f"written {output}")


def build_upload_folder(args, folder: Path) -> float:
    """Write weights (safetensors), config, remote code, image processor and card to `folder`; return the parity
    difference of the written folder against the source model."""
    from .convert import parity_check

    model, processor = load_model(args.model, "cpu", args.trust_remote_code, require_processor=True)
    if model.config.model_type != "ssa":
        raise CommandError(f"{args.model} is a '{model.config.model_type}' model; publish SSA models "
                           f"(convert it first with `ssa-seg convert`).")
    if processor is None:
        raise CommandError(f"'{args.model}' has no image processor (preprocessor_config.json): save the one it was "
                           f"trained and evaluated with beside it (SSAImageProcessor.from_source(...), or publish the "
                           f"training run's final/ folder), so that its users preprocess as it was measured.")
    save_model_folder(model, folder, processor)
    difference = parity_check(model, folder)
    if difference > 0:
        raise CommandError(f"parity check failed: the upload folder's model differs by {difference:.2e}")
    (folder / "README.md").write_text(_card_text(args, model.config, repo_id=args.repo_id))
    return difference


def _write_space_folder(args, folder: Path, model: str, examples: list[Path], title: str | None = None,
                        overwrite: bool = False) -> Path:
    from .space import SpaceError, write_space

    try:
        return write_space(model, folder, examples=examples, title=title, requirement=args.requirement,
                           overwrite=overwrite)
    except SpaceError as error:
        raise CommandError(str(error)) from None


def _files_in(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def _list_files(folder: Path, what: str) -> None:
    files = _files_in(folder)
    print(f"{what} would contain {len(files)} files, written to {folder}:")
    for name in files:
        print(f"  {name}")


def cmd_space(args) -> None:
    folder = _write_space_folder(args, args.output, args.model, args.example, args.title, args.overwrite)
    print(f"written {folder}: {', '.join(_files_in(folder))}\nrun it: cd {folder} && python app.py")


def cmd_publish(args) -> None:
    import tempfile

    space_id = args.space_id or f"{args.repo_id}-demo"
    if args.dry_run is not None:
        _check_output_dir(args.dry_run, args.overwrite)
        model_folder = args.dry_run / "model" if args.space else args.dry_run
        model_folder.mkdir(parents=True, exist_ok=True)
        build_upload_folder(args, model_folder)
        _list_files(model_folder, f"dry run: the upload to {args.repo_id}")
        if args.space:
            _write_space_folder(args, args.dry_run / "space", args.repo_id, args.space_example)
            _list_files(args.dry_run / "space", f"dry run: the Space {space_id}")
        return
    from huggingface_hub import HfApi

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "model"
        folder.mkdir()
        build_upload_folder(args, folder)
        if args.space:  # written before anything is uploaded: a bad example stops the publish here
            _write_space_folder(args, Path(tmp) / "space", args.repo_id, args.space_example)
        api = HfApi(token=args.token)
        api.create_repo(args.repo_id, private=args.private, exist_ok=True, repo_type="model")
        commit = api.upload_folder(folder_path=str(folder), repo_id=args.repo_id, repo_type="model",
                                   commit_message=args.commit_message, create_pr=args.create_pr)
        print(f"uploaded to {args.repo_id}: "
              f"{getattr(commit, 'pr_url', None) or getattr(commit, 'commit_url', commit)}")
        if args.space:
            api.create_repo(space_id, private=args.private, exist_ok=True, repo_type="space", space_sdk="gradio")
            commit = api.upload_folder(folder_path=str(Path(tmp) / "space"), repo_id=space_id, repo_type="space",
                                       commit_message=f"Gradio demo of {args.repo_id}", create_pr=args.create_pr)
            print(f"Space {space_id}: {getattr(commit, 'pr_url', None) or getattr(commit, 'commit_url', commit)}")


# --- training and the demo -----------------------------------------------------------------------------------------


def cmd_train(args) -> dict:
    from .training import Recipe, train

    recipe = Recipe.load(args.recipe, iterations=args.iterations, batch_size=args.batch_size,
                         gradient_accumulation_steps=args.gradient_accumulation_steps, eval_every=args.eval_every,
                         save_every=args.save_every, encoder=args.encoder, lr=args.lr,
                         warmup_iters=args.warmup_iters, seed=args.seed)
    result = train(recipe, args.data, args.output, baseline=args.baseline, mixed_precision=args.mixed_precision,
                   resume=args.resume, max_iterations=args.max_iterations, num_workers=args.num_workers,
                   cpu=args.cpu, eval_limit=args.eval_limit, streaming=args.streaming,
                   log_with=None if args.log_with == "none" else args.log_with, command=args.argv)
    if not result["is_main_process"]:  # one report per run, not one per process
        return result
    if result["metrics"]:
        m = result["metrics"]
        print(f"final evaluation: mIoU {100 * m['mean_iou']:.2f}  mAcc {100 * m['mean_accuracy']:.2f}  aAcc "
              f"{100 * m['overall_accuracy']:.2f} ({m['images']} images)")
    print(f"saved {Path(args.output) / 'final'} (model, image processor, training_run.json); history and run.json in "
          f"{args.output}")
    return result


def cmd_demo(args) -> dict:
    from .demo import run_demo

    return run_demo(data=args.data, iterations=args.iterations, output=args.output, num_workers=args.num_workers,
                    eval_limit=args.eval_limit, seed=args.seed)
