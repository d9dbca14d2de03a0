"""The same crafted-packet scenarios on both backends make the same forwarding decisions.

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

from .test_veth import _netns_works

ROOT = Path(__file__).resolve().parents[2]
CRAFTED = [ROOT / "scenarios" / "table-change.yaml", ROOT / "scenarios" / "link-failure.yaml",
           ROOT / "tests" / "lab" / "good" / "sim-redirect.yaml"]


def decisions(result, scenario) -> Counter:
    injected = {bytes(parse_packet(s.packet))[6:] for s in scenario.steps if isinstance(s, Send)}
    return Counter((f.step, f.link, f.src, f.dst, f.data) for f in result.frames
                   if f.data[6:] in injected)


@pytest.mark.root
@pytest.mark.skipif(not _netns_works(), reason="needs root and network namespaces")
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


@pytest.mark.parametrize("path", CRAFTED, ids=lambda p: p.stem)
def test_sim_is_deterministic(path):
    scenario = load_scenario(path)
    first = Runner(scenario, SimBackend()).run()
    second = Runner(scenario, SimBackend()).run()
    assert first.passed
    assert first.frames == second.frames and first.events == second.events
