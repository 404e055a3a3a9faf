"""The runnable examples in the public docstrings and the README's Python block stay true."""

import doctest
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import ssa_hf
import ssa_hf.configuration_ssa
import ssa_hf.evaluation
import ssa_hf.modeling_ssa

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.mark.parametrize("module", [ssa_hf.configuration_ssa, ssa_hf.modeling_ssa, ssa_hf.evaluation])
def test_docstring_examples(module):
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


def test_every_config_field_is_documented():
    own_fields = [name for name in ssa_hf.SSAConfig.__annotations__ if not name.startswith("_")]
    assert "teacher_group_size" in own_fields and len(own_fields) > 15
    documented = ssa_hf.SSAConfig.__doc__
    missing = [name for name in own_fields if f"{name} (`" not in documented]
    assert not missing, f"undocumented SSAConfig fields: {missing}"
    getting_started = (README.parent / "docs" / "index.md").read_text()
    for name in ("logit_scale", "teacher_group_size", "validate_labels", "boundary_frame_width"):
        assert name in getting_started, name


def test_readme_is_short_and_its_links_resolve():
    """The README is the five-minute read (at most about 150 lines); the rest lives in the docs, which it links."""
    text = README.read_text()
    assert len(text.splitlines()) <= 150
    assert text.index("make demo") < text.index("## ") and "make test" in text  # the two commands open it
    for heading in ("## Quick start", "## Backbones and decoders", "## Trained checkpoints", "## Hardware",
                    "## Documentation"):
        assert heading in text, heading
    links = re.findall(r"\]\((?!https?://)([^)#]+)", text)
    assert len(links) >= 10
    missing = [link for link in links if not (README.parent / link).exists()]
    assert not missing, f"README links to missing files: {missing}"
    assert "SSA_SPEC" not in text and "shared/SSA" not in text


def test_readme_python_example_names_exist():
    block = re.search(r"```python\n(.*?)```", README.read_text(), re.S).group(1)
    for name in re.findall(r"SSAForSemanticSegmentation\.(\w+)", block) + re.findall(r"SSAConfig\.(\w+)", block):
        assert hasattr(ssa_hf.SSAForSemanticSegmentation, name) or hasattr(ssa_hf.SSAConfig, name), name


def test_readme_setup_steps_are_the_makefiles_and_its_outputs_are_ignored():
    """A newcomer following the README: a virtual environment first, the same pinned torch as `make test`, a word on
    the hub and an offline start, and the files the quick start writes in the working tree are git-ignored."""
    text = README.read_text()
    quick_start = text[text.index("## Quick start"):text.index("## Backbones and decoders")]
    setup = re.search(r"```bash\n(.*?)```", quick_start, re.S).group(1)
    assert re.search(r"python3? -m venv \.venv && \. \.venv/bin/activate", setup)
    pinned = re.search(r"pip install (torch==[\d.]+)", setup).group(1)
    makefile = (README.parent / "Makefile").read_text()
    assert f"pip install --quiet {pinned}" in makefile
    assert setup.index("venv") < setup.index(pinned) < setup.index("pip install -e")
    assert "hub" in quick_start and "from_segformer_config" in quick_start  # where it downloads, and offline
    assert "SSA_SHARED_DATA" in quick_start and "train/images" in quick_start  # the data layout the commands need
    written = set(re.findall(r"save_pretrained\(\"([\w-]+)\"\)", quick_start))
    written |= {name for pair in re.findall(r"--output (predictions)/|--dry-run (upload)/", quick_start) for name in pair}
    assert {"ssa-b0-ade", "predictions", "upload"} <= written
    ignored = subprocess.run(["git", "check-ignore", *[f"{name}/x" for name in sorted(written - {""})]],
                             cwd=README.parent, capture_output=True, text=True)
    if ignored.returncode == 128:
        pytest.skip("not a git checkout")
    assert len(ignored.stdout.split()) == len(written - {""}), ignored.stdout
    assert re.search(r"^test:.*\n\t.*pytest .*--durations=\d+", makefile, re.M)  # the slowest tests are printed


def test_an_editable_install_prints_no_setuptools_warning(tmp_path):
    """`pip install -e .` (the README's and `make test`'s) builds without setuptools' boxed BuildBackendWarning."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    done = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-v", "--no-deps", "-e",
                           str(README.parent)], capture_output=True, text=True, timeout=300)  # setuptools from the index
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Successfully installed ssa-hf" in done.stdout
    # setuptools' boxed note (pip >= 25 shows it as a BuildBackendWarning): the meta-path finder of a layout it
    # cannot put on sys.path as it is. Shown with -v here, where the build backend's output is.
    assert "Please be careful with folders in your working directory" not in done.stdout + done.stderr
    assert "BuildBackendWarning" not in done.stdout + done.stderr


ROOT = README.parent
TUTORIAL = ROOT / "docs" / "tutorials" / "fine_tuning.py"


def _api_reference_names() -> list[str]:
    return re.findall(r"^::: ([\w.]+)", (ROOT / "docs" / "reference" / "api.md").read_text(), re.M)


def test_every_public_symbol_is_in_the_api_reference_with_a_docstring():
    """The API page lists all of `ssa_hf.__all__`, and each entry (and each public method shown) has a docstring,
    read the way mkdocstrings reads it (griffe: attribute docstrings included)."""
    griffe = pytest.importorskip("griffe")
    names = _api_reference_names()
    assert {f"ssa_hf.{name}" for name in ssa_hf.__all__ if name != "__version__"} <= set(names)
    package = griffe.load("ssa_hf", search_paths=[str(ROOT)], resolve_aliases=True)
    undocumented = []
    for name in names:
        obj = package[name.removeprefix("ssa_hf.")]
        if not (obj.docstring and obj.docstring.value.strip()):
            undocumented.append(name)
        if obj.is_class:
            for member_name, member in obj.members.items():
                if member.is_function and not member_name.startswith("_") and member_name in obj.members \
                        and not member.is_alias and not (member.docstring and member.docstring.value.strip()):
                    undocumented.append(f"{name}.{member_name}")
    assert not undocumented, f"public symbols without a docstring: {undocumented}"


@pytest.fixture(scope="module")
def built_site(tmp_path_factory):
    """`make docs` into a temporary folder: (the build's result, the site folder)."""
    pytest.importorskip("mkdocs")
    site = tmp_path_factory.mktemp("docs") / "site"
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
                            cwd=ROOT, capture_output=True, text=True, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    return result, site.parent


def test_docs_build_strictly(built_site):
    """`make docs`: no broken link, no missing reference, no docstring warning; the CLI reference is generated from
    the parser and the tutorial renders as a notebook."""
    result, tmp_path = built_site
    assert result.returncode == 0, result.stderr[-3000:]
    cli = (tmp_path / "site" / "reference" / "cli" / "index.html").read_text()
    for command in ("train", "evaluate", "predict", "convert", "publish", "space", "export-onnx"):
        assert f"ssa-seg {command}" in cli, command
    assert "--trust-remote-code" in cli
    tutorial = (tmp_path / "site" / "tutorials" / "fine_tuning" / "index.html").read_text()
    assert "from_segformer" in tutorial and "jp-Cell" in tutorial  # rendered by mkdocs-jupyter as notebook cells
    assert (tmp_path / "site" / "reference" / "api" / "index.html").read_text().count("semantic_prototype_adaptation")


# Markdown that a reader would see broken: an identifier with underscores turned into italics, a placeholder of
# the Markdown renderer leaking, a transformers-style [`Name`] link left as literal brackets.
RENDERING_DEFECTS = {"italics inside a word": r"\w<em>|</em>\w", "leaked placeholder": r"klzzwxh",
                     "unresolved [`link`]": r"\[<code>[^<]*</code>\]"}


def test_rendered_pages_have_no_markdown_defects(built_site):
    result, tmp_path = built_site
    assert result.returncode == 0, result.stderr[-3000:]
    pages = sorted((tmp_path / "site").rglob("*.html"))
    assert len(pages) >= 15
    found = [f"{page.relative_to(tmp_path / 'site')}: {defect}: {match.group(0)[:80]!r}"
             for page in pages for defect, pattern in RENDERING_DEFECTS.items()
             for match in [re.search(r".{0,40}(?:" + pattern + r").{0,40}", page.read_text(), re.S)] if match]
    assert not found, found
    # SSAConfig renders its fields as a parameter table (a docstring without Args: becomes one paragraph).
    api = (tmp_path / "site" / "reference" / "api" / "index.html").read_text()
    config_section = re.search(r'id="ssa_hf.SSAConfig".*?</table>', api, re.S).group(0)
    fields = [name for name in ssa_hf.SSAConfig.__annotations__ if not name.startswith("_")]
    missing = [name for name in fields if f"<code>{name}</code>" not in config_section]
    assert not missing, missing


def test_public_functions_document_their_arguments_and_results():
    """Google-style sections, parsed as mkdocstrings parses them: every function and method on the API page that
    takes arguments has `Args:`, every one with a result has `Returns:`, and no parsed parameter name is garbled."""
    griffe = pytest.importorskip("griffe")
    package = griffe.load("ssa_hf", search_paths=[str(ROOT)], resolve_aliases=True)
    problems = []

    def check(obj, label):
        sections = {section.kind.value: section for section in obj.docstring.parse("google", warnings=False)}
        documented = [p.name for p in sections["parameters"].value] if "parameters" in sections else []
        problems.extend(f"{label}: garbled parameter {name!r}" for name in documented if not name.isidentifier())
        if not obj.is_function:
            return
        arguments = [p.name for p in obj.parameters if p.name not in ("self", "cls") and not p.name.startswith("*")]
        if arguments and "parameters" not in sections:
            problems.append(f"{label}: no Args section")
        if obj.returns is not None and str(obj.returns) != "None" and "returns" not in sections:
            problems.append(f"{label}: no Returns section")

    for name in _api_reference_names():
        obj = package[name.removeprefix("ssa_hf.")]
        check(obj, name)
        if obj.is_class:
            for member_name, member in obj.members.items():
                if member.is_function and not member_name.startswith("_") and not member.is_alias:
                    check(member, f"{name}.{member_name}")
    assert not problems, problems


def test_the_notebook_is_the_script():
    """The committed .ipynb is what jupytext makes of the percent-format script (`make docs` regenerates it)."""
    jupytext = pytest.importorskip("jupytext")
    script = jupytext.read(TUTORIAL)
    notebook = jupytext.read(TUTORIAL.with_suffix(".ipynb"))
    assert [(c.cell_type, c.source) for c in notebook.cells] == [(c.cell_type, c.source) for c in script.cells]
    assert sum(c.cell_type == "code" for c in script.cells) >= 6


@pytest.mark.parametrize("data", ["generated scenes", "camvid"])
def test_the_tutorial_runs_at_a_tiny_budget(tmp_path, data):
    """The tutorial, executed as it is, on a tiny SegFormer, with the generated scenes and with CamVid (when
    ../shared/data is here): it fine-tunes both models, compares them, draws the plots and reloads the saved folder
    in pipeline."""
    pytest.importorskip("matplotlib")
    camvid = ROOT.parent / "shared" / "data" / "camvid"
    if data == "camvid" and not camvid.is_dir():
        pytest.skip(f"CamVid not found at {camvid} (the project's shared data)")
    from transformers import SegformerConfig, SegformerForSemanticSegmentation

    SegformerForSemanticSegmentation(SegformerConfig(
        hidden_sizes=[8, 16, 24, 32], depths=[1, 1, 1, 1], num_attention_heads=[1, 2, 4, 4], decoder_hidden_size=16,
        num_labels=150)).save_pretrained(tmp_path / "segformer")
    env = {**os.environ, "SSA_TUTORIAL_SEGFORMER": str(tmp_path / "segformer"), "SSA_TUTORIAL_ITERATIONS": "2",
           "SSA_TUTORIAL_EVAL_LIMIT": "3", "SSA_TUTORIAL_DATA": str(camvid if data == "camvid" else tmp_path / "no-camvid"),
           "SSA_TUTORIAL_OUTPUT": str(tmp_path / "runs"), "MPLBACKEND": "Agg", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, str(TUTORIAL)], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "| SSA |" in result.stdout and "| SegFormer |" in result.stdout
    assert "pipeline found" in result.stdout
    (run,) = (tmp_path / "runs").iterdir()
    assert (run / "ssa" / "final" / "model.safetensors").is_file()
    assert (run / "segformer" / "final" / "config.json").is_file()
    assert (run / "per_class_iou.png").stat().st_size > 5_000 and (run / "predictions.png").stat().st_size > 5_000
    expected_classes = "Sky, Building" if data == "camvid" else "sky, building"
    assert f"({11 if data == 'camvid' else 6} classes: {expected_classes}" in result.stdout
