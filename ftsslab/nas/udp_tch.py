# SPDX-License-Identifier: GPL-2.0-or-later
"""The second embodiment of TCH on veth (Fig. 6, D2.8): the ``tch_messages`` cores driven on a
device's UDP port 4494, with the first embodiment's freeze (``giver.Giver``) under them.

First device (:class:`MessageGiver`)::

    stop writing; wait (bounded) until the client acked what was written
    hold the flow; checkpoint the socket (TCP_REPAIR); close it silently
    Open(full, state block, app state = checkpoint + HTTP state)   "no new data" from here on
    on Open Response: XAP change_connection
    on the XAP ack: relay the held frames to the second device in arrival order, and every
    later one; Complete; on its Ack: Done -- the session is the second device's

Second device (``NasDevice`` via :class:`TchPort`): on the Open it restores the connection in
repair mode and holds the flow's frames (the switched and the relayed ones); on Done it leaves
repair, gives the held frames to its stack and serves the client. A Fail, a timeout or a
client FIN/RST before the Complete was acked sends the first device back to its own checkpoint;
once the switch moved, the second device gives the entry back when its session ends without
Done (only a flow's owner moves it, D2.10). A second device that died after the switch moved
leaves the entry on it: the switch's failover is what can move it then.

The relay waits for the XAP ack: until the switch moved, the entry still names the first
device for every frame of the flow, a relayed one included, which would come straight back.

The state must fit one datagram (``TCH_MAX_APP_STATE``): after the drain a download's
checkpoint and HTTP state are ~230 bytes; a connection with more unacked or unread bytes is
not handed off now (``handoff-refused``), it goes on here.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

from ftsslab.fast.tch import TCH_MAX_APP_STATE, TCH_UDP_PORT

from . import tch_messages as tm
from .giver import MESSAGES_DRAIN_LIMIT, Gift, Giver, Target
from .process import NasProcess, read_datagrams


@dataclass
class MessageGift(Gift):
    """A connection given away by messages: its session exists from the Open on."""

    session: tm.FirstDevice | None = None
    predicted: dict[str, tm.FirstDevice] | None = None  # the client's predictive sessions
    relay_asked: bool = False  # RelayHeld came ...
    relaying: bool = False  # ... and the switch moved: held frames go on to the second device

    @property
    def pausing(self) -> bool:
        return True  # from the start: the drain and freeze come before the Open


class TchPort:
    """A device's UDP 4494: the socket, one :class:`tm.TchNode`, the timers, and each
    session's actions to its role's handler (``first`` for FirstDevice sessions)."""

    def __init__(self, proc: NasProcess, ip: str,
                 first: Callable[[tm.Session, tm.Action], None],
                 second: Callable[[tm.Session, tm.Action], None],
                 keepalive: float | None = None) -> None:
        """``keepalive``: predictive sessions fail after this long without a word."""
        self.proc, self.first, self.second = proc, first, second
        self.node = tm.TchNode(ip, keepalive=keepalive)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((ip, TCH_UDP_PORT))
        self.sock.setblocking(False)
        proc.watch(self.sock, self._readable)
        proc.timed(self.node.next_deadline, lambda now: self.apply(self.node.on_timer(now)))

    def _readable(self) -> None:
        for data, ip in read_datagrams(self.sock):
            self.apply(self.node.on_datagram(ip, data, time.monotonic()))

    def session(self, session_id: int) -> tm.Session | None:
        return next((s for (_, sid), s in self.node.sessions.items() if sid == session_id),
                    None)

    def apply(self, actions: list[tm.Action]) -> None:
        for a in actions:
            if isinstance(a, tm.Send):
                with contextlib.suppress(OSError):  # lost: resent after the RTO
                    self.sock.sendto(a.data, (a.peer, TCH_UDP_PORT))
                continue
            s = self.session(a.session_id)
            if isinstance(a, tm.StateChanged):
                self.proc.event("tch", role=a.role, old=a.old.name, new=a.new.name, why=a.why,
                                session=f"{a.session_id:#010x}", peer=a.peer)
            if s is not None:
                (self.first if isinstance(s, tm.FirstDevice) else self.second)(s, a)
        self.proc.arm()


class MessageGiver(Giver):
    """``Giver`` with the second embodiment's session: freeze first, then Open."""

    drain_limit = MESSAGES_DRAIN_LIMIT  # a slow client's unacked bytes would not fit an Open

    def __init__(self, *args, port: TchPort, **kw) -> None:
        super().__init__(*args, **kw)
        self.port = port
        self._count = 0

    def give(self, sock: socket.socket, client: tuple[str, int], to: Target, reason: str, *,
             flushed: Callable[[], bool], export: Callable[[], bytes],
             reprogram: Callable[[Gift], None],
             predicted: dict[str, tm.FirstDevice] | None = None) -> Gift:
        """``predicted``: the connection's predictive sessions by device; the one to ``to``
        becomes the handoff (a Handoff message), the others are released."""
        self.refuse_unless_established(sock, client, to)
        gift = MessageGift(sock, client, to, None, reason, time.monotonic(), flushed, export,
                           reprogram, predicted=predicted)
        self._count += 1
        self.gifts[(to.ip, self._count)] = gift
        self.proc.event("handoff-start", client=gift.name, to=to.name, reason=reason,
                        tch="messages")
        self._drain(gift)
        return gift

    def on_segment(self, seg, now: float) -> bool:
        return False  # no TCH segments: every message comes through ``port``

    def next_deadline(self) -> float | None:
        return None  # the port's node has the timers

    def on_timer(self, now: float) -> None:
        pass

    def _may_freeze(self, gift: MessageGift) -> bool:
        return gift.session is None

    def _frozen(self, gift: MessageGift, carried: bytes) -> None:
        """Fig. 6 (5): Open(full, state) with everything the second device restores from."""
        if len(carried) > TCH_MAX_APP_STATE:
            self.proc.event("handoff-refused", client=gift.name, to=gift.to.name,
                            why=f"{len(carried)} bytes of state, an Open carries "
                                f"{TCH_MAX_APP_STATE}")
            self._finish(gift, False, tm.Outcome.KEPT.name, "state too large for an Open")
            return
        now, state = time.monotonic(), tm.state_block(gift.checkpoint)
        ready = {n: s for n, s in (gift.predicted or {}).items()
                 if tm.Event.HANDOFF in s.expecting()}
        for name, s in ready.items():
            if name != gift.to.name:  # check 16: Fail(superseded) to the others
                self.port.apply(s.release(now))
        if gift.to.name in ready:  # D2.8: the predictive session becomes the handoff
            gift.session = ready[gift.to.name]
            self.port.apply(gift.session.handoff(state, now, app_state=carried))
            return
        gift.session, acts = self.port.node.open(gift.to.ip, tm.Kind.FULL, state, now,
                                                 app_state=carried)
        self.port.apply(acts)

    def switch_updated(self, gift: MessageGift) -> None:
        s = gift.session
        if s is None or tm.Event.SWITCH_UPDATED not in s.expecting():
            return
        if gift.relay_asked:
            gift.relaying = True
            self._held(gift)
            self.proc.event("relay", client=gift.name, to=gift.to.name, held=len(gift.held))
        self.port.apply(s.switch_updated(time.monotonic()))

    def switch_failed(self, gift: MessageGift) -> None:
        s = gift.session
        if s is None:  # not opened yet: the connection stays here
            if gift in self.gifts.values():
                self._finish(gift, False, tm.Outcome.KEPT.name, "not handed off")
        elif tm.Event.SWITCH_FAILED in s.expecting():
            self.port.apply(s.switch_failed(time.monotonic()))

    def _held(self, gift: MessageGift) -> None:
        super()._held(gift)
        if gift.relaying and gift in self.gifts.values():
            self.relay(gift.held[gift.relayed:], gift.to.mac)
            gift.relayed = len(gift.held)

    def _client_closed(self, gift: MessageGift) -> None:
        s = gift.session
        if s is not None and not s.finished and (s.state, tm.Event.CLIENT_CLOSED) in s.table:
            self.port.apply(s.client_closed(time.monotonic()))

    def on_action(self, s: tm.FirstDevice, a: tm.Action) -> None:
        """The first device's session asks for something (``TchPort`` routes it here)."""
        gift = next((g for g in self.gifts.values() if getattr(g, "session", None) is s), None)
        if gift is None:  # given back already; the session still finishes its exchange
            return
        if isinstance(a, tm.ReprogramSwitch):
            gift.reprogram(gift)
        elif isinstance(a, tm.RelayHeld):
            gift.relay_asked = True  # from the XAP ack on (``switch_updated``)
        elif isinstance(a, tm.Recover):  # (revert_switch: the second device, the flow's
            self._finish(gift, False, tm.Outcome.KEPT.name, a.why)  # owner, gives it back)
        elif isinstance(a, tm.Finished):
            self._finish(gift, a.outcome is tm.Outcome.HANDED_OFF, a.outcome.name, a.reason)
