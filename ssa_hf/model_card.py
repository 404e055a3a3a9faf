"""Model cards for SSA checkpoints, built on `huggingface_hub`'s `ModelCard` from the config, the training run and the
evaluation JSONs of `ssa-seg evaluate`.

A card states only measured numbers: the `model-index` and the results table come from the evaluation files, each
with its protocol; without one the card says that the checkpoint has not been evaluated. An evaluation of part of a
split (`--limit`, accepted with `--allow-partial-eval`) appears in the table marked partial and never in the
`model-index`, which leaderboards read as whole-split results. The metadata is checked as the hub checks it before
the card is returned (`validate_card_metadata`).
"""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path

_CONVENTION_TEXT = {
    "ade20k": "ADE20K (150 classes): raw mask value 0 (\"other\") is ignored (255), value k becomes class k-1.",
    "coco_stuff_10k": "COCO-Stuff-10K (171 classes): the 182 COCO-Stuff ids mapped to the 171 used classes, "
                      "0 (unlabeled) ignored (255).",
    "pascal_context_59": "PASCAL-Context-59: background/other ignored (255), the 59 classes numbered 0..58.",
    "camvid": "CamVid (11 classes): raw value 11 (\"Unlabelled\") is ignored (255).",
}
_DATASET_NAMES = {"ade20k": "ADE20K", "coco_stuff_10k": "COCO-Stuff-10K", "pascal_context_59": "PASCAL-Context-59",
                  "camvid": "CamVid"}
_ENCODER_NAMES = {"segformer": "MiT (SegFormer encoder)", "swin": "Swin Transformer", "convnext": "ConvNeXt",
                  "resnet": "ResNet", "dinov2": "DINOv2", "seaformer": "SeaFormer", "mscan": "MSCAN (SegNeXt encoder)",
                  "efficientformer_v2": "EfficientFormerV2 (CGRSeg encoder)", "afformer": "AFFormer",
                  "hrnet": "HRNetV2", "beit": "BEiT", "data2vec-vision": "Data2VecVision", "dpt": "DPT (ViT)",
                  "mobilevit": "MobileViT", "mobilevitv2": "MobileViTV2", "mobilenet_v2": "MobileNetV2"}
_DECODER_NAMES = {"segformer": "SegFormer all-MLP decoder", "segformer_mmseg": "SegFormer decoder (mmseg layout)",
                  "upernet": "UperNet (pyramid pooling + FPN)", "seaformer": "SeaFormer light head",
                  "ham": "SegNeXt light Hamburger head", "cgr": "CGRSeg head", "afformer": "AFFormer light head",
                  "ocr": "OCRNet (soft object regions + object context)", "dpt": "DPT semantic head",
                  "deeplabv3": "DeepLabV3 (ASPP)", "deeplabv3_plus": "DeepLabV3+"}
# The licence identifiers the hub accepts in a card's `license` field ("other" needs license_name / license_link).
HUB_LICENSES = frozenset("""
apache-2.0 mit openrail bigscience-openrail-m creativeml-openrail-m bigscience-bloom-rail-1.0 bigcode-openrail-m
afl-3.0 artistic-2.0 bsl-1.0 bsd bsd-2-clause bsd-3-clause bsd-3-clause-clear c-uda cc cc0-1.0 cc-by-2.0 cc-by-2.5
cc-by-3.0 cc-by-4.0 cc-by-sa-3.0 cc-by-sa-4.0 cc-by-nc-2.0 cc-by-nc-3.0 cc-by-nc-4.0 cc-by-nd-4.0 cc-by-nc-nd-3.0
cc-by-nc-nd-4.0 cc-by-nc-sa-2.0 cc-by-nc-sa-3.0 cc-by-nc-sa-4.0 cdla-sharing-1.0 cdla-permissive-1.0
cdla-permissive-2.0 wtfpl ecl-2.0 epl-1.0 epl-2.0 etalab-2.0 eupl-1.1 eupl-1.2 agpl-3.0 gfdl gpl gpl-2.0 gpl-3.0 lgpl
lgpl-2.1 lgpl-3.0 isc h-research intel-research lppl-1.3c ms-pl apple-ascl apple-amlr mpl-2.0 odc-by odbl openrail++
osl-3.0 postgresql ofl-1.1 ncsa unlicense zlib pddl lgpl-lr deepfloyd-if-license fair-noncommercial-research-license
llama2 llama3 llama3.1 llama3.2 llama3.3 llama4 gemma unknown other
""".split())


def _valid_repo_id(name) -> bool:
    """The hub's own rule for repository ids (`name` or `owner/name`), as huggingface_hub checks them."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(name)
    except (HFValidationError, TypeError):
        return False
    return isinstance(name, str)


def is_hub_id(name: str | None) -> bool:
    """Whether `name` reads as a hub repository id rather than a local path or a checkpoint file."""
    return bool(name) and _valid_repo_id(name) and not Path(name).exists() \
        and not name.endswith((".pth", ".bin", ".safetensors", ".pt"))


def _dataset_label(evaluation: dict, dataset: str | None) -> tuple[str, str]:
    """(hub `dataset.type`, human name) of an evaluation: the hub dataset when given, else the named convention,
    else the data it read (a hub id, or a local folder's name); never "unknown"."""
    convention, data = evaluation.get("convention"), str(evaluation.get("data") or "")
    name = _DATASET_NAMES.get(convention) or (Path(data).name if data else None) or "custom data"
    if dataset:
        return dataset, name
    on_hub = evaluation.get("data_on_hub", is_hub_id(data))  # recorded by `ssa-seg evaluate`; guessed for old JSONs
    if data and on_hub and is_hub_id(data):
        return data, name
    return convention or re.sub(r"[^\w\-.]+", "-", name.lower()).strip("-") or "custom", name


def _protocol_text(protocol: dict) -> str:
    scales = protocol.get("scales") or [1.0]
    scale_text = "single-scale" if list(scales) == [1.0] else f"multi-scale {list(scales)}"
    mode = protocol.get("mode", "whole")
    crop = protocol.get("crop_size", protocol.get("crop", ()))
    mode_text = "whole image" if mode == "whole" else f"sliding window {tuple(crop)} stride {tuple(protocol.get('stride', ()))}"
    flip = ", flip" if protocol.get("flip") else ""
    if protocol.get("resize"):
        resize = f", resize: {protocol['resize']}"
    else:
        size = protocol.get("scale")
        resize = f", images resized keeping the aspect ratio to fit {tuple(size)}" if size else ""
    return f"{scale_text}{flip}, {mode_text}{resize}"


def _architecture(config) -> tuple[list[str], str, str]:
    """The card's tags for the encoder and decoder, its encoder in words, and its architecture table."""
    from .model.configuration_ssa import MIT_VARIANTS

    encoder = config.backbone_config
    encoder_type = encoder.model_type
    decoder_type = getattr(config, "decoder_type", "segformer")
    if encoder_type == "segformer":
        variant = next((name for name, spec in MIT_VARIANTS.items() if list(encoder.hidden_sizes) ==
                        spec["hidden_sizes"] and list(encoder.depths) == spec["depths"]), None)
        encoder_text = (f"MiT{'-' + variant if variant else ''} (hidden sizes {list(encoder.hidden_sizes)}, depths "
                        f"{list(encoder.depths)})")
    else:
        sizes = (getattr(encoder, "hidden_sizes", None) or getattr(encoder, "embed_dim", None)
                 or getattr(encoder, "branch_channels", None))
        encoder_text = f"{_ENCODER_NAMES.get(encoder_type, encoder_type)}" + (f" ({sizes})" if sizes else "")
    table = "\n".join([
        f"| encoder | {encoder_text} |",
        f"| decoder | {_DECODER_NAMES.get(decoder_type, decoder_type)}, C = {config.decoder_hidden_size} |",
        f"| classifier | SSA, logit scale {config.logit_scale}, fusion MLP ratio {config.fusion_hidden_ratio} |",
        f"| classes | {config.num_labels} |",
    ])
    tags = ["semantic-segmentation", "ssa", encoder_type, decoder_type.split("_")[0], "vision", "custom_code"]
    return list(dict.fromkeys(tags)), encoder_text, table


def build_model_card(config, evaluations: list[dict] | None = None, recipe: dict | None = None,
                     dataset: str | None = None, license: str = "apache-2.0", repo_id: str | None = None,
                     model_name: str = "SSA segmentation model", training_run: dict | None = None) -> str:
    """Markdown model card (YAML metadata + text) for an `SSAConfig` and its measured results.

    Args:
        config: the model's `SSAConfig`.
        evaluations: JSONs of `ssa-seg evaluate`; partial ones (`limit`) are marked and left out of the metadata.
        recipe: the training recipe, shown as a table.
        dataset: the hub dataset id the model was trained and evaluated on (`datasets` and the results' dataset).
        license: a licence identifier the hub knows.
        repo_id: the hub id the card is written for (in the usage snippets).
        model_name: the card's title.
        training_run: the `training_run.json` of an `ssa-seg train` run (iterations trained, seed, version, commit).

    Returns:
        `str`: the card text, its metadata checked by `validate_card_metadata`.
    """
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    evaluations = evaluations or []
    conventions = sorted({e.get("convention") for e in evaluations if e.get("convention")} |
                         ({recipe["convention"]} if recipe and recipe.get("convention") else set()))
    eval_results = []
    for evaluation in evaluations:
        if evaluation.get("mean_iou") is None:
            raise ValueError("an evaluation JSON without mean_iou: is it the output of `ssa-seg evaluate`?")
        if evaluation.get("limit"):  # part of a split: the table shows it, marked; the metadata does not
            continue
        dataset_type, dataset_name = _dataset_label(evaluation, dataset)
        eval_results.append(EvalResult(
            task_type="image-segmentation", task_name="Semantic Segmentation",
            dataset_type=dataset_type, dataset_name=dataset_name, dataset_split=evaluation.get("split"),
            metric_type="mean_iou", metric_value=round(100 * evaluation["mean_iou"], 2),
            metric_name=f"mIoU ({_protocol_text(evaluation.get('protocol', {}))})",
        ))
    tags, encoder_text, architecture_table = _architecture(config)
    source = getattr(config, "source_checkpoint", None)
    metadata = ModelCardData(
        license=license, library_name="transformers", pipeline_tag="image-segmentation",
        datasets=[dataset] if dataset else None, base_model=source if is_hub_id(source) else None,
        tags=tags, model_name=model_name, eval_results=eval_results or None,
    )

    names = [config.id2label[i] for i in range(config.num_labels)]
    shown = ", ".join(f"{i}: {n}" for i, n in enumerate(names[:20]))
    label_section = (f"{config.num_labels} classes ({shown}{', ...' if len(names) > 20 else ''}; all in "
                     f"`config.id2label`); the ignore value is {config.semantic_loss_ignore_index}.")
    if conventions:
        label_section += "\n\n" + "\n".join(f"- {_CONVENTION_TEXT.get(c, c)}" for c in conventions)

    provenance = ""
    if source:
        provenance = (f"Made from [`{source}`](https://huggingface.co/{source}) (`base_model`). " if is_hub_id(source)
                      else f"Made from the local checkpoint `{source.removeprefix('local:')}`. ")
    if recipe:
        rows = [f"| {key} | {value} |" for key, value in recipe.items()
                if not isinstance(value, (dict, list)) or key in ("crop_size", "scale", "ratio_range")]
        if training_run:
            provenance += (f"This run trained {training_run.get('trained_iterations', '?')} iterations of a "
                           f"{recipe.get('iterations', '?')}-iteration schedule (batch {recipe.get('batch_size', '?')}"
                           f", seed {training_run.get('seed', '?')}) with ssa-hf {training_run.get('ssa_hf_version', '?')}"
                           + (f" at commit `{training_run['git_commit']}`" if training_run.get("git_commit") else "")
                           + ("; plain baseline, no SSA" if training_run.get("baseline") else "") + ".")
        training_section = ((provenance.strip() + "\n\n" if provenance else "") +
                            "Trained with `ssa-seg train` of ssa-hf and this recipe:\n\n"
                            "| setting | value |\n"
                            "|---|---|\n" + "\n".join(rows) +
                            f"\n\nLoss weights (main, coarse, teacher, response, Dice x2, semantic, spatial): "
                            f"{config.main_loss_weight}, {config.coarse_loss_weight}, {config.teacher_loss_weight}, "
                            f"{config.response_distillation_weight}, {config.dice_student_weight}, "
                            f"{config.dice_teacher_weight}, {config.semantic_distillation_weight}, "
                            f"{config.spatial_distillation_weight}.")
    else:
        training_section = (provenance + "No training recipe was given for this card.").strip()

    if evaluations:
        table = ["| dataset | split | images | protocol | mIoU | mAcc | aAcc |", "|---|---|---|---|---|---|---|"]
        for e in evaluations:
            partial = f" (partial: the first {e['limit']} only)" if e.get("limit") else ""
            table.append(
                f"| {_dataset_label(e, dataset)[1]} | {e.get('split') or '-'} | {e.get('images', '-')}{partial} | "
                f"{_protocol_text(e.get('protocol', {}))} | {100 * e['mean_iou']:.2f} | "
                f"{100 * e['mean_accuracy']:.2f} | {100 * e['overall_accuracy']:.2f} |")
        evaluation_section = ("Measured with `ssa-seg evaluate` (mmseg-style evaluation: confusion matrix over the "
                              "whole split, ignore value excluded), preprocessing with the folder's image processor, so "
                              "`pipeline(\"image-segmentation\")` predicts exactly what was scored:\n\n" + "\n".join(table))
        if any(e.get("limit") for e in evaluations):
            evaluation_section += ("\n\nPartial evaluations score only part of the split; they are not in the card's "
                                   "metadata (`model-index`), which states whole-split results only.")
    else:
        evaluation_section = "**This checkpoint has not been evaluated yet**; no accuracy is claimed."

    summary = (f"A semantic-segmentation model: the SSA classifier on a {encoder_text} encoder and a "
               f"{_DECODER_NAMES.get(config.decoder_type, config.decoder_type)}, {config.num_labels} classes.")
    template = resources.files("ssa_hf").joinpath("templates/model_card.md").read_text()
    body = template.format(
        title=model_name, summary=summary, architecture_table=architecture_table,
        model_ref=repo_id or "path/to/model", num_labels=config.num_labels, label_section=label_section,
        training_section=training_section, evaluation_section=evaluation_section,
    )
    card = ModelCard(f"---\n{metadata.to_yaml()}\n---\n{body}")
    validate_card_metadata(card)
    return str(card)


def validate_card_metadata(card) -> None:
    """The checks the hub makes of a model card's YAML before it accepts it, done offline: the licence is one it
    knows, `pipeline_tag` a task, `base_model` and `datasets` hold repository ids, every `model-index` result names
    its task, dataset (type and name) and metric (type and value). A `ValueError` names the first problem."""
    from huggingface_hub import ModelCard
    from huggingface_hub.repocard_data import model_index_to_eval_results

    card = ModelCard(str(card)) if not isinstance(card, ModelCard) else card
    data = card.data.to_dict()
    license_ = data.get("license")
    if license_ not in HUB_LICENSES:
        raise ValueError(f"card metadata: license {license_!r} is not a licence identifier the hub knows (e.g. "
                         f"apache-2.0, mit, cc-by-4.0, or other with license_name)")
    if license_ == "other" and not data.get("license_name"):
        raise ValueError("card metadata: license 'other' needs license_name")
    if data.get("pipeline_tag") != "image-segmentation":
        raise ValueError(f"card metadata: pipeline_tag {data.get('pipeline_tag')!r}, expected 'image-segmentation'")
    for field in ("base_model", "datasets"):
        values = data.get(field) or []
        for value in [values] if isinstance(values, str) else values:
            if not _valid_repo_id(value):
                raise ValueError(f"card metadata: {field} {value!r} is not a hub repository id (owner/name)")
    if not all(isinstance(tag, str) and tag for tag in data.get("tags") or []):
        raise ValueError(f"card metadata: tags must be non-empty strings, got {data.get('tags')}")
    if "model-index" in data:
        _, results = model_index_to_eval_results(data["model-index"])
        for result in results:
            missing = [name for name in ("task_type", "dataset_type", "dataset_name", "metric_type", "metric_value")
                       if getattr(result, name) in (None, "")]
            if missing:
                raise ValueError(f"card metadata: a model-index result lacks {missing}")
            if str(result.dataset_type).lower() in ("unknown", "none"):
                raise ValueError(f"card metadata: a model-index result names no dataset ({result.dataset_type!r})")


__all__ = ["HUB_LICENSES", "build_model_card", "is_hub_id", "validate_card_metadata"]
