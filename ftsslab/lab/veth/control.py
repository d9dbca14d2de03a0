"""The control socket of a node process: one JSON request, one JSON reply (AF_UNIX datagram).

Every node process of a driver kind binds ``<lab dir>/<node>.ctl`` and answers at least
``{"op": "stats"}`` with ``{"ok": true, "internal_errors": N, ...}``; kinds add their
own requests (the FTSS: ``replay``).
"""

from __future__ import annotations

import json
import os
import socket
import tempfile


def control_path(state_dir: str, node: str) -> str:
    return os.path.join(state_dir, f"{node}.ctl")


def control_request(state_dir: str, node: str, request: dict, timeout: float = 5.0) -> dict:
    """Send one JSON request to a running node process and return its JSON reply (OSError
    when nothing answers)."""
    with tempfile.TemporaryDirectory(prefix="ftsslab-") as tmp, \
            socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.bind(os.path.join(tmp, "reply"))
        s.settimeout(timeout)
        s.sendto(json.dumps(request).encode(), control_path(state_dir, node))
        return json.loads(s.recv(1 << 16))


CONTROL_MAX = 60_000  # bytes of one control reply (an AF_UNIX datagram)


def send_reply(sock: socket.socket, peer, reply: dict) -> None:
    """Answer a control request (a reply too large for one datagram becomes an error)."""
    if not peer:
        return
    data = json.dumps(reply).encode()
    if len(data) > CONTROL_MAX:
        data = json.dumps({"ok": False, "error": f"reply of {len(data)} bytes is too large "
                           "for the control socket"}).encode()
    try:
        sock.sendto(data, peer)
    except OSError:  # the asker gave up
        pass
