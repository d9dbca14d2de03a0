"""tshark oracle for ftsslab/wireshark/lua/xap.lua (XAP, Extended Addressing Protocol, seed 002).

Three carriers, each holding a cascade of messages: UDP port 5016 (``XAPUDP``, whose TLVs
follow the messages), IP option 158 (``IPOption_XAP``) and TCP option 253 with ExID 0x5841
(Scapy keeps it as the tuple ``("XAP", [msgs])``, so its kind/len/exid are compared by hand;
the messages inside are found by the generic oracle).
"""

from __future__ import annotations

import struct
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.data import IP_PROTOS
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import Packet, Raw

from ftsslab.catalog import family_of, ftsslab_layers, nested_layers
from ftsslab.layers import xap as L
from ftsslab.layers.xap import (
    XAP,
    XAPTLV,
    XAPUDP,
    IPOption_XAP,
    XAPShort,
    XAPTLVClientIP,
    XAPTLVTargetIP,
)
from ftsslab.wireshark import lua_scripts
from tests.layers.test_xap import (
    IP_HDR,
    IP_OPTS,
    TCP_HDR,
    TCP_OPTS,
    TLV,
    UDP_HDR,
    homogeneous,
    msg,
    tlv,
    with_lengths,
)
from tests.wireshark.oracle import (
    SEVERITY_WARN,
    TSHARK,
    Frame,
    assert_agrees,
    cleanliness,
    compare,
    lua_stderr,
    reference,
    run_tshark,
    write_pcap,
)

pytestmark = pytest.mark.tshark

ABBREV: dict[type[Packet], str] = {
    XAP: "xap",  # both message forms share the prefix: xap.xid matches either
    XAPShort: "xap",
    XAPUDP: "xap.udp",
    XAPTLV: "xap.tlv",  # the three TLV classes share the prefix, like the message forms
    XAPTLVClientIP: "xap.tlv",
    XAPTLVTargetIP: "xap.tlv",
    IPOption_XAP: "xap.ipopt",
}
# Public Packet classes of layers/xap.py that Wireshark dissects natively: none. (TCP option
# 253 is no Packet class; its kind/len/exid are compared by hand below.)
NATIVE: dict[type[Packet], str] = {}
SKIP: dict[str, str] = {
    # The TLVs are layers of their own (xap.tlv.*); the oracle skips a list of packets but
    # would compare an empty one (a datagram without TLVs) as a value.
    "XAPUDP.tlvs": "a list of layers, compared as xap.tlv.*",
}

SEVERITY_COMMENT = 0x100000  # the capture's per-packet comments
SEVERITY_NOTE = 0x400000
SEVERITY_ERROR = 0x800000
UNKNOWN_OP = "Unknown XAP operation"


def test_every_layer_has_a_dissector():
    ours = {cls for cls in ftsslab_layers() if family_of(cls) == "xap"}
    assert ours - set(NATIVE) == set(ABBREV)


# --- checks ---------------------------------------------------------------------


def messages_of(pkt: Packet) -> list[XAPShort]:
    return [layer for layer in nested_layers(pkt) if isinstance(layer, XAPShort)]


def tcp_option_problems(pkt: Packet, frame: Frame) -> list[str]:
    """kind/len/exid of every XAP TCP option (a Scapy tuple, no Packet) against xap.tcpopt.*."""
    want = {"xap.tcpopt.kind": [], "xap.tcpopt.len": [], "xap.tcpopt.exid": []}
    if TCP in pkt:
        for name, value in pkt[TCP].options:
            if name == L.XAP_TCP_OPTION_NAME:
                want["xap.tcpopt.kind"].append(L.XAP_TCP_OPTION_KIND)
                want["xap.tcpopt.len"].append(4 + sum(len(bytes(m)) for m in value))
                want["xap.tcpopt.exid"].append(L.XAP_TCP_EXID)
    problems = []
    for key, values in want.items():
        got = [int(s.show, 0) for s in frame.fields.get(key, [])]
        if got != values:
            problems.append(f"{key}: Scapy {values} != tshark {got}")
    return problems


def agrees(tmp_path: Path, packets: list[Packet]) -> None:
    """assert_agrees, except that an unknown operation must raise exactly its one warning.

    The layer strategies draw the 4-bit operation from 0..15, so most messages carry an
    operation Scapy has no name for; tshark warns about each and still shows every field.
    """
    frames, stderr = run_tshark(write_pcap(tmp_path / "oracle.pcapng", packets))
    assert stderr == "", f"tshark/Lua stderr: {stderr}"
    assert len(frames) == len(packets)
    failures = []
    for i, (pkt, frame) in enumerate(zip(packets, frames, strict=True), start=1):
        unknown = sum(m.operation not in L.XAP_OPERATIONS for m in messages_of(pkt))
        warned = [m for sev, m in frame.experts if sev >= SEVERITY_WARN and UNKNOWN_OP in m]
        problems = [p for p in cleanliness(frame) if UNKNOWN_OP not in p]
        problems += compare(pkt, frame, ABBREV, SKIP) + tcp_option_problems(pkt, frame)
        if len(warned) != unknown:
            problems.append(f"{unknown} unknown operations, {len(warned)} warnings")
        if len(frame.fields.get("xap.index", [])) != len(messages_of(pkt)):
            problems.append("xap.index count differs from the number of messages")
        if problems:
            failures.append(f"frame {i} ({pkt.summary()}):\n    " + "\n    ".join(problems))
    assert not failures, "\n".join(failures[:20])


# --- reference capture -----------------------------------------------------------


def test_reference_capture_agrees(tmp_path):
    path, packets = reference("xap")
    frames = assert_agrees(tmp_path, packets, ABBREV, SKIP, pcap=path)
    for pkt, frame in zip(packets, frames, strict=True):
        assert tcp_option_problems(pkt, frame) == []
        assert [m for sev, m in frame.experts if sev > SEVERITY_COMMENT] == []  # not even a note
        indexes = [int(s.show) for s in frame.fields.get("xap.index", [])]
        assert len(indexes) == len(messages_of(pkt)) > 0
    protos = [set(f.protos) for f in frames]
    assert sum("xap.udp" in p for p in protos) == 16
    tlvs = sum(len(p[XAPUDP].tlvs) for p in packets if XAPUDP in p)
    assert sum(len(f.fields.get("xap.tlv.type", [])) for f in frames) == tlvs == 27
    assert sum("xap.tcpopt" in p for p in protos) == 6
    assert sum("xap.ipopt" in p for p in protos) == 5


# --- hypothesis: every carrier, every field ---------------------------------------


def ether() -> Ether:
    """Explicit MACs: Scapy would otherwise resolve them (ARP) for the IP destination."""
    return Ether(src="02:00:00:00:00:11", dst="02:00:00:00:00:01")


def udp_frame(msgs, tlvs=()):
    return Ether(bytes(ether() / IP(src="10.0.0.11", dst="10.0.0.1") / UDP()
                       / XAPUDP(messages=[msg(m) for m in msgs], tlvs=[tlv(t) for t in tlvs])))


def tcp_frame(opts, ip_opts=()):
    return Ether(bytes(
        ether() / IP(src="10.0.0.11", dst="192.0.2.10",
                     options=[IPOption_XAP(messages=[msg(m) for m in o]) for o in ip_opts])
        / TCP(sport=2049, dport=40000, flags="PA",
              options=[("XAP", [msg(m) for m in o]) for o in opts]) / b"data"))


def ip_frame(opts, udp_msgs=None):
    ip = IP(src="10.0.0.11", dst="10.0.0.1",
            options=[IPOption_XAP(messages=[msg(m) for m in o]) for o in opts])
    if udp_msgs is None:
        return Ether(bytes(ether() / ip / UDP(sport=1, dport=2) / b"x"))
    return Ether(bytes(ether() / ip / UDP() / XAPUDP(messages=[msg(m) for m in udp_msgs])))


# An address TLV of another length than 4 is malformed (a warning: see BROKEN), so not here.
GOOD_TLVS = st.lists(TLV.filter(lambda t: t["type"] not in (1, 2) or t["length"] == 4),
                     max_size=5)


# Small examples, many of them: one example of 50 packets overran Hypothesis's buffer so often
# that drawing took 2.5 minutes for 5 examples; 20 examples of 12 take seconds.
@settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck))
@given(udp=st.lists(st.tuples(homogeneous(12, 12), GOOD_TLVS), min_size=5, max_size=5),
       tcp=st.lists(TCP_OPTS, min_size=3, max_size=3),
       ip=st.lists(IP_OPTS, min_size=2, max_size=2),
       both=st.lists(st.tuples(TCP_OPTS, IP_OPTS), min_size=1, max_size=1),
       ip_udp=st.lists(st.tuples(IP_OPTS, homogeneous(4, 4)), min_size=1, max_size=1))
def test_generated_packets_agree(tmp_path_factory, udp, tcp, ip, both, ip_udp):
    packets = ([udp_frame(m, t) for m, t in udp]
               + [tcp_frame(o) for o in tcp]
               + [ip_frame(o) for o in ip]
               + [tcp_frame(t, i) for t, i in both]
               + [ip_frame(i, u) for i, u in ip_udp])
    assert len(packets) == 12  # 20 examples: 240 packets
    agrees(tmp_path_factory.mktemp("xap"), packets)


# --- value tables: Scapy's enum names -----------------------------------------------


def shownames(pcap: Path, name: str) -> list[str]:
    cmd = [TSHARK, "-r", str(pcap), "-T", "pdml"]
    for script in lua_scripts():
        cmd += ["-X", f"lua_script:{script}"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=True)
    return [el.get("showname", "") for el in ET.fromstring(res.stdout).iter("field")
            if el.get("name") == name]


def test_value_tables_use_scapy_names(tmp_path):
    protos = sorted(k for k in IP_PROTOS.d if k < 256)
    frames = [udp_frame([{"proto": p} for p in protos]),
              udp_frame([{"operation": op} for op in range(16)]),
              udp_frame([{"cluster_id": "10.0.0.1"}])]
    pcap = write_pcap(tmp_path / "names.pcapng", frames)
    assert shownames(pcap, "xap.proto")[:len(protos)] == [
        f"Protocol: {IP_PROTOS.d[p]} ({p})" for p in protos]
    ops = shownames(pcap, "xap.operation")[len(protos):len(protos) + 16]
    for op, shown in enumerate(ops):
        name = L.XAP_OPERATIONS.get(op, "Unknown")
        assert shown.endswith(f"= Operation: {name} ({op})"), shown
    assert [s.split(": ")[1] for s in shownames(pcap, "xap.udp.form")] == [
        "short (0)", "short (0)", "full (1)"]
    ip = ether() / IP(options=[IPOption_XAP(messages=[XAPShort()])]) / UDP(sport=1, dport=2)
    pcap = write_pcap(tmp_path / "ipopt.pcapng", [ip])
    assert shownames(pcap, "xap.ipopt.optclass")[0].endswith("Class: control (0)")
    assert shownames(pcap, "xap.ipopt.option")[0].endswith("Number: rfc4727_experiment (30)")


def test_tlvs_are_named(tmp_path):
    """Each TLV: its type by name, its length, the client or target address (D2.10)."""
    frame = udp_frame([{"operation": L.XAP_OP_CHANGE_CONNECTION, "xid": 2}],
                      [{"type": 1, "length": 4, "client_ip": "192.0.2.10"},
                       {"type": 2, "length": 4, "target_ip": "10.0.0.12"},
                       {"type": 127, "length": 2, "value": b"ok"}])
    pcap = write_pcap(tmp_path / "tlv.pcapng", [frame])
    assert [s.split(": ", 1)[1] for s in shownames(pcap, "xap.tlv.type")] == [
        "client_ip (1)", "target_ip (2)", "Unknown (127)"]
    assert shownames(pcap, "xap.tlv.length") == ["Length: 4", "Length: 4", "Length: 2"]
    assert shownames(pcap, "xap.tlv.client_ip") == ["Client IP: 192.0.2.10"]
    assert shownames(pcap, "xap.tlv.target_ip") == ["Target IP: 10.0.0.12"]
    assert shownames(pcap, "xap.tlv.value") == ["Value: 6f6b"]
    cmd = [TSHARK, "-r", str(pcap), "-T", "fields", "-e", "_ws.col.Info"]
    for script in lua_scripts():
        cmd += ["-X", f"lua_script:{script}"]
    info = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=True).stdout
    assert info.strip().endswith("xid=0x2 [client=192.0.2.10 target=10.0.0.12]")


# --- broken frames ----------------------------------------------------------------


def udp_raw(payload: bytes) -> Packet:
    return ether() / IP() / UDP(sport=L.XAP_UDP_PORT, dport=L.XAP_UDP_PORT) / Raw(payload)


def tcp_raw(*options) -> Packet:
    return ether() / IP() / TCP(options=list(options)) / b"data"


FULL_MSG = bytes(XAP(operation=L.XAP_OP_SET, xid=7, cluster_id="10.0.0.1"))
SHORT_MSG = bytes(XAPShort(operation=L.XAP_OP_QUERY, xid=8))
EXID = struct.pack("!H", L.XAP_TCP_EXID)

BROKEN = [
    # (what, frame, expected expert text, severity)
    ("UDP shorter than the header", udp_raw(b"\x01"),
     "shorter than its 2-byte header", SEVERITY_ERROR),
    ("UDP unknown form", udp_raw(b"\x07\x01" + FULL_MSG), "Unknown XAP/UDP form 7", SEVERITY_WARN),
    ("UDP count beyond the data", udp_raw(b"\x01\x03" + FULL_MSG * 2),
     "Count 3 needs 45 bytes of full messages, only 30 follow", SEVERITY_WARN),
    ("UDP truncated message", udp_raw(b"\x01\x01" + FULL_MSG[:10]),
     "Count 1 needs 15 bytes of full messages, only 10 follow", SEVERITY_WARN),
    ("UDP bytes after the messages that are no whole TLV",
     udp_raw(b"\x00\x01" + SHORT_MSG + b"zz"),
     "2 bytes after the messages are not a whole TLV", SEVERITY_WARN),
    ("UDP TLV value shorter than its length", udp_raw(b"\x00\x01" + SHORT_MSG + b"\x01\x04ab"),
     "4 bytes after the messages are not a whole TLV", SEVERITY_WARN),
    ("UDP client IP TLV of 3 bytes", udp_raw(b"\x00\x01" + SHORT_MSG + b"\x01\x03abc"),
     "client_ip TLV of 3 bytes (an IPv4 address has 4)", SEVERITY_WARN),
    ("unknown operation", udp_raw(b"\x00\x01\x15" + SHORT_MSG[1:]),
     "Unknown XAP operation 5", SEVERITY_WARN),
    ("unknown version", udp_raw(b"\x00\x01\x21" + SHORT_MSG[1:]),
     "XAP version 2 (only 1 is defined)", SEVERITY_NOTE),
    ("TCP option 253 too short for the ExID", tcp_raw((253, b"\x58")),
     "too short for its 2-byte ExID", SEVERITY_ERROR),
    ("TCP option 253 bad length", tcp_raw((253, EXID + bytes(7))),
     "TCP option 253 body of 7 bytes is not a multiple of 15 (full) or 11 (short)",
     SEVERITY_WARN),
    ("TCP option 253 of another experiment", tcp_raw((253, b"\x12\x34" + bytes(15))),
     "TCP option 253 with ExID 0x1234 is not XAP (0x5841)", SEVERITY_NOTE),
    ("IP option 158 bad length",
     ether() / IP(options=[IPOption_XAP(messages=[Raw(bytes(7))])]) / UDP(sport=1, dport=2),
     "IP option 158 body of 7 bytes is not a multiple of 15 (full) or 11 (short)",
     SEVERITY_WARN),
]


def test_broken_frames_raise_their_expert_item(tmp_path):
    pcap = write_pcap(tmp_path / "broken.pcapng", [f for _, f, _, _ in BROKEN])
    frames, stderr = run_tshark(pcap)
    assert stderr == ""
    for (what, _, text, severity), frame in zip(BROKEN, frames, strict=True):
        assert not [p for p in cleanliness(frame) if p.startswith("Lua error")], what
        # (an expert item of group Malformed also marks the frame _ws.malformed: expected here)
        hits = [sev for sev, m in frame.experts if text in m]
        assert hits == [severity], f"{what}: {frame.experts}"
    foreign = frames[[what for what, *_ in BROKEN].index("TCP option 253 of another experiment")]
    assert foreign.first("tcp.options.experimental.exid") == "0x1234"
    assert "xap.tcpopt.exid" not in foreign.fields  # shown generically, not misparsed


def test_foreign_and_xap_options_in_one_header(tmp_path):
    pkt = Ether(bytes(tcp_raw((253, b"\x12\x34" + bytes(6)),
                              ("XAP", [XAPShort(xid=1), XAPShort(xid=2)]))))
    frames, _ = run_tshark(write_pcap(tmp_path / "mixed.pcapng", [pkt]))
    assert compare(pkt, frames[0], ABBREV, SKIP) == [] == tcp_option_problems(pkt, frames[0])
    assert [s.show for s in frames[0].fields["xap.xid"]] == ["0x0001", "0x0002"]


# --- no Lua error on any input -------------------------------------------------------


@settings(max_examples=3, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(st.binary(max_size=60), min_size=30, max_size=30),
       st.lists(st.binary(min_size=40, max_size=40), min_size=30, max_size=30))
def test_arbitrary_bytes_never_raise_a_lua_error(tmp_path_factory, payloads, areas):
    frames = [with_lengths(UDP_HDR, len(p), udp=True) + p for p in payloads]
    frames += [with_lengths(TCP_HDR, len(a)) + bytes([253]) + a[1:] for a in areas]
    frames += [with_lengths(IP_HDR, len(a) + 8) + bytes([158]) + a[1:] + bytes(8) for a in areas]
    got, stderr = run_tshark(write_pcap(tmp_path_factory.mktemp("fuzz") / "f.pcapng", frames))
    assert lua_stderr(stderr) == ""
    for i, frame in enumerate(got):
        assert "_ws.lua.error" not in frame.fields, (i, frame.first("_ws.lua.error"))
        assert "_ws.lua" not in frame.protos, i
