"""The AF_PACKET filters hand the NAS processes exactly the frames they act on (Scapy builds
the frames; a real kernel runs the filters on a veth pair)."""

from __future__ import annotations

import socket
import time

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Dot1Q, Ether

from ftsslab.lab.veth import names
from ftsslab.lab.veth.netns import call_in_netns, ip_batch
from ftsslab.nas.bpf import tcp_filter, udp_filter
from ftsslab.nas.process import packet_socket

pytestmark = pytest.mark.root

VIP, DEV, CLIENT = "10.0.0.100", "10.0.0.11", "10.0.0.1"
E = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")

FRAMES = {  # name -> frame; the filters below accept the names in their sets
    "syn": E / IP(src=CLIENT, dst=VIP) / TCP(sport=40000, dport=80, flags="S"),
    "synack": E / IP(src=CLIENT, dst=VIP) / TCP(sport=40000, dport=80, flags="SA"),
    "ack": E / IP(src=CLIENT, dst=VIP) / TCP(sport=40000, dport=80, flags="A"),
    "syn-other-port": E / IP(src=CLIENT, dst=VIP) / TCP(sport=40000, dport=81, flags="S"),
    "syn-other-ip": E / IP(src=CLIENT, dst=DEV) / TCP(sport=40000, dport=80, flags="S"),
    "syn-options": E / IP(src=CLIENT, dst=VIP, options=[b"\x01" * 4]) /
    TCP(sport=40000, dport=80, flags="S"),
    "udp": E / IP(src=CLIENT, dst=VIP) / UDP(sport=40000, dport=80),
    "fragment": E / IP(src=CLIENT, dst=VIP, frag=100) / TCP(sport=40000, dport=80, flags="S"),
    "tagged": E / Dot1Q(vlan=5) / IP(src=CLIENT, dst=VIP) / TCP(sport=40000, dport=80,
                                                               flags="S"),
    "tch-in": E / IP(src="10.0.0.12", dst=DEV) / TCP(sport=61000, dport=80, flags="S"),
    "tch-back": E / IP(src="10.0.0.12", dst=DEV) / TCP(sport=80, dport=61000, flags="SA"),
    "fin": E / IP(src=CLIENT, dst=VIP) / TCP(sport=40000, dport=80, flags="FA"),
    "rst": E / IP(src=CLIENT, dst=VIP) / TCP(sport=40000, dport=80, flags="R"),
    "tch-elsewhere": E / IP(src="10.0.0.12", dst=DEV) / TCP(sport=61000, dport=81),
    "udp-other-port": E / IP(src=CLIENT, dst=VIP) / UDP(sport=40000, dport=7),
    "udp-other-ip": E / IP(src=CLIENT, dst=DEV) / UDP(sport=40000, dport=80),
    "udp-fragment": E / IP(src=CLIENT, dst=VIP, frag=100) / UDP(sport=40000, dport=80),
    "xap-claim": E / IP(src=VIP, dst=CLIENT) / TCP(sport=80, dport=40000, flags="A",
                                                  options=[(253, b"XA" + bytes(11))]),
    "timestamps": E / IP(src=VIP, dst=CLIENT) / TCP(sport=80, dport=40000, flags="A",
                                                   options=[("Timestamp", (1, 2))]),
    "no-options": E / IP(src=VIP, dst=CLIENT) / TCP(sport=80, dport=40000, flags="A"),
    "request": E / IP(src=CLIENT, dst=VIP) / TCP(sport=40000, dport=80, flags="PA") / b"GET",
    "request-options": E / IP(src=CLIENT, dst=VIP, options=[b"\x01" * 4]) /
    TCP(sport=40000, dport=80, flags="PA", options=[("Timestamp", (1, 2))]) / b"G",
}

CASES = [
    (tcp_filter, dict(dst_ip=VIP, dport=80, syn_only=True), {"syn", "syn-options"}),
    (tcp_filter, dict(dst_ip=DEV, port=80), {"tch-in", "tch-back", "syn-other-ip"}),
    (tcp_filter, dict(src_ip=CLIENT, sport=40000, dst_ip=VIP, dport=80),
     {"syn", "synack", "ack", "syn-options", "fin", "rst", "request", "request-options"}),
    (tcp_filter, dict(dst_ip=VIP, dport=80, any_flags=0x05), {"fin", "rst"}),
    (tcp_filter, dict(dst_ip=VIP, port=80, any_flags=0x05), {"fin", "rst"}),
    (udp_filter, dict(dst_ip=VIP, dport=80), {"udp"}),
    (tcp_filter, dict(src_ip=VIP, first_option=253), {"xap-claim"}),
    # (Ethernet pads the short frames to 60 bytes: the IP total length tells the payload)
    (tcp_filter, dict(dst_ip=VIP, dport=80, with_data=True), {"request", "request-options"}),
]


@pytest.fixture
def pair():
    ns = names.ns_name(names.new_lab_id(), "bpf")
    ip_batch([f"netns add {ns}"])
    try:
        ip_batch(["link add va type veth peer name vb", "link set va up", "link set vb up"], ns=ns)
        yield ns
    finally:
        ip_batch([f"netns delete {ns}"], force=True)


@pytest.mark.parametrize(("compile_", "kwargs", "wanted"), CASES,
                         ids=["syn", "tch", "flow", "fin-rst", "fin-rst-port", "udp", "xap-option",
                              "data"])
def test_filter_accepts_exactly(pair, compile_, kwargs, wanted):
    # sent last: a wanted frame with another IP id (no filter looks at it); frames keep their
    # order on one socket, so once it is read every frame before it has been filtered
    marker = FRAMES[min(wanted)].copy()
    marker[IP].id = 0xBEEF

    def run() -> set[str]:
        rx = packet_socket("vb", compile_(**kwargs))
        tx = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        tx.bind(("va", 0))
        for frame in [*FRAMES.values(), marker]:
            tx.send(bytes(frame))
        got, deadline = [], time.monotonic() + 30
        while bytes(marker) not in got:
            assert time.monotonic() < deadline, "the marker frame never came"
            try:
                got.append(rx.recv(65536))
            except BlockingIOError:
                time.sleep(0.01)
        rx.close()
        tx.close()
        return {name for name, f in FRAMES.items() if bytes(f) in got}

    assert call_in_netns(pair, run) == wanted
