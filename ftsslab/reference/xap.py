# SPDX-License-Identifier: GPL-2.0-or-later
"""Reference XAP packets: every operation in both forms, each carrier, cascades.

Scene (seed 002): client 192.0.2.10:40000 talks NFS (port 2049) to the virtual
IP of switch 10.0.0.1; cluster devices 10.0.0.11 and 10.0.0.12 move the
connection; cascaded switches behind the first have the NAT-assigned addresses
10.1.0.1 and 10.2.0.1.  Device 10.0.0.11 sends the messages; the switch acks.
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
    XAPUDP,
    IPOption_XAP,
    XAPShort,
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


def _udp(messages: list, to_switch: bool = True) -> Packet:
    src, dst = (DEVICE1, SWITCH) if to_switch else (SWITCH, DEVICE1)
    macs = (DEVICE1_MAC, SWITCH_MAC) if to_switch else (SWITCH_MAC, DEVICE1_MAC)
    return (Ether(src=macs[0], dst=macs[1]) / IP(src=src, dst=dst, id=1)
            / UDP(sport=XAP_UDP_PORT, dport=XAP_UDP_PORT) / XAPUDP(messages=messages))


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
        out.append((f"XAP/UDP {name}, full form", _udp([_msg(op, xid)])))
        out.append((f"XAP/UDP {name}, short form (implicit Cluster ID)",
                    _udp([_msg(op, 0x10 + xid, None)])))
    out.append(("XAP/UDP ack of the full-form redirect (xid 4)",
                _udp([_msg(XAP_OP_ACK, 4)], to_switch=False)))
    out.append(("XAP/UDP ack of the short-form redirect (xid 0x14), short form",
                _udp([_msg(XAP_OP_ACK, 0x14, None)], to_switch=False)))
    out.append(("XAP/UDP redirect of a UDP flow (protocol 17), full form",
                _udp([_msg(XAP_OP_REDIRECT, 0x20, proto=17)])))
    cascade = [_msg(XAP_OP_CHANGE_CONNECTION, 0x30 + i, c)
               for i, c in enumerate((SWITCH, SWITCH2, "10.2.0.1"))]
    out.append(("XAP/UDP cascaded change connection: 3 full messages, switch order",
                _udp(cascade)))
    out.append(("XAP/UDP ack of the cascaded change connection, in order",
                _udp([_msg(XAP_OP_ACK, 0x30 + i, c)
                      for i, c in enumerate((SWITCH, SWITCH2, "10.2.0.1"))], False)))

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
