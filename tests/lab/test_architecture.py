"""The engine (`ftsslab/lab/`) imports no seed system, and every kind is registered once.

Systems plug in through `ftsslab/systems.py` (the one list) and `KindSpec`; an import of
a system from the engine, at any level of a module, would tie the two together again.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from ftsslab.lab.kinds import kinds

ROOT = Path(__file__).resolve().parents[2]
ENGINE = ROOT / "ftsslab" / "lab"


def imported(path: Path) -> set[str]:
    """Every module a file imports, anywhere in it (relative imports resolved)."""
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level else ""
            mod = ".".join(p for p in (base, node.module or "") if p)
            out.add(mod)
            out |= {f"{mod}.{a.name}" for a in node.names}
    return out


def systems() -> set[str]:
    """The packages `ftsslab/systems.py` lists, other than the engine's own kinds."""
    return {m.rsplit(".", 1)[0] for m in imported(ROOT / "ftsslab" / "systems.py")
            if not m.startswith("ftsslab.lab")}


def test_the_engine_imports_no_system():
    assert "ftsslab.ftss" in systems()
    offenders = {str(p.relative_to(ROOT)): sorted(m for m in imported(p)
                                                   if any(m.startswith(s) for s in systems()))
                 for p in ENGINE.rglob("*.py")}
    assert {p: ms for p, ms in offenders.items() if ms} == {}


def test_importing_the_engine_loads_systems_only_on_a_kind_lookup():
    code = ("import sys, ftsslab.lab.kinds as k, ftsslab.lab.sim, ftsslab.lab.veth.backend\n"
            "before = any(m.startswith('ftsslab.ftss') for m in sys.modules)\n"
            "k.get_kind('ftss')\n"
            "print(before, any(m.startswith('ftsslab.ftss') for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=ROOT).stdout.split()
    assert out == ["False", "True"]


def test_every_kind_carries_its_sim_model_and_veth_driver():
    for spec in kinds():
        assert spec.veth is not None, spec.name
        if not spec.needs_kernel:
            assert spec.sim is not None, spec.name
        assert (spec.veth.program is not None) == spec.has_process, spec.name
