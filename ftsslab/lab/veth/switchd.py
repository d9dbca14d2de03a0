"""The switch control process: ``python -m ftsslab.lab.veth.switchd --ports p1,p2 ...``.

It runs INSIDE the switch's namespace and owns the nftables table
``netdev ftsslab`` there:

    table netdev ftsslab {
        chain ftable { <one rule per forwarding entry, in insertion order> }
        chain in_p1 { type filter hook ingress device "p1" priority 0; jump ftable }
        ...one ingress chain per port...
    }

Each entry is a rule ``ip daddr VIP [ip saddr C] [ip protocol P] [th sport N]
[th dport N] [ether daddr set MAC] fwd to "pN" comment "fl1|..."``: the first
matching rule steals the frame and sends it out of its port (even the in-port);
a frame that matches none goes on to the Linux bridge ``br0`` (L2 learning).
Port matches apply to TCP and UDP only (``ip protocol { 6, 17 }`` is added when
ports are given without a protocol).

The kernel's table is the only state. The comment of each rule encodes its
entry, so a (re)started switchd rebuilds its view by listing the ``ftable`` chain:
the table survives a crash or SIGKILL of the control process, and the data
plane keeps forwarding meanwhile (it is all in the kernel).

Requests are JSON lines on a unix stream socket, one per connection:
``{"op": "add"|"remove", "entry": {...}}``, ``{"op": "list"}``, ``{"op": "ping"}``;
answers ``{"ok": true, "mono": <CLOCK_MONOTONIC>, "entries": [...]}`` or
``{"ok": false, "error": "..."}``. Every change is appended to the log file as
one JSON line with a timestamp.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import sys
import time
from pathlib import Path

from ..model import ForwardingEntry
from ..switch import format_entry
from . import names

# Kept import-light (no argparse, dataclasses or ftsslab.lab.model): a lab starts one switchd
# per switch, and interpreter start-up is most of their cost. Entries are plain dicts with
# ForwardingEntry's field names; the backend converts.
TABLE = "ftsslab"
CHAIN = "ftable"
COMMENT_TAG = "fl1"
FIELDS = ("vip", "out_port", "client_ip", "proto", "client_port", "vport", "dst_mac")
MAC_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
IPV4_RE = re.compile(r"^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$")
PORT_RE = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")


class SwitchdError(Exception):
    pass


# ---- entries <-> rules ------------------------------------------------------------------------

def entry_summary(e: dict) -> str:
    return format_entry(ForwardingEntry(**e))


def _recv_line(s: socket.socket) -> bytes:
    """Read one newline-ended message (or what came before the peer closed)."""
    data = b""
    while not data.endswith(b"\n"):
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def validate_entry(d: dict, ports: list[str] | None = None) -> dict:
    """Check every value that goes into nft syntax (nothing else ever reaches nft);
    returns the entry normalised (all FIELDS present, MAC lower-case)."""
    if not isinstance(d, dict):
        raise SwitchdError("entry must be a mapping")
    unknown = set(d) - set(FIELDS)
    if unknown:
        raise SwitchdError(f"unknown entry keys {sorted(unknown)}")
    e = {k: d.get(k) for k in FIELDS}

    def ip(k: str) -> None:
        v = e[k]
        if not isinstance(v, str) or not IPV4_RE.match(v):
            raise SwitchdError(f"{k}: not an IPv4 address: {v!r}")
        e[k] = ".".join(str(int(x)) for x in v.split("."))

    def num(k: str, hi: int) -> None:
        v = e[k]
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= hi:
            raise SwitchdError(f"{k}: not an integer 0..{hi}: {v!r}")

    ip("vip")
    if e["client_ip"] is not None:
        ip("client_ip")
    for k, hi in (("proto", 255), ("client_port", 65535), ("vport", 65535)):
        if e[k] is not None:
            num(k, hi)
    if not isinstance(e["out_port"], str) or not PORT_RE.match(e["out_port"]):
        raise SwitchdError(f"out_port: bad interface name {e['out_port']!r}")
    if ports is not None and e["out_port"] not in ports:
        raise SwitchdError(f"no port {e['out_port']!r} (ports: {', '.join(ports)})")
    if e["dst_mac"] is not None:
        if not isinstance(e["dst_mac"], str) or not MAC_RE.match(e["dst_mac"].lower()):
            raise SwitchdError(f"dst_mac: not a MAC address: {e['dst_mac']!r}")
        e["dst_mac"] = e["dst_mac"].lower()
    return e


def _opt(v) -> str:
    return "" if v is None else str(v)


def entry_comment(e: dict) -> str:
    return "|".join([COMMENT_TAG] + [_opt(e[k]) for k in FIELDS])


def entry_from_comment(comment: str) -> dict | None:
    parts = comment.split("|")
    if len(parts) != 1 + len(FIELDS) or parts[0] != COMMENT_TAG:
        return None
    e = {k: (v or None) for k, v in zip(FIELDS, parts[1:], strict=True)}
    for k in ("proto", "client_port", "vport"):
        if e[k] is not None:
            e[k] = int(e[k])
    return e


def entry_rule(e: dict) -> str:
    """The nft rule (statement part) for a validated entry."""
    m = [f"ip daddr {e['vip']}"]
    if e["client_ip"] is not None:
        m.append(f"ip saddr {e['client_ip']}")
    if e["proto"] is not None:
        m.append(f"ip protocol {e['proto']}")
    elif e["client_port"] is not None or e["vport"] is not None:
        m.append("ip protocol { 6, 17 }")
    if e["client_port"] is not None:
        m.append(f"th sport {e['client_port']}")
    if e["vport"] is not None:
        m.append(f"th dport {e['vport']}")
    if e["dst_mac"] is not None:
        m.append(f"ether daddr set {e['dst_mac']}")
    m.append(f'fwd to "{e["out_port"]}"')
    m.append(f'comment "{entry_comment(e)}"')
    return " ".join(m)


def rules_from_json(text: str) -> list[tuple[int, dict]]:
    """(handle, entry) for every ftsslab rule of the ``ftable`` chain in ``nft -j -a`` output."""
    out = []
    for item in json.loads(text).get("nftables", []):
        rule = item.get("rule")
        if not rule or rule.get("table") != TABLE or rule.get("chain") != CHAIN:
            continue
        entry = entry_from_comment(rule.get("comment", ""))
        if entry is not None:
            out.append((int(rule["handle"]), entry))
    return out


# ---- nft -----------------------------------------------------------------------------------

class Nft:
    """libnftables through ctypes (one netlink round trip per command); ``nft`` as fallback."""

    JSON, HANDLE, ECHO = 1 << 4, 1 << 3, 1 << 5

    def __init__(self) -> None:
        import ctypes

        self._lib = None
        try:
            lib = ctypes.CDLL("libnftables.so.1")
        except OSError:
            return
        lib.nft_ctx_new.restype = ctypes.c_void_p
        lib.nft_ctx_new.argtypes = [ctypes.c_uint32]
        for name in ("nft_ctx_buffer_output", "nft_ctx_buffer_error"):
            getattr(lib, name).argtypes = [ctypes.c_void_p]
        for name in ("nft_ctx_get_output_buffer", "nft_ctx_get_error_buffer"):
            getattr(lib, name).argtypes = [ctypes.c_void_p]
            getattr(lib, name).restype = ctypes.c_char_p
        lib.nft_ctx_output_set_flags.argtypes = [ctypes.c_void_p, ctypes.c_uint]
        lib.nft_run_cmd_from_buffer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        self._ctx = lib.nft_ctx_new(0)
        lib.nft_ctx_buffer_output(self._ctx)
        lib.nft_ctx_buffer_error(self._ctx)
        self._lib = lib

    def __call__(self, cmd: str, json_out: bool = False, echo: bool = False) -> str:
        """Run ``cmd``; ``json_out``: its output as JSON with handles; ``echo``: also what
        it added (with the new rules' handles: no listing needed to delete them later)."""
        if self._lib is None:
            import subprocess

            argv = ["nft"] + (["-j", "-a"] if json_out or echo else []) + \
                (["-e"] if echo else []) + ["-f", "-"]
            cp = subprocess.run(argv, input=cmd, capture_output=True, text=True, timeout=30)
            if cp.returncode != 0:
                raise SwitchdError(f"nft: {cp.stderr.strip()}")
            return cp.stdout
        lib = self._lib
        flags = (self.JSON | self.HANDLE if json_out or echo else 0) | (self.ECHO if echo else 0)
        lib.nft_ctx_output_set_flags(self._ctx, flags)
        rc = lib.nft_run_cmd_from_buffer(self._ctx, cmd.encode())
        out = (lib.nft_ctx_get_output_buffer(self._ctx) or b"").decode()
        err = (lib.nft_ctx_get_error_buffer(self._ctx) or b"").decode()
        if rc != 0:
            raise SwitchdError(f"nft: {err.strip() or 'failed'}")
        return out


def read_kernel_entries(nft: Nft | None = None) -> list[tuple[int, dict]] | None:
    """The entries in the kernel (this thread's namespace), None if the table is absent."""
    nft = nft or Nft()
    try:
        text = nft(f"list chain netdev {TABLE} {CHAIN}", json_out=True)
    except SwitchdError:
        return None
    return rules_from_json(text)


# ---- the daemon ------------------------------------------------------------------------------

class Switchd:
    def __init__(self, node: str, ports: list[str], sock_path: str, log_path: str | None):
        self.node, self.ports, self.sock_path, self.log_path = node, ports, sock_path, log_path
        self.nft = Nft()
        self.rules: list[tuple[int, dict]] = []

    def log(self, **record) -> None:
        record = {"time": time.time(), "mono": time.monotonic(), "node": self.node, **record}
        line = json.dumps(record, sort_keys=True)
        if self.log_path:
            with open(self.log_path, "a") as f:
                f.write(line + "\n")

    def setup(self) -> None:
        existing = read_kernel_entries(self.nft)
        if existing is None:
            cmds = [f"add table netdev {TABLE}", f"add chain netdev {TABLE} {CHAIN}"]
            for p in self.ports:
                cmds.append(f'add chain netdev {TABLE} in_{p} {{ type filter hook ingress '
                            f'device "{p}" priority 0; policy accept; }}')
                cmds.append(f"add rule netdev {TABLE} in_{p} jump {CHAIN}")
            self.nft("\n".join(cmds))
            self.rules = []
            self.log(op="start", ports=self.ports, entries=[])
        else:
            self.rules = existing
            self.log(op="rebuild", ports=self.ports,
                     entries=[e for _, e in existing])

    def refresh(self) -> None:
        rules = read_kernel_entries(self.nft)
        if rules is None:
            raise SwitchdError(f"table netdev {TABLE} vanished")
        self.rules = rules

    def handle(self, req: dict) -> dict:
        op = req.get("op")
        if op == "ping":
            return {"ok": True, "mono": time.monotonic(), "pid": os.getpid()}
        if op == "list":
            self.refresh()
            return {"ok": True, "mono": time.monotonic(),
                    "entries": [e for _, e in self.rules]}
        if op not in ("add", "remove"):
            raise SwitchdError(f"unknown op {op!r}")
        entry = validate_entry(req.get("entry") or {}, self.ports)
        self.refresh()
        if op == "add":
            self.nft(f"add rule netdev {TABLE} {CHAIN} {entry_rule(entry)}")
        else:
            handle = next((h for h, e in self.rules if e == entry), None)
            if handle is None:
                raise SwitchdError(f"no such entry: {entry_summary(entry)}")
            self.nft(f"delete rule netdev {TABLE} {CHAIN} handle {handle}")
        mono = time.monotonic()
        self.refresh()
        self.log(op=op, entry=entry, mono_change=mono)
        return {"ok": True, "mono": mono, "entry": entry,
                "entries": [e for _, e in self.rules]}

    def serve(self, ready: Path | None = None) -> None:
        try:
            os.unlink(self.sock_path)
        except FileNotFoundError:
            pass
        srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        srv.bind(self.sock_path)
        os.chmod(self.sock_path, 0o600)
        srv.listen(16)
        if ready is not None:
            ready.touch()  # the backend waits for this: requests are taken from now on
        while True:
            conn, _ = srv.accept()
            with conn:
                conn.settimeout(5)
                try:
                    data = _recv_line(conn)
                    try:
                        reply = self.handle(json.loads(data or b"{}"))
                    except (SwitchdError, ValueError) as exc:
                        reply = {"ok": False, "error": str(exc)}
                    conn.sendall(json.dumps(reply).encode() + b"\n")
                except OSError:
                    continue


def request(sock_path: str, req: dict, timeout: float = 10.0) -> dict:
    """Send one request to a switchd and return its answer (OSError if it is not there)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(sock_path)
        s.sendall(json.dumps(req).encode() + b"\n")
        data = _recv_line(s)
    if not data:
        raise ConnectionError("switchd closed the connection")
    return json.loads(data)


USAGE = "usage: switchd --lab ID --node NAME --ports p1,p2 --socket PATH [--log PATH]"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) % 2 or not all(a.startswith("--") for a in args[::2]):
        print(USAGE, file=sys.stderr)
        return 2
    opts = {k[2:]: v for k, v in zip(args[::2], args[1::2], strict=True)}
    if set(opts) - {"lab", "node", "ports", "socket", "log"} or \
            not {"lab", "node", "ports", "socket"} <= set(opts):
        print(USAGE, file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    ports = [p for p in opts["ports"].split(",") if p]
    for p in ports:
        if not PORT_RE.match(p):
            print(f"switchd: bad port name {p!r}", file=sys.stderr)
            return 2
    d = Switchd(opts["node"], ports, opts["socket"], opts.get("log"))
    try:
        d.setup()
        d.serve(names.ready_path(opts["lab"], opts["node"]))
    except SwitchdError as exc:
        print(f"switchd: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
