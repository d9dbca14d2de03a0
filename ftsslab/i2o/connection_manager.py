# SPDX-License-Identifier: GPL-2.0-or-later
"""The Connection Manager 312: connection services and the coordination that creates the
direct call path between the Local and Remote Transports (L184-L186, L188, L194, L198-L202;
claims 1, 19, 22, 23).

``start`` is its part of claim 19: query the LT for the number of IOPs, build one
``IopDescriptor`` per IOP -- the exported function table {send handler, IOP context} (L194) --
and open the SAN management channel through the RT. ``advertisement`` is what it advertises
of the IOPs available for external use (L198); ``connect`` sets up a service connection by
passing the RT the address of the IOP's descriptor (L200) -- the same object, not a copy.
On the SAN its messages are I2O Private frames on the management channel
(``san_port``, D1.5). An IOP that dies is withdrawn, its outstanding requests failed and new
connections to it refused; when it comes back it is advertised again (check 12).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, NamedTuple

from .local_transport import DeviceInfo, IopContext, LocalTransport
from .trace import Trace

if TYPE_CHECKING:
    from .remote_transport import RemoteTransport


@dataclass(frozen=True, eq=False)
class IopDescriptor:
    """The IOP descriptor structure (Fig. 4): "an exported table of function call pointers
    and the context required by the Local Transport" (L188, L194; D1.2)."""

    send_handler: Callable[[IopContext, bytes], bool]
    iop_context: IopContext


class IopAdvert(NamedTuple):
    iop_id: int
    devices: tuple[DeviceInfo, ...]


class Advertise(NamedTuple):
    """An action: tell the remotes on the management channel what is available now."""

    adverts: tuple[IopAdvert, ...]


class ConnectStatus(Enum):
    CONNECTED = "connected"
    NO_SUCH_IOP = "no such IOP"
    IOP_UNAVAILABLE = "IOP not available"  # failed, or not for external use
    CONNECTION_IN_USE = "connection id already in use"
    REFUSED = "this remote may not attach to it"  # the IOP's allow-list (D1.9)
    NOT_STARTED = "management channel not open"


class ConnectReply(NamedTuple):
    status: ConnectStatus
    conn_id: int


class ConnectionManager:
    def __init__(self, lt: LocalTransport, rt: RemoteTransport, trace: Trace, *,
                 private: frozenset[int] = frozenset(),
                 allowed: Mapping[int, frozenset[str]] | None = None) -> None:
        self._lt, self._rt, self.trace = lt, rt, trace
        self._private = private  # IOP ids not for external use (L198)
        self._allowed = dict(allowed or {})  # IOP id -> the remotes that may attach (D1.9)
        self.descriptors: dict[int, IopDescriptor] = {}
        self._ids: dict[IopContext, int] = {}
        self._down: set[int] = set()

    def start(self) -> None:
        count = self._lt.iop_count()
        self.trace.emit("CM", "query", count=count)
        for ctx in self._lt.contexts():
            iop_id = self._lt.info(ctx).iop_id
            self.descriptors[iop_id] = IopDescriptor(self._lt.send_handler, ctx)
            self._ids[ctx] = iop_id
            self.trace.emit("CM", "descriptor", iop=iop_id)
        self._rt.open_management_channel()
        self.trace.emit("CM", "waiting")

    def _may(self, remote: str | None, iop_id: int) -> bool:
        allowed = self._allowed.get(iop_id)
        return allowed is None or remote in allowed

    def advertisement(self, remote: str | None = None) -> tuple[IopAdvert, ...]:
        """What is available for external use (to ``remote``: what it may attach to)."""
        return tuple(IopAdvert(iop_id, self._lt.info(d.iop_context).devices)
                     for iop_id, d in self.descriptors.items()
                     if iop_id not in self._private and iop_id not in self._down
                     and (remote is None or self._may(remote, iop_id)))

    def connect(self, remote: str, iop_id: int, conn_id: int) -> ConnectReply:
        """A remote's service-connection request (L200); a refusal creates nothing (check 3)."""
        descriptor = self.descriptors.get(iop_id)
        if not self._rt.management_open:
            status = ConnectStatus.NOT_STARTED
        elif descriptor is None:
            status = ConnectStatus.NO_SUCH_IOP
        elif iop_id in self._private or iop_id in self._down:
            status = ConnectStatus.IOP_UNAVAILABLE
        elif not self._may(remote, iop_id):
            status = ConnectStatus.REFUSED
        elif self._rt.connection(conn_id) is not None:
            status = ConnectStatus.CONNECTION_IN_USE
        else:
            self._rt.attach(conn_id, remote, descriptor)
            status = ConnectStatus.CONNECTED
        self.trace.emit("CM", "connect", remote=remote, iop=iop_id, status=status.name)
        return ConnectReply(status, conn_id)

    def disconnect(self, conn_id: int) -> list:
        """The remote's service connection ends: the callback objects it abandoned."""
        return self._rt.detach(conn_id)

    def iop_failed(self, ctx: IopContext) -> list:
        iop_id = self._ids[ctx]
        self._down.add(iop_id)
        self.trace.emit("CM", "withdraw", iop=iop_id)
        return [*self._rt.fail_outstanding(self.descriptors[iop_id]),
                Advertise(self.advertisement())]

    def iop_ready(self, ctx: IopContext) -> list:
        iop_id = self._ids[ctx]
        self._down.discard(iop_id)
        self.trace.emit("CM", "advertise", iop=iop_id)
        return [Advertise(self.advertisement())]
