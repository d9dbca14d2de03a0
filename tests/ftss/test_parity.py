"""The FTSS scenarios make the same decisions on both backends (real namespaces and the sim).

A decision, per message (source node, msg id): the ACK status the FTSS gave it, the
fabric (A or B) each destination's DELIVERED acknowledgment came back on, and whether
it was retained afterwards -- ``FtssCore.report()``, read from the sim's core and from
the veth daemon's control socket (of the FTSS's last life: a restart forgets them).
Timing (retransmissions, HELLO rounds) may differ; decisions may not.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ftsslab.lab.model import NodeProcess
from ftsslab.lab.runner import Runner
from ftsslab.lab.scenario import load_scenario
from ftsslab.lab.sim import SimBackend

ROOT = Path(__file__).resolve().parents[2]
FTSS_KINDS = {"ftss", "server"}


def ftss_scenarios() -> list[Path]:
    """Every shipped FTSS scenario that needs no kernel stack."""
    out = []
    for path in sorted((ROOT / "scenarios").glob("*.yaml")):
        sc = load_scenario(path)
        if any(n.kind in FTSS_KINDS for n in sc.nodes) and not sc.needs_kernel():
            out.append(path)
    return out


def decisions(result) -> dict:
    """(ftss node, source, msg id within its unit's life, that life) -> (ack, delivered, retained).

    msg ids carry the unit's life (epoch) in their high 32 bits; the sim numbers lives
    from 0 and the veth daemon from an epoch file, so lives are compared by rank.
    """
    out = {}
    for node, report in sorted(result.reports.items()):
        rows = report.get("decisions", [])
        lives: dict[int, list[int]] = {}
        for row in rows:
            lives.setdefault(row["src"], []).append(row["msg"] >> 32)
        rank = {src: {e: i for i, e in enumerate(sorted(set(es)))} for src, es in lives.items()}
        for row in rows:
            key = (node, row["src"], row["msg"] & 0xFFFFFFFF, rank[row["src"]][row["msg"] >> 32])
            out[key] = (row["ack"], tuple(sorted(row["delivered"].items())), row["retained"])
    return out


def test_every_ftss_scenario_is_here():
    names = {p.stem for p in ftss_scenarios()}
    assert {"ftss-guaranteed", "ftss-link-failure", "ftss-broadcast"} <= names


@pytest.mark.root
@pytest.mark.parametrize("path", ftss_scenarios(), ids=lambda p: p.stem)
def test_ftss_decides_alike_on_veth_and_sim(path):
    from ftsslab.lab.veth.backend import VethBackend

    scenario = load_scenario(path)
    sim = Runner(scenario, SimBackend()).run()
    veth = Runner(scenario, VethBackend()).run()
    failed = [(r.backend, o.what, o.detail) for r in (sim, veth) for o in r.outcomes
              if not o.passed]
    assert not failed
    expected, got = decisions(sim), decisions(veth)
    restarted = any(isinstance(s, NodeProcess) for s in scenario.steps)
    assert expected or restarted, "the FTSS decided nothing"  # a restart forgets decisions
    assert got == expected, {"only sim": sorted(set(expected.items()) - set(got.items())),
                             "only veth": sorted(set(got.items()) - set(expected.items()))}
