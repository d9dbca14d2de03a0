"""The `ftss` and `server` kinds in the sim: every FTSS scenario passes, deterministically."""

from __future__ import annotations

from pathlib import Path

import pytest

from ftsslab.lab.runner import Runner
from ftsslab.lab.scenario import ScenarioErrors, load_scenario, load_scenario_text
from ftsslab.lab.sim import SimBackend

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = ["guaranteed", "undeliverable", "external", "broadcast", "link-failure",
             "retention", "file-io"]


def run(name: str):
    scenario = load_scenario(ROOT / "scenarios" / f"ftss-{name}.yaml")
    return Runner(scenario, SimBackend()).run()


@pytest.mark.parametrize("name", SCENARIOS)
def test_scenario_passes_on_sim(name):
    result = run(name)
    failed = [f"{o.what}: {o.detail}" for o in result.outcomes if not o.passed]
    assert not failed
    assert result.outcomes


def test_runs_are_deterministic():
    a, b = run("link-failure"), run("link-failure")
    assert [(f.time, f.link, f.data) for f in a.frames] == \
        [(f.time, f.link, f.data) for f in b.frames]


def test_a_failing_expectation_fails():
    """The scenarios can fail: with the FTSS's external port gone, `external` does."""
    text = (ROOT / "scenarios" / "ftss-external.yaml").read_text()
    broken = text.replace("ftss: {kind: ftss, external: ext}", "ftss: {kind: ftss}")
    broken = broken.replace('{node: ftss, interface: ext}', '{node: ftss, interface: x9}')
    result = Runner(load_scenario_text(broken, "x.yaml"), SimBackend()).run()
    assert not result.passed


@pytest.mark.parametrize(("options", "error"), [
    ("mode: tcp", "not allowed"),
    ("node_id: 0", "node id"),
    ("node_id: 1, retry: -1", "must be > 0"),
    ("node_id: 1, fabrik: [fa, fb]", "unknown option"),
    ("mode: file", "required"),
])
def test_server_options_are_checked(options, error):
    text = f"""
name: t
backend: sim
nodes:
  ftss: {{kind: ftss}}
  app: {{kind: host}}
  srv1: {{kind: server, {options}}}
links:
  - "srv1:fa ftss:a1"
  - "srv1:fb ftss:b1"
  - "srv1:stack app:eth0"
"""
    with pytest.raises(ScenarioErrors, match=error):
        load_scenario_text(text, "t.yaml")


def test_ftss_static_routes_option():
    text = """
name: t
backend: sim
nodes:
  ftss: {kind: ftss, routes: [{node_id: 7, macs: ["02:00:00:00:00:07"], ports: [a1]}]}
  h: {kind: host}
links:
  - "h:eth0 ftss:a1"
"""
    backend = SimBackend()
    backend.up(load_scenario_text(text, "t.yaml"))
    core = backend._nodes["ftss"].core.core
    assert core.lookup("02:00:00:00:00:07") == 7 and core.able(7)
    backend.down()


def test_fabric_links_default_to_the_fcoe_baby_jumbo_mtu():
    text = (ROOT / "scenarios" / "ftss-guaranteed.yaml").read_text()
    links = {ln.name: ln.mtu for ln in load_scenario_text(text, "g.yaml").links}
    assert links["srv1:fa ftss:a1"] == 2500  # ftss <-> server: FCoE needs 2500
    assert links["app1:eth0 srv1:stack"] == 1500  # the stack side is plain Ethernet
