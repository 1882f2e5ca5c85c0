"""The synthetic-data package's place in the layers: below detect, on top of io and morphology only.

The detector trains on what neurorecon.synth makes, so synth must not reach back into detect (or the
CLI, viewer, qc): a new renderer that did would tie the data to one detector version.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import neurorecon.synth as synth

SYNTH = Path(synth.__file__).parent
ALLOWED = ("neurorecon.io", "neurorecon.morphology", "neurorecon.synth")


def _imports(path: Path) -> list[str]:
    """Absolute names of the neurorecon modules a synth file imports (relative ones resolved)."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names if a.name.split(".")[0] == "neurorecon"]
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                base = node.module or ""
            else:   # "from ..x import y" inside neurorecon/synth/f.py
                base = ".".join(["neurorecon", "synth"][: 2 - (node.level - 1)] + ([node.module] if node.module else []))
            if base.split(".")[0] == "neurorecon":
                out += [base if node.module else f"{base}.{a.name}" for a in node.names]
    return out


def test_synth_imports_only_io_and_morphology():
    files = sorted(SYNTH.glob("*.py"))
    assert {f.name for f in files} >= {"__init__.py", "render.py", "arbors.py", "errors.py", "samples.py"}
    seen = {f.name: _imports(f) for f in files}
    assert "neurorecon.morphology.neuron" in seen["arbors.py"]      # the parser sees relative imports
    assert "neurorecon.synth.render" in seen["errors.py"]
    bad = {name: [m for m in mods if not m.startswith(ALLOWED)] for name, mods in seen.items()}
    assert not any(bad.values()), bad


def test_making_a_sample_loads_nothing_of_detect(tmp_path):
    # A fresh interpreter: render, inject, write one crop; detect must not have been imported.
    code = (
        "import sys, numpy as np\n"
        "from neurorecon.synth import Imaging, make_sample, synthetic_arbors, write_sample\n"
        "golds = synthetic_arbors(3)\n"
        "s = make_sample(golds[0], golds[1:], Imaging(voxel_size=(1.0, 1.0, 2.0)), np.random.default_rng(0),\n"
        "                size_um=(48.0, 48.0, 24.0))\n"
        "assert s is not None\n"
        f"write_sample(s, {str(tmp_path)!r}, 'c')\n"
        "print(sorted(m for m in sys.modules if m.startswith(('neurorecon.detect', 'neurorecon.cli', 'neurorecon.qc'))))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"
    assert (tmp_path / "c.tif").stat().st_size > 0 and (tmp_path / "c.labels.csv").is_file()


@pytest.mark.parametrize("name", synth.__all__)
def test_public_names_are_the_submodules_objects(name):
    import importlib

    obj = getattr(synth, name)
    module = importlib.import_module(f"neurorecon.synth.{synth._WHERE[name]}")
    assert obj is getattr(module, name)


def test_render_is_the_module_and_unknown_names_fail():
    import neurorecon.synth.render as render_module

    assert synth.render is render_module and callable(render_module.render)
    with pytest.raises(AttributeError, match="no attribute 'detect'"):
        synth.detect
