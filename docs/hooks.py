"""MkDocs hooks: the command-line reference is generated from `ssa-seg`'s argument parser at build time, and the
benchmark plots under `benchmarks/results/` are published with the pages that show them."""

import argparse
from pathlib import Path

from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parents[1]
MARKER = "<!-- cli-reference -->"


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def cli_reference() -> str:
    """One section per `ssa-seg` command: its help line and its full `--help` text."""
    from ssa_hf_cli import build_parser

    parser = build_parser()
    helps = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help for choice in action._choices_actions}
    sections = []
    for name, subparser in _subcommands(parser).items():
        subparser.prog = f"ssa-seg {name}"
        sections.append(f"## `ssa-seg {name}`\n\n{helps.get(name, '')}\n\n```text\n{subparser.format_help()}```\n")
    return "\n".join(sections)


def on_page_markdown(markdown: str, page, **kwargs) -> str:
    if MARKER in markdown:
        markdown = markdown.replace(MARKER, cli_reference())
    return markdown


def on_files(files, config, **kwargs):
    for path in sorted((ROOT / "benchmarks" / "results").glob("*.png")):
        uri = f"benchmarks/results/{path.name}"
        files.append(File.generated(config, uri, abs_src_path=str(path)))
    return files
