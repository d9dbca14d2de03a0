"""tshark oracle for ftsslab/wireshark/lua/tch.lua (TCP handoff, seed 002).

Three parts: the HND/SET/END bits in TCP.reserved (postdissector, ``tch.flags``), the
TCP options 255/254 (``tch.endpoint.*``, ``tch.update.*``; named tuples in Scapy, so they
are compared here by hand) and ``TCHMessage`` on UDP 4494 (generic oracle).
"""

from __future__ import annotations

import struct
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import Packet, Raw

from ftsslab.catalog import family_of, ftsslab_layers
from ftsslab.layers import tch as L
from ftsslab.layers.tch import TCH_UDP_PORT, TCHEndpoint, TCHMessage, TCHUpdate, tch_options
from ftsslab.wireshark import lua_scripts
from tests.layers.test_tch import U32, tch_messages, tch_option_lists
from tests.wireshark.oracle import (
    SEVERITY_WARN,
    TSHARK,
    Frame,
    assert_agrees,
    cleanliness,
    lua_stderr,
    reference,
    run_tshark,
    write_pcap,
)

pytestmark = pytest.mark.tshark

ABBREV: dict[type[Packet], str] = {TCHMessage: "tch.msg"}
# Public Packet classes of layers/tch.py that Wireshark dissects natively: none. (TCP's
# reserved bits and options 254/255 are no Packet classes; they are compared by hand below.)
NATIVE: dict[type[Packet], str] = {}
SKIP: dict[str, str] = {}  # every TCHMessage field is compared

SEVERITY_ERROR = 0x800000


def test_every_layer_has_a_dissector():
    ours = {cls for cls in ftsslab_layers() if family_of(cls) == "tch"}
    assert ours - set(NATIVE) == set(ABBREV)


# --- TCP part: reserved bits and options ------------------------------------


def tcp_problems(pkt: Packet, frame: Frame) -> list[str]:
    """The TCH flags and TCH options of Scapy's TCP header against tshark's tch.* fields."""
    if TCP not in pkt:
        return [f"tshark shows {k}" for k in ("tch.flags", "tch.endpoint.port", "tch.update.seq")
                if k in frame.fields]
    tcp = pkt[TCP]
    problems = []
    flags = frame.fields.get("tch.flags", [])
    if tcp.reserved:
        if len(flags) != 1 or int(flags[0].show, 0) != tcp.reserved:
            problems.append(f"tch.flags: Scapy {tcp.reserved} != tshark "
                            f"{[f.show for f in flags]}")
        for name, bit in L.TCH_FLAGS.items():
            got = frame.first(f"tch.flags.{name.lower()}")
            if got != ("1" if tcp.reserved & bit else "0"):
                problems.append(f"tch.flags.{name.lower()}: {got!r} for reserved {tcp.reserved}")
    elif flags:
        problems.append(f"tch.flags shown for reserved 0: {flags[0].show}")
    want: dict[str, list] = {k: [] for k in ("tch.endpoint.port", "tch.endpoint.ip",
                                            "tch.update.seq", "tch.update.ack")}
    for name, value in tcp.options:
        if name == "TCHEndpoint" and isinstance(value, TCHEndpoint):
            want["tch.endpoint.port"].append(value.port)
            want["tch.endpoint.ip"].append(value.ip)
        elif name == "TCHUpdate" and isinstance(value, TCHUpdate):
            want["tch.update.seq"].append(value.seq)
            want["tch.update.ack"].append(value.ack)
    for key, values in want.items():
        got = [s.show for s in frame.fields.get(key, [])]
        if got != [str(v) for v in values]:
            problems.append(f"{key}: Scapy {values} != tshark {got}")
    return problems


def agrees(tmp_path: Path, packets: list[Packet], pcap: Path | None = None) -> list[Frame]:
    """The generic oracle (TCHMessage, cleanliness) plus the TCP flags and options."""
    frames = assert_agrees(tmp_path, packets, ABBREV, SKIP, pcap=pcap)
    failures = []
    for i, (pkt, frame) in enumerate(zip(packets, frames, strict=True), start=1):
        problems = tcp_problems(pkt, frame)
        if problems:
            failures.append(f"frame {i} ({pkt.summary()}):\n    " + "\n    ".join(problems))
    assert not failures, "\n".join(failures[:20])
    return frames


def info_column(pcap: Path) -> list[str]:
    cmd = [TSHARK, "-r", str(pcap), "-T", "fields", "-e", "_ws.col.Info"]
    for script in lua_scripts():
        cmd += ["-X", f"lua_script:{script}"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=True)
    assert lua_stderr(res.stderr) == ""
    return res.stdout.splitlines()


# --- reference capture -------------------------------------------------------


def test_reference_agrees(tmp_path):
    path, packets = reference("tch")
    frames = agrees(tmp_path, packets, pcap=path)
    assert sum(TCHMessage in p for p in packets) == sum("tch.msg" in f.protos for f in frames)
    assert any("tch.endpoint.port" in f.fields for f in frames)
    assert any("tch.update.seq" in f.fields for f in frames)


def test_reference_info_column():
    path, packets = reference("tch")
    for pkt, info in zip(packets, info_column(path), strict=True):
        if TCHMessage in pkt:
            assert info == pkt[TCHMessage].mysummary()
        elif pkt[TCP].reserved:
            names = ",".join(n for n, b in L.TCH_FLAGS.items() if pkt[TCP].reserved & b)
            assert info.endswith(f" [TCH {names}]"), info
        else:
            assert "[TCH" not in info, info


# --- hypothesis ----------------------------------------------------------------

TCP_CASES = st.tuples(tch_option_lists(), st.integers(0, 7), st.binary(max_size=32), U32)


def tcp_frame(i: int, case) -> Packet:
    """Each segment opens a stream of its own (distinct ports), so TCP analysis stays quiet."""
    (endpoint, update, others), reserved, payload, seq = case
    return Ether(bytes(
        Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
        / IP(src="10.0.1.1", dst="10.0.1.2")
        / TCP(sport=20000 + i, dport=2049, flags="S", seq=seq, reserved=reserved,
              options=tch_options(endpoint, update, others))
        / Raw(payload)
    ))


def udp_frame(msg: TCHMessage) -> Packet:
    return Ether(bytes(Ether() / IP(src="10.0.1.1", dst="10.0.1.2")
                       / UDP(sport=TCH_UDP_PORT, dport=TCH_UDP_PORT) / msg))


# 10 examples x (20 segments + 12 messages) = 320 packets, one tshark run per example. The
# message list stays short: a message may carry ~1.4 KB of application state, and longer
# lists overrun Hypothesis's per-example data budget (40 messages: 1 valid example in 25 s).
@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                   HealthCheck.data_too_large])
@given(st.lists(TCP_CASES, min_size=20, max_size=20),
       st.lists(tch_messages(), min_size=12, max_size=12))
def test_hypothesis_packets_agree(tmp_path_factory, tcp_cases, messages):
    packets = [tcp_frame(i, c) for i, c in enumerate(tcp_cases)]
    packets += [udp_frame(m) for m in messages]
    agrees(tmp_path_factory.mktemp("tch"), packets)


# --- broken frames ---------------------------------------------------------------


def _msg(b0: int, mtype: int = 0, app_len: int = 0, body: bytes = b"") -> bytes:
    return struct.pack("!BBBBIIBBH", b0, mtype, 1, 0, 0xC0FFEE01, 7, 1, 0, app_len) + body


def _udp(payload: bytes) -> Packet:
    return (Ether() / IP(src="10.0.1.1", dst="10.0.1.2")
            / UDP(sport=TCH_UDP_PORT, dport=TCH_UDP_PORT) / Raw(payload))


def _tcp(options) -> Packet:
    return (Ether() / IP(src="10.0.1.1", dst="10.0.1.2")
            / TCP(sport=30000, dport=2049, flags="S", reserved=L.TCH_HND, options=options))


BROKEN = [
    ("endpoint len 6", _tcp([(255, b"\x9c\x40\xc0\x00")]),
     SEVERITY_ERROR, "TCH Endpoint option length 6, expected 8"),
    ("update len 8", _tcp([("NOP", None), ("NOP", None), (254, b"\x00\x00\x00\x01\x00\x00")]),
     SEVERITY_ERROR, "TCH Update option length 8, expected 10"),
    ("message of 3 bytes", _udp(b"\x13\x00\x01"),
     SEVERITY_ERROR, "TCH message too short: 3 bytes, the header needs 16"),
    ("message of 1 byte", _udp(b"\x13"),
     SEVERITY_ERROR, "TCH message too short: 1 bytes, the header needs 16"),
    ("Open without state", _udp(_msg(0x11)),
     SEVERITY_ERROR, "Open carries the 68-byte TCP state block, but only 0 bytes follow"),
    ("Handoff with half a state block", _udp(_msg(0x13, 4, body=bytes(30))),
     SEVERITY_ERROR, "Handoff carries the 68-byte TCP state block, but only 30 bytes follow"),
    ("unknown packet kind", _udp(_msg(0x15)),
     SEVERITY_WARN, "Unknown TCH packet kind 5"),
    ("unknown message type", _udp(_msg(0x13, 9)),
     SEVERITY_WARN, "Unknown TCH message type 9"),
    ("message type none", _udp(_msg(0x13, 0)),
     SEVERITY_WARN, "Unknown TCH message type 0"),
    ("bad version", _udp(_msg(0x22)),
     SEVERITY_WARN, "Unknown TCH version 2"),
    ("app_len past the end", _udp(_msg(0x12, app_len=100, body=b"abcd")),
     SEVERITY_ERROR, "Application state length 100 exceeds the 4 bytes left in the message"),
    ("1476-byte message", _udp(_msg(0x12, app_len=1460, body=bytes(1460))),
     SEVERITY_WARN, "TCH message is 1476 bytes; a 1500-byte IP packet over UDP carries at "
                    "most 1472"),
]


def test_broken_frames_raise_expert_items(tmp_path):
    pcap = write_pcap(tmp_path / "broken.pcapng", [p for _, p, _, _ in BROKEN])
    frames, stderr = run_tshark(pcap)
    assert stderr == ""
    assert len(frames) == len(BROKEN)
    for (what, _, severity, text), frame in zip(BROKEN, frames, strict=True):
        # (a MALFORMED-group expert item adds a hidden _ws.malformed: expected here)
        assert "_ws.lua.error" not in frame.fields, what
        assert any(sev == severity and text in msg for sev, msg in frame.experts), \
            f"{what}: {frame.experts}"
        # only the expected expert item at warning or above (others would be noise)
        assert len([m for s, m in frame.experts if s >= SEVERITY_WARN]) == 1, \
            f"{what}: {frame.experts}"


def test_broken_options_leave_no_fields(tmp_path):
    """A TCH option of the wrong length is raw bytes in Scapy; tshark shows no values."""
    packets = [Ether(bytes(p)) for _, p, _, _ in BROKEN[:2]]
    for pkt in packets:
        assert not any(isinstance(v, TCHEndpoint | TCHUpdate) for _, v in pkt[TCP].options)
    frames, _ = run_tshark(write_pcap(tmp_path / "opts.pcapng", packets))
    for pkt, frame in zip(packets, frames, strict=True):
        assert tcp_problems(pkt, frame) == []
        assert cleanliness(frame)  # the length error is reported


@given(st.binary(max_size=200), st.sampled_from([0x11, 0x12, 0x13, 0x10, 0x1F, 0x03]),
       st.integers(0, 8))
@settings(max_examples=1, deadline=None)
def test_garbage_never_raises_a_lua_error(tmp_path_factory, tail, b0, mtype):
    """Random bytes behind a plausible first byte, truncated at every length up to 100."""
    raw = bytes([b0, mtype]) + tail
    packets = [_udp(raw[:n]) for n in range(0, min(len(raw), 100) + 1)]
    frames, stderr = run_tshark(write_pcap(tmp_path_factory.mktemp("g") / "g.pcapng", packets))
    assert stderr == ""
    for frame in frames:
        assert "_ws.lua.error" not in frame.fields and "_ws.lua" not in frame.protos
