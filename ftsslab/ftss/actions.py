"""What the sans-IO FTSS cores return, and the numbers they share with ``layers/ftss.py``.

The cores (``core.FtssCore``, ``unit.ServerUnit``) never touch sockets, files or
clocks: they take frames, events and ``now`` and return these actions. A driver
(``sim_nodes`` in the lab, or a real daemon) carries them out: ``Transmit`` puts a
frame on a port, ``Persist``/``Forget`` go to the durable store, and the driver
calls ``core.on_durable(record_id)`` once an fsync covered a ``Persist`` -- only
then may an acknowledgment that guarantees anything leave (seed 000 block 154
before blocks 160/174).

The wire numbers come from ``ftsslab/fast/ftss.py`` (Scapy-free, checked against
``layers/ftss.py`` by tests/layers/test_ftss.py), so the hot path never imports Scapy.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

# ---- wire numbers: ftsslab/fast/ftss.py (Scapy-free) holds them; re-exported for the cores
from ftsslab.fast.ftss import (  # noqa: E402, F401
    FC_FCTL_ANSWER,
    FTSS_ACK_DELIVERED,
    FTSS_ACK_REJECTED,
    FTSS_ACK_STORED_BEST_EFFORT,
    FTSS_ACK_STORED_GUARANTEED,
    FTSS_ACK_UNDELIVERABLE,
    FTSS_FILE_BAD_REQUEST,
    FTSS_FILE_DENIED,
    FTSS_FILE_EXISTS,
    FTSS_FILE_NO_SPACE,
    FTSS_FILE_NOT_FOUND,
    FTSS_FILE_OK,
    FTSS_FLAG_ALTPATH,
    FTSS_NODE_DOWN,
    FTSS_NODE_MAINTENANCE,
    FTSS_NODE_UP,
    FTSS_OP_FILE_CLASS,
    FTSS_OP_FILE_MASK,
    FTSS_PKT_BROADCAST,
    FTSS_PKT_EXTERNAL,
    FTSS_PKT_RETRANSMIT,
    FTSS_PKT_ROLLBACK,
    FTSS_REASON_BAD_LENGTH,
    FTSS_REASON_BAD_VERSION,
    FTSS_REASON_DEST_DOWN,
    FTSS_REASON_DEST_UNKNOWN,
    FTSS_REASON_MALFORMED,
    FTSS_REASON_NONE,
    FTSS_REASON_OVERSIZE,
    FTSS_REASON_STORE_FULL,
    FTSS_REASON_UNKNOWN_OPCODE,
    FTSS_VERSION,
    FTSS_WRITE_TRUNCATE,
)

# ---- ftsslab choices -------------------------------------------------------------------------

TIME_EPS = 1e-9

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
    """Store this record durably; the driver answers with ``on_durable(record_id)``, or
    with ``on_persist_failed``. ``awaited=False``: nothing waits for it (a unit's seen
    keys), so a driver may tell only of a failure."""

    record_id: int
    kind: int
    payload: bytes
    awaited: bool = True


@dataclass(frozen=True, slots=True)
class Forget:
    """The record is no longer needed (delivered, undeliverable or expired)."""

    record_id: int


Action = Transmit | Persist | Forget
