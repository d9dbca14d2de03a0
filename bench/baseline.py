"""What the FTSS benches share: the lab they measure, and an earlier revision to measure
against (``--baseline REV``), checked out as a ``git worktree`` and removed afterwards."""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HTTP_KILL = ROOT / "scenarios" / "ftss-http-kill.yaml"


def ftss_topology(steps: Sequence[str] = ()) -> str:
    """The http-kill scenario's nodes and links (two servers, the FTSS, two apps) with
    ``steps`` (YAML lines) in place of its own: with none, any revision's loader takes it,
    whatever step keys this one's file uses."""
    head = HTTP_KILL.read_text().split("\nsteps:")[0]
    return head + "\nsteps:" + ("".join(f"\n{s}" for s in steps) if steps else " []") + "\n"


@contextmanager
def worktree(rev: str | None) -> Iterator[Path | None]:
    """``rev``'s tree in a temporary worktree (None without a revision)."""
    if rev is None:
        yield None
        return
    tree = Path(tempfile.mkdtemp(prefix="ftsslab-base-"))
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), rev],
                   check=True, capture_output=True)
    try:
        yield tree
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)],
                       capture_output=True)
