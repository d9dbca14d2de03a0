"""Seed 002's second embodiment on real namespaces (checks 12, 13, 18): the TCH messages on UDP
4494 between devices running kernel TCP moved by TCP_REPAIR, an unmodified client."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import pytest

from ftsslab.lab.scenario import load_scenario
from ftsslab.lab.veth import names
from ftsslab.lab.veth.control import control_request
from tests.nas.veth_runs import passing_run

pytestmark = pytest.mark.root
D1, D2, CLIENT, VIP = "10.0.0.11", "10.0.0.12", "10.0.0.1", "10.0.0.100"


@pytest.fixture(scope="module")
def messages_run():
    """One run of scenarios/nas-messages.yaml (d1 -> d2 -> d1 mid-download by messages)."""
    return passing_run("nas-messages")


def _states(result, node: str, role: str) -> list[tuple[str, str]]:
    return [(d["old"], d["new"]) for e in result.events if e.node == node and e.kind == "tch"
            for d in [dict(kv.split("=", 1) for kv in e.detail.split() if "=" in kv)]
            if d.get("role") == role and "session" in d]


def test_fig9_state_traces_of_a_full_handoff(messages_run):
    """Check 13: the first device IDLE->OPEN->ACTIVE->WAIT->DONE->IDLE, the second
    IDLE->OPEN->ACTIVE->(ACTIVE on Complete)->IDLE; once each way (check 18: d1 -> d2 -> d1)."""
    _, result = messages_run
    first = [("IDLE", "OPEN"), ("OPEN", "ACTIVE"), ("ACTIVE", "WAIT"), ("WAIT", "DONE"),
             ("DONE", "IDLE")]
    second = [("IDLE", "OPEN"), ("OPEN", "ACTIVE"), ("ACTIVE", "ACTIVE"), ("ACTIVE", "IDLE")]
    assert _states(result, "d1", "first") == first
    assert _states(result, "d2", "second") == second
    assert _states(result, "d2", "first") == first
    assert _states(result, "d1", "second") == second


@pytest.mark.tshark
def test_capture_in_tshark_follows_check_12(tmp_path, messages_run):
    """Check 12, read by tshark with ftsslab's dissectors on d1's link: Open(full) with the
    frozen TCP numbers -> Open Response, then XAP change_connection -> its ack, then Complete
    -> Ack, then Done -> Ack, in exactly this order; no data to the client after the Open."""
    from ftsslab.lab.capture import write_capture
    from tests.wireshark.oracle import tshark_fields

    scenario, result = messages_run
    pcap = tmp_path / "messages.pcapng"
    write_capture(pcap, scenario, [f for f in result.frames if f.dst.startswith("d1:")
                                   or f.src.startswith("d1:")], result.events, "veth")
    fields = ["frame.number", "ip.src", "ip.dst", "udp.dstport", "tch.msg.ptype",
              "tch.msg.mtype", "tch.msg.htype", "tch.msg.seq", "tch.msg.ack",
              "tch.msg.client_port", "xap.operation", "tcp.len", "tcp.srcport"]
    rows = tshark_fields(pcap, "tch.msg.version || xap.operation || "
                         f"(ip.src == {VIP} && tcp.len > 0)", fields)

    def kind(r: dict) -> str:
        if r["tch.msg.ptype"]:
            by = "d1" if r["ip.src"] == D1 else "d2"
            name = {"1": "Open", "2": "OpenResponse"}.get(r["tch.msg.ptype"]) or {
                "3": "Done", "5": "Complete", "6": "Ack", "2": "Fail"}[r["tch.msg.mtype"]]
            return f"{by}:{name}"
        if r["xap.operation"]:
            return "xap:" + ("ack" if int(r["xap.operation"], 0) & 8 else "change")
        return "data"

    kinds = [kind(r) for r in rows]
    start = kinds.index("d1:Open")
    handoff = kinds[start:start + 8]
    assert handoff == ["d1:Open", "d2:OpenResponse", "xap:change", "xap:ack", "d1:Complete",
                       "d2:Ack", "d1:Done", "d2:Ack"], kinds[start:start + 12]
    # after the Open and before the Done, no data from the VIP leaves d1 (check 12)
    done = start + 6
    assert "data" not in kinds[start:done]
    open_row = rows[start]
    freeze = next(e for e in result.events if e.node == "d1" and e.kind == "freeze")
    detail = dict(kv.split("=", 1) for kv in freeze.detail.split())
    assert open_row["tch.msg.htype"] == "1"  # full
    assert (open_row["tch.msg.seq"], open_row["tch.msg.ack"]) == (detail["snd_nxt"],
                                                                  detail["rcv_nxt"])


DRIBBLER = """
import socket, sys, time
# a download that keeps sending: the next request, one byte every 3 ms, so frames reach the
# first device while it holds the flow
sock = socket.create_connection(("10.0.0.100", 80), timeout=30)
sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
nxt = b"GET /small.bin HTTP/1.1\\r\\nHost: nas\\r\\nX-Pad: " + b"p" * 600 + b"\\r\\n\\r\\n"
sock.sendall(b"GET /big.bin HTTP/1.1\\r\\nHost: nas\\r\\n\\r\\n")
print(sock.getsockname()[1], flush=True)
sock.setblocking(False)
got, sent, last = bytearray(), 0, 0.0
deadline = time.monotonic() + 60
while time.monotonic() < deadline:
    now = time.monotonic()
    if sent < len(nxt) and now - last >= 0.003:
        sock.send(nxt[sent:sent + 1])
        sent, last = sent + 1, now
    try:
        chunk = sock.recv(1 << 16)
        if not chunk:
            break
        got += chunk
    except BlockingIOError:
        time.sleep(0.0005)
    if b"small-end" in got:
        break
import hashlib
head, rest = bytes(got).split(b"\\r\\n\\r\\n", 1)
n = int(head.split(b"Content-Length: ")[1].split(b"\\r\\n")[0])
print(hashlib.sha256(rest[:n]).hexdigest(), rest[n:].split(b"\\r\\n\\r\\n", 1)[1][-9:].decode(),
      flush=True)
"""

SCENARIO = """
name: nas-messages-relay
backend: veth
nodes:
  c1: {kind: host}
  s1: {kind: nas-switch, vip: 10.0.0.100, address: 10.0.0.254/24, placement: first,
       tch: messages}
  d1: {kind: nas, files: {/big.bin: {size: 8388608, seed: 2}, /small.bin: {text: small-end}}}
  d2: {kind: nas, files: {/big.bin: {size: 8388608, seed: 2}, /small.bin: {text: small-end}}}
links:
  - endpoints:
      - {node: c1, interface: eth0, mac: "02:00:00:00:01:01", ipv4: 10.0.0.1/24}
      - {node: s1, interface: p1}
    impair: {rate: 40mbit}
  - endpoints:
      - {node: d1, interface: eth0, mac: "02:00:00:00:0d:01", ipv4: 10.0.0.11/24}
      - {node: s1, interface: p2}
  - endpoints:
      - {node: d2, interface: eth0, mac: "02:00:00:00:0d:02", ipv4: 10.0.0.12/24}
      - {node: s1, interface: p3}
"""


@pytest.fixture
def lab(tmp_path):
    from ftsslab.lab.veth.backend import VethBackend

    path = tmp_path / "nas-messages-relay.yaml"  # the node processes read it too
    path.write_text(SCENARIO)
    b = VethBackend()
    b.up(load_scenario(path))
    try:
        yield b
    finally:
        b.down()


def _dribble(lab) -> tuple[str, str]:
    """The DRIBBLER's download, handed d1 -> d2 once d1 serves it: (SHA-256, what followed)."""
    client = subprocess.Popen(["ip", "netns", "exec", lab.namespace("c1"), sys.executable, "-c",
                               DRIBBLER], stdout=subprocess.PIPE, text=True)
    try:
        port = int(client.stdout.readline())
        deadline = time.monotonic() + 30
        while not any(s["client"] == f"{CLIENT}:{port}" for s in control_request(
                names.lab_dir(lab.lab_id), "d1", {"op": "sessions"})["sessions"]):
            assert time.monotonic() < deadline, "d1 never served the connection"
            time.sleep(0.01)
        lab.handoff("d1", "d2", port)
        out, _ = client.communicate(timeout=90)
    finally:
        client.kill()
        client.wait()
    digest, tail = out.split()
    return digest, tail


def _wait_event(lab, node: str, kind: str, count: int = 1) -> list[dict]:
    deadline = time.monotonic() + 30
    while len(got := [e for e in lab.node_events(node) if e["kind"] == kind]) < count:
        assert time.monotonic() < deadline, (node, kind, lab.node_events(node)[-10:])
        time.sleep(0.05)
    return got


def _client_packets(frames, src: str, dst: str) -> list[bytes]:
    """The client's IP packets (headers and all) of the frames from ``src`` to ``dst``."""
    return [f.data[14:] for f in frames if f.src == src and f.dst == dst
            and f.data[12:14] == b"\x08\x00" and f.data[26:30] == socket.inet_aton(CLIENT)]


def test_frames_held_during_the_handoff_are_relayed_in_arrival_order(lab):
    """Check 12: a client that keeps sending during d1's handoff: every frame d1 held from the
    Open on is relayed to d2 (count_relayed = count_buffered, > 0), in arrival order
    (sequence numbers monotonic on d1's link), d2 takes them (held until Done, then to its
    stack), and the pipelined request is answered whole; 0 RST to the client."""
    from ftsslab.nas.cluster import file_bytes

    digest, tail = _dribble(lab)
    import hashlib
    assert digest == hashlib.sha256(file_bytes({"size": 8388608, "seed": 2})).hexdigest()
    assert tail == "small-end"
    end = _wait_event(lab, "d1", "handoff-end")[0]
    assert end["outcome"] == "HANDED_OFF", end
    assert end["held"] > 0 and end["relayed"] == end["held"], end
    # the relayed packets are the last ones d1 received before it let the flow go, unchanged
    # and in arrival order (a client retransmission is a packet of its own: its IP id differs)
    frames = lab.frames()
    arrived = _client_packets(frames, "s1:p2", "d1:eth0")
    relayed = _client_packets(frames, "d1:eth0", "s1:p2")
    assert len(relayed) == end["relayed"]
    first = arrived.index(relayed[0])
    assert arrived[first:first + len(relayed)] == relayed
    morph = _wait_event(lab, "d2", "morph")[0]
    assert morph["held"] >= end["relayed"]
    rsts = [f for f in lab.frames() if f.dst.startswith("c1:") and f.data[12:14] == b"\x08\x00"
            and f.data[23] == 6 and f.data[47] & 0x04]
    assert not rsts


def _mute(lab, rule: str) -> None:
    r = lab.exec("s1", ("nft", "add table bridge check13; add chain bridge check13 mute { "
                        f"type filter hook forward priority 0; }}; add rule bridge check13 mute "
                        f"{rule} drop"), 30)
    assert r.status == 0, r.stderr


@pytest.mark.parametrize("lost", ["open-response", "ack-of-complete"])
def test_a_lost_answer_sends_the_session_back_to_the_first_device(lab, lost):
    """Check 13: the Open Response lost -> OPEN times out, FAIL, IDLE, the entry never moves;
    every Ack lost -> WAIT times out, FAIL, the entry is reverted to d1. Either way d1 serves
    on from its own checkpoint: the client's download completes, same bytes, 0 RST."""
    from ftsslab.nas.cluster import file_bytes

    what = "0x1200" if lost == "open-response" else "0x1306"  # ptype/mtype bytes
    _mute(lab, f"ip saddr {D2} ip daddr {D1} udp dport 4494 @th,64,16 {what}")
    digest, tail = _dribble(lab)
    import hashlib
    assert digest == hashlib.sha256(file_bytes({"size": 8388608, "seed": 2})).hexdigest()
    assert tail == "small-end"
    end = _wait_event(lab, "d1", "handoff-end")[0]
    assert end["outcome"] == "KEPT", end
    stuck = "OPEN" if lost == "open-response" else "WAIT"
    deadline = time.monotonic() + 30  # (its Fail, unacknowledged too, is resent ~6 s)
    while (states := [(e["old"], e["new"]) for e in lab.node_events("d1")
                      if e["kind"] == "tch" and e.get("role") == "first"])[-1] != ("FAIL", "IDLE"):
        assert time.monotonic() < deadline, states
        time.sleep(0.1)
    assert states == [("IDLE", "OPEN"), *([("OPEN", "ACTIVE"), ("ACTIVE", "WAIT")]
                                          if stuck == "WAIT" else []),
                      (stuck, "FAIL"), ("FAIL", "IDLE")], states
    moves = [e for e in lab.node_events("s1") if e["kind"] == "table" and e.get("why") == "xap"]
    if lost == "open-response":
        assert moves == []
    else:
        assert [(e["old"], e["new"]) for e in moves] == [("d1", "d2"), ("d2", "d1")], moves
    done = _wait_event(lab, "d2", "tch-done")[0]
    assert done["outcome"] == "KEPT"
    rsts = [f for f in lab.frames() if f.dst.startswith("c1:") and f.data[12:14] == b"\x08\x00"
            and f.data[23] == 6 and f.data[47] & 0x04]
    assert not rsts


STALLED = """
import socket, time
sock = socket.create_connection(("10.0.0.100", 80), timeout=30)
sock.sendall(b"GET /big.bin HTTP/1.1\\r\\nHost: nas\\r\\n\\r\\n")
sock.recv(1024)
print(sock.getsockname()[1], flush=True)
time.sleep(3600)
"""


def test_stopped_updates_fail_a_predictive_session_on_both_sides(tmp_path):
    """Check 16: with the devices' TCH datagrams dropped both ways, neither hears the other
    for the keepalive (2 s): each side's session goes ACTIVE -> FAIL on its own, and the
    connection stays where it is."""
    from ftsslab.lab.veth.backend import VethBackend

    path = tmp_path / "nas-predictive-mute.yaml"
    path.write_text(SCENARIO.replace("tch: messages}", "tch: messages, predictive: true}"))
    b = VethBackend()
    b.up(load_scenario(path))
    client = None
    try:
        client = subprocess.Popen(["ip", "netns", "exec", b.namespace("c1"), sys.executable,
                                   "-c", STALLED], stdout=subprocess.PIPE, text=True)
        int(client.stdout.readline())
        opened = _wait_event(b, "d2", "tch")  # the predictive session is up
        assert opened[0]["why"].startswith("Open(predictive)")
        _mute(b, f"ip saddr {{ {D1}, {D2} }} ip daddr {{ {D1}, {D2} }} udp dport 4494")
        deadline = time.monotonic() + 30
        while True:
            fails = {n: [e for e in b.node_events(n) if e["kind"] == "tch"
                         and e["new"] == "FAIL"] for n in ("d1", "d2")}
            if all(fails.values()):
                break
            assert time.monotonic() < deadline, fails
            time.sleep(0.1)
        assert fails["d1"][0]["old"] == "ACTIVE" and fails["d2"][0]["old"] == "ACTIVE"
        assert "nothing from" in fails["d1"][0]["why"] and "nothing from" in fails["d2"][0]["why"]
        assert [s["client"].split(":")[0] for s in control_request(
            names.lab_dir(b.lab_id), "d1", {"op": "sessions"})["sessions"]] == [CLIENT]
    finally:
        if client is not None:
            client.kill()
            client.wait()
        b.down()
