"""Seed 002 on real namespaces: unmodified curl, kernel TCP moved by TCH + TCP_REPAIR, the
switch's forwarding table in nftables, XAP on UDP."""

from __future__ import annotations

import json
import socket
import struct
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether

from ftsslab.lab.scenario import load_scenario
from ftsslab.lab.veth import names
from ftsslab.lab.veth.control import control_request
from tests.nas.veth_runs import passing_run
from tests.support import ftsslab

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.root


@pytest.mark.parametrize("name", ["nas-handoff", "nas-redirect", "nas-delayed",
                                  "nas-handoff-refused", "nas-handoff-resume", "nas-upload",
                                  "nas-udp", "nas-proxy", "nas-predictive", "nas-predicted",
                                  "nas-balance", "nas-balance-devices", "nas-cascade",
                                  "nas-owner-asks"])
def test_scenario_passes_on_veth(name):
    """Each scenario's own expectations: nas-predictive is check 16 (a predictive session's
    Handoff, Fail(superseded) to the other), nas-predicted check 23, nas-balance check 25
    (12 downloads on d1 -> 4/4/4 by exactly 8 moves, none back; decided by the switch, and
    by the devices in nas-balance-devices), nas-cascade check 27 (a handoff inside the inner
    switch: its entry moves, the outer one's stays), nas-owner-asks check 17 (the second
    device, the owner of a file being relayed, asks for the connection)."""
    passing_run(name)


@pytest.fixture
def lab():
    from ftsslab.lab.veth.backend import VethBackend

    b = VethBackend()
    b.up(load_scenario(ROOT / "scenarios" / "nas-handoff.yaml"))
    try:
        yield b
    finally:
        b.down()


def _stats(b, node: str) -> dict:
    reply = control_request(names.lab_dir(b.lab_id), node, {"op": "stats"})
    assert reply["ok"], reply
    return reply["stats"]


def _py(b, node: str, code: str) -> str:
    """Run ``code`` with this interpreter inside ``node``'s namespace; its stdout."""
    res = b.exec(node, (sys.executable, "-c", textwrap.dedent(code)), timeout=30)
    assert res.status == 0, res.stderr
    return res.stdout


def test_hnd_without_endpoint_is_reset_and_leaves_no_session(lab):
    """B2.19 / check 7: a SYN with HND but no endpoint option gets RST from the second
    device, which keeps no TCB; with the option it answers SYN/ACK+HND."""
    out = _py(lab, "d1", """
        import socket, time
        from ftsslab.nas.bpf import tcp_filter
        from ftsslab.nas.process import packet_socket
        from ftsslab.nas.segment import SYN, Segment, decode_frame
        rx = packet_socket("eth0", tcp_filter(dst_ip="10.0.0.11", port=80))
        raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
        for sport, endpoint in ((61500, None), (61501, (40000, "10.0.0.1"))):
            seg = Segment("10.0.0.11", "10.0.0.12", sport, 80, 1000, 0, SYN, tch=4,
                          endpoint=endpoint)
            raw.sendto(seg.encode(), ("10.0.0.12", 0))
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                try:
                    got = decode_frame(rx.recv(65536))
                except BlockingIOError:
                    time.sleep(0.005)
                    continue
                if got and got.dport == sport:
                    print(sport, got.flags, got.tch, got.endpoint)
                    break
    """)
    lines = out.strip().split("\n")
    assert lines[0] == "61500 20 4 None", out  # RST+ACK (of the TCH session: HND)
    port, flags, tch_flags, endpoint = lines[1].split(" ", 3)
    assert (port, int(flags) & 0x12, int(tch_flags) & 4, endpoint) == ("61501", 0x12, 4, "None")
    assert _stats(lab, "d2")["tch_sessions"] == 1  # only the one with an endpoint option


def test_device_links_keep_offload_and_client_links_do_not(lab):
    """``keeps_offload``: the switch--device links keep checksum offload and TSO (the data
    plane is the kernel's); the client's link has it off, so its frames are whole and real."""
    def features(node: str, iface: str) -> set[str]:
        r = lab.exec(node, ("ethtool", "-k", iface), timeout=10)
        assert r.status == 0, r.stderr
        return {ln.split(":")[0].strip() for ln in r.stdout.splitlines() if ln.endswith(": on")}

    want = {"tx-checksumming", "rx-checksumming", "tx-tcp-segmentation"}
    assert want <= features("d1", "eth0") and want <= features("s1", "p2")
    # c1's link is impaired (a shim in the middle): both its veth ends are off
    assert not want & features("c1", "eth0") and not want & features("s1", "p1")


def test_internal_ports_are_unreachable_from_clients(lab):
    """B2.7 / check 21: a client's frames to VIP:4494/5016/4497 or to the cluster's own addresses
    are dropped and counted at the switch; no device sees them."""
    before = _stats(lab, "s1")["dropped_internal"]
    e = Ether(src="02:00:00:00:01:01", dst="02:00:00:00:ff:ff")
    frames = [e / IP(src="10.0.0.1", dst="10.0.0.100") / UDP(sport=1, dport=4494),
              e / IP(src="10.0.0.1", dst="10.0.0.100") / UDP(sport=1, dport=5016),
              e / IP(src="10.0.0.1", dst="10.0.0.100") / UDP(sport=1, dport=4497),
              e / IP(src="10.0.0.1", dst="10.0.0.12") / TCP(sport=1, dport=80, flags="S"),
              e / IP(src="10.0.0.1", dst="10.0.0.254") / UDP(sport=1, dport=5016)]
    for f in frames:
        lab.send("c1:eth0", bytes(f))
    lab.advance(0.3)
    assert _stats(lab, "s1")["dropped_internal"] - before == len(frames)
    seen = [f for f in lab.frames() if f.dst.startswith(("d1:", "d2:")) and f.data[23:24] and
            f.data[12:14] == b"\x08\x00" and socket.inet_ntoa(f.data[26:30]) == "10.0.0.1"]
    assert not seen


def test_xap_wrong_nonce_changes_nothing_and_is_counted(lab):
    """Check 20 on the real switch: a change_connection with another nonce gets no ack and
    no table change; the right nonce, sent twice with one xid, is acked twice, applied once."""
    nonces = json.loads((Path(names.lab_dir(lab.lab_id)) / "s1.nonces").read_text())
    out = _py(lab, "d1", f"""
        import socket
        from ftsslab.nas import xap
        key = xap.FlowKey("10.0.0.1", 6, 45000, "10.0.0.100", 80)
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("10.0.0.11", 0))
        s.settimeout(1.0)
        for nonce in ({nonces['d1'] ^ 1}, {nonces['d1']}, {nonces['d1']}):
            client = xap.XapClient(nonce, "10.0.0.254", first_xid=77)
            _, acts = client.request(xap.wire.XAP_OP_SET, key, None, 0.0)
            s.sendto(acts[0].payload, ("10.0.0.254", 5016))
            try:
                data, _ = s.recvfrom(2048)
                print("acked", [type(a).__name__ for a in
                                client.on_datagram("10.0.0.254", 5016, data, 0.1)])
            except TimeoutError:
                print("no-ack")
    """)
    assert out.strip().split("\n") == ["no-ack", "acked ['Acked']", "acked ['Acked']"], out
    stats = _stats(lab, "s1")
    assert stats["xap_bad_nonce"] == 1 and stats["xap_applied"] == 1, stats


CLOSING_CLIENT = """
import os, socket, struct, sys, time
how, events = sys.argv[1], sys.argv[2]

def get(sock):
    sock.sendall(b"GET /big.bin HTTP/1.1\\r\\nHost: nas\\r\\nRange: bytes=0-999\\r\\n\\r\\n")
    got = b""
    while b"\\r\\n\\r\\n" not in got or len(got.split(b"\\r\\n\\r\\n", 1)[1]) < 1000:
        chunk = sock.recv(4096)
        if not chunk:
            break
        got += chunk
    return got.split(b" ", 2)[1].decode()

sock = socket.create_connection(("10.0.0.100", 80), timeout=20)
port = sock.getsockname()[1]
print(port, get(sock), flush=True)
deadline = time.monotonic() + 30
while b'"kind": "freeze"' not in open(events, "rb").read():
    if time.monotonic() > deadline:
        sys.exit("no freeze")
    time.sleep(0.001)
if how == "fin":
    sock.shutdown(socket.SHUT_WR)
    print("eof", sock.recv(4096) == b"", flush=True)
else:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()
    again = socket.socket()
    again.settimeout(20)
    again.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    again.bind(("10.0.0.1", port))
    again.connect(("10.0.0.100", 80))
    print("again", get(again), flush=True)
"""


@pytest.mark.parametrize("how", ["fin", "rst"])
def test_client_close_during_a_handoff_aborts_it_on_both_devices(lab, how):
    """Check 10: the client sends FIN (or RST) while d1 is frozen in a handoff (d2's answers
    to d1 are dropped at the switch, so d1 waits in TRANSFER): both devices abort, the TCH
    session closes, d1 gets the connection back and closes it (FIN) or drops it (RST), the
    entry goes, and a new connection from the same client port works."""
    nft = lab.exec("s1", ("nft", "add table bridge check10; add chain bridge check10 mute { "
                          "type filter hook forward priority 0; }; add rule bridge check10 mute "
                          "ip saddr 10.0.0.12 ip daddr 10.0.0.11 tcp flags & syn == 0 drop"), 30)
    assert nft.status == 0, nft.stderr
    events = Path(names.lab_dir(lab.lab_id)) / "d1.events"
    client = subprocess.Popen(["ip", "netns", "exec", lab.namespace("c1"), sys.executable, "-c",
                               CLOSING_CLIENT, how, str(events)], stdout=subprocess.PIPE,
                              text=True)
    try:
        port, status = client.stdout.readline().split()
        assert status == "206"
        lab.handoff("d1", "d2", int(port))
        out, _ = client.communicate(timeout=60)
    finally:
        client.kill()
        client.wait()
    assert out.split() == (["eof", "True"] if how == "fin" else ["again", "206"]), out
    ends = [e for e in lab.node_events("d1") if e["kind"] == "handoff-end"]
    assert [(e["outcome"], e["reason"]) for e in ends] == [
        ("ABORTED", "the client closed during the handoff")], ends
    done = [e for e in lab.node_events("d2") if e["kind"] == "tch-done"]
    assert [e["outcome"] for e in done] == ["ABORTED"], done
    assert _stats(lab, "d2")["tch_sessions"] == 0
    assert control_request(names.lab_dir(lab.lab_id), "d2", {"op": "sessions"})["sessions"] == []
    if how == "fin":  # FIN both ways: the entry goes LINGER (2 s) later
        deadline = time.monotonic() + 30
        while [e for e in lab.entries("s1") if e.client_port == int(port)]:
            assert time.monotonic() < deadline, lab.entries("s1")
            time.sleep(0.1)
    rsts = [f for f in lab.frames() if f.dst.startswith("c1:") and f.data[12:14] == b"\x08\x00"
            and f.data[23] == 6 and f.data[47] & 0x04]
    assert not rsts  # the client never saw a reset


HALF_CLOSED_CLIENT = """
import socket, sys, time
sock = socket.socket()
sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
sock.connect(("10.0.0.100", 80))
sock.sendall(b"GET /big.bin HTTP/1.1\\r\\nHost: nas\\r\\n\\r\\n")
sock.shutdown(socket.SHUT_WR)
sock.recv(1024)
print(sock.getsockname()[1], flush=True)
time.sleep(3600)
"""


def test_no_handoff_once_the_client_closed_its_side(lab):
    """Check 11 (L296): no handoff during tear-down. The client sent its FIN after the
    request and reads slowly, so d1 is still answering a connection in CLOSE_WAIT: a
    handoff is refused, no TCH session starts, and the answer goes on."""
    from ftsslab.lab.backend import BackendError

    client = subprocess.Popen(["ip", "netns", "exec", lab.namespace("c1"), sys.executable, "-c",
                               HALF_CLOSED_CLIENT], stdout=subprocess.PIPE, text=True)
    try:
        port = int(client.stdout.readline())
        with pytest.raises(BackendError, match="is CLOSE_WAIT, not ESTABLISHED"):
            lab.handoff("d1", "d2", port)
        sessions = control_request(names.lab_dir(lab.lab_id), "d1", {"op": "sessions"})
        assert [s["client"] for s in sessions["sessions"]] == [f"10.0.0.1:{port}"]
    finally:
        client.kill()
        client.wait()
    kinds = [e["kind"] for e in lab.node_events("d1")]
    assert "handoff-start" not in kinds and "freeze" not in kinds, kinds
    assert _stats(lab, "d2")["tch_sessions"] == 0


def test_pipelined_requests_by_proxy_answer_in_order():
    """Three requests in one write to d1 (proxy_limit): two HEADs of d2's files, relayed from
    d2, and a GET of d1's own file. The answers come in order on the one connection, and
    nothing is handed off (metadata is always answered by proxy, B2.14)."""
    from ftsslab.lab.veth.backend import VethBackend

    b = VethBackend()
    b.up(load_scenario(ROOT / "scenarios" / "nas-proxy.yaml"))
    try:
        out = _py(b, "c1", """
            import socket
            s = socket.create_connection(("10.0.0.100", 80), timeout=20)
            s.sendall(b"HEAD /d2/big.bin HTTP/1.1\\r\\nHost: n\\r\\n\\r\\n"
                      b"HEAD /d2/small.bin HTTP/1.1\\r\\nHost: n\\r\\n\\r\\n"
                      b"GET /d1/a.bin HTTP/1.1\\r\\nHost: n\\r\\nConnection: close\\r\\n\\r\\n")
            got = b""
            while chunk := s.recv(65536):
                got += chunk
            heads = [h for h in got.split(b"\\r\\n\\r\\n") if h.startswith(b"HTTP/1.1")]
            print([(h.split(b" ")[1].decode(), [v.decode() for k, _, v in (ln.partition(b": ")
                   for ln in h.split(b"\\r\\n")) if k == b"Content-Length"][0]) for h in heads])
        """)
        assert out.strip() == "[('200', '4194304'), ('200', '943718'), ('200', '1000')]", out
        kinds = [(e["kind"], e.get("via")) for e in b.node_events("d1")
                 if e["kind"] in ("request", "handoff-start")]
        assert kinds == [("request", "d2"), ("request", "d2"), ("request", None)], kinds
    finally:
        b.down()


@pytest.fixture(scope="module")
def handoff_run():
    """One run of scenarios/nas-handoff.yaml (d1 -> d2 -> d1 mid-download), read by two tests."""
    return passing_run("nas-handoff")


def _tcp_data(frame: bytes) -> tuple[str, str, int, int, int] | None:
    """(src, dst, client-side port, seq, payload length) of an IPv4 TCP frame, else None."""
    if frame[12:14] != b"\x08\x00" or frame[23] != 6:
        return None
    ihl = (frame[14] & 0xF) * 4
    total = int.from_bytes(frame[16:18])
    sport, dport, seq = struct.unpack_from(">HHI", frame, 14 + ihl)
    doff = (frame[14 + ihl + 12] >> 4) * 4
    src, dst = socket.inet_ntoa(frame[26:30]), socket.inet_ntoa(frame[30:34])
    return src, dst, (dport if src == "10.0.0.100" else sport), seq, total - ihl - doff


class _Ranges:
    """The sequence ranges one way of a connection has carried, merged, relative to its first."""

    def __init__(self, base: int):
        self.base = base
        self.spans: list[list[int]] = []  # sorted, disjoint [start, end)

    def has(self, seq: int) -> bool:
        at = (seq - self.base) % (1 << 32)
        return any(a <= at < b for a, b in self.spans)

    def add(self, seq: int, n: int) -> int:
        """Merge [seq, seq+n) in; return how many of its bytes were new."""
        a = (seq - self.base) % (1 << 32)
        b = a + n
        before = sum(e - s for s, e in self.spans)
        keep = [sp for sp in self.spans if sp[1] < a or sp[0] > b]
        touch = [sp for sp in self.spans if not (sp[1] < a or sp[0] > b)]
        merged = [min([a] + [s for s, _ in touch]), max([b] + [e for _, e in touch])]
        self.spans = sorted(keep + [merged])
        return sum(e - s for s, e in self.spans) - before


def test_devices_account_for_what_the_client_saw(handoff_run):
    """Check 29 (L326): the devices' per-session TCP figures, logged when each lets the
    connection go (``account``: at the freeze, at the close), summed over d1, d2, d1, equal
    the client link's capture: data bytes and segments each way, retransmissions."""
    _, result = handoff_run
    accounts = [(e.node, dict(kv.split("=", 1) for kv in e.detail.split()))
                for e in result.events if e.kind == "account"]
    assert [(node, a["why"]) for node, a in accounts] == [
        ("d1", "freeze"), ("d2", "freeze"), ("d1", "close")], accounts
    client = {a["client"] for _, a in accounts}
    assert len(client) == 1
    port = int(client.pop().split(":")[1])
    link = next(ln.name for ln in handoff_run[0].links if "c1" in (ln.a.node, ln.b.node))
    seen = {"segs_out": 0, "bytes_out": 0, "segs_in": 0, "bytes_in": 0, "retrans": 0}
    # Each way, the byte ranges seen so far: a segment whose first byte was seen before is a
    # retransmission. Ranges rather than the highest sequence number, because a capture on a
    # loaded 2-core box may record two segments in the other order than they were sent.
    covered: dict[str, _Ranges] = {}
    for f in result.frames:
        got = _tcp_data(f.data) if f.link == link else None
        if got is None or got[2] != port or got[4] == 0:
            continue
        src, _, _, seq, n = got
        way = "out" if src == "10.0.0.100" else "in"
        ranges = covered.setdefault(way, _Ranges(seq))
        if ranges.has(seq):
            seen["retrans"] += 1
        seen[f"bytes_{way}"] += ranges.add(seq, n)
        seen[f"segs_{way}"] += 1
    total = {k: sum(int(a[k]) for _, a in accounts) for k in seen}
    assert total == seen and int(accounts[-1][1]["unacked"]) == 0, (total, seen, accounts)
    assert 64 << 20 < seen["bytes_out"] < (64 << 20) + 1000 and seen["segs_out"] > 40000


@pytest.mark.tshark
def _tcp_option_kinds(frame: bytes) -> list[int]:
    """The option kinds of an IPv4 TCP frame (none for anything else, or malformed ones)."""
    if frame[12:14] != b"\x08\x00" or len(frame) < 34 or frame[23] != 6:
        return []
    tcp = 14 + (frame[14] & 0xF) * 4
    if len(frame) < tcp + 20:
        return []
    at, end, kinds = tcp + 20, min(len(frame), tcp + (frame[tcp + 12] >> 4) * 4), []
    while at < end and frame[at] != 0:
        kinds.append(frame[at])
        if frame[at] == 1:
            at += 1
        elif at + 1 < end and frame[at + 1] >= 2:
            at += frame[at + 1]
        else:
            break
    return kinds


def test_xap_on_the_flows_packet_reprograms_the_switch_and_never_reaches_the_client(tmp_path):
    """Check 20's last case on the real switch: with ``xap: tcp-option`` each second device
    claims the flow by option 253 on one of its segments; tshark (ftsslab's dissectors) names
    the change_connection on the devices' links, and the client's link never carries one."""
    from ftsslab.lab.capture import write_capture
    from tests.wireshark.oracle import tshark_fields

    scenario, result = passing_run("nas-xap-option")
    assert result.reports["s1"]["stats"]["xap_claims"] == 2
    pcap = tmp_path / "claims.pcapng"
    # only the frames whose TCP options hold kind 253 (tshark with the Lua dissectors takes
    # minutes over every frame of the downloads); tshark then says what they are
    with_options = [f for f in result.frames if 253 in _tcp_option_kinds(f.data)]
    assert len(with_options) >= 2
    write_capture(pcap, scenario, with_options, result.events, "veth")
    rows = tshark_fields(pcap, "xap.tcpopt", ["frame.interface_name", "ip.src",
                                              "xap.operation"])
    assert sorted(r["frame.interface_name"] for r in rows) == ["d1:eth0", "d2:eth0"], rows
    assert all(r["ip.src"] == "10.0.0.100" and r["xap.operation"] == "2"  # change_connection
               for r in rows), rows


def test_a_claim_counts_only_from_its_own_devices_port(lab):
    """A claim (option 253 on a flow's segment from the VIP) sent from d1's port with d2's
    nonce is counted and changes nothing; with d1's own nonce the switch points the flow at
    d1 and drops the segment (it never reaches the client's link)."""
    nonces = json.loads((Path(names.lab_dir(lab.lab_id)) / "s1.nonces").read_text())
    before = _stats(lab, "s1")
    for nonce in (nonces["d2"], nonces["d1"]):
        _py(lab, "d1", f"""
            import socket
            from ftsslab.fast.xap import build_xap_tcp_option
            from ftsslab.nas.segment import ACK, Segment
            option = build_xap_tcp_option([{{"operation": 2, "nonce": {nonce}, "sport": 45000,
                                             "dport": 80, "xid": 7, "cluster_id": "10.0.0.254"}}])
            seg = Segment("10.0.0.100", "10.0.0.1", 80, 45000, 1, 1, ACK, options=option)
            raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
            raw.sendto(seg.encode(), ("10.0.0.1", 0))
        """)
        deadline = time.monotonic() + 30
        while _stats(lab, "s1")["xap_claims"] == before["xap_claims"]:
            assert time.monotonic() < deadline, "the switch never saw the claim"
            time.sleep(0.05)
        before = _stats(lab, "s1") | {"entries": [e for e in lab.entries("s1")
                                                  if e.client_port == 45000]}
        if nonce == nonces["d2"]:
            assert before["xap_claim_foreign"] == 1 and not before["entries"], before
    assert [e.out_port for e in before["entries"]] == ["p2"], before  # d1's port
    lab.advance(0.2)
    assert not [f for f in lab.frames() if f.dst.startswith("c1:") and f.data[23:24] == b"\x06"
                and f.data[36:38] == (45000).to_bytes(2)]


@pytest.mark.tshark
def test_handoff_capture_in_tshark_follows_check_6(tmp_path, handoff_run):
    """Check 6, read by tshark with ftsslab's dissectors from a real handoff's capture: SYN+HND
    with one endpoint option (the client's address), SYN/ACK+HND, SET with update =
    (SND.NXT, RCV.NXT) at the freeze, SET+ACK, END, FIN from the second device, FIN from the
    first; the second device never sends option 255/254 or END."""
    from ftsslab.lab.capture import write_capture
    from tests.wireshark.oracle import tshark_fields

    scenario, result = handoff_run
    pcap = tmp_path / "handoff.pcapng"
    devices = {socket.inet_aton("10.0.0.11"), socket.inet_aton("10.0.0.12")}
    tch_frames = [f for f in result.frames  # the device-to-device frames: tshark reads only those
                  if f.data[12:14] == b"\x08\x00" and {f.data[26:30], f.data[30:34]} == devices]
    write_capture(pcap, scenario, tch_frames, result.events, "veth")
    fields = ["frame.interface_name", "ip.src", "ip.dst", "tcp.flags.syn", "tcp.flags.ack",
              "tcp.flags.fin", "tcp.flags.reset", "tch.flags.hnd", "tch.flags.set",
              "tch.flags.end", "tch.endpoint.ip", "tch.endpoint.port", "tch.update.seq",
              "tch.update.ack", "tcp.len", "tcp.srcport", "tcp.dstport"]
    rows = tshark_fields(pcap, "tch.flags.hnd == 1 && frame.interface_name == \"d1:eth0\"",
                         fields)
    d1 = "10.0.0.11"
    # the TCH session of the handoff d1 -> d2: d1's end is its TCH port (the second handoff,
    # d2 -> d1, is another session, with d2's TCH port)
    port = next(r["tcp.srcport"] for r in rows if r["ip.src"] == d1 and r["tcp.dstport"] == "80")
    first_session = [r for r in rows if (r["ip.src"], r["tcp.srcport"], r["tcp.dstport"]) ==
                     (d1, port, "80") or (r["ip.dst"], r["tcp.dstport"], r["tcp.srcport"]) ==
                     (d1, port, "80")]

    def kind(r: dict) -> str:
        by = "d1" if r["ip.src"] == d1 else "d2"
        flags = [n for n, k in (("SYN", "tcp.flags.syn"), ("FIN", "tcp.flags.fin"),
                                ("RST", "tcp.flags.reset"), ("SET", "tch.flags.set"),
                                ("END", "tch.flags.end")) if r[k] in ("1", "True")]
        return f"{by}:{'+'.join(flags) or ('data' if r['tcp.len'] != '0' else 'ack')}"

    control = [kind(r) for r in first_session if not kind(r).endswith((":ack", ":data"))]
    wanted = ["d1:SYN", "d2:SYN", "d1:SET", "d2:SET", "d1:END", "d2:FIN", "d1:FIN"]
    assert [k for i, k in enumerate(control) if k not in control[:i]][:7] == wanted, control
    syn = next(r for r in first_session if kind(r) == "d1:SYN")
    assert (syn["tch.endpoint.ip"], syn["tch.endpoint.port"]) != ("", "")
    assert syn["tch.endpoint.ip"] == "10.0.0.1"
    from_d2 = [r for r in first_session if r["ip.src"] != d1]
    assert all(r["tch.endpoint.ip"] == r["tch.update.seq"] == "" for r in from_d2)
    assert not any(r["tch.flags.end"] in ("1", "True") for r in from_d2)
    freeze = next(e for e in result.events if e.node == "d1" and e.kind == "freeze")
    detail = dict(kv.split("=", 1) for kv in freeze.detail.split())
    set_row = next(r for r in first_session if kind(r) == "d1:SET")
    assert (set_row["tch.update.seq"], set_row["tch.update.ack"]) == (detail["snd_nxt"],
                                                                      detail["rcv_nxt"])


STALLED_CLIENT = """
import socket, sys, time
sock = socket.socket()
sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
sock.connect((sys.argv[1], 80))
sock.sendall(f"GET {sys.argv[2]} HTTP/1.1\\r\\nHost: nas\\r\\n\\r\\n".encode())
sock.recv(1024)
time.sleep(3600)
"""


def test_nas_cli_shows_who_holds_which_connection():
    """`ftsslab nas table` / `sessions` on a lab that `lab up` left running: a live download's
    entry names its device, and that device lists the connection; wrong nodes exit 2."""
    up = ftsslab("lab", "up", str(ROOT / "scenarios" / "nas-redirect.yaml"))
    assert up.returncode == 0, up.stderr
    lab_id = up.stdout.split()[1]
    try:
        ns = names.ns_name(lab_id, "c1")
        # a client that reads the first bytes and then stops: the 3 MB answer cannot fit in the
        # device's send buffer and this client's small receive window, so the session stays
        # open until the test kills it (curl's --limit-rate let the kernel buffers absorb it)
        client = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c", STALLED_CLIENT,
                                 "10.0.0.100", "/d2/b.bin"])
        try:
            deadline, table = time.monotonic() + 30, {}
            while time.monotonic() < deadline:
                got = ftsslab("nas", "table", "--lab", lab_id, "--json")
                assert got.returncode == 0, got.stderr
                table = json.loads(got.stdout)
                sessions = json.loads(ftsslab("nas", "sessions", "--lab", lab_id,
                                              "--json").stdout)
                if table["s1"] and sessions["d2"]:  # placed round-robin, redirected to d2
                    break
                time.sleep(0.1)
            assert [e["device"] for e in table["s1"]] == ["d2"], table
            assert [s["client"] for s in sessions["d2"]] == [table["s1"][0]["client"]]
            assert sessions["d1"] == sessions["d3"] == []
        finally:
            client.kill()
            client.wait()
        wrong = ftsslab("nas", "table", "c1", "--lab", lab_id)
        assert wrong.returncode == 2 and "c1 is a host, not a nas-switch" in wrong.stderr
        shown = ftsslab("nas", "sessions", "--lab", lab_id)
        assert shown.returncode == 0 and "sessions" in shown.stdout
    finally:
        assert ftsslab("lab", "down", "--lab", lab_id).returncode == 0
