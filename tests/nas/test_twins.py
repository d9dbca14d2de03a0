"""Check 30, twin backends: ``scenarios/nas-twins*.yaml`` give the same TCH state transitions,
table events, handoff outcomes and requests served on the sim and on veth; only timing
differs. The sim runs are always tested; the veth runs need root (``-m root``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ftsslab.lab.runner import Runner, RunResult
from ftsslab.lab.scenario import load_scenario
from ftsslab.lab.sim import SimBackend

SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"


def twin_sequence(result: RunResult) -> dict[str, dict[str, list[tuple]]]:
    """Per node, what check 30 compares, in the order the node logged it: ``states`` -- TCH
    transitions (role, old, new), the switch's table events (why, old, new) and handoff
    outcomes (to, outcome) -- and ``requests`` served (method, path, status). Clients'
    ports, sequence numbers, checkpoint sizes, ``why`` texts and times are left out: they
    differ between a kernel and a model."""
    out = {}
    for node, report in sorted(result.reports.items()):
        states, requests = [], []
        for ev in report.get("events", []):
            kind = ev["kind"]
            if kind == "tch":
                states.append(("tch", ev["role"], ev["old"], ev["new"]))
            elif kind == "table":
                states.append(("table", ev["why"], ev["old"], ev["new"]))
            elif kind == "handoff-end":
                states.append(("handoff-end", ev["to"], ev["outcome"]))
            elif kind == "request":
                requests.append((ev["method"], ev["path"], ev["status"]))
        out[node] = {"states": states, "requests": requests}
    return out


FIRST = [("tch", "first", a, b) for a, b in (
    ("IDLE", "SYN_SENT"), ("SYN_SENT", "ESTABLISHED"), ("ESTABLISHED", "TRANSFER"),
    ("TRANSFER", "SET_SENT"), ("SET_SENT", "SWITCHING"), ("SWITCHING", "AWAIT_FIN"),
    ("AWAIT_FIN", "CLOSED"))]
SECOND = [("tch", "second", a, b) for a, b in (
    ("LISTEN", "SYN_RCVD"), ("SYN_RCVD", "ESTABLISHED"), ("ESTABLISHED", "RESTORING"),
    ("RESTORING", "SET_RCVD"), ("SET_RCVD", "MORPH"), ("MORPH", "FIN_WAIT"),
    ("FIN_WAIT", "CLOSED"))]
PLAIN = {
    # connection 1 (round-robin: d1) is redirected to d2; connection 2 (d2) is redirected
    # to d1, which hands it back to d2 mid-download
    "d1": {"states": [*FIRST, ("handoff-end", "d2", "HANDED_OFF"), *SECOND,
                      *FIRST, ("handoff-end", "d2", "HANDED_OFF")],
           "requests": []},
    "d2": {"states": [*SECOND, *FIRST, ("handoff-end", "d1", "HANDED_OFF"), *SECOND],
           "requests": [("GET", "/d2/b.bin", 200), ("GET", "/d1/a.bin", 200)]},
    "s1": {"states": [("table", "placed", None, "d1"), ("table", "xap", "d1", "d2"),
                      ("table", "placed", None, "d2"), ("table", "xap", "d2", "d1"),
                      ("table", "xap", "d1", "d2"), ("table", "closed", "d2", None),
                      ("table", "closed", "d2", None)],
           "requests": []},
}



def _bound(device: str) -> list[tuple]:
    """The switch as the first device of one delayed binding."""
    return [*FIRST[:5], ("table", "delayed", None, device), *FIRST[5:],
            ("handoff-end", device, "HANDED_OFF")]


DELAYED = {
    "d1": {"states": SECOND, "requests": [("GET", "/d1/f.bin", 200)]},
    "d2": {"states": SECOND, "requests": [("GET", "/d2/f.bin", 200)]},
    "s1": {"states": [*_bound("d2"), *_bound("d1"), ("table", "closed", "d2", None),
                      ("table", "closed", "d1", None)],
           "requests": []},
}
# the second embodiment (Fig. 9, D2.9): the same connections, handed off by messages
FIRST_M = [("tch", "first", a, b) for a, b in (
    ("IDLE", "OPEN"), ("OPEN", "ACTIVE"), ("ACTIVE", "WAIT"), ("WAIT", "DONE"),
    ("DONE", "IDLE"))]
SECOND_M = [("tch", "second", a, b) for a, b in (
    ("IDLE", "OPEN"), ("OPEN", "ACTIVE"), ("ACTIVE", "ACTIVE"), ("ACTIVE", "IDLE"))]
MESSAGES = {
    "d1": {"states": [*FIRST_M, ("handoff-end", "d2", "HANDED_OFF"), *SECOND_M,
                      *FIRST_M, ("handoff-end", "d2", "HANDED_OFF")],
           "requests": []},
    "d2": {"states": [*SECOND_M, *FIRST_M, ("handoff-end", "d1", "HANDED_OFF"), *SECOND_M],
           "requests": [("GET", "/d2/b.bin", 200), ("GET", "/d1/a.bin", 200)]},
    "s1": PLAIN["s1"],
}
# Fig. 7 (check 14): a half-handoff in the client direction; finish() is the second Complete
HALF_CLIENT = {
    "d1": {"states": [*[("tch", "first", a, b) for a, b in (
        ("IDLE", "OPEN"), ("OPEN", "ACTIVE"), ("ACTIVE", "WAIT"), ("WAIT", "HALF_ACTIVE"),
        ("HALF_ACTIVE", "HALF_ACTIVE"), ("HALF_ACTIVE", "DONE"), ("DONE", "IDLE"))],
        ("handoff-end", "d2", "HANDED_OFF")],
        "requests": [("GET", "/big.bin", 200)]},
    "d2": {"states": [("tch", "second", a, b) for a, b in (
        ("IDLE", "OPEN"), ("OPEN", "ACTIVE"), ("ACTIVE", "ACTIVE"), ("ACTIVE", "ACTIVE"),
        ("ACTIVE", "IDLE"))],
        "requests": [("GET", "/small.bin", 200)]},
    "s1": {"states": [("table", "placed", None, "d1"), ("table", "xap", "d1", "d2"),
                      ("table", "closed", "d2", None)],
           "requests": []},
}
# Fig. 8 (check 15): the sending direction moves, the entry never does; the client's FIN ends it
HALF_CLUSTER = {
    "d1": {"states": [*[("tch", "first", a, b) for a, b in (
        ("IDLE", "OPEN"), ("OPEN", "ACTIVE"), ("ACTIVE", "WAIT"), ("WAIT", "HALF_ACTIVE"),
        ("HALF_ACTIVE", "FAIL"))], ("handoff-end", "d2", "KEPT"),
        ("tch", "first", "FAIL", "IDLE")],
        "requests": []},
    "d2": {"states": [("tch", "second", a, b) for a, b in (
        ("IDLE", "OPEN"), ("OPEN", "ACTIVE"), ("ACTIVE", "ACTIVE"), ("ACTIVE", "IDLE"))],
        "requests": [("GET", "/big.bin", 200)]},
    "s1": {"states": [("table", "placed", None, "d1"), ("table", "closed", "d1", None)],
           "requests": []},
}
EXPECTED = {"nas-twins": PLAIN, "nas-twins-delayed": DELAYED, "nas-twins-messages": MESSAGES,
            "nas-half-client": HALF_CLIENT, "nas-half-response": HALF_CLUSTER}


def _failed(result: RunResult) -> list:
    return [(o.what, o.detail) for o in result.outcomes if not o.passed]


def _run(name: str, backend) -> RunResult:
    return Runner(load_scenario(SCENARIOS / f"{name}.yaml"), backend).run()


@pytest.fixture(scope="module")
def sim_runs() -> dict[str, RunResult]:
    return {name: _run(name, SimBackend()) for name in EXPECTED}


@pytest.mark.parametrize("name", EXPECTED)
def test_the_twin_scenarios_need_no_kernel(name):
    scenario = load_scenario(SCENARIOS / f"{name}.yaml")
    assert not scenario.needs_kernel() and scenario.backend == "auto"


@pytest.mark.parametrize("name", EXPECTED)
def test_sim_run_passes_and_follows_the_sequence(sim_runs, name):
    run = sim_runs[name]
    assert run.backend == "sim" and run.passed, _failed(run)
    assert twin_sequence(run) == EXPECTED[name]


@pytest.mark.parametrize("name", EXPECTED)
def test_sim_run_is_deterministic(sim_runs, name):
    again = _run(name, SimBackend())
    assert again.frames == sim_runs[name].frames and again.events == sim_runs[name].events


@pytest.mark.parametrize("name", ["nas-twins", "nas-twins-messages"])
def test_the_download_was_handed_off_mid_response(sim_runs, name):
    served = [ev for ev in sim_runs[name].reports["d2"]["events"]
              if ev["kind"] == "request" and ev["path"] == "/d1/a.bin"]
    assert len(served) == 1 and 0 < served[0]["resumed_at"] < 1_000_000


def test_fig8_the_second_device_sent_the_rest_of_the_response(sim_runs):
    served = [ev for ev in sim_runs["nas-half-response"].reports["d2"]["events"]
              if ev["kind"] == "request"]
    assert len(served) == 1 and 0 < served[0]["resumed_at"] < 4_000_000


@pytest.mark.root
@pytest.mark.parametrize("name", EXPECTED)
def test_veth_run_follows_the_same_sequence(name):
    from ftsslab.lab.veth.backend import VethBackend

    veth = _run(name, VethBackend())
    assert veth.backend == "veth" and veth.passed, _failed(veth)
    assert twin_sequence(veth) == EXPECTED[name]
