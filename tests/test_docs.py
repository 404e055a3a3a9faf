"""The runnable examples in the public docstrings and the README's Python block stay true."""

import doctest
import re
from pathlib import Path

import pytest

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
    readme = README.read_text()
    for name in ("logit_scale", "teacher_group_size", "validate_labels", "boundary_frame_width"):
        assert name in readme, name


def test_readme_python_example_names_exist():
    block = re.search(r"```python\n(.*?)```", README.read_text(), re.S).group(1)
    for name in re.findall(r"SSAForSemanticSegmentation\.(\w+)", block) + re.findall(r"SSAConfig\.(\w+)", block):
        assert hasattr(ssa_hf.SSAForSemanticSegmentation, name) or hasattr(ssa_hf.SSAConfig, name), name
