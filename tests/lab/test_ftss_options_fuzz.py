"""Any option values for `ftss` and `server` nodes: the loader refuses them (with a line), or
the sim runs the scenario to its end; never a hang, a BackendError or a traceback."""

from __future__ import annotations

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ftsslab.lab.runner import Runner
from ftsslab.lab.scenario import ScenarioErrors, load_scenario_text
from ftsslab.lab.sim import SimBackend

MAX_EVENTS = 200_000  # a short run of this topology needs a few thousand

FTSS_KEYS = ["node_id", "external", "external_macs", "echo_external", "retry", "retain",
             "retain_max", "capacity", "fsync_delay", "recover_grace", "routes"]
SERVER_KEYS = ["node_id", "mode", "fabric", "stack", "macs", "retry", "hello_interval",
               "hold_time", "poll"]
IFACES = ["fa", "fb", "stack", "a0", "b0", "s0", "a1", "b1", "zz", ""]
MACS = ["02:00:00:00:00:01", "02:00:00:00:00:02", "01:00:5e:00:00:01", "02-00-00-00-00-02",
        "zz"]

numbers = st.one_of(
    st.integers(-(2**80), 2**80),
    st.sampled_from([0, 1, 2, 92, 65535, 65536, 2**32 - 1, 2**32, 2**70]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([1e-300, 1e-9, 1e-4, 1e-3, 0.005, 0.5, 60.0, 60.5, 3600.0]),
)
values = st.one_of(
    numbers, st.booleans(), st.none(), st.text(max_size=6), st.sampled_from(IFACES + MACS),
    st.just([]), st.lists(st.sampled_from(IFACES), max_size=3),
    st.lists(st.sampled_from(MACS) | st.integers(0, 2**48), max_size=3),
    st.lists(st.fixed_dictionaries(
        {"node_id": numbers}, optional={"macs": st.lists(st.sampled_from(MACS), max_size=2),
                                        "ports": st.lists(st.sampled_from(IFACES), max_size=3)}),
        max_size=2),
)


def _span(lo, hi, integer=False):
    """A value in lo..hi, often an end."""
    inside = st.integers(lo, hi) if integer else st.floats(lo, hi)
    return st.one_of(st.sampled_from([lo, hi]), inside)


macs = st.lists(st.sampled_from(MACS[:2]), max_size=3)
ports = st.lists(st.sampled_from(["a1", "b1", "a2"]), min_size=1, max_size=2, unique=True)
node_ids = _span(1, 2**32 - 1, integer=True) | st.sampled_from([1, 2, 92])
PLAUSIBLE = {  # values in (or near) range for each option, so that many files are accepted
    "node_id": node_ids, "external": st.sampled_from(["a1", "b2", "zz"]),
    "external_macs": macs, "echo_external": st.booleans(), "retry": _span(1e-4, 60),
    "retain": _span(0, 65535), "retain_max": _span(1, 1_000_000, integer=True),
    "capacity": _span(1, 10_000_000, integer=True), "fsync_delay": _span(0, 1),
    "recover_grace": _span(0, 60),
    "routes": st.lists(st.fixed_dictionaries({"node_id": node_ids, "ports": ports},
                                             optional={"macs": macs}), max_size=2),
    "mode": st.sampled_from(["packet", "file"]),
    "fabric": st.lists(st.sampled_from(["fa", "fb", "fb", "a0"]), min_size=1, max_size=2,
                       unique=True),
    "stack": st.sampled_from(["stack", "stack", "s0", "fa"]), "macs": macs,
    "hello_interval": _span(1e-3, 60),
    "hold_time": _span(1, 65535, integer=True), "poll": _span(1e-3, 60),
}


@st.composite
def options(draw, keys: list[str]) -> dict:
    """Up to 3 options; most values plausible, one in five anything at all."""
    chosen = draw(st.lists(st.sampled_from(keys), max_size=3, unique=True))
    return {k: draw(values if draw(st.integers(0, 4)) == 0 else PLAUSIBLE[k]) for k in chosen}


@st.composite
def scenarios(draw) -> str:
    fa, fb, stack = draw(st.sampled_from([("fa", "fb", "stack")] * 5 + [("a0", "b0", "s0")]))
    ftss = {"kind": "ftss", **draw(options(FTSS_KEYS))}
    srv1 = {"kind": "server", "node_id": 1, **draw(options(SERVER_KEYS))}
    if fa != "fa" and draw(st.booleans()):
        srv1.update(fabric=[fa, fb], stack=stack)
    doc = {
        "name": "fuzz", "backend": "sim",
        "nodes": {"ftss": ftss, "srv1": srv1, "srv2": {"kind": "server", "node_id": 2},
                  "app1": {"kind": "host"}, "app2": {"kind": "host"}},
        "links": [f"srv1:{fa} ftss:a1", f"srv1:{fb} ftss:b1", "srv2:fa ftss:a2",
                  "srv2:fb ftss:b2",
                  {"endpoints": [{"node": "app1", "interface": "eth0",
                                  "mac": "02:00:00:00:00:01"}, f"srv1:{stack}"]},
                  {"endpoints": [{"node": "app2", "interface": "eth0",
                                  "mac": "02:00:00:00:00:02"}, "srv2:stack"]}],
        "steps": [
            {"send": {"from": "app1:eth0", "packet":
                      'Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")/IP()/UDP()/b"x"',
                      "count": 2}},
            {"wait": 0.02},
            {"kill": draw(st.sampled_from(["ftss", "srv1"]))},
            {"restart": "ftss"}, {"restart": "srv1"}, {"wait": 0.02}],
        "expect": [{"received": {"node": "app2", "match": 'UDP()/b"x"', "min": 1}}],
    }
    return yaml.safe_dump(doc, sort_keys=False)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_accepted_options_run_to_the_end(text):
    try:
        scenario = load_scenario_text(text, "fuzz.yaml")
    except ScenarioErrors as exc:
        assert exc.errors
        for err in exc.errors:
            assert err.line, err
            assert "internal error" not in err.message and "cannot check" not in err.message
        return
    result = Runner(scenario, SimBackend(max_events=MAX_EVENTS)).run()
    assert result.outcomes  # expectations may fail; the run itself may not
