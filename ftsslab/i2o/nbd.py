# SPDX-License-Identifier: GPL-2.0-or-later
"""Real block clients over NBD: the nbdkit command line that exports a remote disk.

nbdcopy, qemu-img, fio, nbdinfo, ... speak NBD to nbdkit; nbdkit runs ``nbdkit_plugin.py``
(this package's file, in nbdkit's embedded python3), which speaks blockproto over a Unix
socket to the lab node holding the disk. ``nbdkit_command`` builds the argv; ``nbd_uri``
gives the URI clients are handed. See docs/i2o.md ("Real block clients over NBD").
"""

from __future__ import annotations

import os
from pathlib import Path

PLUGIN = Path(__file__).with_name("nbdkit_plugin.py")


def plugin_path() -> Path:
    """The nbdkit Python plugin's file, where the package is installed."""
    return PLUGIN


def nbdkit_command(
    socket_path: str | os.PathLike,
    *,
    unix: str | os.PathLike | None = None,
    port: int | None = None,
    ipaddr: str | None = None,
    readonly: bool = False,
    timeout: float | None = None,
    exportname: str | None = None,
    verbose: bool = False,
    nbdkit: str = "nbdkit",
) -> list[str]:
    """The argv that runs nbdkit in the foreground, exporting the disk of the node listening
    on ``socket_path``; nbdkit exits with its parent (the process that starts it).

    NBD clients reach it on the Unix socket ``unix`` or on TCP ``port`` (bound to ``ipaddr``,
    all addresses if None); exactly one of the two. ``readonly`` makes nbdkit refuse writes
    (``-r``) and the plugin advertise none; ``timeout`` bounds each wait for the node (the
    plugin's default is 60 s); ``exportname`` sets the export name nbdkit reports
    (``-e``); ``verbose`` is nbdkit's ``-v`` (debug messages on stderr).
    """
    if (unix is None) == (port is None):
        raise ValueError("give exactly one of unix= (a socket path) and port=")
    argv = [nbdkit, "--foreground", "--exit-with-parent"]
    if unix is not None:
        argv += ["-U", os.fspath(unix)]
    else:
        if not 0 < port < 65536:
            raise ValueError(f"port {port} out of range")
        argv += ["-p", str(port)]
        if ipaddr is not None:
            argv += ["-i", ipaddr]
    if readonly:
        argv.append("-r")
    if exportname is not None:
        argv += ["-e", exportname]
    if verbose:
        argv.append("-v")
    argv += ["python", str(PLUGIN), f"socket={os.fspath(socket_path)}"]
    if readonly:
        argv.append("readonly=true")
    if timeout is not None:
        argv.append(f"timeout={timeout:g}")
    return argv


def nbd_uri(
    *, unix: str | os.PathLike | None = None, host: str = "localhost", port: int | None = None
) -> str:
    """The NBD URI of an export started with ``nbdkit_command(unix=...)`` or ``(port=...)``."""
    if unix is not None:
        return f"nbd+unix:///?socket={os.fspath(unix)}"
    return f"nbd://{host}:{port if port is not None else 10809}/"
