"""The `sanic` kind: what the loader refuses (every error at once, each on its line, with a
hint), and its core's robustness -- arbitrary frames never raise, and are counted."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ftsslab.lab.scenario import ScenarioErrors, load_scenario_text
from ftsslab.lab.sim import SimBackend
from ftsslab.san.kinds import sanic_config
from ftsslab.san.node import SanicCore
from ftsslab.san.packets import Packet, Reth, frame

GOOD = """
name: t
nodes:
  a:
    kind: sanic
    processes: {p1: {segments: {1: 4}}}
    qps: {q1: {process: p1, peer: b.q1, recv_buffer: 0x10003000, receives: 2}}
  b:
    kind: sanic
    processes: {p1: {segments: {1: 4}}, p2: {segments: {1: 1}}}
    qps: {q1: {process: p1, peer: a.q1}}
  sw: {kind: switch}
  h: {kind: host}
links:
  - endpoints: [{node: a, interface: eth0, mac: "02:00:00:00:00:01", ipv4: 10.9.0.1/24},
                {node: sw, interface: p1}]
  - endpoints: [{node: b, interface: eth0, mac: "02:00:00:00:00:02", ipv4: 10.9.0.2/24},
                {node: sw, interface: p2}]
  - endpoints: [{node: h, interface: eth0, ipv4: 10.9.0.3/24}, {node: sw, interface: p3}]
steps:
"""


def errors(steps: str, text: str = GOOD) -> list[tuple[int | None, str, str, str]]:
    with pytest.raises(ScenarioErrors) as info:
        load_scenario_text(text + steps, "t.yaml")
    return [(e.line, e.path, e.message, e.hint) for e in info.value.errors]


def test_a_good_file_loads_and_its_verbs_are_steps():
    sc = load_scenario_text(GOOD + "  - verb: {node: b, op: allocate_rkey, process: p1, "
                            "key: k}\n", "t.yaml")
    assert sc.steps[0].args == {"op": "allocate_rkey", "process": "p1", "key": "k"}


def test_every_bad_verb_is_reported_at_once_on_its_line_with_a_hint():
    got = errors("""  - verb: {node: b, op: bind_rkey, process: p9, key: k, access: [REMOTE_FLY]}
  - verb: {node: a, op: post_send, qp: q7, opcode: write}
  - verb: {node: a, op: post_sned, qp: q1}
  - verb: {node: h, op: snapshot, name: x}
  - verb: {node: b, op: fill, process: p1, address: 0x10000000, length: 4, byte: 1, seed: 2}
  - verb: {op: snapshot, name: x}
""")
    by_line = {line: (path, msg, hint) for line, path, msg, hint in got}
    first = min(by_line)
    assert len(got) == 7, got
    assert any("REMOTE_FLY" in m for _, _, m, _ in got)
    assert any(p.endswith(".process") and "no process 'p9'" in m and "p1" in h
               for _, p, m, h in got)
    assert any("no QP 'q7'" in m and "q1" in h for _, _, m, h in got)
    assert any("unknown verb 'post_sned'" in m and "post_send" in h for _, _, m, h in got)
    assert any("h is a host, which takes no verbs" in m and "sanic" in h for _, _, m, h in got)
    assert any("one of byte, seed, hex" in m for _, _, m, _ in got)
    assert any("needs its `node` and `op`" in m for _, _, m, _ in got)
    assert all(line is not None and line >= first for line, *_ in got)


def test_bad_options_and_qps_that_do_not_pair_are_refused():
    text = GOOD.replace("qps: {q1: {process: p1, peer: a.q1}}",
                        "qps: {q1: {process: p3, peer: a.q2}}").replace(
        "processes: {p1: {segments: {1: 4}}}\n    qps: {q1: {process: p1, peer: b.q1, "
        "recv_buffer: 0x10003000, receives: 2}}",
        "processes: {p1: {segments: {x1: 4}}}\n    mtu: 1000\n    qps: {q1: {process: p1, "
        "peer: b.q1, receives: 2}}")
    got = errors("", text)
    msgs = [m for _, _, m, _ in got]
    assert any("not an ESID: 'x1'" in m for m in msgs), msgs
    assert any("1000 is not allowed" in m for m in msgs), msgs
    assert any("receives need a `recv_buffer`" in m for m in msgs), msgs


def test_a_qp_whose_peer_does_not_name_it_back_is_refused():
    text = GOOD.replace("qps: {q1: {process: p1, peer: a.q1}}",
                        "qps: {q1: {process: p1, peer: a.q1}, q2: {process: p1, peer: a.q2}}")
    got = errors("", text)
    assert any("a.q2 does not name b.q2 back" in m and "give a qps" in h
               for _, _, m, h in got), got


def test_the_cli_exits_2_with_every_error(tmp_path):
    from typer.testing import CliRunner

    from ftsslab.cli import app, register

    bad = tmp_path / "bad.yaml"
    bad.write_text(GOOD + "  - verb: {node: b, op: nope}\n  - verb: {node: a, op: read, "
                   "process: p1, address: 0x10000000, length: 999}\n")
    register(["validate"])
    got = CliRunner().invoke(app, ["validate", str(bad)])
    assert got.exit_code == 2
    assert "unknown verb 'nope'" in got.output and "out of range" in got.output
    assert "Traceback" not in got.output


# ---- the core on arbitrary input -------------------------------------------------------------

def core() -> SanicCore:
    sc = load_scenario_text(GOOD, "t.yaml")
    return SanicCore(sanic_config(sc.node("b"), sc))


def a_frame(op: str, psn: int, payload: bytes, dqpn: int = 0x11) -> bytes:
    p = Packet(op, psn, dqpn, True, reth=Reth(0x10000000, 0x100, len(payload))
               if op.startswith("RDMA_WRITE") else None, payload=payload)
    return frame(p, eth_dst="02:00:00:00:00:02", eth_src="02:00:00:00:00:01",
                 ip_src="10.9.0.1", ip_dst="10.9.0.2", sport=49152)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_raise(data):
    c = core()
    c.on_frame("eth0", b"\x02\x00\x00\x00\x00\x02" + data, 0.0)
    assert c.counters["frames_in"] == 1


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(["SEND_ONLY", "RDMA_WRITE_ONLY", "SEND_FIRST", "RDMA_WRITE_MIDDLE"]),
       st.integers(0, (1 << 24) - 1), st.binary(max_size=64), st.integers(14, 80),
       st.integers(0, 255))
def test_damaged_frames_are_counted_and_never_raise(op, psn, payload, at, byte):
    c = core()
    data = bytearray(a_frame(op, psn, payload))
    at = 14 + at % (len(data) - 14)  # (past the MACs: a frame for the node, damaged)
    data[at] ^= byte or 1
    c.on_frame("eth0", bytes(data), 0.0)
    c.on_timer(1.0)
    assert c.counters["frames_in"] == 1
    if 34 <= at < 40 or at >= 42 and at != 46:  # (the ICRC covers the UDP ports and length,
        # the BTH but its FECN/BECN byte, and what follows)
        assert c.counters["malformed"] == 1


def test_a_verb_on_a_key_not_there_is_logged_not_raised():
    c = core()
    c.verb({"op": "bind_rkey", "process": "p1", "key": "never", "address": 0x10000000,
            "length": 8}, 0.0)
    c.verb({"op": "advertise", "qp": "q1", "key": "never"}, 0.0)
    assert [(e["op"], e["result"]) for e in c.events if e["kind"] == "verb"] == [
        ("bind_rkey", "INVALID_PARAMETER"), ("advertise", "FAILED")]


def test_the_sim_backend_runs_a_verb_and_refuses_one_on_a_killed_node():
    sc = load_scenario_text(GOOD + "  - verb: {node: b, op: snapshot, name: s}\n"
                            "  - kill: b\n", "t.yaml")
    b = SimBackend()
    b.up(sc)
    try:
        b.verb("b", {"op": "snapshot", "name": "s"})
        assert [e["kind"] for e in b.node_events("b")] == ["memory"]
        b.process("b", "kill")
        from ftsslab.lab.backend import BackendError

        with pytest.raises(BackendError, match="not running"):
            b.verb("b", {"op": "snapshot", "name": "t"})
    finally:
        b.down()


def test_fill_and_read_cross_a_page_boundary():
    c = core()
    c.verb({"op": "fill", "process": "p1", "address": 0x10000FF0, "length": 40,
            "hex": bytes(range(40)).hex()}, 0.0)
    c.verb({"op": "read", "process": "p1", "address": 0x10000FF8, "length": 24, "name": "r"},
           0.0)
    assert [e["data"] for e in c.events if e["kind"] == "memory"] == [bytes(range(8, 32)).hex()]
