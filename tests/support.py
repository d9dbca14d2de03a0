"""What tests need from the machine, and what counts as a lab this run leaked.

Requirements are markers (``tshark``, ``root``) checked in one place (``tests/conftest.py``): a
missing one skips the test, and under ``CI=true`` every skip except the deliberate ones (tests
marked ``slow``) is a failure, so CI cannot go green without running the suite.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import NamedTuple

IN_CI = os.environ.get("CI", "").lower() in ("true", "1")

LAB_PROCESSES = (b"ftsslab.lab.veth.switchd", b"ftsslab.ftss.daemon", b"ftsslab.lab.veth.impaird",
                 b"ftsslab.nas.switchd", b"ftsslab.nas.device", b"ftsslab.san.sanicd",
                 b"ftsslab.i2o.i2od")  # (an i2o node's nbdkit exits with its parent)
SETTLE = 0.5  # seconds a leak must persist (see ``leaked``)
CLI = (sys.executable, "-c", "from ftsslab.cli import main; main()")  # `ftsslab`, on this Python


def ftsslab(*args: str, cwd=None, timeout: float = 300, **env: str) -> subprocess.CompletedProcess:
    """``ftsslab ARGS`` as a user runs it: a real process, in a wide terminal so that rich
    wraps no line a test reads; ``env`` adds or overrides variables (e.g. ``HOME``)."""
    return subprocess.run([*CLI, *args], capture_output=True, text=True, cwd=cwd,
                          timeout=timeout, env={**os.environ, "COLUMNS": "200", **env})


def load_bench(name: str) -> ModuleType:
    """``bench/<name>.py`` as a module (the benches are scripts, not a package)."""
    path = Path(__file__).resolve().parents[1] / "bench" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tshark() -> str | None:
    """The tshark binary the tests run (None when it is not on PATH)."""
    return shutil.which("tshark")


def _tshark_missing() -> str | None:
    return None if tshark() else "needs tshark: it is not on PATH (Debian package tshark)"


@functools.cache
def _netns_missing() -> str | None:
    if os.geteuid() != 0:
        return f"needs root for network namespaces (euid is {os.geteuid()})"
    for tool, package in (("ip", "iproute2"), ("nft", "nftables")):
        if shutil.which(tool) is None:
            return f"needs `{tool}`: it is not on PATH (Debian package {package})"
    try:
        res = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"needs `ip netns`: {exc}"
    return None if res.returncode == 0 else f"needs `ip netns`: {res.stderr.strip()}"


def chromium() -> str | None:
    """The headless browser the report tests open reports in (Debian package chromium)."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _chromium_missing() -> str | None:
    return None if chromium() else "needs chromium: it is not on PATH (Debian package chromium)"


REQUIREMENTS = {"tshark": _tshark_missing, "root": _netns_missing,
                "chromium": _chromium_missing}


def missing(marker: str) -> str | None:
    """Why the machine cannot run tests marked ``marker`` (None when it can)."""
    return REQUIREMENTS[marker]()


# ------------------------------------------------------------------------------- lab leaks


class Resource(NamedTuple):
    """A namespace, root link or node process named like ftsslab's, and its lab (if known)."""

    kind: str  # "netns" | "link" | "process"
    name: str  # for a process: "<pid>@<start time>: <cmdline>", so a reused pid is new
    lab: str | None

    def __str__(self) -> str:
        return f"{self.kind} {self.name} (lab {self.lab or 'unknown'})"


def _lab_of_cmdline(args: list[str]) -> str | None:
    """The lab a node process serves: ``--lab <id>`` or a path under ``RUN_DIR/<id>``."""
    from ftsslab.lab.veth import names

    run_dir = names.RUN_DIR.rstrip("/") + "/"
    for flag, arg in zip(["", *args], args, strict=False):
        lab = arg if flag == "--lab" else arg.removeprefix(run_dir).split("/", 1)[0]
        if (flag == "--lab" or arg.startswith(run_dir)) and names.LAB_ID_RE.match(lab):
            return lab
    return None


def lab_resources() -> set[Resource]:
    """Every namespace, root link and node process on this machine that looks like a lab's."""
    from ftsslab.lab.veth import names
    from ftsslab.lab.veth.netns import proc_start_time

    found = set()
    for ns in names.list_netns():
        if ns.startswith(names.PREFIX):
            found.add(Resource("netns", ns, (names.parse_ns(ns) or (None,))[0]))
    try:
        links = os.listdir("/sys/class/net")
    except FileNotFoundError:
        links = []
    for d in links:
        if d.startswith(names.PREFIX):
            m = names.ROOT_IF_RE.match(d)
            found.add(Resource("link", d, m.group(1) if m else None))
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read()
        except OSError:
            continue
        if any(module in cmdline for module in LAB_PROCESSES):
            args = cmdline.rstrip(b"\0").decode(errors="replace").split("\0")
            name = f"{pid}@{proc_start_time(int(pid))}: {' '.join(args)}"
            found.add(Resource("process", name, _lab_of_cmdline(args)))
    return found


def _parent(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def _ours(pid: int | None) -> bool:
    """``pid`` is this process or one of its descendants (the test's owner subprocesses)."""
    me, seen = os.getpid(), set()
    while pid is not None and pid > 1 and pid not in seen:
        if pid == me:
            return True
        seen.add(pid)
        pid = _parent(pid)
    return False


def someone_elses(lab: str | None) -> bool:
    """``lab``'s state file names a live owner outside this process tree -- or, for a
    detached lab (``lab up``: its owner has exited), a live parent of that owner outside
    this process tree: another run's lab."""
    from ftsslab.lab.veth import state
    from ftsslab.lab.veth.netns import pid_alive

    st = state.load(lab) if lab else None
    if st is None:
        return False
    if pid_alive(st.owner_pid, st.owner_start):
        return not _ours(st.owner_pid)
    return (st.detached and pid_alive(st.parent_pid, st.parent_start)
            and not _ours(st.parent_pid))


def leaked(before: set[Resource]) -> list[Resource]:
    """What appeared since ``before`` and is not another run's live lab.

    Another run's lab can vanish between listing it and reading its state file, so a leak must
    still be there, unclaimed, a moment later.
    """
    def new() -> set[Resource]:
        return {r for r in lab_resources() - before if not someone_elses(r.lab)}

    found = new()
    if found:
        time.sleep(SETTLE)
        found &= new()
    return sorted(found)


def why_failed(result, tail: int = 80) -> str:
    """A failed run told in full, for a CI log that is all one has of a flake: the failed
    expectations, the nodes' events (a TCH session's keepalives left out), when each node
    last logged, and each TCP connection's data per direction -- who went silent, who kept
    retransmitting."""
    lines = [f"{o.what}: {o.detail}" for o in result.outcomes if not o.passed]
    events = [e for e in result.events if not _keepalive(e)]
    lines.append(f"-- events ({len(events)}, the last {min(tail, len(events))}):")
    lines += [f"{e.time:8.3f} {e.node} {e.kind} {e.detail}" for e in events[-tail:]]
    last = {e.node: e.time for e in result.events}
    lines.append("-- each node's last event: " +
                 ", ".join(f"{n} {t:.3f}" for n, t in sorted(last.items())))
    lines.append("-- TCP data per link and direction: segments, resent, bytes, first..last s, "
                 "flags seen")
    lines += [f"{link} {flow}: {st}" for (link, flow), st in _tcp_flows(result)]
    return "\n".join(lines)


def _keepalive(e) -> bool:
    """A TCH ACTIVE -> ACTIVE on an Update: one an interval, they would crowd the tail."""
    return e.kind == "tch" and "old=ACTIVE" in e.detail and "new=ACTIVE" in e.detail


@dataclass
class _Flow:
    """One direction of one TCP connection on one link, as ``why_failed`` tells it."""

    first: float
    last: float = 0.0
    segments: int = 0  # with data
    resent: int = 0    # with data at a sequence number seen before
    size: int = 0
    flags: set = field(default_factory=set)
    seqs: set = field(default_factory=set)

    def __str__(self) -> str:
        return (f"{self.segments} seg, {self.resent} resent, {self.size} B, "
                f"{self.first:.3f}..{self.last:.3f}"
                f"{' ' + ''.join(sorted(self.flags)) if self.flags else ''}")


def _tcp_flows(result) -> list[tuple[tuple[str, str], _Flow]]:
    """Each IPv4 TCP flow's frames, per link (the lab's own decoder: a failed run can hold
    10^5 frames, too many for Scapy)."""
    from ftsslab.lab.tcp import decode

    flows: dict[tuple[str, str], _Flow] = {}
    for f in result.frames:
        seg = decode(f.data[14:]) if f.data[12:14] == b"\x08\x00" else None
        if seg is None:
            continue
        flow = f"{seg.src}:{seg.sport}>{seg.dst}:{seg.dport}"
        st = flows.setdefault((f.link, flow), _Flow(f.time))
        st.last = f.time
        st.flags |= {c for bit, c in ((1, "F"), (2, "S"), (4, "R")) if seg.flags & bit}
        if seg.payload:
            st.segments += 1
            st.size += len(seg.payload)
            st.resent += seg.seq in st.seqs
            st.seqs.add(seg.seq)
    return sorted(flows.items())
