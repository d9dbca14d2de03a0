# SPDX-License-Identifier: GPL-2.0-or-later
"""nbdkit Python plugin: an NBD export whose disk is the remote one a lab node holds.

    nbdkit --foreground --exit-with-parent -U nbd.sock python nbdkit_plugin.py \\
        socket=/path/to/node.sock [readonly=true] [timeout=60]

Each NBD connection opens its own Unix stream socket to the node (``socket=``) and speaks
blockproto on it (see ftsslab/i2o/blockproto.py for the byte layout): INFO once at open for
the size and block size, then READ, WRITE and FLUSH, one request at a time. A node's error
status (an errno value) becomes the NBD client's error through ``nbdkit.set_error``; a node
that breaks the protocol, hangs past ``timeout`` seconds or goes away gives EIO, and the
connection is not used again.

This file runs in nbdkit's embedded interpreter (the system python3), not in ftsslab's venv:
it uses the standard library only and does not import ftsslab. Its copy of the header
formats is checked against blockproto's by tests/i2o/test_nbd.py.

Thread model: SERIALIZE_REQUESTS. Requests on one NBD connection are serialized (one
outstanding blockproto request per node socket), connections run in parallel: each has its
own socket and handle counter, and the module's settings are read-only once configured.
can_multi_conn is false: whether a flush on one connection covers writes made on another is
the node's business, and it does not promise it.
"""

import errno
import socket
import struct

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
    return nbdkit.THREAD_MODEL_SERIALIZE_REQUESTS


class NodeError(OSError):
    """The node answered with an error status, or broke the connection (EIO)."""


class Node:
    """One blockproto connection to the node."""

    def __init__(self, path, timeout):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect(path)
        except OSError:
            self.sock.close()
            raise
        self.next_handle = 1
        self.broken = None
        (self.size, self.block_size) = INFO_PAYLOAD.unpack(self.call(OP_INFO))

    def close(self):
        self.sock.close()

    def _fail(self, reason):
        self.broken = reason
        self.sock.close()
        raise NodeError(errno.EIO, f"node connection: {reason}")

    def _recv_into(self, view):
        while view:
            n = self.sock.recv_into(view)
            if n == 0:
                self._fail("closed by the node")
            view = view[n:]

    def call(self, op, offset=0, length=0, data=b"", into=None):
        """Send one request and return its reply's payload (or read it ``into`` a buffer)."""
        if self.broken:
            raise NodeError(errno.EIO, f"node connection: {self.broken}")
        handle = self.next_handle
        self.next_handle += 1
        try:
            self.sock.sendall(REQUEST_HEADER.pack(REQUEST_MAGIC, op, 0, handle, offset, length))
            if data:
                self.sock.sendall(data)
            header = bytearray(REPLY_HEADER.size)
            self._recv_into(memoryview(header))
            magic, rop, flags, rhandle, status, rlength = REPLY_HEADER.unpack(header)
            if magic != REPLY_MAGIC or flags or rop != op or rhandle != handle:
                self._fail(f"bad reply header {bytes(header).hex()} to handle {handle}")
            if status:
                if rlength:
                    self._fail(f"payload of {rlength} bytes with status {status}")
                raise NodeError(status, f"node: {errno.errorcode.get(status, status)}")
            expected = INFO_PAYLOAD.size if op == OP_INFO else length if op == OP_READ else 0
            if rlength != expected:
                self._fail(f"reply payload of {rlength} bytes, expected {expected}")
            if into is not None:
                self._recv_into(into)
                return None
            payload = bytearray(rlength)
            self._recv_into(memoryview(payload))
            return bytes(payload)
        except NodeError:
            raise
        except OSError as e:  # timeout, reset, ...
            self._fail(f"{type(e).__name__}: {e}")


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
