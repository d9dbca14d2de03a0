"""Check 30, twin backends: ``scenarios/nas-twins*.yaml`` give the same TCH state transitions,
table events, handoff outcomes and requests served on the sim and on veth; only timing
differs. The sim runs are always tested; the veth runs need root (``-m root``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ftsslab.lab.runner import Runner, RunResult
from ftsslab.lab.scenario import load_scenario
from ftsslab.lab.sim import SimBackend
from tests.support import why_failed

SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"


KEEPALIVES = ("Update", "Update from the second device")
"""The ``why`` of a TCH session's ACTIVE -> ACTIVE on a received Update: a keepalive, one
every interval, so how many a run has is its timing, not its state sequence."""


def twin_sequence(result: RunResult) -> dict[str, dict]:
    """Per node, what check 30 compares, in the order the node logged it: ``states`` -- TCH
    transitions (role, old, new; keepalive Updates left out), the switch's table events
    (why, old, new), handoff outcomes (to, outcome), failover's steps (old, new, outcome), a
    take-over, a switch pair's takeover (partner), hand (to, outcome) and reroute (device,
    via, flows), and a device's own health -- and ``requests`` served (method, path, status);
    for a switch that hears heartbeats, ``health``: each device's transitions (old, new, why)
    in its own order (the devices start in parallel on veth: whose first heartbeat comes
    first is a race). Clients' ports, sequence numbers, checkpoint sizes, other ``why`` texts
    and times are left out: they differ between a kernel and a model. Table events of
    connections closing one after another are taken as a set (``closes_unordered``): which of
    several downloads that end together closes first is a race on veth."""
    out = {}
    for node, report in sorted(result.reports.items()):
        states, requests, health = [], [], {}
        for ev in report.get("events", []):
            kind = ev["kind"]
            if kind == "tch" and ev.get("why") not in KEEPALIVES:
                states.append(("tch", ev["role"], ev["old"], ev["new"]))
            elif kind == "table":
                states.append(("table", ev["why"], ev["old"], ev["new"]))
            elif kind == "handoff-end":
                states.append(("handoff-end", ev["to"], ev["outcome"]))
            elif kind == "failover":
                states.append(("failover", ev.get("old"), ev.get("new"), ev["outcome"]))
            elif kind == "take-over":
                states.append(("take-over",))
            elif kind == "takeover":  # a standby switch's (Fig. 12)
                states.append(("takeover", ev["partner"]))
            elif kind == "hand":  # a switch's session handed to its partner (claim 56)
                states.append(("hand", ev["to"], ev["outcome"]))
            elif kind == "reroute":  # policy (c): a device's flows through the partner
                states.append(("reroute", ev["device"], ev["via"], ev["flows"]))
            elif kind == "health" and "device" in ev:
                health.setdefault(ev["device"], []).append((ev["old"], ev["new"], ev["why"]))
            elif kind == "health":
                states.append(("health", ev["health"]))
            elif kind == "request":
                requests.append((ev["method"], ev["path"], ev["status"]))
        out[node] = {"states": closes_unordered(states), "requests": requests,
                     **({"health": health} if health else {})}
    return out


def closes_unordered(states: list[tuple]) -> list[tuple]:
    """``states`` with each run of consecutive table "closed" events sorted."""
    out: list[tuple] = []
    run: list[tuple] = []
    for st in [*states, None]:
        if st is not None and st[:2] == ("table", "closed"):
            run.append(st)
            continue
        out += sorted(run, key=repr)
        run = []
        if st is not None:
            out.append(st)
    return out


def _expected(name: str) -> dict[str, dict]:
    return {node: {**v, "states": closes_unordered(v["states"])}
            for node, v in EXPECTED[name].items()}


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
# check 16: a predictive session to d2 from the start becomes the handoff (Handoff, its Ack);
# d2's own one back to d1 is released (Fail(superseded)) when the connection ends
OPENED_M = FIRST_M[:2]
PREDICTIVE = {
    "d1": {"states": [*OPENED_M, ("tch", "first", "ACTIVE", "ACTIVE"),
                      ("tch", "first", "ACTIVE", "ACTIVE"), *FIRST_M[2:],
                      ("handoff-end", "d2", "HANDED_OFF"), *SECOND_M[:2],
                      ("tch", "second", "ACTIVE", "IDLE")],
           "requests": []},
    "d2": {"states": [*SECOND_M[:2], *[("tch", "second", "ACTIVE", "ACTIVE")] * 3,
                      ("tch", "second", "ACTIVE", "IDLE"), *OPENED_M,
                      ("tch", "first", "ACTIVE", "IDLE")],
           "requests": [("GET", "/big.bin", 200)]},
    "s1": {"states": [("table", "placed", None, "d1"), ("table", "xap", "d1", "d2"),
                      ("table", "closed", "d2", None)],
           "requests": []},
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
UP = ("UNKNOWN", "UP", "OK")
OTHER = [("tch", "other", a, b) for a, b in (("IDLE", "OPEN"), ("OPEN", "DONE"),
                                             ("DONE", "IDLE"))]


def _asked(old: str, new: str) -> list[tuple]:
    """The switch asks ``old`` by Open(initiator=other) to hand a connection to ``new``."""
    return [("failover", old, new, "ASKED"), *OTHER, ("failover", None, new, "ACCEPTED")]


# the asked device: the request's session (accepted at once, Done ends it), then the handoff
ASKED_FIRST = [*OPENED_M, ("tch", "first", "ACTIVE", "IDLE"), *FIRST]
PREDICTED = {  # checks 23, 17: a PREDICTED_FAIL device hands its connection off when asked
    "d1": {"states": [("health", "PREDICTED_FAIL"), *ASKED_FIRST,
                      ("handoff-end", "d2", "HANDED_OFF")],
           "requests": []},
    "d2": {"states": SECOND, "requests": [("GET", "/big.bin", 200)]},
    "s1": {"states": [("table", "placed", None, "d1"), *_asked("d1", "d2"),
                      ("table", "xap", "d1", "d2"), ("table", "closed", "d2", None)],
           "requests": [],
           "health": {"d1": [UP, ("UP", "PREDICTED_FAIL", "PREDICTED_FAIL"),
                             ("PREDICTED_FAIL", "DOWN", "SILENCE")],
                      "d2": [UP]}},
}
FAILOVER = {  # check 24: silence, the table first, then the switch's Open(full) with a shadow
    "d1": {"states": [], "requests": []},
    "d2": {"states": [SECOND_M[0], ("take-over",), *SECOND_M[1:]],
           "requests": [("GET", "/big.bin", 200)]},
    "s1": {"states": [("table", "placed", None, "d1"), ("table", "failover", "d1", "d2"),
                      ("failover", "d1", "d2", "STARTED"), *FIRST_M,
                      ("failover", None, "d2", "DONE"), ("table", "closed", "d2", None)],
           "requests": [],
           "health": {"d1": [UP, ("UP", "DOWN", "SILENCE")], "d2": [UP]}},
}
# check 25: three downloads on d1 become 1/1/1 by two moves, d1 -> d2, then d1 -> d3
_SPREAD = {
    "d2": {"states": SECOND, "requests": [("GET", "/1.bin", 200)]},
    "d3": {"states": SECOND, "requests": [("GET", "/2.bin", 200)]},
}
_CLOSED = [("table", "closed", d, None) for d in ("d2", "d3", "d1")]
BALANCE = {  # claim 52: the switch decides and asks
    "d1": {"states": [*ASKED_FIRST, ("handoff-end", "d2", "HANDED_OFF"), *ASKED_FIRST,
                      ("handoff-end", "d3", "HANDED_OFF")],
           "requests": [("GET", "/3.bin", 200)]},
    **_SPREAD,
    "s1": {"states": [*[("table", "placed", None, "d1")] * 3, *_asked("d1", "d2"),
                      ("table", "xap", "d1", "d2"), *_asked("d1", "d3"),
                      ("table", "xap", "d1", "d3"), *_CLOSED],
           "requests": [],
           "health": {"d1": [UP], "d2": [UP], "d3": [UP]}},
}
BALANCE_DEVICES = {  # claim 48: d1 decides from the heartbeats it hears and hands off itself
    "d1": {"states": [*FIRST, ("handoff-end", "d2", "HANDED_OFF"), *FIRST,
                      ("handoff-end", "d3", "HANDED_OFF")],
           "requests": [("GET", "/3.bin", 200)]},
    **_SPREAD,
    "s1": {"states": [*[("table", "placed", None, "d1")] * 3, ("table", "xap", "d1", "d2"),
                      ("table", "xap", "d1", "d3"), *_CLOSED],
           "requests": [],
           "health": {"d1": [UP], "d2": [UP], "d3": [UP]}},
}
CASCADE = {  # check 27: a handoff inside s2, a device of s1; s1's entry stays on s2
    "d1": {"states": [], "requests": [("GET", "/a.bin", 200)]},
    "d3": {"states": [*FIRST, ("handoff-end", "d4", "HANDED_OFF")], "requests": []},
    "d4": {"states": SECOND, "requests": [("GET", "/b.bin", 200)]},
    "s1": {"states": [("table", "placed", None, "d1"), ("table", "placed", None, "s2"),
                      ("table", "closed", "d1", None), ("table", "closed", "s2", None)],
           "requests": []},
    "s2": {"states": [("table", "placed", None, "d3"), ("table", "xap", "d3", "d4"),
                      ("table", "closed", "d4", None)],
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
# Fig. 12: one download from d1 through s1, whose table s2 mirrors, to the end of its entry (a
# rerouted device's FIN reaches s1 through s2; a handed one's client FIN stands for both ends)
_SERVED = {"d1": {"states": [], "requests": [("GET", "/big.bin", 200)]},
           "d2": {"states": [], "requests": []}}
_MIRRORED, _UNMIRRORED = ("table", "mirror", None, "d1"), ("table", "mirror", "d1", None)
SWITCH_FAILOVER = {  # check 28: s1 dies (no report, as a killed process on veth)
    **_SERVED,
    "s2": {"states": [_MIRRORED, ("takeover", "s1"), ("table", "closed", "d1", None)],
           "requests": [], "health": {"s1": [UP, ("UP", "DOWN", "SILENCE")]}},
}
SWITCH_REROUTE = {  # policy (c): s1 -> d1 down, d1 reached through s2, which only bridges
    **_SERVED,
    "s1": {"states": [("table", "placed", None, "d1"), ("table", "reroute", "d1", "d1"),
                      ("reroute", "d1", "s2", 1), ("table", "closed", "d1", None)],
           "requests": []},
    "s2": {"states": [_MIRRORED, _UNMIRRORED], "requests": [], "health": {"s1": [UP]}},
}
SWITCH_HANDOFF = {  # check 26: s1 hands the session to s2, which sends d1's frames on
    **_SERVED,
    "s1": {"states": [("table", "placed", None, "d1"), ("table", "handed", "d1", "d1"),
                      ("hand", "s2", "HANDED"), ("table", "closed", "d1", None)],
           "requests": []},
    "s2": {"states": [_MIRRORED, ("table", "handed", "d1", "d1"), _UNMIRRORED], "requests": [],
           "health": {"s1": [UP]}},
}
EXPECTED = {"nas-twins": PLAIN, "nas-twins-delayed": DELAYED, "nas-twins-messages": MESSAGES,
            "nas-twins-predictive": PREDICTIVE, "nas-twins-predicted": PREDICTED,
            "nas-twins-failover": FAILOVER, "nas-twins-balance": BALANCE,
            "nas-twins-balance-devices": BALANCE_DEVICES, "nas-twins-cascade": CASCADE,
            "nas-half-client": HALF_CLIENT, "nas-half-response": HALF_CLUSTER,
            "nas-twins-switch-failover": SWITCH_FAILOVER,
            "nas-twins-switch-reroute": SWITCH_REROUTE,
            "nas-twins-switch-handoff": SWITCH_HANDOFF}


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
    assert run.backend == "sim" and run.passed, why_failed(run)
    assert twin_sequence(run) == _expected(name)


@pytest.mark.parametrize("name", EXPECTED)
def test_sim_run_is_deterministic(sim_runs, name):
    again = _run(name, SimBackend())
    assert again.frames == sim_runs[name].frames and again.events == sim_runs[name].events


# a download handed off mid-response: the device it ended on, its path and size
HANDED = {"nas-twins": ("d2", "/d1/a.bin", 1_000_000),
          "nas-twins-messages": ("d2", "/d1/a.bin", 1_000_000),
          "nas-twins-predictive": ("d2", "/big.bin", 1_000_000),
          "nas-twins-predicted": ("d2", "/big.bin", 2_000_000),
          "nas-twins-balance": ("d2", "/1.bin", 1_300_000),
          "nas-twins-balance-devices": ("d3", "/2.bin", 2_000_000),
          "nas-twins-cascade": ("d4", "/b.bin", 1_000_000)}


@pytest.mark.parametrize("name", HANDED)
def test_the_download_was_handed_off_mid_response(sim_runs, name):
    node, path, size = HANDED[name]
    served = [ev for ev in sim_runs[name].reports[node]["events"]
              if ev["kind"] == "request" and ev["path"] == path]
    assert len(served) == 1 and 0 < served[0]["resumed_at"] < size


def test_the_take_over_went_on_mid_response(sim_runs):
    """Check 24: d2 restored the dead device's connection where the client's stream was."""
    events = sim_runs["nas-twins-failover"].reports["d2"]["events"]
    take = next(ev for ev in events if ev["kind"] == "take-over")
    assert 0 < take["skip"] < 2_000_000 and take["probes"] == 1


def test_fig8_the_second_device_sent_the_rest_of_the_response(sim_runs):
    served = [ev for ev in sim_runs["nas-half-response"].reports["d2"]["events"]
              if ev["kind"] == "request"]
    assert len(served) == 1 and 0 < served[0]["resumed_at"] < 4_000_000


VIP = "10.0.0.100"


def _vip_hops(run: RunResult, after: float, from_vip: bool) -> set[tuple[str, str]]:
    """(src, dst) endpoints of the TCP frames from (or to) the VIP captured after ``after``."""
    at = slice(26, 30) if from_vip else slice(30, 34)
    return {(f.src, f.dst) for f in run.frames if f.time > after and f.data[12:14] == b"\x08\x00"
            and f.data[23] == 6 and ".".join(map(str, f.data[at])) == VIP}


def _when(run: RunResult, node: str, kind: str) -> float:
    return next(e.time for e in run.events if e.node == node and e.kind == kind)


def test_the_standby_carries_the_session_over_the_device_s_second_link(sim_runs):
    """Check 28 in the sim: once s2 took over, the client's frames reach d1 by s2 and d1's
    second link, and d1's answers come back the same way (the lan learned s1's MAC on s2's
    port from the gratuitous ARPs)."""
    run = sim_runs["nas-twins-switch-failover"]
    after = _when(run, "s2", "takeover") + 0.5
    assert {("lan:p3", "s2:p1"), ("s2:p2", "d1:eth1")} <= _vip_hops(run, after, False)
    assert {("d1:eth1", "s2:p2"), ("s2:p1", "lan:p3")} <= _vip_hops(run, after, True)


def test_a_rerouted_session_crosses_the_pair_s_link(sim_runs):
    """Policy (c) in the sim, as ``test_veth_pair``: after the cut the client's frames leave
    s1 by its port to s2 and reach d1 on its second link; s2 learned the client's MAC from
    d1's answers on that link, so nothing is flooded to d2."""
    run = sim_runs["nas-twins-switch-reroute"]
    after = next(e.time for e in run.events if e.kind == "link-down") + 0.5
    hops = _vip_hops(run, after, False) | _vip_hops(run, after, True)
    dsts = {d for _, d in hops}
    assert {("s1:p9", "s2:p9"), ("s2:p2", "d1:eth1"), ("s2:p9", "s1:p9")} <= hops
    assert not dsts & {"d1:eth0", "d2:eth1"}, dsts


def test_a_handed_session_s_answers_leave_from_the_partner(sim_runs):
    """Check 26 in the sim: after the hand, d1's frames of the flow reach the client from
    s2's client port, and none crosses a link of s1 (L416)."""
    run = sim_runs["nas-twins-switch-handoff"]
    hops = _vip_hops(run, _when(run, "s1", "hand") + 0.2, True)
    assert ("s2:p1", "lan:p3") in hops and ("d1:eth1", "s2:p2") in hops, hops
    assert not [h for h in hops if "s1:" in h[0] or "s1:" in h[1]], hops


@pytest.mark.root
@pytest.mark.parametrize("name", EXPECTED)
def test_veth_run_follows_the_same_sequence(name):
    from ftsslab.lab.veth.backend import VethBackend

    veth = _run(name, VethBackend())
    assert veth.backend == "veth" and veth.passed, why_failed(veth)
    assert twin_sequence(veth) == _expected(name)
