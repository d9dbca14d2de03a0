"""One definition per wire number: ``ftsslab/fast/`` defines them, the layers import them."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FAST = sorted((ROOT / "ftsslab" / "fast").glob("*.py"))
LAYERS = sorted((ROOT / "layers").glob("*.py"))
# Same name, other content: the layer's table holds the Scapy classes for the fast names.
DERIVED = {"HEADER_CHAINS"}


def constants(path: Path) -> set[str]:
    """Upper-case names a module assigns at its top level."""
    names = set()
    for node in ast.parse(path.read_text()).body:
        targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
        for target in targets:
            for name in target.elts if isinstance(target, ast.Tuple) else [target]:
                if isinstance(name, ast.Name) and name.id.isupper():
                    names.add(name.id)
    return names


def test_layers_define_no_number_of_a_fast_module():
    fast = set().union(*map(constants, FAST)) - DERIVED
    again = {p.name: sorted(constants(p) & fast) for p in LAYERS if constants(p) & fast}
    assert again == {}, "import these from ftsslab.fast instead of defining them again"


def test_fast_modules_do_not_import_scapy():
    modules = ", ".join(f"ftsslab.fast.{p.stem}" for p in FAST if p.stem != "__init__")
    code = f"import sys, {modules}; print(sorted(m for m in sys.modules if m.startswith('scapy')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"
