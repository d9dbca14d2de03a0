# SPDX-License-Identifier: GPL-2.0-or-later
"""ClusterStatus (seed 002, D2.12): the byte layout, the UDP 4497 binding, the fast parser
and builder against the Scapy layer, and arbitrary bytes."""

import struct

from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import Padding, Raw

from ftsslab.fast import cluster as fast
from ftsslab.fast.cluster import Status
from ftsslab.layers import cluster as L
from ftsslab.layers.cluster import ClusterStatus

u8, u16, u32 = st.integers(0, 0xFF), st.integers(0, 0xFFFF), st.integers(0, 0xFFFFFFFF)
IPV4 = st.ip_addresses(v=4).map(str)


def statuses(type=u8, sender_kind=u8, health=u8, interval_ms=u16):
    """Heartbeat records, length left to the builder; every field free unless narrowed."""
    return st.builds(
        Status, magic=st.just(L.CLUSTER_MAGIC), length=st.none(), version=u8, type=type,
        sender_kind=sender_kind, health=health, sender_id=IPV4, boot=u32, seq=u32,
        interval_ms=interval_ms, weight=u16, bytes_per_s=st.integers(0, 2**64 - 1),
        sessions=u32, queue_depth=u32, errors=u32, ext=st.binary(max_size=40))


STATUSES = statuses()  # unknown types, kinds and health values included


def fields_of(pkt):
    return {f.name: pkt.getfieldval(f.name) for f in pkt.fields_desc}


def scapy_of(status: Status) -> ClusterStatus:
    return ClusterStatus(**status._asdict())


def test_wire_layout():
    """Magic "CS", version, type, length; kind, health, sender id; boot, seq; interval, weight;
    bytes/s (64 bits, 8-aligned); sessions, queue depth, errors: 44 bytes."""
    pkt = ClusterStatus(sender_kind=L.CLUSTER_SWITCH, health=L.CLUSTER_PREDICTED_FAIL,
                        sender_id="10.0.0.11", boot=0xB007, seq=0x01020304, interval_ms=100,
                        weight=3, bytes_per_s=0x0102030405060708, sessions=12, queue_depth=5,
                        errors=0xFFFFFFFF)
    assert bytes(pkt) == bytes.fromhex(
        "4353 01 01 002c 02 02 0a00000b 0000b007 01020304 0064 0003 0102030405060708"
        " 0000000c 00000005 ffffffff")
    assert len(bytes(ClusterStatus())) == L.CLUSTER_STATUS_LEN == 44
    assert pkt.sprintf("%sender_kind% %health% %type%") == "switch PREDICTED_FAIL status"
    assert (L.CLUSTER_UDP_PORT, L.CLUSTER_OK, L.CLUSTER_DEGRADED) == (4497, 0, 1)


def test_defaults_are_the_fast_records():
    assert fields_of(ClusterStatus()) == Status()._asdict()
    raw = bytes(ClusterStatus())
    assert fast.build_cluster_status(Status()) == raw
    assert fast.parse_cluster_status(raw) == Status(length=44)


@given(STATUSES)
def test_roundtrip_and_fast(status):
    raw = bytes(scapy_of(status))
    assert fast.build_cluster_status(status) == raw
    want = status._replace(length=44 + len(status.ext))
    assert fields_of(ClusterStatus(raw)) == want._asdict()
    assert fast.parse_cluster_status(raw) == want
    assert fast.parse_cluster_status(memoryview(raw)) == want


@given(STATUSES)
def test_udp_binding_and_autofill(status):
    frame = Ether(bytes(Ether() / IP(src="10.0.0.11", dst="10.0.0.1") / UDP()
                        / scapy_of(status)))
    assert frame[UDP].sport == frame[UDP].dport == L.CLUSTER_UDP_PORT
    assert frame[UDP].len == 8 + 44 + len(status.ext)
    assert fields_of(frame[ClusterStatus]) == status._replace(length=frame[UDP].len - 8)._asdict()
    assert not frame[ClusterStatus].payload


def test_dissects_on_either_port():
    for ports in ({"sport": L.CLUSTER_UDP_PORT, "dport": 9},
                  {"sport": 9, "dport": L.CLUSTER_UDP_PORT}):
        raw = bytes(Ether() / IP() / UDP(**ports) / bytes(ClusterStatus(seq=4)))
        assert Ether(raw)[ClusterStatus].seq == 4


def test_short_or_foreign_bytes_are_raw():
    raw = bytes(ClusterStatus())
    for data in (raw[:43], b"XX" + raw[2:], b""):
        assert fast.parse_cluster_status(data) is None
    for data in (raw[:43], b"XX" + raw[2:]):
        frame = Ether(bytes(Ether() / IP() / UDP(sport=9, dport=L.CLUSTER_UDP_PORT) / Raw(data)))
        assert ClusterStatus not in frame and frame[Raw].load == data


def test_length_bounds_the_message():
    """Bytes after ``length`` are padding; a length outside 44..datagram is refused by the fast
    parser (Scapy reads what is there)."""
    raw = bytes(ClusterStatus(ext=b"ab", seq=1))
    pkt = ClusterStatus(raw + b"pad")
    assert pkt.ext == b"ab" and pkt[Padding].load == b"pad"
    assert fast.parse_cluster_status(raw + b"pad") == fast.parse_cluster_status(raw)
    for length in (0, 43, len(raw) + 1):
        bad = raw[:4] + struct.pack("!H", length) + raw[6:]
        assert fast.parse_cluster_status(bad) is None
        assert ClusterStatus(bad).seq == 1


def test_summary():
    pkt = ClusterStatus(sender_id="10.0.0.12", seq=9, health=L.CLUSTER_DEGRADED, sessions=4,
                        weight=2)
    assert pkt.summary() == "ClusterStatus device 10.0.0.12 seq=9 DEGRADED sessions=4 weight=2"


# -- arbitrary bytes ---------------------------------------------------------------

FUZZ = settings(max_examples=2000, deadline=None)
UDP_HDR = bytes(Ether() / IP() / UDP(sport=L.CLUSTER_UDP_PORT, dport=L.CLUSTER_UDP_PORT))
MAGIC = struct.pack("!H", L.CLUSTER_MAGIC)


def with_lengths(n):
    """The Ether/IPv4/UDP header template followed by n bytes, its lengths set to match."""
    out = bytearray(UDP_HDR)
    struct.pack_into("!H", out, 16, 20 + 8 + n)
    struct.pack_into("!H", out, 38, 8 + n)
    return bytes(out)


@FUZZ
@given(st.booleans(), st.binary(max_size=100))
def test_fuzz(ours, data):
    """Never raises; whatever the fast parser accepts, Scapy reads the same."""
    if ours:  # half the examples carry the magic, so the fixed part is read
        data = MAGIC + data[2:]
    for buf in (data, memoryview(data)):
        parsed = fast.parse_cluster_status(buf)
    frame = Ether(with_lengths(len(data)) + data)
    frame.summary()
    repr(ClusterStatus(data))
    if parsed is not None:
        assert fields_of(frame[ClusterStatus]) == parsed._asdict()
        assert fast.build_cluster_status(parsed) == data[:parsed.length]
