# SPDX-License-Identifier: GPL-2.0-or-later
"""The sim's TCP_REPAIR: a modelled TCB's snapshot as the veth ``TcpCheckpoint``, and back.

On veth a handoff carries ``repair.TcpCheckpoint.pack()`` of the kernel socket; the sim's
devices serve connections on ``ftsslab.lab.tcp.Tcb`` and carry the same record, so the TCH
state bytes have one format on both backends. The model negotiates no TCP options: no window
scaling, SACK or timestamps (``ts_ok`` False, so the clock field is only informative).
"""

from __future__ import annotations

from ftsslab.lab.tcp import WINDOW, TcbSnapshot

from .repair import TcpCheckpoint, TcpWindow

_U32 = 0xFFFFFFFF


def checkpoint(snap: TcbSnapshot, now: float) -> TcpCheckpoint:
    """What ``repair.checkpoint`` would read from a kernel socket in ``snap``'s state."""
    return TcpCheckpoint(
        local_ip=snap.local[0], local_port=snap.local[1], remote_ip=snap.remote[0],
        remote_port=snap.remote[1], snd_nxt=snap.write_seq, snd_una=snap.snd_una,
        rcv_nxt=snap.rcv_nxt, send_queue=snap.send_queue, recv_queue=snap.recv_queue,
        mss=snap.mss, snd_wscale=0, rcv_wscale=0, sack_ok=False, ts_ok=False,
        timestamp=int(now * 1000) & _U32,
        window=TcpWindow(snd_wl1=snap.rcv_nxt, snd_wnd=snap.snd_wnd, max_window=snap.snd_wnd,
                         rcv_wnd=WINDOW, rcv_wup=snap.rcv_nxt),
        unsent=snap.unsent)


def snapshot(cp: TcpCheckpoint) -> TcbSnapshot:
    """The modelled TCB a checkpoint describes (``Tcb.restore`` takes it)."""
    return TcbSnapshot((cp.local_ip, cp.local_port), (cp.remote_ip, cp.remote_port),
                       cp.snd_una, cp.snd_nxt, cp.rcv_nxt, cp.send_queue, cp.unsent,
                       cp.recv_queue, cp.mss, cp.window.snd_wnd)
