"""Seed 001's shipped scenarios (``scenarios/i2o-*.yaml``) on both backends: their own
expectations hold, the capture is wire truth (RoCEv2 ICRCs, tshark finds nothing suspect, no
frame holds a physical address) and -- checks 5 and 15 -- every I2O reply on the SAN carries
back the contexts of a request of its own service connection, ``I2OMessage.answers()`` pairs
them, and the host's call trace is the same in sim and veth."""

from __future__ import annotations

import socket
import struct
from dataclasses import replace
from pathlib import Path

import pytest

from ftsslab.fast import i2o as fast
from ftsslab.i2o.kinds import HOST, REMOTE, _san_config
from ftsslab.lab.runner import Runner, RunResult
from ftsslab.lab.scenario import load_scenario
from ftsslab.lab.sim import SimBackend
from ftsslab.layers.i2o import I2OMessage
from tests.san.test_scenarios import assert_wire_truth

SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"
I2O = sorted(p.stem for p in SCENARIOS.glob("i2o-*.yaml"))
SIM = [n for n in I2O if not load_scenario(SCENARIOS / f"{n}.yaml").needs_kernel()]
SEND_ONLY = 0x04  # RC SEND ONLY: every I2O frame and CM message fits one packet (MTU 1024)
ABANDONED = {"i2o-faults": 16}  # requests whose connection closed before their reply
TWINS = ("i2o-export", "i2o-keys")  # sequential: the same trace in sim and veth (check 15)


def _qp_ends(scenario) -> dict[tuple[str, int], frozenset]:
    """(node IP, QPN) -> its connection: the QP (node, QP name) and its peer's."""
    ends = {}
    for cfg in (_san_config(n, scenario) for n in scenario.nodes if n.kind in (HOST, REMOTE)):
        for q in cfg.qps:
            ends[(cfg.ip, q.qpn)] = frozenset(((cfg.name, q.name), (q.peer, q.remote)))
    return ends


def i2o_frames(result: RunResult, scenario) -> list[tuple[tuple, bytes]]:
    """Every service-connection I2O frame sent (at the sender's link, once per PSN): (the
    connection, the frame)."""
    ends = _qp_ends(scenario)
    seen, out = set(), []
    senders = {n.name for n in scenario.nodes if n.kind in (HOST, REMOTE)}
    for f in result.frames:
        d = f.data
        if f.src.split(":")[0] not in senders or d[12:14] != b"\x08\x00" or d[23] != 17 or \
                d[42] != SEND_ONLY:
            continue
        dst = (socket.inet_ntoa(d[30:34]), int.from_bytes(d[47:50], "big"))
        psn = int.from_bytes(d[51:54], "big")
        if (dst, psn) in seen or dst not in ends:
            continue  # a retransmission
        seen.add((dst, psn))
        conn = ends[dst]
        payload = d[54:-4]
        if fast.parse_cm(payload) is None:
            out.append((conn, payload))
    return out


def assert_replies_answer(result: RunResult, scenario, name: str) -> None:
    frames = i2o_frames(result, scenario)
    requests, replies = {}, {}
    for conn, frame in frames:
        out = fast.parse_i2o(frame)
        assert out is not None, frame.hex()
        key = (conn, out["function"], out["initiator_context"], out["transaction_context"])
        (replies if out["msg_flags"] & fast.MSG_REPLY else requests)[key] = frame
    assert requests, "no I2O request on the SAN"
    assert set(replies) <= set(requests), "a reply whose contexts no request of its " \
        "connection carried"
    assert len(requests) - len(replies) == ABANDONED.get(name, 0)
    if len(replies) <= 500:  # Scapy dissects ~10k/s: the small runs
        for key, frame in replies.items():
            assert I2OMessage(frame).answers(I2OMessage(requests[key]))


def _trace_digest(result: RunResult) -> list[str]:
    return [e.detail for e in result.events if e.kind == "trace"]


def _check(result: RunResult, name: str, tmp_path: Path) -> None:
    assert result.passed, [(o.what, o.detail) for o in result.outcomes if not o.passed]
    assert_wire_truth(result, tmp_path, random_data=True)
    assert_replies_answer(result, result.scenario, name)


@pytest.mark.tshark
@pytest.mark.parametrize("name", SIM)
def test_scenario_passes_in_the_sim(name, tmp_path):
    _check(Runner(load_scenario(SCENARIOS / f"{name}.yaml"), SimBackend()).run(), name, tmp_path)


@pytest.mark.root
@pytest.mark.tshark
@pytest.mark.parametrize("name", I2O)
def test_scenario_passes_on_veth(name, tmp_path):
    from ftsslab.lab.veth.backend import VethBackend

    scenario = load_scenario(SCENARIOS / f"{name}.yaml")
    veth = Runner(scenario, VethBackend()).run()
    _check(veth, name, tmp_path)
    if name in TWINS:
        sim = Runner(scenario, SimBackend()).run()
        assert _trace_digest(veth) == _trace_digest(sim) != []


def test_the_reply_pairing_finds_a_misrouted_context(tmp_path):
    """The check above can fail: a reply with a context its request did not carry."""
    scenario = load_scenario(SCENARIOS / "i2o-keys.yaml")
    result = Runner(scenario, SimBackend()).run()
    for i, f in enumerate(result.frames):
        d = f.data
        if f.src.startswith("h:") and len(d) > 62 and d[42] == SEND_ONLY and \
                fast.parse_i2o(d[54:-4]) is not None and fast.parse_cm(d[54:-4]) is None \
                and d[55] & fast.MSG_REPLY:
            ictx = struct.unpack_from("<I", d, 54 + 8)[0]
            result.frames[i] = replace(f, data=d[:62] + struct.pack("<I", ictx ^ 0x100) + d[66:])
            break
    with pytest.raises(AssertionError):
        assert_replies_answer(result, scenario, "i2o-keys")
