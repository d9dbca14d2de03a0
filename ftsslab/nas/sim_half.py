# SPDX-License-Identifier: GPL-2.0-or-later
"""The device model's half-handoffs (seed 002 Figs. 7 and 8, D2.6): one client connection split by
direction between two devices on ftsslab's TCP (``half.py``), agreed by the TCH messages of
``tch_messages``. Mixed into ``sim.NasDeviceSim``, so it runs in the sim and -- the model being
what a ``tcp: user`` device runs (``userdevice.py``) -- on veth.

Fig. 7, ``half-client``: the first device goes on sending its response (``SendHalf``); the switch
entry moves to the second device (XAP, as in a full handoff), which takes the client's segments
(``ReceiveHalf``), acknowledges their data, holds its answers, and relays the client's ACKs by
Updates. Once the first device's response is written and acknowledged it calls ``finish()``:
Complete, Ack, Done -- the second device has the whole connection and answers.

Fig. 8, ``half-cluster``: the first device stops writing, waits until the client acknowledged
what it wrote, and sends Open with its HTTP state; the second device sends the rest of the
response (``SendHalf``). The switch never changes: the client's segments still reach the first
device (``ReceiveHalf``), which "cannot send acknowledgments to the client" (L312) and relays the
client's ACK, window and sequence number to the second by Updates, so the second's data carries
the right acknowledgment. The client's FIN ends it as B2.33 says ("the handoff is to be
aborted"): the first device, which held the receiving side all along, closes the connection;
the second forgets its half.
"""

from __future__ import annotations

import struct

from ftsslab.lab.tcp import TcpState

from . import http
from . import tch_messages as tm
from .half import SPLIT_SIZE, ReceiveHalf, SendHalf, SplitState, restore_tcb, state_of


class HalfHandoffs:
    """What the half-handoffs add to the device model (its attributes are the model's)."""

    def _give_half(self, cl, to: str, htype: str, now: float) -> None:
        """The ``handoff`` step with a half type (LookupError: the connection is not in the
        middle of a response with no request waiting)."""
        from .sim import _Gift

        tcb, core = cl.tcb, cl.core
        if tcb.state is not TcpState.ESTABLISHED or core.state is not http.Conn.SENDING \
                or core.has_input or cl.split is not None:
            raise LookupError(f"{cl.client[0]}:{cl.client[1]} is not in the middle of a "
                              f"response (TCP {tcb.state.name}, HTTP {core.state.name})")
        gift = cl.gift = _Gift(cl, to, None, "asked", now, half=htype)
        self.gifts[(self.cluster.devices[to].ip, self._next_port())] = gift
        self.log.event("handoff-start", client=gift.name, to=to, reason="asked",
                       tch="messages", type=htype)
        if htype == "half-client":  # Fig. 7 (5): we go on sending
            cl.send = SendHalf(tcb)
            self._open_half(gift, tm.Kind.HALF_CLIENT, SplitState.of(tcb).pack(), now)
        else:  # Fig. 8: no new data from here on; Open once the client acked what we wrote
            self._drained_half(gift, now)

    def _drained_half(self, gift, now: float) -> None:
        cl = gift.conn
        if gift.session is not None or cl.out or cl.tcb.unacked:
            return
        gift.exported = cl.core.export()  # the response from where the client is: the second's
        gift.split_seq = cl.tcb.snd_max
        cl.core = http.HttpServer(self.storage, name=self.node, root=self.root,
                                  redirect=False)
        cl.chunk, cl.recv, cl.mute = None, ReceiveHalf(cl.tcb), True
        self._open_half(gift, tm.Kind.HALF_CLUSTER,
                        SplitState.of(cl.tcb).pack() + gift.exported, now)

    def _open_half(self, gift, kind: tm.Kind, app_state: bytes, now: float) -> None:
        cl = gift.conn
        gift.session, acts = self.tch_node.open(self.cluster.devices[gift.to].ip, kind,
                                                state_of(cl.tcb), now, app_state=app_state)
        cl.split = gift.session
        self._messages(acts, now)

    def _half_progress(self, gift, now: float) -> None:
        """Fig. 7's end: our response is written and acknowledged -- the second device gets
        the whole connection (Complete, Ack, Done)."""
        cl, s = gift.conn, gift.session
        if s is not None and cl.send is not None and tm.Event.FINISH in s.expecting() \
                and cl.chunk is None and not cl.out and cl.send.drained \
                and cl.core.state is not http.Conn.SENDING:
            self._messages(s.finish(now), now)

    def _tcp_out(self, cl, segs: list) -> None:
        """A connection's segments: a sending half acknowledges what the receiving half
        received; Fig. 8's first device sends none ("cannot send acknowledgments")."""
        if cl.mute:
            return
        if cl.send is not None:
            segs = cl.send.outgoing(segs)
        self._send_tcp(segs)

    def _split_segment(self, cl, seg, frame: bytes, now: float) -> bool:
        """A client segment of a split connection (False: not split here)."""
        gift = cl.gift
        if cl.recv is not None:  # Fig. 7's second device, Fig. 8's first
            self._tcp_out(cl, cl.recv.on_segment(seg, now))
            self._after_tcp(cl, now)
            self._relay_acks(cl, now)
            s = cl.split
            if cl.mute and cl.tcb.peer_fin and s is not None and not s.finished \
                    and (s.state, tm.Event.CLIENT_CLOSED) in s.table:
                self._messages(s.client_closed(now), now)  # B2.33: the FIN ends it
            return True
        if gift is not None and cl.send is not None and gift.session is not None:
            gift.held.append(frame)  # Fig. 7 (8): the client's data is the second's
            if gift.relaying:
                self._relay(gift)
            self._tcp_out(cl, cl.send.on_client_ack(seg, now))
            self._after_tcp(cl, now)
            self._half_progress(gift, now)
            return True
        return False

    def _relay_acks(self, cl, now: float) -> None:
        """Figs. 7 and 8 (11): the client's ACK, window and sequence number to the other
        device, by Update -- once the split is agreed (Fig. 7: the first device's Complete
        says the switch moved; Fig. 8: HALF_ACTIVE)."""
        s = cl.split
        if s is None or cl.recv is None:
            return
        if isinstance(s, tm.FirstDevice):
            ready = s.state is tm.State.HALF_ACTIVE
        else:
            ready = s.completed and s.state is tm.State.ACTIVE
        if ready and (upd := cl.recv.relay()) is not None:
            self._messages(s.refresh(upd, now), now)

    def _unsplit(self, cl, htype: str) -> None:
        """The split is over here: what it carried, logged."""
        role = "send" if cl.send is not None else "receive"
        half = cl.send or cl.recv
        self.log.event("half-end", client=f"{cl.client[0]}:{cl.client[1]}", type=htype,
                       role=role, updates=half.relayed if half else 0,
                       acked=cl.send.acked if cl.send is not None else 0)
        cl.send = cl.recv = cl.split = None
        cl.mute = cl.hold = False

    # ---- the first device's session ----------------------------------------------------------

    def _half_first(self, gift, a: tm.Action, now: float) -> None:
        cl = gift.conn
        if isinstance(a, tm.PeerUpdate) and cl.send is not None:
            self._tcp_out(cl, cl.send.on_update(a.state, now))
            self._after_tcp(cl, now)
            self._half_progress(gift, now)
        elif isinstance(a, tm.StateChanged) and a.event is tm.Event.ACK_HALF:
            self._half_progress(gift, now)
            self._relay_acks(cl, now)

    def _half_given(self, gift, given: bool, now: float) -> None:
        """The first device's end of the split: given (Fig. 7: the second has it all, our
        TCB goes silently) or kept (we serve the client alone again)."""
        cl = gift.conn
        self._unsplit(cl, gift.half)
        if given:
            self._relay(gift)
            cl.tcb.drop()
            self._drop(cl, now)
            return
        if gift.split_seq is not None and cl.tcb.snd_max == gift.split_seq:
            # Fig. 8 failed before the client had a byte from the second: we answer again
            cl.core = http.HttpServer.resume(self.storage, gift.exported, name=self.node,
                                             root=self.root, redirect=False)
            self._apply(cl, cl.core.proceed(now), now)
        self._after_tcp(cl, now)

    # ---- the second device's session ---------------------------------------------------------

    def _restore_half(self, s: tm.SecondDevice, a: tm.Restore, now: float) -> None:
        """Fig. 7 (6): a TCB that receives (the client direction is ours once the switch
        moved); Fig. 8 (6): a TCB that sends the rest of the response. Open Response."""
        from .sim import _Conn

        split = SplitState.unpack(a.app_state)
        client = (a.state.get("client_ip"), a.state.get("client_port"))
        core = http.HttpServer(self.storage, name=self.node, root=self.root, redirect=False)
        why = "not a half-handoff's state" if split is None else \
            "this device's TCP is the kernel's" if not self.user_tcp else \
            "a live client" if client in self.conns else ""
        if not why and a.kind is tm.Kind.HALF_CLUSTER:
            try:
                core = http.HttpServer.resume(self.storage, a.app_state[SPLIT_SIZE:],
                                              name=self.node, root=self.root, redirect=False)
            except (ValueError, struct.error, http.ProtocolError) as exc:
                why = f"its HTTP state: {exc}"
        if why:
            self._messages(s.restore_failed(why, now), now)
            return
        tcb = restore_tcb(a.state, split, now, **self.tcb_options)
        cl = self.conns[client] = _Conn(tcb, core, client, split=s, hold=True)
        if a.kind is tm.Kind.HALF_CLIENT:
            cl.recv = ReceiveHalf(tcb, client_ack=a.state["snd_una"])
        else:
            cl.send = SendHalf(tcb)
            self._apply(cl, core.proceed(now), now)  # the rest of the body, held till Complete
        self.log.event("half-restore", client=f"{client[0]}:{client[1]}",
                       type=a.kind.name.lower().replace("_", "-"), rcv_nxt=a.state["ack"],
                       snd_nxt=a.state["seq"])
        self._messages(s.restored(now), now)

    def _half_second(self, cl, s: tm.SecondDevice, a: tm.Action, now: float) -> None:
        htype = "half-client" if s.kind is tm.Kind.HALF_CLIENT else "half-cluster"
        if isinstance(a, tm.StateChanged) and a.event is tm.Event.COMPLETE:
            if cl.send is not None:  # Fig. 8: the first device sends no more -- we do
                cl.hold = False
                self._after_tcp(cl, now)
            self._relay_acks(cl, now)  # Fig. 7 (10): the switch acked, ACKs are relayed
        elif isinstance(a, tm.PeerUpdate) and cl.send is not None:
            self._tcp_out(cl, cl.send.on_update(a.state, now))
            self._after_tcp(cl, now)
        elif isinstance(a, tm.Finished) and a.outcome is tm.Outcome.HANDED_OFF:
            self._unsplit(cl, htype)  # the whole connection: answer what came
            self.counters["handoffs_in"] += 1
            self.log.event("morph", client=f"{cl.client[0]}:{cl.client[1]}", type=htype,
                           snd_nxt=cl.tcb.snd_nxt)
            self._after_tcp(cl, now)
        elif isinstance(a, tm.Finished):  # the first device serves it: our half goes
            self._unsplit(cl, htype)
            cl.tcb.drop()
            self._drop(cl, now)
            if htype == "half-client":  # the entry is ours: back to the first device
                self._give_back(cl.client, s.peer, now)
        if isinstance(a, tm.Finished):
            self.log.event("tch-done", role="second", outcome=a.outcome.name, reason=a.reason,
                           held=0)
