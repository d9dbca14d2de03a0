"""Real, unmodified block clients reach a blockproto disk through nbdkit and the plugin:

    nbdinfo / nbdcopy / qemu-img / fio / nbdsh --NBD, Unix socket--> nbdkit python plugin
        --blockproto, Unix socket--> BlockServer (a thread here, a 16 MiB sparse file)

The server uses blockproto's Decoder and encoders (no shortcuts); errors it is told to inject
reach the clients with their errno. Every process and socket is cleaned up, also on failure.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import importlib.util
import json
import os
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from ftsslab.i2o import blockproto
from ftsslab.i2o.blockproto import Decoder, Malformed, Op, Reply, Request
from ftsslab.i2o.nbd import nbd_uri, nbdkit_command, plugin_path

SIZE = 16 * 1024 * 1024
BLOCK = 512
WAIT = 10.0  # seconds: the bound on every wait for a socket or a process
RUN = 60.0  # seconds: the bound on every client run


def need(*tools: str) -> None:
    for tool in tools:
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (Debian: ./run installs it)")


class BlockServer:
    """blockproto over a Unix socket, backed by a sparse file; one thread per connection.

    ``faults`` maps an op to (errno, first byte, end byte): a request of that op touching the
    range is answered with the errno. ``garbage`` makes every reply but INFO's a bad header."""

    def __init__(self, sock_path: Path, disk_path: Path, size: int = SIZE) -> None:
        self.size = size
        self.fd = os.open(disk_path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        os.ftruncate(self.fd, size)
        self.faults: dict[Op, tuple[int, int, int]] = {}
        self.garbage = False
        self.requests: list[tuple[Op, int, int]] = []
        self.malformed: list[Malformed] = []
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(os.fspath(sock_path))
        self.listener.listen(16)
        self.listener.settimeout(0.2)
        self.stopping = threading.Event()
        self.conns: list[socket.socket] = []
        self.threads: list[threading.Thread] = []
        self.acceptor = threading.Thread(target=self._accept, name="blockserver", daemon=True)
        self.acceptor.start()

    def _accept(self) -> None:
        while not self.stopping.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.conns.append(conn)
            t = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self.threads.append(t)
            t.start()

    def _serve(self, conn: socket.socket) -> None:
        dec = Decoder(Request)
        conn.settimeout(0.5)
        with conn:
            while not self.stopping.is_set():
                try:
                    data = conn.recv(1 << 20)
                except TimeoutError:
                    continue
                except OSError:
                    return
                if not data:
                    return
                for req in dec.feed(data):
                    if isinstance(req, Malformed):
                        self.malformed.append(req)
                        return
                    try:
                        conn.sendall(self.answer(req))
                    except OSError:
                        return

    def answer(self, req: Request) -> bytes:
        self.requests.append((req.op, req.offset, req.length))
        if self.garbage and req.op != Op.INFO:
            return b"\xde\xad\xbe\xef" * 6
        fault = self.faults.get(req.op)
        if fault and req.offset < fault[2] and fault[1] < req.offset + max(req.length, 1):
            return Reply.error(req, fault[0]).encode()
        if req.op == Op.INFO:
            return Reply.info(req.handle, self.size, BLOCK).encode()
        if req.op == Op.FLUSH:
            os.fsync(self.fd)
            return Reply.to(req).encode()
        if req.offset + req.length > self.size:
            code = errno.ENOSPC if req.op == Op.WRITE else errno.EINVAL
            return Reply.error(req, code).encode()
        if req.op == Op.READ:
            return Reply.to(req, os.pread(self.fd, req.length, req.offset)).encode()
        os.pwrite(self.fd, req.data, req.offset)
        return Reply.to(req).encode()

    def close(self) -> None:
        self.stopping.set()
        self.listener.close()
        for conn in self.conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for t in [self.acceptor, *self.threads]:
            t.join(WAIT)
        os.close(self.fd)


def wait_for_socket(path: Path, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"nbdkit exited {proc.returncode}: {log.read_text()}")
        if path.exists():
            return
        time.sleep(0.02)
    raise TimeoutError(f"nbdkit did not create {path} in {WAIT} s")


@contextlib.contextmanager
def exported(d: Path, **options):
    """A BlockServer and an nbdkit in front of it (``options`` go to nbdkit_command):
    yields (server, NBD URI, backing file); both are stopped on the way out."""
    need("nbdkit")
    server = BlockServer(d / "node.sock", d / "disk.img")
    proc = log = None
    try:
        argv = nbdkit_command(d / "node.sock", unix=d / "nbd.sock", timeout=20, **options)
        log = open(d / "nbdkit.log", "w")  # closed in finally
        proc = subprocess.Popen(argv, stderr=log)
        wait_for_socket(d / "nbd.sock", proc, d / "nbdkit.log")
        yield server, nbd_uri(unix=d / "nbd.sock"), d / "disk.img"
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(WAIT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(WAIT)
        if log is not None:
            log.close()
        server.close()
    assert not server.malformed, server.malformed


@pytest.fixture
def rig(tmp_path_factory):
    # A directory of its own, short: AF_UNIX paths are limited to 107 bytes.
    with exported(tmp_path_factory.mktemp("nbd")) as rig:
        yield rig


def run(*argv: str, check: bool = True) -> subprocess.CompletedProcess:
    res = subprocess.run(argv, capture_output=True, text=True, timeout=RUN)
    if check:
        assert res.returncode == 0, f"{argv[0]} exited {res.returncode}: {res.stderr}"
    return res


def sha256(path: Path, length: int | None = None) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read(length) if length is not None else f.read()).hexdigest()


def load_plugin():
    spec = importlib.util.spec_from_file_location("ftsslab_nbdkit_plugin", plugin_path())
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_plugin_formats_equal_blockproto():
    plugin = load_plugin()
    assert plugin.nbdkit is None  # outside nbdkit: no nbdkit module
    for name in ("REQUEST_MAGIC", "REPLY_MAGIC", "MAX_LENGTH"):
        assert getattr(plugin, name) == getattr(blockproto, name), name
    for name in ("REQUEST_HEADER", "REPLY_HEADER", "INFO_PAYLOAD"):
        assert getattr(plugin, name).format == getattr(blockproto, name).format, name
    ops = (plugin.OP_INFO, plugin.OP_READ, plugin.OP_WRITE, plugin.OP_FLUSH)
    assert ops == (Op.INFO, Op.READ, Op.WRITE, Op.FLUSH)
    source = plugin_path().read_text()
    assert "ftsslab" not in "".join(
        line for line in source.splitlines() if line.startswith(("import", "from"))
    )


def test_nbdkit_command():
    argv = nbdkit_command("/run/node.sock", unix="/tmp/nbd.sock")
    assert argv == [
        "nbdkit", "--foreground", "--exit-with-parent", "-U", "/tmp/nbd.sock",
        "python", str(plugin_path()), "socket=/run/node.sock",
    ]  # fmt: skip
    argv = nbdkit_command("n.sock", port=10810, ipaddr="127.0.0.1", readonly=True, timeout=5)
    assert argv[3:8] == ["-p", "10810", "-i", "127.0.0.1", "-r"]
    assert argv[-2:] == ["readonly=true", "timeout=5"]
    assert plugin_path().is_file()
    with pytest.raises(ValueError):
        nbdkit_command("n.sock")
    with pytest.raises(ValueError):
        nbdkit_command("n.sock", unix="a", port=1)


def test_nbdinfo_reports_the_size(rig):
    need("nbdinfo")
    server, uri, _ = rig
    info = json.loads(run("nbdinfo", "--json", uri).stdout)
    (export,) = info["exports"]
    assert export["export-size"] == SIZE
    assert export["is_read_only"] is False and export["can_flush"] is True
    assert export["can_multi_conn"] is False
    assert export["block_size_minimum"] == BLOCK
    assert export["block_size_maximum"] == blockproto.MAX_LENGTH


def test_nbdcopy_in_and_out(rig, tmp_path):
    need("nbdcopy")
    server, uri, disk = rig
    image = tmp_path / "in.img"
    image.write_bytes(os.urandom(8 * 1024 * 1024))
    run("nbdcopy", "--flush", str(image), uri)
    assert sha256(disk, 8 * 1024 * 1024) == sha256(image)  # the backing file holds the bytes
    assert disk.stat().st_blocks * 512 <= 9 * 1024 * 1024  # and is sparse past them
    assert any(op == Op.FLUSH for op, _, _ in server.requests)
    out = tmp_path / "out.img"
    run("nbdcopy", uri, str(out))
    assert out.stat().st_size == SIZE
    assert sha256(out, 8 * 1024 * 1024) == sha256(image)
    assert sha256(out) == sha256(disk)


def test_qemu_img_info_and_convert(rig, tmp_path):
    need("qemu-img")
    _, uri, disk = rig
    with open(disk, "r+b") as f:
        f.seek(3 * 1024 * 1024)
        f.write(os.urandom(1024 * 1024))
    info = json.loads(run("qemu-img", "info", "--output=json", uri).stdout)
    assert info["virtual-size"] == SIZE and info["format"] == "raw"
    out = tmp_path / "out.raw"
    run("qemu-img", "convert", "-f", "raw", "-O", "raw", uri, str(out))
    assert sha256(out) == sha256(disk)


def test_fio_random_read_write_verifies(rig, tmp_path):
    """fio's random 4 KiB reads and writes, each written block read back and its crc32c
    checked; a second run only verifies; after one byte of a written block is changed in the
    backing file, verification fails: the check is real."""
    need("fio")
    if "nbd" not in run("fio", "--enghelp").stdout:
        pytest.skip("this fio has no nbd ioengine")
    server, uri, disk = rig

    def fio(*extra: str) -> tuple[dict, subprocess.CompletedProcess]:
        argv = [
            "fio", "--name=nbd", "--ioengine=nbd", f"--uri={uri}", "--rw=randrw", "--bs=4k",
            "--size=4M", "--iodepth=4", "--verify=crc32c", "--verify_state_save=0",
            "--runtime=3", "--time_based=0", "--output-format=json", *extra,
        ]  # fmt: skip
        res = subprocess.run(argv, capture_output=True, text=True, timeout=RUN, cwd=tmp_path)
        (job,) = json.loads(res.stdout[res.stdout.index("{") :])["jobs"]
        return job, res

    job, res = fio()
    assert res.returncode == 0 and job["error"] == 0, res.stderr
    assert job["read"]["io_bytes"] > 0 and job["write"]["io_bytes"] > 0
    assert "verify failed" not in res.stderr
    ops = [op for op, _, _ in server.requests]
    assert ops.count(Op.WRITE) == job["write"]["total_ios"]  # 4 KiB requests end to end
    job, res = fio("--verify_only")
    assert res.returncode == 0 and job["error"] == 0, res.stderr
    with open(disk, "r+b") as f:
        head = f.read(4 << 20)
        written = next(i for i in range(0, len(head), 4096) if any(head[i : i + 4096]))
        f.seek(written + 100)
        f.write(bytes(b ^ 0xFF for b in head[written + 100 : written + 101]))
    job, res = fio("--verify_only")
    assert res.returncode != 0 and job["error"] == errno.EILSEQ
    assert f"verify failed at file nbd.0.0 offset {written}," in res.stderr


def qemu_io(uri: str, *commands: str) -> str:
    """qemu-io's output for ``commands`` (``-x`` ones are options) on the export; it exits 0
    also when a command fails."""
    argv = ["qemu-io", "-f", "raw"]
    for c in commands:
        argv += [c] if c.startswith("-") else ["-c", c]
    res = run(*argv, uri, check=False)
    return res.stdout + res.stderr


def test_node_errors_reach_the_client_with_their_errno(rig, tmp_path):
    need("qemu-io", "nbdcopy")
    server, uri, _ = rig
    server.faults[Op.READ] = (errno.EIO, 1 << 20, (1 << 20) + 4096)
    server.faults[Op.WRITE] = (errno.ENOSPC, 2 << 20, (2 << 20) + 4096)
    eio, enospc = os.strerror(errno.EIO), os.strerror(errno.ENOSPC)
    assert f"read failed: {eio}" in qemu_io(uri, "read 1M 4k")
    assert "failed" not in qemu_io(uri, "read 0 4k", "read 1032k 4k")
    assert f"write failed: {enospc}" in qemu_io(uri, "write 2M 4k")
    assert "failed" not in qemu_io(uri, "write 3M 4k")
    res = run("nbdcopy", uri, str(tmp_path / "out.img"), check=False)
    assert res.returncode != 0 and eio in res.stderr


def test_a_broken_node_gives_eio_not_a_hang(rig):
    need("qemu-io")
    server, uri, _ = rig
    server.garbage = True  # INFO is still answered: the connection opens, then breaks
    out = qemu_io(uri, "read 0 4k", "read 4k 4k")
    assert out.count(f"read failed: {os.strerror(errno.EIO)}") == 2, out


def test_readonly_export_refuses_writes(tmp_path_factory):
    need("nbdinfo", "nbdcopy", "qemu-io")
    d = tmp_path_factory.mktemp("nbd")
    image = d / "in.img"
    image.write_bytes(os.urandom(4096))
    with exported(d, readonly=True) as (server, uri, disk):
        info = json.loads(run("nbdinfo", "--json", uri).stdout)
        assert info["exports"][0]["is_read_only"] is True
        res = run("nbdcopy", str(image), uri, check=False)
        assert res.returncode != 0 and "read-only" in res.stderr.lower(), res.stderr
        assert "Permission denied" in qemu_io(uri, "write 0 4k")  # a read-write open fails
        out = qemu_io(uri, "-r", "read 0 4k")
        assert "read 4096/4096 bytes" in out, out
    assert Op.WRITE not in {op for op, _, _ in server.requests}
