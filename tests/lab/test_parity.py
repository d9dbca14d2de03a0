"""The same crafted-packet scenarios on both backends make the same forwarding decisions.

Every shipped scenario runs on both backends, or needs a kernel stack and says so.

A decision is where each injected frame (or its L2-NAT rewrite) was seen: which link,
from which endpoint to which, during which step. Frames the veth hosts' real kernels
add on their own (ARP replies, ICMP errors) are not injected frames and are left out.
"""

from collections import Counter
from pathlib import Path

import pytest

from ftsslab.expr import parse_packet
from ftsslab.lab.model import Send
from ftsslab.lab.runner import Runner
from ftsslab.lab.scenario import load_scenario
from ftsslab.lab.sim import SimBackend

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = sorted((ROOT / "scenarios").glob("*.yaml"))
FTSS_KINDS = {"ftss", "server"}  # their decisions are compared in tests/ftss/test_parity.py
NAS_KINDS = {"nas-switch", "nas"}  # their traffic is the nodes' own: tests/nas/test_twins.py
SAN_KINDS = {"sanic"}  # theirs too: tests/san/test_scenarios.py runs them on both backends
I2O_KINDS = {"i2o-host", "i2o-remote"}  # ... and tests/i2o/test_scenarios.py


def _crafted(path: Path) -> bool:
    sc = load_scenario(path)
    return not sc.needs_kernel() and not any(
        n.kind in FTSS_KINDS | NAS_KINDS | SAN_KINDS | I2O_KINDS for n in sc.nodes)


def _san(path: Path) -> bool:
    """A SAN scenario the sim runs (i2o-contexts' 10,000 requests twice are left out: its
    twin runs are in tests/i2o)."""
    sc = load_scenario(path)
    return not sc.needs_kernel() and path.stem != "i2o-contexts" and \
        any(n.kind in SAN_KINDS | I2O_KINDS for n in sc.nodes)


CRAFTED = [p for p in SHIPPED if _crafted(p)] + [ROOT / "tests" / "lab" / "good" /
                                                  "sim-redirect.yaml"]
SAN = [p for p in SHIPPED if _san(p)]


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_every_shipped_scenario_runs_on_both_backends_or_says_why(path):
    """A scenario that needs a kernel stack declares `backend: veth` with a comment above it
    saying why; every other one must not pin a backend (both run it, and a parity test
    compares them)."""
    sc = load_scenario(path)
    lines = path.read_text().splitlines()
    pinned = [i for i, line in enumerate(lines) if line.startswith("backend:")]
    if sc.needs_kernel():
        assert sc.backend == "veth" and pinned, f"{path.name}: needs `backend: veth`"
        assert lines[pinned[0] - 1].startswith("#"), f"{path.name}: say why above `backend:`"
    else:
        assert sc.backend == "auto", f"{path.name}: runs on both backends; do not pin one"


def decisions(result, scenario) -> Counter:
    injected = {bytes(parse_packet(s.packet))[6:] for s in scenario.steps if isinstance(s, Send)}
    return Counter((f.step, f.link, f.src, f.dst, f.data) for f in result.frames
                   if f.data[6:] in injected)


@pytest.mark.root
@pytest.mark.parametrize("path", CRAFTED, ids=lambda p: p.stem)
def test_veth_and_sim_forward_alike(path):
    from ftsslab.lab.veth.backend import VethBackend

    scenario = load_scenario(path)
    assert not scenario.needs_kernel()
    sim = Runner(scenario, SimBackend()).run()
    veth = Runner(scenario, VethBackend()).run()
    assert sim.passed and veth.passed, [o for o in sim.outcomes + veth.outcomes if not o.passed]
    expected, got = decisions(sim, scenario), decisions(veth, scenario)
    assert expected, "the scenario injects frames"
    assert got == expected, {"only sim": expected - got, "only veth": got - expected}


@pytest.mark.parametrize("path", CRAFTED + SAN, ids=lambda p: p.stem)
def test_sim_is_deterministic(path):
    scenario = load_scenario(path)
    first = Runner(scenario, SimBackend()).run()
    second = Runner(scenario, SimBackend()).run()
    assert first.passed
    assert first.frames == second.frames and first.events == second.events
