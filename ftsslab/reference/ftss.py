"""Reference FTSS frames: one per opcode, ACK status, reject reason, node state
and file status, as Ether/FCoE/FC/FTSS frames on the FTSS interconnection fabric.

The cast is seed 000's Fig. 4: servers 80 and 82 and FTSS 92 (node ids are the
seed's reference numerals).  FC port ids are domain 1, area = server; FCoE MACs
are fabric-provided (FC-MAP 0e:fc:00 + FC port id).  Requests open an exchange
(``FC_FCTL_SINGLE``); answers are sent by the exchange responder on the same
OX_ID (``REPLY_FCTL``), so ``answers()`` pairs them at the FC level too.
"""

from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import ARP, Ether
from scapy.packet import Packet

from ftsslab.layers.fc import (
    FC,
    FC_FCTL_END_SEQ,
    FC_FCTL_EXCH_CONTEXT,
    FC_FCTL_LAST_SEQ,
    FC_FCTL_SINGLE,
    FC_RCTL_DD_UNSOL_DATA,
    FCoE,
)
from ftsslab.layers.ftss import (
    FTSS,
    FTSS_ACK_DELIVERED,
    FTSS_ACK_REASONS,
    FTSS_ACK_REJECTED,
    FTSS_ACK_STORED_BEST_EFFORT,
    FTSS_ACK_STORED_GUARANTEED,
    FTSS_ACK_UNDELIVERABLE,
    FTSS_FILE_BAD_REQUEST,
    FTSS_FILE_DENIED,
    FTSS_FILE_EXISTS,
    FTSS_FILE_IO_ERROR,
    FTSS_FILE_NO_SPACE,
    FTSS_FILE_NOT_FOUND,
    FTSS_FILE_STATUS,
    FTSS_FLAG_ALTPATH,
    FTSS_NODE_DOWN,
    FTSS_NODE_STATES,
    FTSS_NODE_UP,
    FTSS_OP_DELETE,
    FTSS_OP_LIST,
    FTSS_OP_READ,
    FTSS_OP_WRITE,
    FTSS_OPCODES,
    FTSS_PKT_BROADCAST,
    FTSS_PKT_EXTERNAL,
    FTSS_PKT_RETRANSMIT,
    FTSS_PKT_ROLLBACK,
    FTSS_REASON_DEST_DOWN,
    FTSS_REASON_DEST_UNKNOWN,
    FTSS_WRITE_CREATE,
    FTSS_WRITE_SYNC,
    FTSSAck,
    FTSSDelete,
    FTSSFileName,
    FTSSFileResponse,
    FTSSHello,
    FTSSList,
    FTSSPacket,
    FTSSRead,
    FTSSStatus,
    FTSSWrite,
)

REPLY_FCTL = FC_FCTL_EXCH_CONTEXT | FC_FCTL_LAST_SEQ | FC_FCTL_END_SEQ

FTSS_NODE = 92  # FTSS 92
SERVER_A = 80  # server 80, the sender
SERVER_B = 82  # server 82, a destination on the fabric
FC_ID = {FTSS_NODE: 0x010000, SERVER_A: 0x010100, SERVER_B: 0x010200}
# What the servers' protocol stacks 116 put on the wire (inner Ethernet frames).
ETH = {SERVER_A: "02:00:00:00:00:50", SERVER_B: "02:00:00:00:00:52"}
IPS = {SERVER_A: "192.0.2.80", SERVER_B: "192.0.2.82"}
GATEWAY_MAC = "02:00:00:00:00:96"  # external network 96's default gateway
EXTERNAL_IP = "198.51.100.7"


def _fcoe_mac(node: int) -> str:
    fcid = FC_ID[node]
    return "0e:fc:00:" + fcid.to_bytes(3, "big").hex(":")


def _frame(src: int, dst: int, ox_id: int, msg: Packet, *, reply: bool = False) -> Packet:
    return (
        Ether(dst=_fcoe_mac(dst), src=_fcoe_mac(src))
        / FCoE()
        / FC(
            r_ctl=FC_RCTL_DD_UNSOL_DATA,
            d_id=FC_ID[dst],
            s_id=FC_ID[src],
            f_ctl=REPLY_FCTL if reply else FC_FCTL_SINGLE,
            ox_id=ox_id,
            rx_id=ox_id if reply else 0xFFFF,
        )
        / msg
    )


def _udp(src: int, dst_mac: str, dst_ip: str, data: bytes) -> Packet:
    return (
        Ether(dst=dst_mac, src=ETH[src])
        / IP(src=IPS[src], dst=dst_ip, id=1)
        / UDP(sport=40000, dport=7)
        / data
    )


def packets() -> list[tuple[str, Packet]]:
    to_b = _udp(SERVER_A, ETH[SERVER_B], IPS[SERVER_B], b"hello server 82")
    to_ext = _udp(SERVER_A, GATEWAY_MAC, EXTERNAL_IP, b"hello internet")
    from_ext = (
        Ether(dst=ETH[SERVER_A], src=GATEWAY_MAC)
        / IP(src=EXTERNAL_IP, dst=IPS[SERVER_A], id=2)
        / UDP(sport=7, dport=40000)
        / b"reply"
    )
    arp = Ether(dst="ff:ff:ff:ff:ff:ff", src=ETH[SERVER_A]) / ARP(
        hwsrc=ETH[SERVER_A], psrc=IPS[SERVER_A], pdst=IPS[SERVER_B]
    )

    def pkt(ox, msg_id, inner, src=SERVER_A, dst=FTSS_NODE, origin=SERVER_A, **kw):
        return _frame(
            src, dst, ox, FTSS() / FTSSPacket(msg_id=msg_id, src_node=origin, **kw) / inner
        )

    def ack(ox, msg_id, status, reason=0, src=FTSS_NODE, dst=SERVER_A, more=0):
        return _frame(
            src,
            dst,
            ox,
            FTSS() / FTSSAck(msg_id=msg_id, node_id=src, status=status, reason=reason,
                             more=more),
            reply=True,
        )

    out = [
        ("FTSS PKT server 80 -> FTSS, for server 82 (block 152)", pkt(0x100, 1, to_b)),
        ("FTSS ACK stored-guaranteed (block 174)", ack(0x100, 1, FTSS_ACK_STORED_GUARANTEED)),
        (
            "FTSS PKT FTSS -> server 82, stored copy (block 176)",
            pkt(0x900, 1, to_b, src=FTSS_NODE, dst=SERVER_B),
        ),
        (
            "FTSS ACK delivered, destination's receipt (block 178)",
            ack(0x900, 1, FTSS_ACK_DELIVERED, src=SERVER_B, dst=FTSS_NODE),
        ),
        (
            "FTSS PKT server 80 -> FTSS, for an external node (block 158 EXTERNAL)",
            pkt(0x101, 2, to_ext),
        ),
        (
            "FTSS ACK stored-best-effort, external destination (block 160)",
            ack(0x101, 2, FTSS_ACK_STORED_BEST_EFFORT),
        ),
        ("FTSS PKT server 80 -> FTSS, for server 82 while it is down", pkt(0x102, 3, to_b)),
        (
            "FTSS ACK undeliverable, destination down (block 170)",
            ack(0x102, 3, FTSS_ACK_UNDELIVERABLE, FTSS_REASON_DEST_DOWN),
        ),
        ("FTSS PKT server 80 -> FTSS, no route and no external port", pkt(0x103, 4, to_ext)),
        (
            "FTSS ACK undeliverable, destination unknown (block 158, no external port)",
            ack(0x103, 4, FTSS_ACK_UNDELIVERABLE, FTSS_REASON_DEST_UNKNOWN),
        ),
        (
            "FTSS PKT broadcast ARP (both branches of block 158)",
            pkt(0x104, 5, arp, pkt_flags=FTSS_PKT_BROADCAST),
        ),
        (
            "FTSS PKT from the external network to server 80 (Fig. 8 block 192)",
            pkt(
                0x901,
                6,
                from_ext,
                src=FTSS_NODE,
                dst=SERVER_A,
                origin=FTSS_NODE,
                pkt_flags=FTSS_PKT_EXTERNAL,
            ),
        ),
        (
            "FTSS PKT retransmitted on the redundant interface",
            _frame(
                FTSS_NODE,
                SERVER_B,
                0x902,
                FTSS(flags=FTSS_FLAG_ALTPATH)
                / FTSSPacket(msg_id=1, src_node=SERVER_A, pkt_flags=FTSS_PKT_RETRANSMIT)
                / to_b,
            ),
        ),
        (
            "FTSS PKT retained 600 s in the packet queue after delivery (claim 5)",
            pkt(0x105, 7, to_b, retention=600),
        ),
        (
            "FTSS PKT re-retrieved from the packet queue for roll-back",
            pkt(0x903, 7, to_b, src=FTSS_NODE, dst=SERVER_B, pkt_flags=FTSS_PKT_ROLLBACK),
        ),
    ]
    rejected = {v for v in FTSS_ACK_REASONS if 0 < v < FTSS_REASON_DEST_DOWN}
    for i, reason in enumerate(sorted(rejected)):
        out.append(
            (
                f"FTSS ACK rejected: {FTSS_ACK_REASONS[reason]}",
                ack(0x200 + i, 0x100 + i, FTSS_ACK_REJECTED, reason),
            )
        )

    hello_macs = [ETH[SERVER_A], "02:00:00:00:01:50"]
    out.append(
        (
            "FTSS HELLO server 80 up, serving 2 MACs (routing table 146)",
            _frame(
                SERVER_A,
                FTSS_NODE,
                0x300,
                FTSS() / FTSSHello(node_id=SERVER_A, seq=1, port=1, macs=hello_macs),
            ),
        )
    )
    # The first STATUS answers the HELLO; the others are unsolicited state changes.
    states = [FTSS_NODE_UP] + [s for s in sorted(FTSS_NODE_STATES) if s != FTSS_NODE_UP]
    for i, state in enumerate(states):
        out.append(
            (
                f"FTSS STATUS server 80 {FTSS_NODE_STATES[state]}",
                _frame(
                    FTSS_NODE,
                    SERVER_A,
                    0x300 + i,
                    FTSS()
                    / FTSSStatus(
                        node_id=SERVER_A,
                        seq=1 + i,
                        state=state,
                        port=1,
                        macs=hello_macs if state != FTSS_NODE_DOWN else [],
                    ),
                    reply=i == 0,
                ),
            )
        )

    # File I/O embodiment (claims 6, 13, 21, 30): packets as files in directories.
    name = b"/ftss/out/node82/00000008.pkt"
    files = [
        (
            "FTSS WRITE packet as a file (claim 6)",
            FTSSWrite(
                req_id=0x400,
                filename=name,
                data=bytes(to_b),
                wflags=FTSS_WRITE_CREATE | FTSS_WRITE_SYNC,
            ),
            FTSSFileResponse(req_id=0x400, op=FTSS_OP_WRITE),
        ),
        (
            "FTSS LIST incoming packet directory",
            FTSSList(req_id=0x401, filename=b"/ftss/in/node80/"),
            FTSSFileResponse(
                req_id=0x401,
                op=FTSS_OP_LIST,
                names=[
                    FTSSFileName(filename=b"00000006.pkt"),
                    FTSSFileName(filename=b"00000009.pkt"),
                ],
            ),
        ),
        (
            "FTSS READ packet file",
            FTSSRead(req_id=0x402, filename=b"/ftss/in/node80/00000006.pkt", count=1500),
            FTSSFileResponse(req_id=0x402, op=FTSS_OP_READ, data=bytes(from_ext)),
        ),
        (
            "FTSS DELETE delivered packet file",
            FTSSDelete(req_id=0x403, filename=b"/ftss/in/node80/00000006.pkt"),
            FTSSFileResponse(req_id=0x403, op=FTSS_OP_DELETE),
        ),
    ]
    for i, (comment, req, resp) in enumerate(files):
        out.append((comment, _frame(SERVER_A, FTSS_NODE, 0x400 + i, FTSS() / req)))
        out.append(
            (
                f"FTSS RESPONSE {comment.split()[1]} OK",
                _frame(FTSS_NODE, SERVER_A, 0x400 + i, FTSS() / resp, reply=True),
            )
        )
    # Each error status on the request it typically answers.
    errors = {
        FTSS_FILE_NOT_FOUND: FTSS_OP_READ,
        FTSS_FILE_EXISTS: FTSS_OP_WRITE,
        FTSS_FILE_NO_SPACE: FTSS_OP_WRITE,
        FTSS_FILE_IO_ERROR: FTSS_OP_READ,
        FTSS_FILE_BAD_REQUEST: FTSS_OP_LIST,
        FTSS_FILE_DENIED: FTSS_OP_DELETE,
    }
    for status, op in errors.items():
        out.append(
            (
                f"FTSS RESPONSE {FTSS_OPCODES[op]} {FTSS_FILE_STATUS[status]}",
                _frame(
                    FTSS_NODE,
                    SERVER_A,
                    0x410 + status,
                    FTSS() / FTSSFileResponse(req_id=0x410 + status, op=op, status=status),
                    reply=True,
                ),
            )
        )
    # One group commit's STORED acknowledgments to a unit: one ACK answers four PKTs (FC's ACK_N)
    out.append(
        (
            "FTSS ACK stored-guaranteed for PKTs 0x10-0x13, one group commit (more=3)",
            ack(0x500, 0x10, FTSS_ACK_STORED_GUARANTEED, more=3),
        )
    )
    return out
