"""A lab's state file, ``/run/ftsslab/<lab_id>.json``, and ``clean()``.

The state file lets separate CLI invocations (``lab up`` / ``lab exec`` /
``lab down`` / ``lab ls``) attach to a running lab: it names the namespaces,
links, switch control processes and background commands, and the owner (pid +
start time, so a recycled pid is not mistaken for the owner). It is written
before anything is created and removed after everything else, so a crash at any
point leaves something ``clean()`` can find.

A lab is *alive* while its owner process lives, or when it was detached
(``lab up`` hands it over to later ``lab down``). ``clean()`` removes the labs
that are not alive (all of them with ``force``) and namespaces/links named like
ftsslab's that no state file claims — ONLY names with the ftsslab prefix.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from dataclasses import asdict, dataclass, field, fields

from . import names
from .netns import ip_batch, netns_inode, pid_alive, pids_in_netns, proc_start_time


@dataclass
class LabState:
    lab_id: str
    owner_pid: int
    owner_start: int | None
    created: float
    scenario: str = ""
    scenario_path: str = ""
    status: str = "building"       # building | up | down
    detached: bool = False
    nodes: dict[str, dict] = field(default_factory=dict)        # node -> {"ns", "kind"}
    links: list[dict] = field(default_factory=list)             # {"name","a","b","ns_a",...}
    # node, or an impaired link's shim (``names.shim_name``) -> {"pid", "start"}
    processes: dict[str, dict] = field(default_factory=dict)
    background: list[dict] = field(default_factory=list)        # {"pid","start","node","argv"}
    # who started the owner (a shell, a test run): a detached lab outlives its owner
    parent_pid: int | None = None
    parent_start: int | None = None

    @classmethod
    def new(cls, lab_id: str, scenario: str = "", path: str = "") -> LabState:
        pid, ppid = os.getpid(), os.getppid()
        return cls(lab_id=lab_id, owner_pid=pid, owner_start=proc_start_time(pid),
                   created=time.time(), scenario=scenario, scenario_path=path,
                   parent_pid=ppid, parent_start=proc_start_time(ppid))

    def save(self) -> None:
        os.makedirs(names.RUN_DIR, mode=0o755, exist_ok=True)
        path = names.state_path(self.lab_id)
        tmp = f"{path}.tmp{os.getpid()}"
        with open(tmp, "w") as f:
            json.dump(asdict(self), f, indent=1, sort_keys=True)
        os.replace(tmp, path)

    def alive(self) -> bool:
        return self.detached or pid_alive(self.owner_pid, self.owner_start)

    def namespaces(self) -> list[str]:
        return [n["ns"] for n in self.nodes.values()]


def load(lab_id: str) -> LabState | None:
    if not names.LAB_ID_RE.match(lab_id):
        return None
    try:
        with open(names.state_path(lab_id)) as f:
            data = json.load(f)
        known = {f.name for f in fields(LabState)}  # a newer ftsslab may record more
        return LabState(**{k: v for k, v in data.items() if k in known})
    except (FileNotFoundError, json.JSONDecodeError, TypeError, AttributeError):
        return None


def list_labs() -> list[LabState]:
    return [s for lab_id in names.state_lab_ids() if (s := load(lab_id)) is not None]


def kill_and_wait(pids: list[int], timeout: float = 5.0) -> list[int]:
    """SIGKILL ``pids`` and wait (reaping our children) until they are gone; the killed ones."""
    killed = []
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout
    for pid in killed:
        while pid_alive(pid) and time.monotonic() < deadline:
            try:   # reap it if it is our child
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass
            time.sleep(0.01)
    return killed


def remove_lab(lab_id: str, state: LabState | None = None) -> list[str]:
    """Remove everything of lab ``lab_id`` (processes, namespaces, root links, run files)."""
    if not names.LAB_ID_RE.match(lab_id):  # "" would name the whole run directory
        raise ValueError(f"not a lab id: {lab_id!r}")
    removed: list[str] = []
    prefix = f"{names.PREFIX}{lab_id}-"
    nss = {n for n in names.list_netns() if n.startswith(prefix)}
    if state:
        nss |= {n for n in state.namespaces() if names.parse_ns(n)
                and os.path.exists(os.path.join(names.NETNS_DIR, n))}
    nss = sorted(nss)
    inodes = {i for n in nss if (i := netns_inode(n)) is not None}
    pids = set(pids_in_netns(inodes)) if inodes else set()
    pids |= set(pids_naming(names.lab_dir(lab_id)))
    if state:
        for rec in list(state.processes.values()) + list(state.background):
            if pid_alive(rec["pid"], rec.get("start")):
                pids.add(rec["pid"])
    for pid in kill_and_wait(sorted(pids)):
        removed.append(f"process {pid}")
    if nss:
        ip_batch([f"netns del {n}" for n in nss], force=True)
        removed += [f"netns {n}" for n in nss]
    links = [d for d in _root_links() if d.startswith(f"{names.PREFIX}{lab_id}")]
    if links:
        ip_batch([f"link del {d}" for d in links], force=True)
        removed += [f"link {d}" for d in links]
    if os.path.isdir(names.lab_dir(lab_id)):
        shutil.rmtree(names.lab_dir(lab_id), ignore_errors=True)
        removed.append(f"dir {names.lab_dir(lab_id)}")
    try:
        os.unlink(names.state_path(lab_id))
        removed.append(f"state {names.state_path(lab_id)}")
    except FileNotFoundError:
        pass
    return removed


def pids_naming(lab_dir: str) -> list[int]:
    """Processes whose command line names ``lab_dir`` (every node process of that lab does,
    even one that has not entered its namespace yet)."""
    me, needle, found = os.getpid(), os.fsencode(lab_dir), []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                args = f.read().split(b"\0")
        except OSError:
            continue
        if int(entry) != me and any(a == needle or a.startswith(needle + b"/") for a in args):
            found.append(int(entry))
    return found


def _root_links() -> list[str]:
    try:
        return [d for d in os.listdir("/sys/class/net") if names.ROOT_IF_RE.match(d)]
    except FileNotFoundError:
        return []


def _run_dirs() -> list[str]:
    try:
        return [d for d in os.listdir(names.RUN_DIR)
                if names.LAB_ID_RE.match(d) and os.path.isdir(names.lab_dir(d))]
    except FileNotFoundError:
        return []


def clean(force: bool = False) -> list[str]:
    """Remove what crashed runs left behind; returns one line per removed thing.

    Candidates are labs found by state file, namespace name (``fl<id>-node``),
    root link name (``fl<id>…``) or run directory. A lab with a state file is
    removed only when its owner is dead and it is not detached (or ``force``).
    """
    ids = set(names.state_lab_ids()) | set(names.namespace_lab_ids()) | set(_run_dirs())
    ids |= {m.group(1) for d in _root_links() if (m := names.ROOT_IF_RE.match(d))}
    removed: list[str] = []
    for lab_id in sorted(ids):
        st = load(lab_id)
        if st is not None and st.alive() and not force:
            continue
        if st is None and os.path.exists(names.state_path(lab_id)) and not force:
            # unreadable state file: maybe being written right now; leave it
            continue
        removed += remove_lab(lab_id, st)
    return removed
