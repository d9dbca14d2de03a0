# SPDX-License-Identifier: GPL-2.0-or-later
"""Classic BPF filters for the AF_PACKET sockets of the NAS processes: the kernel hands
them only the frames they act on (a SYN to the VIP, a device's TCH segments, a held
flow), never the whole data stream that the kernel forwards or serves.

``tcp_filter`` (and ``udp_filter``) compile one conjunction of IPv4/TCP (UDP) tests on an
untagged Ethernet frame into ``struct sock_filter`` code, attached with ``SO_ATTACH_FILTER``.
"""

from __future__ import annotations

import ctypes
import socket
import struct

SO_ATTACH_FILTER = 26
# opcodes (linux/filter.h)
_LD_H_ABS, _LD_W_ABS, _LD_B_ABS = 0x28, 0x20, 0x30
_LDX_MSH = 0xB1          # X = 4 * (pkt[k] & 0xf)
_LD_H_IND, _LD_B_IND = 0x48, 0x50
_JEQ, _JGT, _JSET = 0x15, 0x25, 0x45
_AND, _RSH, _SUB_X = 0x54, 0x74, 0x1C
_ST, _LDX_MEM = 0x02, 0x61  # scratch memory M[k]
_RET = 0x06
_ACCEPT, _DROP = "accept", "drop"


def tcp_filter(*, dst_ip: str | None = None, src_ip: str | None = None,
               dport: int | None = None, sport: int | None = None,
               port: int | None = None, syn_only: bool = False,
               any_flags: int = 0, first_option: int | None = None,
               with_data: bool = False) -> bytes:
    """Code accepting IPv4 TCP first fragments that match every given test; ``port`` is
    "source or destination port"; ``syn_only`` a SYN without ACK; ``any_flags`` at least
    one of these TCP flag bits (FIN 1, SYN 2, RST 4, ...); ``first_option`` the kind of the
    header's first TCP option; ``with_data`` a segment that carries payload (not a pure
    ACK: a client's requests, without the acknowledgments of a download)."""
    return _compile(socket.IPPROTO_TCP, dst_ip, src_ip, dport, sport, port, syn_only,
                    any_flags, first_option, with_data)


def udp_filter(*, dst_ip: str | None = None, dport: int | None = None) -> bytes:
    """Code accepting IPv4 UDP first fragments to ``dst_ip``:``dport``."""
    return _compile(socket.IPPROTO_UDP, dst_ip, None, dport, None, None, False, 0, None, False)


def _compile(proto: int, dst_ip: str | None, src_ip: str | None, dport: int | None,
             sport: int | None, port: int | None, syn_only: bool, any_flags: int,
             first_option: int | None, with_data: bool) -> bytes:
    prog: list[tuple[int, int, str | int, str | int]] = []  # code, k, jt, jf (labels)

    def must(code: int, k: int, value: int) -> None:
        prog.append((code, k, 0, 0))
        prog.append((_JEQ, value, 0, _DROP))

    must(_LD_H_ABS, 12, 0x0800)
    must(_LD_B_ABS, 23, proto)
    prog.append((_LD_H_ABS, 20, 0, 0))
    prog.append((_JSET, 0x1FFF, _DROP, 0))  # not a first fragment
    if src_ip is not None:
        must(_LD_W_ABS, 26, _ip(src_ip))
    if dst_ip is not None:
        must(_LD_W_ABS, 30, _ip(dst_ip))
    prog.append((_LDX_MSH, 14, 0, 0))
    if sport is not None:
        must(_LD_H_IND, 14, sport)
    if dport is not None:
        must(_LD_H_IND, 16, dport)
    if port is not None:
        prog.append((_LD_H_IND, 14, 0, 0))
        prog.append((_JEQ, port, 2 if syn_only or any_flags else _ACCEPT, 0))
        prog.append((_LD_H_IND, 16, 0, 0))
        prog.append((_JEQ, port, 0, _DROP))
    if syn_only:
        prog.append((_LD_B_IND, 27, 0, 0))
        prog.append((_AND, 0x12, 0, 0))
        prog.append((_JEQ, 0x02, 0, _DROP))
    if any_flags:
        prog.append((_LD_B_IND, 27, 0, 0))
        prog.append((_JSET, any_flags, 0, _DROP))
    if first_option is not None:
        prog.append((_LD_B_IND, 26, 0, 0))    # data offset (high nibble): options follow?
        prog.append((_JGT, 0x5F, 0, _DROP))
        must(_LD_B_IND, 34, first_option)      # 14 + 20: the first option's kind
    if with_data:  # IP total length - IP header - TCP header > 0 (last: it overwrites X)
        prog += [(_LD_B_IND, 26, 0, 0), (_AND, 0xF0, 0, 0), (_RSH, 2, 0, 0), (_ST, 0, 0, 0),
                 (_LD_H_ABS, 16, 0, 0), (_SUB_X, 0, 0, 0), (_LDX_MEM, 0, 0, 0),
                 (_SUB_X, 0, 0, 0), (_JGT, 0, 0, _DROP)]
    prog.append((_RET, 0x40000, 0, 0))  # accept (whole frame)
    prog.append((_RET, 0, 0, 0))        # drop
    accept, drop = len(prog) - 2, len(prog) - 1
    out = []
    for i, (code, k, jt, jf) in enumerate(prog):
        rel = [(accept if j == _ACCEPT else drop) - i - 1 if isinstance(j, str) else j
               for j in (jt, jf)]
        out.append(struct.pack("HBBI", code, rel[0], rel[1], k))
    return b"".join(out)


NOTHING = struct.pack("HBBI", _RET, 0, 0, 0)  # accepts no frame: a socket kept for later


def _ip(text: str) -> int:
    return struct.unpack("!I", socket.inet_aton(text))[0]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def attach(sock: socket.socket, code: bytes) -> None:
    """Attach ``code`` (from ``tcp_filter``) to ``sock``; frames queued before stay."""
    buf = ctypes.create_string_buffer(code)
    prog = _SockFprog(len(code) // 8, ctypes.addressof(buf))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, bytes(prog))
