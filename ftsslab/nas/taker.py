# SPDX-License-Identifier: GPL-2.0-or-later
"""The second device's side of the second embodiment on veth (Fig. 6, D2.9): connections that
come to this device by TCH messages, from another device's handoff or from the switch's
failover (check 24).

* Open(full) from a device: restore the checkpoint in repair mode and hold the flow (an
  nftables drop and a packet socket) -- "the second device sends the client nothing" before
  the Done; on Done leave repair, give the held frames to the stack, serve.
* Open(predictive): nothing to restore yet; the Handoff that may follow carries the state.
* Open(full) from the switch with a shadow (``shadow.py``): ask the client where its stream is,
  restore there, and on Done serve the answer from that point (``shadow.replay``).
* Any other end: the restored copy closes silently; if the switch already moved the flow here,
  the entry goes back to the first device (only a flow's owner moves it, D2.10).
"""

from __future__ import annotations

import contextlib
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass

from ftsslab.lab.tcp import decode as decode_tcp

from . import http, repair, shadow
from . import tch_messages as tm
from .giver import SNDBUF, Giver, read_frames

TAKEOVER_PROBES = 5   # probes a take-over sends the client (check 24) ...
TAKEOVER_WAIT = 0.2   # ... this many seconds apart
Key = tuple[str, int]  # (the TCH peer, the session id)


@dataclass
class Taking:
    """One connection on its way here."""

    client: tuple[str, int]
    catch: socket.socket  # the held flow's packet socket ...
    frames: list[bytes]   # ... and what it took
    sock: socket.socket | None = None  # restored, in repair mode
    state: bytes | tuple[bytes, int] = b""  # the HTTP export, or a take-over's (requests, skip)
    probing: bool = False


class MessageTaker:
    """``on_action`` takes a SecondDevice session's Restore and Finished (``TchPort``)."""

    def __init__(self, proc, port, giver: Giver,
                 restored: Callable[[bytes], tuple[socket.socket, bytes, repair.TcpCheckpoint]],
                 serve: Callable[[socket.socket, http.HttpServer, tuple[str, int], list | None,
                                  str], None],
                 core: Callable[[bytes | None], http.HttpServer],
                 give_back: Callable[[tuple[str, int], str], None]) -> None:
        """``restored`` rebuilds a first device's connection (checkpoint + HTTP state) in
        repair mode; ``serve(sock, core, client, actions, from_ip)`` serves a connection that
        arrived; ``core(exported)`` is the HTTP core going on (None: a fresh one);
        ``give_back(client, first_ip)`` points the switch back at the first device."""
        self.proc, self.port, self.giver = proc, port, giver
        self.restored, self.serve, self.core, self.give_back = restored, serve, core, give_back
        self.taking: dict[Key, Taking] = {}

    def on_action(self, s: tm.SecondDevice, a: tm.Action) -> None:
        if isinstance(a, tm.Restore):
            self._restore(s, a)
        elif isinstance(a, tm.Finished):
            self._done(s, a)

    def _hold(self, key: Key, client: tuple[str, int]) -> Taking:
        """Hold the flow here (a hold lingering from when it left here is replaced)."""
        t = self.taking[key] = Taking(client, self.giver.catch(client), [])
        return t

    def _restore(self, s: tm.SecondDevice, a: tm.Restore) -> None:
        now = time.monotonic()
        if shadow.is_shadow(a.app_state):
            self._take_over(s, a)
            return
        if a.kind is tm.Kind.PREDICTIVE:  # nothing to restore before the Handoff: ready
            self.port.apply(s.restored(now))
            return
        try:
            sock, exported, cp = self.restored(a.app_state)
        except (ValueError, struct.error, http.ProtocolError, OSError) as exc:
            self.port.apply(s.restore_failed(str(exc), now))
            return
        t = self._hold((s.peer, s.session_id), (cp.remote_ip, cp.remote_port))
        t.sock, t.state = sock, exported
        self.proc.watch(t.catch, lambda: t.frames.extend(read_frames(t.catch)))
        self.port.apply(s.restored(now))

    def _take_over(self, s: tm.SecondDevice, a: tm.Restore) -> None:
        """The switch's Open for a dead device's connection: ask the client where its stream
        is (``shadow.probe``), then restore it there."""
        sh = shadow.Shadow.unpack(a.app_state)
        if sh is None or not sh.usable:
            self.port.apply(s.restore_failed("not a usable shadow", time.monotonic()))
            return
        t = self._hold((s.peer, s.session_id), (sh.client_ip, sh.client_port))
        t.probing = True
        probe, tries = shadow.probe(sh).encode(), [0]

        def ask() -> None:
            if not t.probing:
                return  # answered, or the session ended
            if tries[0] == TAKEOVER_PROBES:
                self.port.apply(s.restore_failed(f"the client did not answer {tries[0]} "
                                                 "probes", time.monotonic()))
                return
            tries[0] += 1
            with contextlib.suppress(OSError):
                self.giver.raw.sendto(probe, (sh.client_ip, 0))
            self.proc.at(time.monotonic() + TAKEOVER_WAIT, ask)

        def heard() -> None:
            got = read_frames(t.catch)
            t.frames.extend(got)
            replies = [seg for f in got if (seg := decode_tcp(f[14:])) is not None
                       and shadow.answer(sh, seg)]
            if not t.probing or not replies:
                return
            t.probing = False
            reply = max(replies, key=lambda r: (r.ack - sh.device_isn) % (1 << 32))
            cp = shadow.checkpoint(sh, reply)
            try:
                if cp is None:
                    raise ValueError("the client sent bytes the switch did not see")
                t.sock = repair.restore(cp, sndbuf=SNDBUF)
            except (ValueError, OSError) as exc:
                self.port.apply(s.restore_failed(str(exc), time.monotonic()))
                return
            t.state = (bytes(sh.data), shadow.sent_before(sh, reply))
            self.proc.event("take-over", client=f"{t.client[0]}:{t.client[1]}",
                            snd_nxt=cp.snd_nxt, rcv_nxt=cp.rcv_nxt, skip=t.state[1],
                            probes=tries[0])
            self.port.apply(s.restored(time.monotonic()))

        self.proc.watch(t.catch, heard)
        ask()

    def _done(self, s: tm.SecondDevice, a: tm.Finished) -> None:
        """Done: leave repair, give the held frames to the stack, serve. Anything else: this
        copy stays silent and goes."""
        t = self.taking.pop((s.peer, s.session_id), None)
        if t is None:
            self.proc.event("tch-done", role="second", outcome=a.outcome.name, reason=a.reason,
                            held=0)
            return
        t.probing = False
        while more := read_frames(t.catch):
            t.frames += more
        self.giver.put_back(t.catch)
        if t.sock is not None and a.outcome is tm.Outcome.HANDED_OFF:
            repair.leave_repair(t.sock)
            self.giver.release(t.client)
            self.giver.inject(t.frames)
            actions = None
            if isinstance(t.state, tuple):  # a take-over: the answer from its start
                core = self.core(None)
                actions = shadow.replay(core, *t.state, time.time())
            else:
                core = self.core(t.state)
            self.proc.event("morph", client=f"{t.client[0]}:{t.client[1]}",
                            held=len(t.frames))
            self.serve(t.sock, core, t.client, actions, s.peer)
        else:  # the first device kept it; the switch may still send some here
            if t.sock is not None:
                repair.close_silently(t.sock)
                self.give_back(t.client, s.peer)
            self.giver.linger(t.client)
        self.proc.event("tch-done", role="second", outcome=a.outcome.name, reason=a.reason,
                        held=len(t.frames))
