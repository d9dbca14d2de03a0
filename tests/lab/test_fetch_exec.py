"""The veth side of the ``fetch`` step without root: ``Backend.fetch`` runs its unmodified
client through ``exec``; here ``exec`` runs it on this machine, against a local server."""

from __future__ import annotations

import hashlib
import http.server
import os
import subprocess
import threading

import pytest

from ftsslab.lab.backend import Backend, ExecResult
from ftsslab.lab.sim import SimBackend

BODY = os.urandom(70_000)


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):  # noqa: N802 -- http.server's name
        body = BODY if self.path == "/a.bin" else b""
        self.send_response(200 if body else 404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class LocalExec(SimBackend):
    """``exec`` on this machine, in the environment veth gives a node's commands."""

    def __init__(self, lab_dir: str) -> None:
        super().__init__()
        self.lab_dir, self.background = lab_dir, []

    def exec(self, node, argv, timeout, background=False):
        env = dict(os.environ, FTSSLAB_LAB_DIR=self.lab_dir, FTSSLAB_NODE=node)
        if background:
            self.background.append(subprocess.Popen(argv, env=env))
            return None
        p = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout)
        return ExecResult(tuple(argv), p.returncode, p.stdout, p.stderr)

    fetch = Backend.fetch  # the one veth uses, not the sim's modelled client


@pytest.fixture
def server():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def test_foreground_and_background_fetch_give_the_sim_format(server, tmp_path):
    b = LocalExec(str(tmp_path))
    fg = b.fetch("c1", (f"{server}/a.bin", f"{server}/none"), 10.0)()
    want = (f"200 {hashlib.sha256(BODY).hexdigest()} {len(BODY)}\n"
            f"404 {hashlib.sha256(b'').hexdigest()} 0\n")
    assert (fg.status, fg.stdout) == (0, want)
    bg = b.fetch("c1", (f"{server}/a.bin",), 10.0, background=True)
    got = bg()
    assert (got.status, got.stdout) == (0, want.splitlines(keepends=True)[0])
    assert bg() is got  # waited for once
    for p in b.background:
        p.wait(10)


def test_a_refused_connection_fails_the_fetch(tmp_path):
    b = LocalExec(str(tmp_path))
    got = b.fetch("c1", ("http://127.0.0.1:9/x",), 5.0)()
    assert got.status == 1 and "Connection refused" in got.stderr


def test_a_stalled_server_times_the_fetch_out(tmp_path):
    import socket

    with socket.socket() as silent:  # the kernel completes the handshake; nobody answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        b = LocalExec(str(tmp_path))
        got = b.fetch("c1", (f"http://127.0.0.1:{silent.getsockname()[1]}/x",), 0.5)()
    assert got.status == 124 and "timed out" in got.stderr
