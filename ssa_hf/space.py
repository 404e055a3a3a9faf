"""A Gradio demo for a hub Space beside a model (`ssa-seg space`, `ssa-seg publish --space`).

The Space folder holds `app.py` (from `templates/space_app.py`), `requirements.txt`, a README whose YAML header is
the Space's metadata, and `examples/` with the images the app offers. The app segments through
`pipeline("image-segmentation")`, so it shows what users of the model get.
"""

import json
import os
import shutil
from pathlib import Path

SPACE_FILES = ("app.py", "requirements.txt", "README.md")
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json")
TEMPLATE = Path(__file__).parent / "templates" / "space_app.py"


class SpaceError(ValueError):
    """A Space that cannot be written as asked (foreign model, unreadable example, occupied folder)."""


def _check_local_model(model: str) -> None:
    """A local folder must hold an SSA model and its image processor (the pipeline needs both). Reading the JSON
    files runs no code."""
    folder = Path(model)
    try:
        config = json.loads((folder / "config.json").read_text())
    except FileNotFoundError:
        raise SpaceError(f"{folder} has no config.json; give a model folder (save_pretrained) or a hub id.") from None
    except ValueError as error:
        raise SpaceError(f"cannot read {folder / 'config.json'}: {error}") from None
    if config.get("model_type") != "ssa":
        raise SpaceError(f"{folder} is a '{config.get('model_type')}' model; the Space demo is for SSA models.")
    if not (folder / "preprocessor_config.json").is_file():
        raise SpaceError(f"{folder} has no preprocessor_config.json; save the model's SSAImageProcessor beside it, "
                         f"so the demo preprocesses as evaluation did.")
    if not any((folder / name).is_file() for name in WEIGHT_FILES):
        raise SpaceError(f"{folder} has no weights ({' or '.join(WEIGHT_FILES)}); the Space would have no model to "
                         f"run. Save the model into it first (save_pretrained).")


def _example_images(examples: list[Path], folder: Path) -> list[Path]:
    """Copy each example (checked to open as an image) into folder/examples; with none, one generated street scene."""
    from PIL import Image

    from .data import DataError, open_image

    target = folder / "examples"
    target.mkdir(parents=True, exist_ok=True)
    written = []
    for index, path in enumerate(examples):
        path = Path(path)
        try:
            open_image(path, "example image")
        except DataError as error:
            raise SpaceError(f"cannot use {path} as an example: {error}") from None
        destination = target / f"{index:02d}_{path.name}"
        shutil.copyfile(path, destination)
        written.append(destination)
    if not written:
        import numpy as np

        from .synthetic import make_scene

        image, _ = make_scene(256, 320, np.random.default_rng(0))
        destination = target / "generated_street_scene.png"
        Image.fromarray(image).save(destination)
        written.append(destination)
    return written


def space_readme(model: str, title: str, on_hub: bool) -> str:
    """The Space card: YAML metadata (sdk, app file, the model it demonstrates) and a short description."""
    import gradio

    models = f"models:\n  - {model}\n" if on_hub else ""
    source = f"`{model}`" if on_hub else f"the local model folder `{model}` (relative to this folder)"
    return (
        f"---\ntitle: {json.dumps(title)}\nemoji: 🛣️\ncolorFrom: blue\ncolorTo: green\nsdk: gradio\n"
        f"sdk_version: {gradio.__version__}\napp_file: app.py\npinned: false\nlicense: apache-2.0\n{models}"
        f"tags:\n  - image-segmentation\n  - semantic-segmentation\n  - ssa-seg\n---\n\n"
        f"# {title}\n\nSemantic segmentation with {source}, an SSA-Seg model (Semantic and Spatial Adaptive "
        f"classifier, Ma, Ni and Chen, NeurIPS 2024, arXiv:2405.06525). Upload an image or pick an example: the app "
        f"runs the model through `pipeline(\"image-segmentation\")` and shows a colour overlay, the legend and the "
        f"share of the image each class covers.\n\nRun it locally: `pip install -r requirements.txt gradio` then "
        f"`python app.py`.\n"
    )


def write_space(model: str, output: Path, examples: list[Path] = (), title: str | None = None,
                requirement: str | None = None, overwrite: bool = False) -> Path:
    """Write the Space folder for `model` (a hub id, or a local folder for trying it here) to `output`.

    Args:
        model: the model the app loads: a hub id (the Space's usual case) or a local SSA folder, which the app names
            by its path relative to the Space folder (nothing of this machine is written into the Space).
        output: the Space folder; an existing non-empty folder is replaced only with `overwrite`, and only when it
            is an earlier Space (it holds `app.py`).
        examples: images offered under the upload box (copied into `examples/`); default one generated scene.
        title: the Space's title; default from the model name.
        requirement: by default the app runs the model code saved in the model's repository
            (`trust_remote_code=True`), which needs no package; given a pip requirement that provides `ssa_hf`
            (e.g. `ssa-hf==0.2.0` or a git URL), the app imports `ssa_hf` from it instead.
        overwrite: replace an earlier Space folder.

    Returns:
        `Path`: the written Space folder.
    """
    output = Path(output)
    on_hub = not Path(model).exists()
    if not on_hub:
        _check_local_model(model)
    if output.exists() and not output.is_dir():
        raise SpaceError(f"{output} exists and is not a folder.")
    if output.is_dir() and any(output.iterdir()):
        if not overwrite:
            raise SpaceError(f"{output} exists and is not empty; choose another folder or pass --overwrite.")
        if not (output / "app.py").is_file():
            raise SpaceError(f"{output} is not a Space folder written by ssa-seg space (no app.py); it is left as "
                             f"it is even with --overwrite.")
        shutil.rmtree(output)
    if on_hub:
        reference, name = model, model.split("/")[-1]
    else:  # relative to the Space folder, which the app resolves from its own location
        reference = os.path.relpath(Path(model).resolve(), output.resolve())
        local = Path(model).resolve()
        name = local.parent.name if local.name == "final" else local.name  # a training run's final/: the run's name
    title = title or f"SSA-Seg: {name}"
    partial = output.with_name(f".{output.name}.partial")
    if partial.exists():
        shutil.rmtree(partial)
    partial.mkdir(parents=True)
    try:
        _example_images(list(examples), partial)
        app = TEMPLATE.read_text()
        for token, value in (("__MODEL__", repr(reference)), ("__LOCAL_MODEL__", repr(not on_hub)),
                             ("__TRUST_REMOTE_CODE__", repr(requirement is None)), ("__TITLE__", repr(title))):
            app = app.replace(token, value)
        (partial / "app.py").write_text(app)
        requirements = ["# gradio comes with the Space (README: sdk_version); locally: pip install gradio",
                        "torch", "transformers>=5.0", "pillow", "numpy"]
        if requirement is not None:
            requirements.append(requirement)
        (partial / "requirements.txt").write_text("\n".join(requirements) + "\n")
        (partial / "README.md").write_text(space_readme(reference, title, on_hub))
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    partial.rename(output)
    return output
