# SPDX-License-Identifier: GPL-2.0-or-later
"""Reference XAP packets: every operation in both forms, each carrier, cascades.

Scene (seed 002): client 192.0.2.10:40000 talks NFS (port 2049) to the virtual
IP of switch 10.0.0.1; cluster devices 10.0.0.11 and 10.0.0.12 move the
connection; cascaded switches behind the first have the NAT-assigned addresses
10.1.0.1 and 10.2.0.1.  Device 10.0.0.11 sends the messages; the switch acks.
Datagrams name the client (CLIENT_IP TLV) and, to move a connection, the device
it moves to (TARGET_IP, here 10.0.0.12); an ack names the flow's owner.
"""

from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import Packet

from ftsslab.layers.xap import (
    XAP,
    XAP_OP_ACK,
    XAP_OP_CHANGE_CONNECTION,
    XAP_OP_QUERY,
    XAP_OP_REDIRECT,
    XAP_OP_SET,
    XAP_OPERATIONS,
    XAP_UDP_PORT,
    XAPTLV,
    XAPUDP,
    IPOption_XAP,
    XAPShort,
    XAPTLVClientIP,
    XAPTLVTargetIP,
)

SWITCH_MAC, DEVICE1_MAC, DEVICE2_MAC = "02:00:00:00:00:01", "02:00:00:00:00:11", "02:00:00:00:00:12"
CLIENT = "192.0.2.10"
SWITCH, SWITCH2, DEVICE1, DEVICE2 = "10.0.0.1", "10.1.0.1", "10.0.0.11", "10.0.0.12"
CLIENT_PORT, NFS_PORT = 40000, 2049
NONCE = 0xA5C3E1


def _msg(op: int, xid: int, cluster: str | None = SWITCH, proto: int = 6) -> XAPShort:
    fields = {"operation": op, "nonce": NONCE, "proto": proto, "sport": CLIENT_PORT,
              "dport": NFS_PORT, "xid": xid}
    return XAPShort(**fields) if cluster is None else XAP(cluster_id=cluster, **fields)


def _tlvs(target: str | None = None) -> list[XAPTLV]:
    """CLIENT_IP, and TARGET_IP when ``target`` is given (D2.10)."""
    tlvs: list[XAPTLV] = [XAPTLVClientIP(client_ip=CLIENT)]
    return tlvs + ([XAPTLVTargetIP(target_ip=target)] if target else [])


def _udp(messages: list, tlvs: list | None = None, to_switch: bool = True) -> Packet:
    src, dst = (DEVICE1, SWITCH) if to_switch else (SWITCH, DEVICE1)
    macs = (DEVICE1_MAC, SWITCH_MAC) if to_switch else (SWITCH_MAC, DEVICE1_MAC)
    return (Ether(src=macs[0], dst=macs[1]) / IP(src=src, dst=dst, id=1)
            / UDP(sport=XAP_UDP_PORT, dport=XAP_UDP_PORT)
            / XAPUDP(messages=messages, tlvs=tlvs or []))


def _tcp(n: int, options: list, ip_options: list | None = None) -> Packet:
    """Segment n of the device's flow to the client (through the switch), 100 bytes apart."""
    return (Ether(src=DEVICE1_MAC, dst=SWITCH_MAC)
            / IP(src=DEVICE1, dst=CLIENT, id=n, options=ip_options or [])
            / TCP(sport=NFS_PORT, dport=CLIENT_PORT, seq=1000 + 100 * n, ack=2000, flags="PA",
                  window=8192, options=options)
            / (b"d" * 100))


def packets() -> list[tuple[str, Packet]]:
    out: list[tuple[str, Packet]] = []
    requests = [XAP_OP_QUERY, XAP_OP_CHANGE_CONNECTION, XAP_OP_SET, XAP_OP_REDIRECT]
    for xid, op in enumerate(requests, start=1):
        name = XAP_OPERATIONS[op]
        moves = op in (XAP_OP_CHANGE_CONNECTION, XAP_OP_REDIRECT)
        tlvs = _tlvs(DEVICE2 if moves else None)
        proto = 17 if op == XAP_OP_REDIRECT else 6  # redirect: a UDP flow, by NAT alone
        what = "client and target TLVs" if moves else "client TLV"
        out.append((f"XAP/UDP {name}, full form, {what}",
                    _udp([_msg(op, xid, proto=proto)], tlvs)))
        out.append((f"XAP/UDP {name}, short form (implicit Cluster ID), {what}",
                    _udp([_msg(op, 0x10 + xid, None, proto=proto)], tlvs)))
    out.append(("XAP/UDP ack of the query (xid 1): the target TLV names the owner",
                _udp([_msg(XAP_OP_ACK, 1)], _tlvs(DEVICE1), to_switch=False)))
    out.append(("XAP/UDP ack of the change connection (xid 2): the owner is now 10.0.0.12",
                _udp([_msg(XAP_OP_ACK, 2)], _tlvs(DEVICE2), to_switch=False)))
    out.append(("XAP/UDP ack of the short-form redirect (xid 0x14), short form",
                _udp([_msg(XAP_OP_ACK, 0x14, None, proto=17)], _tlvs(DEVICE2),
                     to_switch=False)))
    out.append(("XAP/UDP change connection without TLVs (the format before D2.10)",
                _udp([_msg(XAP_OP_CHANGE_CONNECTION, 0x20)])))
    out.append(("XAP/UDP change connection with an unknown TLV type 127 (skipped)",
                _udp([_msg(XAP_OP_CHANGE_CONNECTION, 0x21)],
                     [*_tlvs(DEVICE2), XAPTLV(type=127, value=b"ftsslab")])))
    cascade = [_msg(XAP_OP_CHANGE_CONNECTION, 0x30 + i, c)
               for i, c in enumerate((SWITCH, SWITCH2, "10.2.0.1"))]
    out.append(("XAP/UDP cascaded change connection: 3 full messages, switch order",
                _udp(cascade, _tlvs(DEVICE2))))
    for i, c in enumerate((SWITCH, SWITCH2)):  # each switch acks its own message
        ack = _udp([_msg(XAP_OP_ACK, 0x30 + i, c)], _tlvs(DEVICE2), False)
        ack[IP].src = c
        out.append((f"XAP/UDP ack of cascade message {i + 1} (xid 0x{0x30 + i:x}) from {c}", ack))

    out.append(("TCP option 253 ExID 0x5841: redirect, full form",
                _tcp(2, [("XAP", [_msg(XAP_OP_REDIRECT, 0x40, DEVICE2)])])))
    out.append(("TCP option 253 after two NOPs: set, short form",
                _tcp(3, [("NOP", None), ("NOP", None), ("XAP", [_msg(XAP_OP_SET, 0x41, None)])])))
    out.append(("TCP option 253: cascaded redirect, 2 full messages (switch, NAT switch)",
                _tcp(4, [("XAP", [_msg(XAP_OP_REDIRECT, 0x42, SWITCH),
                                  _msg(XAP_OP_REDIRECT, 0x43, SWITCH2)])])))
    out.append(("TCP option 253: cascaded query, 3 short messages",
                _tcp(5, [("XAP", [_msg(XAP_OP_QUERY, 0x44 + i, None) for i in range(3)])])))
    out.append(("TCP options 253 x2: cascade of a full then a short message",
                _tcp(6, [("XAP", [_msg(XAP_OP_CHANGE_CONNECTION, 0x47, SWITCH2)]),
                         ("XAP", [_msg(XAP_OP_CHANGE_CONNECTION, 0x48, None)])])))

    out.append(("IP option 158: set, full form",
                _tcp(7, [], [IPOption_XAP(messages=[_msg(XAP_OP_SET, 0x50)])])))
    out.append(("IP option 158: query, short form",
                _tcp(8, [], [IPOption_XAP(messages=[_msg(XAP_OP_QUERY, 0x51, None)])])))
    out.append(("IP option 158: cascaded redirect, 2 full messages",
                _tcp(9, [], [IPOption_XAP(messages=[_msg(XAP_OP_REDIRECT, 0x52, SWITCH),
                                                    _msg(XAP_OP_REDIRECT, 0x53, SWITCH2)])])))
    out.append(("IP option 158: cascaded change connection, 3 short messages",
                _tcp(10, [], [IPOption_XAP(messages=[
                    _msg(XAP_OP_CHANGE_CONNECTION, 0x54 + i, None) for i in range(3)])])))
    out.append(("IP option 158 and TCP option 253 together: redirect (switch, NAT switch)",
                _tcp(11, [("XAP", [_msg(XAP_OP_REDIRECT, 0x58, SWITCH2)])],
                     [IPOption_XAP(messages=[_msg(XAP_OP_REDIRECT, 0x57, SWITCH)])])))
    return out
