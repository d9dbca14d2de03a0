# SPDX-License-Identifier: GPL-2.0-or-later
"""ClusterStatus: the load and health heartbeat of seed 002 (decision D2.12).

The seed leaves the format open: "Messages useful in load balancing may describe the
status, availability or workload of particular networked devices", and "Silence or chatter
from a networked device may be observed as a symptom of device failure" (L386).  D2.12 asks
for "a small documented ClusterStatus heartbeat, every 100 ms, from device to switch and from
switch to switch": device id, sessions, bytes/s, queue depth, capacity weight, health (OK /
DEGRADED / PREDICTED_FAIL).  ftsslab adds what a receiver needs to judge silence and
chatter: the sender's period, a boot number and sequence number (loss, restarts) and a
cumulative error count.

One 44-byte datagram on UDP port 4497, 32-bit aligned (the 64-bit rate on an 8-byte
boundary); ``length`` lets a later version append fields, which this version keeps as
``ext``.  Heartbeats are never acknowledged: the next one says the same, newer.
"""

from scapy.fields import (
    ByteEnumField,
    ByteField,
    IntField,
    IPField,
    LongField,
    ShortField,
    StrLenField,
    XIntField,
    XShortField,
)
from scapy.layers.inet import UDP
from scapy.packet import Packet, Raw, bind_bottom_up, bind_layers

from ftsslab.fast.cluster import (  # noqa: F401  (the wire numbers, importable from here too)
    CLUSTER_DEGRADED,
    CLUSTER_DEVICE,
    CLUSTER_HEALTH,
    CLUSTER_INTERVAL_MS,
    CLUSTER_MAGIC,
    CLUSTER_OK,
    CLUSTER_PREDICTED_FAIL,
    CLUSTER_SENDER_KINDS,
    CLUSTER_STATUS,
    CLUSTER_STATUS_LEN,
    CLUSTER_SWITCH,
    CLUSTER_TYPES,
    CLUSTER_UDP_PORT,
    CLUSTER_VERSION,
)


class ClusterStatus(Packet):
    """One heartbeat from a device or a switch: its load, capacity and health."""

    name = "ClusterStatus (load and health heartbeat)"
    fields_desc = [
        XShortField("magic", CLUSTER_MAGIC),
        ByteField("version", CLUSTER_VERSION),
        ByteEnumField("type", CLUSTER_STATUS, CLUSTER_TYPES),
        ShortField("length", None),
        ByteEnumField("sender_kind", CLUSTER_DEVICE, CLUSTER_SENDER_KINDS),
        ByteEnumField("health", CLUSTER_OK, CLUSTER_HEALTH),
        IPField("sender_id", "0.0.0.0"),
        XIntField("boot", 0),
        IntField("seq", 0),
        ShortField("interval_ms", CLUSTER_INTERVAL_MS),
        ShortField("weight", 1),
        LongField("bytes_per_s", 0),
        IntField("sessions", 0),
        IntField("queue_depth", 0),
        IntField("errors", 0),
        StrLenField("ext", b"",
                    length_from=lambda pkt: max((pkt.length or 0) - CLUSTER_STATUS_LEN, 0)),
    ]

    @classmethod
    def dispatch_hook(cls, _pkt=None, *args, **kargs):
        """Bytes too short for the fixed part, or with another magic, dissect as Raw."""
        if _pkt and (len(_pkt) < CLUSTER_STATUS_LEN
                     or int.from_bytes(_pkt[:2], "big") != CLUSTER_MAGIC):
            return Raw
        return cls

    def post_build(self, p, pay):
        if self.length is None:
            p = p[:4] + len(p).to_bytes(2, "big") + p[6:]
        return p + pay

    def extract_padding(self, s):
        """Nothing rides on a heartbeat: bytes after ``length`` are padding."""
        return b"", s

    def mysummary(self):
        return self.sprintf("ClusterStatus %sender_kind% %sender_id% seq=%seq% %health% "
                            "sessions=%sessions% weight=%weight%")


bind_bottom_up(UDP, ClusterStatus, sport=CLUSTER_UDP_PORT)
bind_bottom_up(UDP, ClusterStatus, dport=CLUSTER_UDP_PORT)
bind_layers(UDP, ClusterStatus, sport=CLUSTER_UDP_PORT, dport=CLUSTER_UDP_PORT)
