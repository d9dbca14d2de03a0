# SPDX-License-Identifier: GPL-2.0-or-later
"""Where seed 001 meets seed 003: the SAN endnode under an I2O host or remote -- its QPs and
its memory -- derived from the scenario alone, so both ends agree without an exchange.

Per (host, remote) pair, in this order on both ends (QPNs follow the order, as for every
sanic node): the management channel ``cm``, then per IOP of the host a *message* QP (I2O
frames as SEND ONLY, D1.5) and a *data* QP (the RDMA under the remote's RKeys, check 13). Data
has its own QP because a refused RDMA puts an RC QP in ERROR at both ends (IBA 9.7.5.2,
``san/qp.py``): the message QP stays up to carry the I2O error reply, and the data QP is reset
and connected again. A service connection is a (message, data) QP pair; its ``conn_id`` is the
host message QP's number.

Memory, one segment (ESID 1) of the node's one process: a receive ring per message-carrying
QP, a scratch page that SENDs are gathered from, then the data buffers -- on the host the
bounce slots IOPs DMA into (``HostSanMemory``), on a remote its I/O slots.
"""

from __future__ import annotations

from dataclasses import dataclass

from ftsslab.san.memory import PAGE as PAGE_SIZE
from ftsslab.san.memory import SEGMENT_SHIFT

ESID = 1
BASE = ESID << SEGMENT_SHIFT
MAX_TRANSFER = 128 << 10  # bytes one request moves; a client cuts larger I/O into these
FRAME_MAX = 1024  # an I2O frame or CM message: the size of a receive slot
RING = 64  # receive slots per message-carrying QP
BOUNCE_SLOTS = 64  # host: requests whose data can be in flight at once
DEPTH = 32  # remote: requests one service connection keeps outstanding at most
MTU = 1024  # the QPs' path MTU (a RoCE packet of 1024 bytes fits a 1500-byte link)
PROCESS = "driver"  # the host's (a kernel driver) ...
CLIENT = "client"  # ... and a remote's process


@dataclass(frozen=True)
class Ring:
    qp: str
    base: int


@dataclass(frozen=True)
class Layout:
    """One end's QPs (name -> (peer node, peer's QP name, carries messages)) and memory."""

    qps: dict[str, tuple[str, str, bool]]
    rings: dict[str, int]  # message-carrying QP -> its ring's EA
    scratch: int  # the SEND gather page
    data: int  # the first data slot
    slots: int
    pages: int  # of the segment

    def slot(self, i: int) -> int:
        return self.data + i * MAX_TRANSFER

    def sanic_options(self, process: str, *, kernel: bool) -> dict:
        """The node as the `sanic` kind's options say it (``san.node_config.config``)."""
        qps = {}
        for name, (peer, remote, messages) in self.qps.items():
            q: dict = {"process": process, "peer": f"{peer}.{remote}",
                       "max_outstanding": 32 if messages else 16}
            if messages:
                q |= {"recv_buffer": self.rings[name], "recv_size": FRAME_MAX, "receives": RING}
            qps[name] = q
        return {"frames": self.pages + 16, "mtu": MTU,
                "processes": {process: {"kernel": kernel, "segments": {ESID: self.pages}}},
                "qps": qps}


def _layout(qps: dict[str, tuple[str, str, bool]], slots: int) -> Layout:
    at, rings = BASE, {}
    for name, (_, _, messages) in qps.items():
        if messages:
            rings[name] = at
            at += RING * FRAME_MAX
    scratch = at
    data = scratch + PAGE_SIZE
    end = data + slots * MAX_TRANSFER
    return Layout(qps, rings, scratch, data, slots, (end - BASE) // PAGE_SIZE)


def host_layout(remotes: list[str], iops: list[str]) -> Layout:
    qps: dict[str, tuple[str, str, bool]] = {}
    for r in sorted(remotes):
        qps[f"{r}_cm"] = (r, "cm", True)
        for p in iops:
            qps[f"{r}_{p}_msg"] = (r, f"{p}_msg", True)
            qps[f"{r}_{p}_data"] = (r, f"{p}_data", False)
    return _layout(qps, BOUNCE_SLOTS)


def remote_layout(host: str, name: str, iops: list[str]) -> Layout:
    qps: dict[str, tuple[str, str, bool]] = {"cm": (host, f"{name}_cm", True)}
    for p in iops:
        qps[f"{p}_msg"] = (host, f"{name}_{p}_msg", True)
        qps[f"{p}_data"] = (host, f"{name}_{p}_data", False)
    return _layout(qps, DEPTH)
