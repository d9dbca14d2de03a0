"""Namespace plumbing: ctypes ``setns`` (Python 3.11 has no ``os.setns``), running
Python code inside a namespace on a short-lived thread, ``ip``/``ip -batch``
wrappers, per-namespace sysctls and checksum offload via ioctls.

``setns`` only moves the calling thread, so code that needs a namespace runs on
its own thread (``call_in_netns``); a socket opened there stays in that
namespace for good and can then be used from any thread.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TypeVar

from .names import NETNS_DIR

T = TypeVar("T")
CLONE_NEWNET = 0x40000000
SIOCETHTOOL = 0x8946
ETHTOOL_SRXCSUM = 0x15
ETHTOOL_STXCSUM = 0x17

_libc = ctypes.CDLL(None, use_errno=True)


class NetnsError(RuntimeError):
    pass


def setns_path(path: str) -> None:
    """Move the *calling thread* into the network namespace at ``path``."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            e = ctypes.get_errno()
            raise NetnsError(f"setns({path}): {os.strerror(e)}")
    finally:
        os.close(fd)


def netns_path(ns: str) -> str:
    return os.path.join(NETNS_DIR, ns)


def call_in_netns(ns: str, fn: Callable[..., T], *args) -> T:
    """Run ``fn(*args)`` on a fresh thread that has entered namespace ``ns``."""
    box: dict = {}

    def target() -> None:
        try:
            setns_path(netns_path(ns))
            box["value"] = fn(*args)
        except BaseException as exc:  # handed back to the caller
            box["error"] = exc

    t = threading.Thread(target=target, name=f"netns-{ns}", daemon=True)
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


def map_in_netns(jobs: Iterable[tuple[str, Callable[..., T], tuple]],
                 workers: int = 16) -> list[T]:
    """``call_in_netns`` for many (ns, fn, args) jobs, a few at a time."""
    jobs = list(jobs)
    if not jobs:
        return []
    from concurrent.futures import ThreadPoolExecutor  # here: 3 ms that replay needs not

    with ThreadPoolExecutor(max_workers=min(workers, len(jobs))) as pool:
        futs = [pool.submit(call_in_netns, ns, fn, *args) for ns, fn, args in jobs]
        return [f.result() for f in futs]


# ---- ip(8) ---------------------------------------------------------------------------------

def run(argv: Sequence[str], timeout: float = 30.0, check: bool = True,
        input: str | None = None) -> subprocess.CompletedProcess:
    try:
        cp = subprocess.run(list(argv), input=input, capture_output=True, text=True,
                            timeout=timeout)
    except FileNotFoundError as exc:
        raise NetnsError(f"{argv[0]}: not installed") from exc
    except subprocess.TimeoutExpired as exc:
        raise NetnsError(f"{' '.join(argv)}: timed out after {timeout:g}s") from exc
    if check and cp.returncode != 0:
        msg = (cp.stderr or cp.stdout).strip().splitlines()
        raise NetnsError(f"{' '.join(argv[:4])}…: {msg[-1] if msg else f'exit {cp.returncode}'}")
    return cp


def ip_batch(lines: Sequence[str], ns: str | None = None, force: bool = False,
             timeout: float = 120.0) -> subprocess.CompletedProcess | None:
    """``ip [-n ns] [-force] -batch -`` with ``lines`` on stdin (one ip command each)."""
    if not lines:
        return None
    argv = ["ip"] + (["-n", ns] if ns else []) + (["-force"] if force else []) + ["-batch", "-"]
    return run(argv, input="\n".join(lines) + "\n", timeout=timeout, check=not force)


def ip_batches(batches: dict[str, Sequence[str]], parallel: int = 8,
               timeout: float = 120.0) -> None:
    """One ``ip -n NS -batch`` per namespace, ``parallel`` processes at a time."""
    items = [(ns, lines) for ns, lines in batches.items() if lines]
    if not items:
        return
    from concurrent.futures import ThreadPoolExecutor  # here: 3 ms that replay needs not

    with ThreadPoolExecutor(max_workers=min(parallel, len(items))) as pool:
        for f in [pool.submit(ip_batch, lines, ns, False, timeout) for ns, lines in items]:
            f.result()


# ---- in-namespace helpers (call them through call_in_netns / map_in_netns) ----------------

def write_sysctl(key: str, value: str) -> bool:
    """Write ``/proc/sys/<key>`` for the calling thread's namespace; False if it does not exist."""
    path = "/proc/sys/" + key.replace(".", "/")
    try:
        with open(path, "w") as f:
            f.write(value)
    except FileNotFoundError:
        return False
    return True


def disable_ipv6() -> None:
    """IPv6 off for ``all`` and ``default`` (interfaces created later inherit it)."""
    for scope in ("all", "default", "lo"):
        write_sysctl(f"net.ipv6.conf.{scope}.disable_ipv6", "1")


def _ethtool_set(sock: socket.socket, ifname: str, cmd: int, value: int) -> None:
    val = ctypes.create_string_buffer(struct.pack("II", cmd, value))
    ifr = struct.pack("16sP", ifname.encode(), ctypes.addressof(val)) + b"\0" * 16
    fcntl.ioctl(sock.fileno(), SIOCETHTOOL, ifr)


def set_checksum_offload(ifnames: Sequence[str], on: bool) -> None:
    """Like ``ethtool -K IF tx on|off rx on|off`` (legacy ethtool ioctls), in the current
    namespace; TSO/GSO follow tx (the kernel masks them while it is off)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for name in ifnames:
            for cmd in (ETHTOOL_STXCSUM, ETHTOOL_SRXCSUM):
                try:
                    _ethtool_set(s, name, cmd, int(on))
                except OSError as exc:
                    if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
                        raise


SIOCGIFFLAGS = 0x8913
IFF_UP, IFF_RUNNING = 0x1, 0x40


def if_flags(sock: socket.socket, ifname: str) -> int:
    ifr = struct.pack("16sH14x", ifname.encode(), 0)
    return struct.unpack("16sH14x", fcntl.ioctl(sock.fileno(), SIOCGIFFLAGS, ifr))[1]


def wait_running(ifnames: Sequence[str], timeout: float = 5.0) -> list[str]:
    """Wait until every administratively-up interface is RUNNING (carrier seen by linkwatch,
    qdisc attached, bridge port enabled); returns those that are still not running.

    veth carrier changes go through the kernel's linkwatch, which may delay them by up
    to a second; frames sent before that are dropped.
    """
    deadline = time.monotonic() + timeout
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        pending = list(ifnames)
        while True:
            pending = [n for n in pending
                       if (f := if_flags(s, n)) & IFF_UP and not f & IFF_RUNNING]
            if not pending or time.monotonic() > deadline:
                return pending
            time.sleep(0.01)


# ---- processes and namespace identity -----------------------------------------------------

def netns_inode(ns: str) -> int | None:
    try:
        return os.stat(netns_path(ns)).st_ino
    except FileNotFoundError:
        return None


def pids_in_netns(inodes: set[int]) -> list[int]:
    """Every process whose network namespace is one of ``inodes``."""
    me = os.getpid()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            if os.stat(f"/proc/{entry}/ns/net").st_ino in inodes:
                found.append(int(entry))
        except OSError:
            continue
    return found


def proc_start_time(pid: int) -> int | None:
    """The process's start time in clock ticks (field 22 of /proc/PID/stat), or None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            data = f.read()
    except OSError:
        return None
    return int(data.rsplit(")", 1)[1].split()[19])


def pid_alive(pid: int | None, start_time: int | None = None) -> bool:
    """``pid`` runs and is not a zombie (and started at ``start_time``, when given); a
    process recorded before it was started has no pid yet (None)."""
    if pid is None:
        return False
    st = proc_start_time(pid)
    if st is None:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                return False
    except OSError:
        return False
    return start_time is None or st == start_time
