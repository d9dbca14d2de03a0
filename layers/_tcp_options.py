# SPDX-License-Identifier: GPL-2.0-or-later
"""ftsslab's TCP option kinds (XAP 253, TCH 254/255) in Scapy's ``TCP.options``.

Scapy 2.8's ``TCPOptionsField`` packs and unpacks option values through the struct
formats of its ``TCPOptions`` tables only (TCP-AO is hard-coded), so an option holding a
list of packets (XAP) or a dotted address (TCH endpoint) needs a hook.  Registering the
kinds in ``TCPOptions`` would not give one, and it would change what ``RandTCPOptions``
and ``fuzz(TCP())`` draw for everybody (Scapy's test "TCP random options - MD5 (#GH3777)"
notices).  So the tables stay untouched and ``TCPOptionsField.m2i``/``i2m`` are wrapped
once, by wrappers that only touch ftsslab's options: dissection names an option of a
registered kind whose decoder accepts its bytes (others stay ``(kind, bytes)``, as Scapy
gives them); building turns an option named ftsslab's way, or a registered kind with a
non-bytes value, into ``(kind, bytes)``; everything else goes to Scapy as it came.

Scapy emits a corrupt header for more than 40 bytes of options (the 4-bit data offset
wraps); :func:`check_tcp_options` refuses that in ftsslab's own paths (craft, the TCH
helpers) and :func:`strict` makes every build refuse it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from scapy.layers.inet import TCP, TCPOptionsField
from scapy.packet import Packet

from ftsslab.fast.tch import TCP_MAX_OPTIONS_LEN

_encoders: dict[str | int, tuple[int, Callable[[Any], bytes]]] = {}
_decoders: dict[int, Callable[[bytes], tuple[str, Any] | None]] = {}
_strict = False


def register(kind: int, name: str, encode: Callable[[Any], bytes],
             decode: Callable[[bytes], tuple[str, Any] | None]) -> None:
    """Let ``(name, value)`` and ``(kind, value)`` build as ``kind`` with ``encode(value)``
    (bytes values are written as they are), and dissected option bytes of ``kind`` become
    ``decode(bytes)`` unless it returns None."""
    _encoders[name] = _encoders[kind] = (kind, encode)
    _decoders[kind] = decode


def _to_wire(opt: Any) -> Any:
    if not (isinstance(opt, tuple) and len(opt) == 2 and isinstance(opt[0], str | int)
            and opt[0] in _encoders):
        return opt
    kind, encode = _encoders[opt[0]]
    value = opt[1]
    return kind, value if isinstance(value, bytes | str) else encode(value)


def _from_wire(opt: tuple) -> tuple:
    decode = _decoders.get(opt[0]) if isinstance(opt[1], bytes) else None
    return (decode(opt[1]) or opt) if decode else opt


def check_length(raw: bytes) -> None:
    """ValueError when an option area does not fit the TCP header."""
    if len(raw) > TCP_MAX_OPTIONS_LEN:
        raise ValueError(f"TCP options are {len(raw)} bytes; the TCP header allows at most "
                         f"{TCP_MAX_OPTIONS_LEN}")


def check_options(options: list) -> None:
    """ValueError when a ``TCP.options`` list builds to more than 40 bytes."""
    check_length(TCPOptionsField.i2m(None, None, options))


def check_tcp_options(pkt: Packet) -> None:
    """ValueError when a TCP header of ``pkt`` has more than 40 bytes of options."""
    for layer in pkt.iterpayloads():
        if isinstance(layer, TCP):
            check_options(layer.options)


def strict(enabled: bool) -> None:
    """Make every TCP build refuse more than 40 bytes of options (or stop it)."""
    global _strict
    _strict = enabled


def _wrap(m2i: Callable, i2m: Callable) -> tuple[Callable, Callable]:
    @functools.wraps(m2i)
    def ftsslab_m2i(self, pkt, x):
        return [_from_wire(o) for o in m2i(self, pkt, x)]

    @functools.wraps(i2m)
    def ftsslab_i2m(self, pkt, x):
        if isinstance(x, list | tuple):
            x = [_to_wire(o) for o in x]
        raw = i2m(self, pkt, x)
        if _strict:
            check_length(raw)
        return raw

    return ftsslab_m2i, ftsslab_i2m


TCPOptionsField.m2i, TCPOptionsField.i2m = _wrap(TCPOptionsField.m2i, TCPOptionsField.i2m)
