"""What the sans-IO FTSS cores return, and the numbers they share with ``layers/ftss.py``.

The cores (``core.FtssCore``, ``unit.ServerUnit``) never touch sockets, files or
clocks: they take frames, events and ``now`` and return these actions. A driver
(``sim_nodes`` in the lab, or a real daemon) carries them out: ``Transmit`` puts a
frame on a port, ``Persist``/``Forget`` go to the durable store, and the driver
calls ``core.on_durable(record_id)`` once an fsync covered a ``Persist`` -- only
then may an acknowledgment that guarantees anything leave (seed 000 block 154
before blocks 160/174).

The constants repeat ``layers/ftss.py`` so the hot path never imports Scapy; a test
proves they are equal.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

# ---- wire numbers (layers/ftss.py) ------------------------------------------------------------

FTSS_VERSION = 1
FTSS_FLAG_ALTPATH = 0x1
FTSS_OP_FILE_MASK = 0xF0
FTSS_OP_FILE_CLASS = 0x10
FTSS_PKT_BROADCAST = 0x1
FTSS_PKT_RETRANSMIT = 0x2
FTSS_PKT_EXTERNAL = 0x4
FTSS_PKT_ROLLBACK = 0x8
FTSS_ACK_STORED_GUARANTEED = 1
FTSS_ACK_STORED_BEST_EFFORT = 2
FTSS_ACK_UNDELIVERABLE = 3
FTSS_ACK_DELIVERED = 4
FTSS_ACK_REJECTED = 5
FTSS_REASON_NONE = 0x00
FTSS_REASON_MALFORMED = 0x01
FTSS_REASON_UNKNOWN_OPCODE = 0x02
FTSS_REASON_OVERSIZE = 0x03
FTSS_REASON_STORE_FULL = 0x04
FTSS_REASON_BAD_LENGTH = 0x05
FTSS_REASON_BAD_VERSION = 0x06
FTSS_REASON_DEST_DOWN = 0x10
FTSS_REASON_DEST_UNKNOWN = 0x11
FTSS_NODE_DOWN = 0
FTSS_NODE_UP = 1
FTSS_NODE_MAINTENANCE = 3
FTSS_FILE_OK = 0
FTSS_FILE_NOT_FOUND = 1
FTSS_FILE_EXISTS = 2
FTSS_FILE_NO_SPACE = 3
FTSS_FILE_BAD_REQUEST = 5
FTSS_FILE_DENIED = 6
FTSS_WRITE_TRUNCATE = 0x2
FC_FCTL_ANSWER = 0x980000  # exchange responder, last seq, end seq (docs/protocols.md)

# A driver may round deadlines (the sim keeps integer nanoseconds): a timer this close is due.
TIME_EPS = 1e-9

# ---- ftsslab choices -------------------------------------------------------------------------

FTSS_FC_ID = 0x010000  # the FTSS's FC port id (01.00.00, as in the reference capture)
REPLAY_FILE = b".replay"  # READ of it = "roll back": re-send my retained dialog since `offset` ms
SPOOL_OUT = b"out/"  # file-I/O embodiment: a node writes packet files here ...
SPOOL_IN = b"in/"  # ... and reads (then deletes) the packets for it here

# Record kinds the cores persist (the store does not interpret them).
REC_PKT = 1  # a stored packet: _PKT_REC + inner frame
REC_DELIVERED = 2  # a stored packet was delivered and is now retained: _DELIVERED_REC
REC_FILE = 3  # a file of a node's spool directory: _FILE_REC + name + data

PKT_REC = struct.Struct("!IQHHBd")  # src_node, msg_id, pkt_flags, retention, origin, stored_at
DELIVERED_REC = struct.Struct("!QdH")  # packet's record id, delivered_at, n; then n node ids
FILE_REC = struct.Struct("!IH")  # node_id, name_len

ORIGIN_FABRIC = 0  # PKT from a node (Figs. 7A/7B)
ORIGIN_EXTERNAL = 1  # frame from external port 148 (Fig. 8)


def is_group(mac: str) -> bool:
    """Broadcast/multicast destination (I/G bit): block 158 takes both branches."""
    return len(mac) >= 2 and bool(int(mac[:2], 16) & 1)


@dataclass(frozen=True, slots=True)
class Transmit:
    """Put ``frame`` on ``port`` (same shape as ``ftsslab.lab.switch.Transmit``)."""

    port: str
    frame: bytes


@dataclass(frozen=True, slots=True)
class Persist:
    """Store this record durably; the driver answers with ``on_durable(record_id)``."""

    record_id: int
    kind: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class Forget:
    """The record is no longer needed (delivered, undeliverable or expired)."""

    record_id: int


Action = Transmit | Persist | Forget
