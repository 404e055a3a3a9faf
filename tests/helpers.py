"""Shared test helpers: the tiny MiT encoder used by the model-level tests (hidden sizes 8-32, one block a stage)."""

TINY_SEGFORMER = {"hidden_sizes": [8, 16, 24, 32], "depths": [1, 1, 1, 1], "num_attention_heads": [1, 2, 4, 4],
                  "decoder_hidden_size": 16}

# Start of a script for a fresh Python process that behaves like a machine without ssa_hf: importing it fails.
WITHOUT_SSA_HF = """
import importlib.abc
import sys


class BlockPackage(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "ssa_hf" or name.startswith("ssa_hf."):
            raise ImportError("ssa_hf is not installed on this machine")


sys.meta_path.insert(0, BlockPackage())
try:
    import ssa_hf  # noqa: F401
    raise SystemExit("ssa_hf must not be importable here")
except ImportError:
    pass
"""
