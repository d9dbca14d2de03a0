# SPDX-License-Identifier: GPL-2.0-or-later
"""Reference TCH packets: the first embodiment's TCP exchange of Fig. 5
(HND/SET/END flags, endpoint and update options) and every second-embodiment
packet kind, message type and handoff type of Fig. 9."""

from __future__ import annotations

from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import Packet, Raw

from ftsslab.layers.tch import (
    TCH_FULL,
    TCH_HALF_CLIENT,
    TCH_HALF_CLUSTER,
    TCH_INITIATOR_OTHER,
    TCH_INITIATOR_SECOND,
    TCH_MESSAGE,
    TCH_MSG_ACK,
    TCH_MSG_COMPLETE,
    TCH_MSG_DONE,
    TCH_MSG_FAIL,
    TCH_MSG_HANDOFF,
    TCH_MSG_UPDATE,
    TCH_OPEN,
    TCH_OPEN_RESPONSE,
    TCH_PREDICTIVE,
    TCH_STATUS_CLIENT_CLOSED,
    TCH_STATUS_DENIED,
    TCH_STATUS_SUPERSEDED,
    TCH_STATUS_TIMEOUT,
    TCHMessage,
    tch,
    tch_options,
)

FIRST_MAC, SECOND_MAC, OTHER_MAC = "02:00:00:00:01:01", "02:00:00:00:01:02", "02:00:00:00:01:03"
FIRST_IP, SECOND_IP, OTHER_IP = "10.0.1.1", "10.0.1.2", "10.0.1.3"
CLIENT = (40000, "192.0.2.10")  # the client's port and address (endpoint option)
VIRTUAL_IP, VIRTUAL_PORT = "10.0.0.100", 2049  # the switch's virtual host (NFS)
TCH_PORT_FIRST, TCH_PORT_SECOND = 50001, 2049  # TCH session: "same destination port P1"
ISS_FIRST, ISS_SECOND = 0x1000_0000, 0x2000_0000
CLIENT_SEQ, CLIENT_ACK = 0x0A0B_0C0D, 0x5566_7788  # client session numbers being handed off
APP_STATE = b"NFS-XID:00000042"  # application protocol state sent with the SET


def _tcp(src_is_first: bool, flags: str, reserved: int, seq: int, ack: int, options=(),
         data: bytes = b"") -> Packet:
    macs, ips = (FIRST_MAC, SECOND_MAC), (FIRST_IP, SECOND_IP)
    ports = (TCH_PORT_FIRST, TCH_PORT_SECOND)
    if not src_is_first:
        macs, ips, ports = macs[::-1], ips[::-1], ports[::-1]
    pkt = (
        Ether(src=macs[0], dst=macs[1])
        / IP(src=ips[0], dst=ips[1], id=1)
        / TCP(sport=ports[0], dport=ports[1], flags=flags, reserved=reserved, seq=seq,
              ack=ack, window=65535, options=list(options))
    )
    return pkt / Raw(data) if data else pkt


_STATE = dict(
    client_ip=CLIENT[1], cluster_ip=VIRTUAL_IP, client_port=CLIENT[0],
    cluster_port=VIRTUAL_PORT, seq=CLIENT_ACK, ack=CLIENT_SEQ, snd_una=CLIENT_ACK - 1448,
    snd_wnd=262144, rcv_wnd=131072, snd_wscale=7, rcv_wscale=7, mss=1448, cwnd=14480,
    ssthresh=65535, srtt=1250, rttvar=500, rto=204, keepalive=7_200_000, persist=0, delack=40,
)


def _msg(src: str, ptype: int, mtype: int = 0, htype: int = TCH_FULL, xid: int = 1,
         state: bool = False, **kw) -> Packet:
    macs = {FIRST_IP: FIRST_MAC, SECOND_IP: SECOND_MAC, OTHER_IP: OTHER_MAC}
    dst = FIRST_IP if src != FIRST_IP else SECOND_IP
    fields = dict(ptype=ptype, mtype=mtype, htype=htype, session_id=0xC0FFEE01, xid=xid, **kw)
    if state:
        fields |= _STATE
    return (
        Ether(src=macs[src], dst=macs[dst])
        / IP(src=src, dst=dst, id=1)
        / UDP()
        / TCHMessage(**fields)
    )


def packets() -> list[tuple[str, Packet]]:
    endpoint_opts = tch_options(endpoint=CLIENT, others=[("MSS", 1460)])
    update_opts = tch_options(update=(CLIENT_ACK, CLIENT_SEQ))
    a1, a2 = ISS_FIRST + 1, ISS_SECOND + 1
    return [
        # --- first embodiment: a TCH session over TCP (Fig. 5) ---
        ("TCH SYN HND + endpoint option (first device opens the TCH session)",
         _tcp(True, "S", tch("HND"), ISS_FIRST, 0, endpoint_opts)),
        ("TCH SYN/ACK HND (second device supports TCH)",
         _tcp(False, "SA", tch("HND"), ISS_SECOND, a1, [("MSS", 1460)])),
        ("TCH ACK completing the handshake (ESTABLISHED)",
         _tcp(True, "A", 0, a1, a2)),
        ("TCH SET + update option with application state (first device forces the handoff)",
         _tcp(True, "PA", tch("SET"), a1, a2, update_opts, APP_STATE)),
        ("TCH SET/ACK from the second device (SET_RCVD)",
         _tcp(False, "A", tch("SET"), a2, a1 + len(APP_STATE))),
        ("TCH END (first device: handoff complete, second device MORPHs)",
         _tcp(True, "A", tch("END"), a1 + len(APP_STATE), a2)),
        ("TCH FIN from the second device ending the TCH session (FIN_WAIT)",
         _tcp(False, "FA", 0, a2, a1 + len(APP_STATE))),
        ("TCH SYN HND+SET with endpoint and update options (setup and handoff at once)",
         _tcp(True, "S", tch("HND", "SET"),
              ISS_FIRST, 0, tch_options(CLIENT, (CLIENT_ACK, CLIENT_SEQ)))),
        ("TCH ACK HND+SET+END (all three reserved bits, bit mapping check)",
         _tcp(True, "A", tch("HND", "SET", "END"), a1, a2)),
        # --- second embodiment: TCH messages over UDP (Fig. 9) ---
        ("TCH Open full handoff (first device, TCP state + application state)",
         _msg(FIRST_IP, TCH_OPEN, xid=1, state=True, app_state=b"cwd=/export/b")),
        ("TCH Open Response ok (second device accepts)",
         _msg(SECOND_IP, TCH_OPEN_RESPONSE, xid=1)),
        ("TCH Open half-handoff client direction (Fig. 7)",
         _msg(FIRST_IP, TCH_OPEN, htype=TCH_HALF_CLIENT, xid=2, state=True)),
        ("TCH Open half-handoff cluster-to-client path (Fig. 8)",
         _msg(FIRST_IP, TCH_OPEN, htype=TCH_HALF_CLUSTER, xid=3, state=True)),
        ("TCH Open predictive setup",
         _msg(FIRST_IP, TCH_OPEN, htype=TCH_PREDICTIVE, xid=4, state=True)),
        ("TCH Open handoff request by the second device (becomes predictive)",
         _msg(SECOND_IP, TCH_OPEN, htype=TCH_PREDICTIVE, xid=5, state=True,
              initiator=TCH_INITIATOR_SECOND)),
        ("TCH Open handoff request by another device",
         _msg(OTHER_IP, TCH_OPEN, xid=6, state=True, initiator=TCH_INITIATOR_OTHER)),
        ("TCH Open Response denied",
         _msg(SECOND_IP, TCH_OPEN_RESPONSE, xid=6, status=TCH_STATUS_DENIED)),
        ("TCH Message Update (second device passes the client's ack numbers)",
         _msg(SECOND_IP, TCH_MESSAGE, TCH_MSG_UPDATE, htype=TCH_HALF_CLIENT, xid=7, state=True)),
        ("TCH Message Handoff (predictive session: update seq/ack and hand off)",
         _msg(FIRST_IP, TCH_MESSAGE, TCH_MSG_HANDOFF, htype=TCH_PREDICTIVE, xid=8, state=True)),
        ("TCH Message Complete (first device, enters WAIT)",
         _msg(FIRST_IP, TCH_MESSAGE, TCH_MSG_COMPLETE, xid=9)),
        ("TCH Message Ack of Complete (first device goes DONE)",
         _msg(SECOND_IP, TCH_MESSAGE, TCH_MSG_ACK, xid=9)),
        ("TCH Message Done (connection closed)",
         _msg(FIRST_IP, TCH_MESSAGE, TCH_MSG_DONE, xid=10)),
        ("TCH Message Fail denied (second device cannot complete the handoff)",
         _msg(SECOND_IP, TCH_MESSAGE, TCH_MSG_FAIL, xid=9, status=TCH_STATUS_DENIED)),
        ("TCH Message Fail timeout (no Ack in the WAIT state)",
         _msg(FIRST_IP, TCH_MESSAGE, TCH_MSG_FAIL, xid=12, status=TCH_STATUS_TIMEOUT)),
        ("TCH Message Fail client-closed (client FIN seen: handoff aborted)",
         _msg(SECOND_IP, TCH_MESSAGE, TCH_MSG_FAIL, xid=13, status=TCH_STATUS_CLIENT_CLOSED)),
        ("TCH Message Fail superseded (unused predictive session terminated)",
         _msg(FIRST_IP, TCH_MESSAGE, TCH_MSG_FAIL, htype=TCH_PREDICTIVE, xid=11,
              status=TCH_STATUS_SUPERSEDED)),
    ]
