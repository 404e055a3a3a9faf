"""Model cards for SSA checkpoints, built from the config and the evaluation JSONs of `ssa-seg evaluate`.

A card states only measured numbers: the `model-index` and the results table come from the evaluation files, each
with its protocol; without one the card says that the checkpoint has not been evaluated.
"""

from __future__ import annotations

from importlib import resources

_CONVENTION_TEXT = {
    "ade20k": "ADE20K (150 classes): raw mask value 0 (\"other\") is ignored (255), value k becomes class k-1.",
    "coco_stuff_10k": "COCO-Stuff-10K (171 classes): the 182 COCO-Stuff ids mapped to the 171 used classes, "
                      "0 (unlabeled) ignored (255).",
    "pascal_context_59": "PASCAL-Context-59: background/other ignored (255), the 59 classes numbered 0..58.",
    "camvid": "CamVid (11 classes): raw value 11 (\"Unlabelled\") is ignored (255).",
}
_DATASET_NAMES = {"ade20k": "ADE20K", "coco_stuff_10k": "COCO-Stuff-10K", "pascal_context_59": "PASCAL-Context-59",
                  "camvid": "CamVid"}


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


def build_model_card(config, evaluations: list[dict] | None = None, recipe: dict | None = None,
                     dataset: str | None = None, license: str = "apache-2.0", repo_id: str | None = None,
                     model_name: str = "SSA segmentation model", training_run: dict | None = None) -> str:
    """Markdown model card (YAML metadata + text) for an `SSAConfig` and its measured results. `training_run`: the
    `training_run.json` of an `ssa-seg train` run (effective recipe, iterations trained, seed, version, commit)."""
    from huggingface_hub import EvalResult, ModelCardData

    evaluations = evaluations or []
    encoder = config.backbone_config
    conventions = sorted({e.get("convention") for e in evaluations if e.get("convention")} |
                         ({recipe["convention"]} if recipe and recipe.get("convention") else set()))
    eval_results = []
    for evaluation in evaluations:
        if evaluation.get("mean_iou") is None:
            raise ValueError("an evaluation JSON without mean_iou: is it the output of `ssa-seg evaluate`?")
        convention = evaluation.get("convention", "")
        eval_results.append(EvalResult(
            task_type="image-segmentation", task_name="Semantic Segmentation",
            dataset_type=dataset or convention or "unknown", dataset_name=_DATASET_NAMES.get(convention, convention),
            dataset_split=evaluation.get("split"), metric_type="mean_iou",
            metric_value=round(100 * evaluation["mean_iou"], 2),
            metric_name=f"mIoU ({_protocol_text(evaluation.get('protocol', {}))})",
        ))
    metadata = ModelCardData(
        license=license, library_name="transformers", pipeline_tag="image-segmentation",
        datasets=[dataset] if dataset else None,
        tags=["semantic-segmentation", "ssa", "segformer", "vision", "custom_code"],
        model_name=model_name, eval_results=eval_results or None,
    )

    variant = next((name for name, spec in _mit_variants().items()
                    if list(encoder.hidden_sizes) == spec["hidden_sizes"] and list(encoder.depths) == spec["depths"]),
                   None)
    architecture_table = "\n".join([
        f"| encoder | MiT{'-' + variant if variant else ''} (hidden sizes {list(encoder.hidden_sizes)}, depths "
        f"{list(encoder.depths)}) |",
        f"| decoder | {getattr(config, 'decoder_type', 'segformer')} layout, C = {config.decoder_hidden_size} |",
        f"| classifier | SSA, logit scale {config.logit_scale}, fusion MLP ratio {config.fusion_hidden_ratio} |",
        f"| classes | {config.num_labels} |",
    ])

    names = [config.id2label[i] for i in range(config.num_labels)]
    shown = ", ".join(f"{i}: {n}" for i, n in enumerate(names[:20]))
    label_section = (f"{config.num_labels} classes ({shown}{', ...' if len(names) > 20 else ''}; all in "
                     f"`config.id2label`); the ignore value is {config.semantic_loss_ignore_index}.")
    if conventions:
        label_section += "\n\n" + "\n".join(f"- {_CONVENTION_TEXT.get(c, c)}" for c in conventions)

    if recipe:
        rows = [f"| {key} | {value} |" for key, value in recipe.items()
                if not isinstance(value, (dict, list)) or key in ("crop_size", "scale", "ratio_range")]
        provenance = ""
        if training_run:
            provenance = (f"This run trained {training_run.get('trained_iterations', '?')} iterations of a "
                          f"{recipe.get('iterations', '?')}-iteration schedule (batch {recipe.get('batch_size', '?')}"
                          f", seed {training_run.get('seed', '?')}) with ssa-hf {training_run.get('ssa_hf_version', '?')}"
                          + (f" at commit `{training_run['git_commit']}`" if training_run.get("git_commit") else "")
                          + ("; plain baseline, no SSA" if training_run.get("baseline") else "") + ".\n\n")
        training_section = (provenance + "Trained with `ssa-seg train` of ssa-hf and this recipe:\n\n"
                            "| setting | value |\n"
                            "|---|---|\n" + "\n".join(rows) +
                            f"\n\nLoss weights (main, coarse, teacher, response, Dice x2, semantic, spatial): "
                            f"{config.main_loss_weight}, {config.coarse_loss_weight}, {config.teacher_loss_weight}, "
                            f"{config.response_distillation_weight}, {config.dice_student_weight}, "
                            f"{config.dice_teacher_weight}, {config.semantic_distillation_weight}, "
                            f"{config.spatial_distillation_weight}.")
    else:
        training_section = "No training recipe was given for this card."

    if evaluations:
        table = ["| dataset | split | images | protocol | mIoU | mAcc | aAcc |", "|---|---|---|---|---|---|---|"]
        for e in evaluations:
            table.append(
                f"| {_DATASET_NAMES.get(e.get('convention'), e.get('convention', '?'))} | {e.get('split', '?')} | "
                f"{e.get('images', '?')}{' (partial)' if e.get('limit') else ''} | {_protocol_text(e.get('protocol', {}))} | "
                f"{100 * e['mean_iou']:.2f} | "
                f"{100 * e['mean_accuracy']:.2f} | {100 * e['overall_accuracy']:.2f} |")
        evaluation_section = ("Measured with `ssa-seg evaluate` (mmseg-style evaluation: confusion matrix over the "
                              "whole split, ignore value excluded), preprocessing with the folder's image processor, so "
                              "`pipeline(\"image-segmentation\")` predicts exactly what was scored:\n\n" + "\n".join(table))
    else:
        evaluation_section = "**This checkpoint has not been evaluated yet**; no accuracy is claimed."

    summary = (f"A semantic-segmentation model with the SSA classifier on a SegFormer-style encoder and decoder, "
               f"{config.num_labels} classes.")
    template = resources.files("ssa_hf").joinpath("templates/model_card.md").read_text()
    return template.format(
        metadata=metadata.to_yaml(), title=model_name, summary=summary, architecture_table=architecture_table,
        model_ref=repo_id or "path/to/model", num_labels=config.num_labels, label_section=label_section,
        training_section=training_section, evaluation_section=evaluation_section,
    )


def _mit_variants() -> dict:
    from .configuration_ssa import MIT_VARIANTS

    return MIT_VARIANTS


__all__ = ["build_model_card"]
