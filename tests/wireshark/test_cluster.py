"""tshark oracle for ftsslab/wireshark/lua/cluster.lua (ClusterStatus heartbeat, seed 002 D2.12).

One fixed-format layer on UDP 4497: the generic oracle compares every field; the value
tables, the Info column, malformed datagrams and arbitrary bytes are checked here.
"""

from __future__ import annotations

import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import Packet, Raw

from ftsslab.catalog import family_of, ftsslab_layers
from ftsslab.fast.cluster import Status
from ftsslab.layers import cluster as L
from ftsslab.layers.cluster import ClusterStatus
from ftsslab.wireshark import lua_scripts
from tests.layers.test_cluster import scapy_of, statuses, with_lengths
from tests.wireshark.oracle import (
    SEVERITY_WARN,
    TSHARK,
    assert_agrees,
    cleanliness,
    lua_stderr,
    run_tshark,
    write_pcap,
)

pytestmark = pytest.mark.tshark

ABBREV: dict[type[Packet], str] = {ClusterStatus: "clusterstatus"}
NATIVE: dict[type[Packet], str] = {}  # Wireshark knows nothing of it
SEVERITY_NOTE = 0x400000
SEVERITY_ERROR = 0x800000

# Heartbeats tshark must show without a warning: known type, kind and health, an interval
# (any version: an unknown one is only a note).
GOOD = statuses(type=st.sampled_from(sorted(L.CLUSTER_TYPES)),
                sender_kind=st.sampled_from(sorted(L.CLUSTER_SENDER_KINDS)),
                health=st.sampled_from(sorted(L.CLUSTER_HEALTH)),
                interval_ms=st.integers(1, 0xFFFF))


SAMPLE = Status(sender_kind=L.CLUSTER_SWITCH, health=L.CLUSTER_DEGRADED, sender_id="10.0.0.2",
                boot=0xB007, seq=41, weight=4, bytes_per_s=12_500_000, sessions=12,
                queue_depth=3, errors=2)


def test_every_layer_has_a_dissector():
    ours = {cls for cls in ftsslab_layers() if family_of(cls) == "cluster"}
    assert ours - set(NATIVE) == set(ABBREV)


def frame(status, **udp) -> Packet:
    return Ether(bytes(Ether(src="02:00:00:00:00:11", dst="02:00:00:00:00:01")
                       / IP(src="10.0.0.11", dst="10.0.0.1") / UDP(**udp) / scapy_of(status)))


@settings(max_examples=5, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(GOOD, min_size=50, max_size=50))
def test_generated_packets_agree(tmp_path_factory, statuses):
    assert_agrees(tmp_path_factory.mktemp("cluster"), [frame(s) for s in statuses], ABBREV)


def tshark_fields(pcap: Path, *names: str) -> list[list[str]]:
    cmd = [TSHARK, "-r", str(pcap), "-T", "fields", "-E", "separator=|"]
    for script in lua_scripts():
        cmd += ["-X", f"lua_script:{script}"]
    for name in names:
        cmd += ["-e", name]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=True).stdout
    return [line.split("|") for line in out.splitlines()]


def shownames(pcap: Path, name: str) -> list[str]:
    cmd = [TSHARK, "-r", str(pcap), "-T", "pdml"]
    for script in lua_scripts():
        cmd += ["-X", f"lua_script:{script}"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=True)
    return [el.get("showname", "") for el in ET.fromstring(res.stdout).iter("field")
            if el.get("name") == name]


@given(st.lists(GOOD, min_size=10, max_size=10))
@settings(max_examples=2, deadline=None, suppress_health_check=list(HealthCheck))
def test_info_is_scapys_summary(tmp_path_factory, statuses):
    packets = [frame(s) for s in statuses]
    pcap = write_pcap(tmp_path_factory.mktemp("info") / "info.pcapng", packets)
    assert [row[0] for row in tshark_fields(pcap, "_ws.col.Info")] == [
        p[ClusterStatus].mysummary() for p in packets]


def test_value_tables_use_scapy_names(tmp_path):
    packets = [frame(SAMPLE._replace(health=h, sender_kind=k)) for h in range(4) for k in range(4)]
    pcap = write_pcap(tmp_path / "names.pcapng", packets)
    health = [s.split(": ", 1)[1] for s in shownames(pcap, "clusterstatus.health")]
    kinds = [s.split(": ", 1)[1] for s in shownames(pcap, "clusterstatus.sender_kind")]
    for i, (h, k) in enumerate((h, k) for h in range(4) for k in range(4)):
        assert health[i] == f"{L.CLUSTER_HEALTH.get(h, 'Unknown')} ({h})"
        assert kinds[i] == f"{L.CLUSTER_SENDER_KINDS.get(k, 'Unknown')} ({k})"
    assert shownames(pcap, "clusterstatus.type")[0] == "Type: status (1)"


def test_either_port_and_padding(tmp_path):
    packets = [frame(SAMPLE, sport=L.CLUSTER_UDP_PORT, dport=9),
               frame(SAMPLE, sport=9, dport=L.CLUSTER_UDP_PORT),
               Ether(bytes(frame(SAMPLE)) + b"pad")]  # Ethernet padding after the datagram
    assert_agrees(tmp_path, packets, ABBREV)
    padded = Ether(bytes(udp_raw(bytes(scapy_of(SAMPLE)) + b"xyz")))
    frames, _ = run_tshark(write_pcap(tmp_path / "padded.pcapng", [padded]))
    assert cleanliness(frames[0]) == []
    assert frames[0].fields["clusterstatus.data"][0].value == b"xyz".hex()


# --- broken datagrams ------------------------------------------------------------------

def udp_raw(payload: bytes) -> Packet:
    return Ether() / IP() / UDP(sport=L.CLUSTER_UDP_PORT, dport=L.CLUSTER_UDP_PORT) / Raw(payload)


OK = bytes(ClusterStatus(sender_id="10.0.0.11", seq=3))


def patched(offset: int, value: bytes) -> bytes:
    return OK[:offset] + value + OK[offset + len(value):]


BROKEN = [
    # (what, frame, expected expert text, severity)
    ("not our magic", udp_raw(b"GET / HTTP/1.0\r\n"), "does not start with the magic 0x4353",
     SEVERITY_NOTE),
    ("shorter than the fixed part", udp_raw(OK[:20]),
     "ClusterStatus of 20 bytes is shorter than its 44-byte fixed part", SEVERITY_ERROR),
    ("length past the datagram", udp_raw(patched(4, b"\x00\x40")),
     "Length 64, but the fixed part has 44 bytes and the datagram 44", SEVERITY_WARN),
    ("length below the fixed part", udp_raw(patched(4, b"\x00\x08")),
     "Length 8, but the fixed part has 44 bytes", SEVERITY_WARN),
    ("unknown type", udp_raw(patched(3, b"\x07")), "Unknown ClusterStatus type 7", SEVERITY_WARN),
    ("unknown sender kind", udp_raw(patched(6, b"\x09")), "Unknown ClusterStatus sender kind 9",
     SEVERITY_WARN),
    ("unknown health", udp_raw(patched(7, b"\x05")), "Unknown ClusterStatus health 5",
     SEVERITY_WARN),
    ("interval 0", udp_raw(patched(20, b"\x00\x00")), "Interval 0", SEVERITY_WARN),
    ("unknown version", udp_raw(patched(2, b"\x02")), "ClusterStatus version 2", SEVERITY_NOTE),
]


def test_broken_datagrams_raise_their_expert_item(tmp_path):
    frames, stderr = run_tshark(write_pcap(tmp_path / "broken.pcapng",
                                           [f for _, f, _, _ in BROKEN]))
    assert stderr == ""
    for (what, _, text, severity), got in zip(BROKEN, frames, strict=True):
        assert not [p for p in cleanliness(got) if p.startswith("Lua error")], what
        assert [sev for sev, m in got.experts if text in m] == [severity], (what, got.experts)


@settings(max_examples=3, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(st.tuples(st.booleans(), st.binary(max_size=80)), min_size=40, max_size=40))
def test_arbitrary_bytes_never_raise_a_lua_error(tmp_path_factory, payloads):
    magic = L.CLUSTER_MAGIC.to_bytes(2, "big")
    datas = [magic + p[2:] if ours else p for ours, p in payloads]
    frames = [with_lengths(len(d)) + d for d in datas]
    got, stderr = run_tshark(write_pcap(tmp_path_factory.mktemp("fuzz") / "f.pcapng", frames))
    assert lua_stderr(stderr) == ""
    for i, one in enumerate(got):
        assert "_ws.lua.error" not in one.fields, (i, one.first("_ws.lua.error"))
        assert "_ws.lua" not in one.protos, i
