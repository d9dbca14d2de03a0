"""`ftsslab run` SIGKILLed while the lab comes up: `ftsslab lab clean` still finds everything.

The owner is killed at random moments of lab-up -- while namespaces, links, switchd and
the FTSS/server daemons are being created -- and `lab clean` must then remove every
namespace, link and node process it made (the state file names a process before it is
started, and the lab dir on a node process's command line names its lab).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests import support

pytestmark = pytest.mark.root

ROOT = Path(__file__).resolve().parents[2]
KILLS = int(os.environ.get("FTSSLAB_KILLS", "4"))


def ftsslab(*args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen([*support.CLI, *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, **kw)


def test_clean_after_a_kill_during_lab_up(tmp_path):
    seed = int(os.environ.get("FTSSLAB_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    scenario = ROOT / "scenarios" / "ftss-broadcast.yaml"  # 8 nodes, 8 daemons + links
    before = support.lab_resources()
    for i in range(KILLS):
        run = ftsslab("run", str(scenario), "--backend", "veth", "-w", str(tmp_path / "c.pcapng"))
        deadline = time.monotonic() + 60
        # kill it somewhere between "namespaces exist" and "all daemons are up"
        while not [r for r in support.lab_resources() - before if r.kind == "netns"]:
            assert run.poll() is None, run.stderr.read().decode()
            assert time.monotonic() < deadline, "the lab never came up"
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 1.5))
        run.send_signal(signal.SIGKILL)
        run.wait()
        clean = support.ftsslab("lab", "clean")
        assert clean.returncode == 0, clean.stderr
        left = support.leaked(before)
        assert not left, f"seed {seed}, kill {i}: `lab clean` left {left}"


def test_clean_finds_a_node_process_before_it_entered_its_namespace():
    """The window the state file alone cannot cover: the owner died after starting a node
    process (still `nsenter`, not yet in its namespace) and before writing its pid. Its
    command line names the lab's directory: that is enough for `clean` (``remove_lab``)
    to find it."""
    from ftsslab.lab.veth import names, state
    from ftsslab.lab.veth.netns import pid_alive

    lab = names.new_lab_id()
    st = state.LabState.new(lab)  # owned by this test: no other run's `clean` takes it
    st.processes["n1"] = {"pid": None, "start": None}  # recorded before it was started
    os.makedirs(names.lab_dir(lab), exist_ok=True)
    st.save()
    stray = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)",
                              "--state", names.lab_dir(lab)])
    try:
        cmdline = Path(f"/proc/{stray.pid}/cmdline")
        deadline = time.monotonic() + 10
        while names.lab_dir(lab).encode() not in cmdline.read_bytes():
            assert time.monotonic() < deadline, cmdline.read_bytes()
            time.sleep(0.01)
        removed = state.remove_lab(lab, state.load(lab))  # what `clean` does for a dead owner
        assert f"process {stray.pid}" in removed, (removed, stray.poll(), cmdline.read_bytes())
        stray.wait(timeout=10)
        assert not pid_alive(stray.pid)
        assert not os.path.exists(names.state_path(lab))
    finally:
        stray.kill()
        stray.wait()
        state.remove_lab(lab)
