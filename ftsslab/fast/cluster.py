# SPDX-License-Identifier: GPL-2.0-or-later
"""Fast ClusterStatus parser and builder (no Scapy): seed 002's load and health heartbeat.

``parse_cluster_status`` returns a :class:`Status` whose fields are the Scapy field names of
``ftsslab.layers.cluster.ClusterStatus``, or None for anything short or not ours; it never
raises.  ``build_cluster_status`` gives the exact bytes Scapy builds.
"""

from __future__ import annotations

import socket
import struct
from typing import NamedTuple

# The wire numbers of ClusterStatus, defined here only (ftsslab.layers.cluster and cluster.lua
# use them).
CLUSTER_UDP_PORT = 4497
"""IANA-unassigned (4489-4499 is a gap in the registered range), next to the NAS internal
ports TCH 4494, staging 4495 and proxy 4496; no tshark dissector claims it."""
CLUSTER_MAGIC = 0x4353
"""ASCII "CS": a datagram on the port that does not start with it is not ours."""
CLUSTER_VERSION = 1
"""A later version may only append fields (``length`` grows), so every receiver reads the
fixed part of any version."""

CLUSTER_STATUS = 1
"""The one message type: a heartbeat, never acknowledged (the next one repeats it).
0 stays reserved so an all-zero datagram is invalid."""
CLUSTER_TYPES = {CLUSTER_STATUS: "status"}

CLUSTER_DEVICE = 1
CLUSTER_SWITCH = 2
"""D2.12: "from device to switch and from switch to switch"."""
CLUSTER_SENDER_KINDS = {CLUSTER_DEVICE: "device", CLUSTER_SWITCH: "switch"}

CLUSTER_OK = 0
CLUSTER_DEGRADED = 1
CLUSTER_PREDICTED_FAIL = 2
"""D2.12 health: OK, DEGRADED (serving, take no new load), PREDICTED_FAIL (claim 34: hand
every session off before the failure)."""
CLUSTER_HEALTH = {CLUSTER_OK: "OK", CLUSTER_DEGRADED: "DEGRADED",
                  CLUSTER_PREDICTED_FAIL: "PREDICTED_FAIL"}

CLUSTER_STATUS_LEN = 44
"""The fixed part of version 1; ``length`` counts it plus any appended bytes."""
CLUSTER_INTERVAL_MS = 100
"""D2.12's heartbeat period: 3 missed ones are 300 ms of silence."""

_FIXED = struct.Struct("!HBBHBB4sIIHHQIII")


class Status(NamedTuple):
    """One heartbeat; defaults are the Scapy layer's (``length`` None: computed on build)."""

    magic: int = CLUSTER_MAGIC
    version: int = CLUSTER_VERSION
    type: int = CLUSTER_STATUS
    length: int | None = None
    sender_kind: int = CLUSTER_DEVICE
    health: int = CLUSTER_OK
    sender_id: str = "0.0.0.0"
    boot: int = 0
    seq: int = 0
    interval_ms: int = CLUSTER_INTERVAL_MS
    weight: int = 1
    bytes_per_s: int = 0
    sessions: int = 0
    queue_depth: int = 0
    errors: int = 0
    ext: bytes = b""


def parse_cluster_status(buf: bytes | memoryview) -> Status | None:
    """The heartbeat at the start of ``buf`` (a UDP payload); bytes after ``length`` are
    ignored.  None if shorter than the fixed part, another magic, or a ``length`` that is
    below the fixed part or past the end."""
    if len(buf) < CLUSTER_STATUS_LEN:
        return None
    fields = list(_FIXED.unpack_from(buf))
    length = fields[3]
    if fields[0] != CLUSTER_MAGIC or not CLUSTER_STATUS_LEN <= length <= len(buf):
        return None
    fields[6] = socket.inet_ntoa(fields[6])
    return Status(*fields, bytes(buf[CLUSTER_STATUS_LEN:length]))


def build_cluster_status(status: Status) -> bytes:
    """The bytes of ``status``; ``length`` None counts the fixed part and ``ext``."""
    length = CLUSTER_STATUS_LEN + len(status.ext) if status.length is None else status.length
    head = _FIXED.pack(*status[:3], length, *status[4:6], socket.inet_aton(status.sender_id),
                       *status[7:15])
    return head + status.ext
