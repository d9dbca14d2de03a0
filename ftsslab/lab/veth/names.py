"""Lab ids and the names derived from them (namespaces, run files).

Every namespace of a lab is ``fl<id>-<node>`` (``id`` = 5 hex chars) so two
labs never collide and ``clean()`` can recognise what belongs to ftsslab; an impaired
link's shim has ``fl<id>-link-<n>`` (no node name has a ``-``).
Interfaces keep the scenario's own names inside their namespace; anything the
backend would create in the root namespace is ``fl<id>…`` and at most 15 chars.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

PREFIX = "fl"
RUN_DIR = os.environ.get("FTSSLAB_RUN_DIR", "/run/ftsslab")
NETNS_DIR = "/run/netns"

LAB_ID_RE = re.compile(r"^[0-9a-f]{5}$")
NS_RE = re.compile(r"^fl([0-9a-f]{5})-([a-z][a-z0-9]*|link-[0-9]+)$")
ROOT_IF_RE = re.compile(r"^fl([0-9a-f]{5})\w{0,8}$")


def new_lab_id() -> str:
    """A fresh id not used by any namespace or state file on this machine."""
    import secrets  # here: its hashlib costs every lab command's start 4 ms

    used = set(namespace_lab_ids()) | set(state_lab_ids())
    while True:
        lab_id = secrets.token_hex(3)[:5]
        if lab_id not in used:
            return lab_id


def ns_name(lab_id: str, node: str) -> str:
    return f"{PREFIX}{lab_id}-{node}"


def shim_name(link_index: int) -> str:
    """The shim of the lab's ``link_index``-th link: its namespace suffix, its run files."""
    return f"link-{link_index}"


def lab_dir(lab_id: str) -> str:
    return os.path.join(RUN_DIR, lab_id)


def state_path(lab_id: str) -> str:
    return os.path.join(RUN_DIR, f"{lab_id}.json")


def ready_path(lab_id: str, node: str) -> Path:
    """A node process touches this once it serves (the backend waits for it)."""
    return Path(lab_dir(lab_id), f"{node}.ready")


def switchd_socket(lab_id: str, node: str) -> str:
    return os.path.join(lab_dir(lab_id), f"{node}.sock")


def switchd_log(lab_id: str, node: str) -> str:
    return os.path.join(lab_dir(lab_id), f"{node}.log")


def parse_ns(name: str) -> tuple[str, str] | None:
    """``(lab_id, node)`` for an ftsslab namespace name, else None."""
    m = NS_RE.match(name)
    return (m.group(1), m.group(2)) if m else None


def list_netns() -> list[str]:
    try:
        return sorted(os.listdir(NETNS_DIR))
    except FileNotFoundError:
        return []


def namespace_lab_ids() -> list[str]:
    return sorted({p[0] for n in list_netns() if (p := parse_ns(n))})


def state_lab_ids() -> list[str]:
    try:
        files = os.listdir(RUN_DIR)
    except FileNotFoundError:
        return []
    return sorted(f[:-5] for f in files if f.endswith(".json") and LAB_ID_RE.match(f[:-5]))
