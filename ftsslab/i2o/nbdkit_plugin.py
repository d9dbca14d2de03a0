# SPDX-License-Identifier: GPL-2.0-or-later
"""nbdkit Python plugin: an NBD export whose disk is the remote one a lab node holds.

    nbdkit --foreground --exit-with-parent -U nbd.sock python nbdkit_plugin.py \\
        socket=/path/to/node.sock [readonly=true] [timeout=60]

Each NBD connection opens its own Unix stream socket to the node (``socket=``) and speaks
blockproto on it (see ftsslab/i2o/blockproto.py for the byte layout): INFO once at open for
the size and block size, then READ, WRITE and FLUSH, as many outstanding as nbdkit's threads
make (each with its handle; the node answers in any order). A node's error
status (an errno value) becomes the NBD client's error through ``nbdkit.set_error``; a node
that breaks the protocol, hangs past ``timeout`` seconds or goes away gives EIO, and the
connection is not used again.

This file runs in nbdkit's embedded interpreter (the system python3), not in ftsslab's venv:
it uses the standard library only and does not import ftsslab. Its copy of the header
formats is checked against blockproto's by tests/i2o/test_nbd.py.

Thread model: PARALLEL. nbdkit's threads share a connection's node socket: a lock orders
their requests on it, a reader thread hands each reply to the request whose handle it
carries (a client's iodepth reaches the node's client library, which keeps 32 requests on
the SAN); connections have their own sockets, and the module's settings are read-only once
configured.
can_multi_conn is false: whether a flush on one connection covers writes made on another is
the node's business, and it does not promise it.
"""

import errno
import socket
import struct
import threading

try:
    import nbdkit
except ModuleNotFoundError:  # imported outside nbdkit (tests check the formats)
    nbdkit = None

API_VERSION = 2

# blockproto's wire format (ftsslab/i2o/blockproto.py), big-endian.
REQUEST_MAGIC = 0x42505251  # b"BPRQ"
REPLY_MAGIC = 0x42505250  # b"BPRP"
REQUEST_HEADER = struct.Struct(">IHHQQI")  # magic, op, flags, handle, offset, length
REPLY_HEADER = struct.Struct(">IHHQII")  # magic, op, flags, handle, status, length
INFO_PAYLOAD = struct.Struct(">QI")  # size, block_size
MAX_LENGTH = 32 * 1024 * 1024
OP_INFO, OP_READ, OP_WRITE, OP_FLUSH = 1, 2, 3, 4

settings = {"socket": None, "readonly": False, "timeout": 60.0}


def _bool(value):
    v = value.strip().lower()
    if v in ("1", "true", "yes", "on"):
        return True
    if v in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"not a boolean: {value!r}")


def config(key, value):
    if key == "socket":
        settings["socket"] = value
    elif key == "readonly":
        settings["readonly"] = _bool(value)
    elif key == "timeout":
        settings["timeout"] = float(value)
        if not settings["timeout"] > 0:
            raise ValueError("timeout must be positive")
    else:
        raise ValueError(f"unknown parameter {key!r} (socket=PATH readonly=BOOL timeout=SECONDS)")


def config_complete():
    if not settings["socket"]:
        raise ValueError("socket=PATH (the node's Unix socket) is required")


def thread_model():
    return nbdkit.THREAD_MODEL_PARALLEL


class NodeError(OSError):
    """The node answered with an error status, or broke the connection (EIO)."""


class _Wait:
    """A request in flight: what its reply must be, and the reply once it came."""

    def __init__(self, op, length, into):
        self.op, self.length, self.into = op, length, into
        self.done = threading.Event()
        self.payload, self.error = None, None


class Node:
    """One blockproto connection to the node, shared by nbdkit's threads: each request has
    its handle, a reader thread hands every reply to the request it names."""

    def __init__(self, path, timeout):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect(path)
        except OSError:
            self.sock.close()
            raise
        self.sock.settimeout(None)  # the reader blocks; each request waits ``timeout``
        self.timeout = timeout
        self.lock = threading.RLock()  # the handles, the waits, the sending side
        self.waits = {}
        self.next_handle = 1
        self.broken = None
        self.reader = threading.Thread(target=self._read_replies, daemon=True)
        self.reader.start()
        (self.size, self.block_size) = INFO_PAYLOAD.unpack(self.call(OP_INFO))

    def close(self):
        self._break("closed")
        self.reader.join(self.timeout)
        self.sock.close()

    def _break(self, reason):
        """The connection is unusable: every request waiting gets EIO."""
        with self.lock:
            if self.broken:
                return
            self.broken = reason
            waits, self.waits = list(self.waits.values()), {}
        for w in waits:
            w.error = NodeError(errno.EIO, f"node connection: {reason}")
            w.done.set()
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def call(self, op, offset=0, length=0, data=b"", into=None):
        """Send one request and return its reply's payload (or read it ``into`` a buffer)."""
        w = _Wait(op, length, into)
        with self.lock:
            if self.broken:
                raise NodeError(errno.EIO, f"node connection: {self.broken}")
            handle = self.next_handle
            self.next_handle += 1
            self.waits[handle] = w
            try:
                self.sock.sendall(REQUEST_HEADER.pack(REQUEST_MAGIC, op, 0, handle, offset,
                                                      length))
                if data:
                    self.sock.sendall(data)
            except OSError as e:
                self._break(f"{type(e).__name__}: {e}")
        if not w.done.wait(self.timeout):
            self._break(f"no reply to handle {handle} in {self.timeout:g} s")
        if w.error is not None:
            raise w.error
        return w.payload

    def _recv_into(self, view):
        while view:
            n = self.sock.recv_into(view)
            if n == 0:
                raise EOFError("closed by the node")
            view = view[n:]

    def _read_replies(self):
        try:
            while True:
                header = bytearray(REPLY_HEADER.size)
                self._recv_into(memoryview(header))
                magic, rop, flags, handle, status, rlength = REPLY_HEADER.unpack(header)
                with self.lock:
                    w = self.waits.pop(handle, None)
                if magic != REPLY_MAGIC or flags or w is None or rop != w.op:
                    raise ValueError(f"bad reply header {bytes(header).hex()}")
                if status:
                    if rlength:
                        raise ValueError(f"payload of {rlength} bytes with status {status}")
                    w.error = NodeError(status, f"node: {errno.errorcode.get(status, status)}")
                else:
                    expected = INFO_PAYLOAD.size if w.op == OP_INFO else \
                        w.length if w.op == OP_READ else 0
                    if rlength != expected:
                        raise ValueError(f"reply payload of {rlength} bytes, expected {expected}")
                    if w.into is not None:
                        self._recv_into(w.into)
                    else:
                        payload = bytearray(rlength)
                        self._recv_into(memoryview(payload))
                        w.payload = bytes(payload)
                w.done.set()
        except (OSError, EOFError, ValueError) as e:
            self._break(str(e) or type(e).__name__)


def _errors_to_nbdkit(fn):
    def wrapped(*args):
        try:
            return fn(*args)
        except OSError as e:
            if nbdkit is not None:
                nbdkit.set_error(e.errno or errno.EIO)
            raise

    wrapped.__name__ = fn.__name__
    wrapped.__doc__ = fn.__doc__
    return wrapped


@_errors_to_nbdkit
def open(readonly):
    return Node(settings["socket"], settings["timeout"])


def close(h):
    h.close()


def get_size(h):
    return h.size


def block_size(h):
    bs = h.block_size
    minimum = bs if bs and bs & (bs - 1) == 0 and bs <= 65536 else 1
    return (minimum, max(4096, minimum), MAX_LENGTH)


def can_write(h):
    return not settings["readonly"]


def can_flush(h):
    return True


def can_fua(h):
    return nbdkit.FUA_EMULATE  # nbdkit flushes after a FUA write


def can_multi_conn(h):
    return False


def is_rotational(h):
    return False


@_errors_to_nbdkit
def pread(h, buf, offset, flags):
    view = memoryview(buf).cast("B")
    for start in range(0, len(view), MAX_LENGTH):
        part = view[start : start + MAX_LENGTH]
        h.call(OP_READ, offset + start, len(part), into=part)


@_errors_to_nbdkit
def pwrite(h, buf, offset, flags):
    view = memoryview(buf).cast("B")
    for start in range(0, len(view), MAX_LENGTH):
        part = view[start : start + MAX_LENGTH]
        h.call(OP_WRITE, offset + start, len(part), data=part)


@_errors_to_nbdkit
def flush(h, flags):
    h.call(OP_FLUSH)
