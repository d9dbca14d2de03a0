"""The suite's own rules: CI=true turns environment skips into failures; the lab leak classifier."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ftsslab.lab.veth import names
from ftsslab.lab.veth.netns import proc_start_time
from ftsslab.lab.veth.state import LabState
from tests import support
from tests.support import Resource

ROOT = Path(__file__).resolve().parents[1]

NEEDS = textwrap.dedent("""
    import pytest

    @pytest.mark.tshark
    def test_dissects():
        pass

    def test_skips_at_run_time():
        pytest.skip("no frobnicator")

    @pytest.mark.slow
    def test_soak():
        pytest.skip("a soak: select it with -m slow")
""")
MODULE_SKIP = 'import pytest\npytest.skip("no frobnicator here", allow_module_level=True)\n'


def _pytest(tmp_path: Path, ci: bool, **sources: str) -> subprocess.CompletedProcess:
    """A pytest run of test modules under the suite's conftest without tshark (an empty PATH)."""
    for name, source in sources.items():
        (tmp_path / f"{name}.py").write_text(source)
    (tmp_path / "bin").mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env.update(PATH=str(tmp_path / "bin"), PYTHONPATH=str(ROOT), **({"CI": "true"} if ci else {}))
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-rA", "-p", "tests.conftest",
                           "-p", "no:cacheprovider", "-c", str(ROOT / "pyproject.toml"),
                           str(tmp_path)], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)


def test_without_ci_a_missing_tool_skips_with_its_reason(tmp_path):
    res = _pytest(tmp_path, ci=False, test_needs=NEEDS, test_module_skip=MODULE_SKIP)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "needs tshark: it is not on PATH" in res.stdout
    assert "4 skipped" in res.stdout and "failed" not in res.stdout


def test_with_ci_every_skip_but_the_opt_in_soak_fails(tmp_path):
    res = _pytest(tmp_path, ci=True, test_needs=NEEDS)
    out = res.stdout
    assert res.returncode == 1, out + res.stderr
    assert "CI=true, so this skip is a failure: needs tshark: it is not on PATH" in out
    failed = {line.split()[1].split("::")[-1] for line in out.splitlines()
              if line.startswith(("FAILED", "ERROR"))}
    assert failed == {"test_dissects", "test_skips_at_run_time"}, out
    assert "1 skipped" in out and "a soak: select it with -m slow" in out


def test_with_ci_a_module_that_skips_itself_fails(tmp_path):
    res = _pytest(tmp_path, ci=True, test_module_skip=MODULE_SKIP)
    assert res.returncode != 0, res.stdout + res.stderr
    assert "ERROR test_module_skip.py - CI=true, so this skip is a failure: no frobnicator here" \
        in res.stdout


@pytest.fixture
def run_dir(tmp_path, monkeypatch):
    monkeypatch.setattr(names, "RUN_DIR", str(tmp_path))
    monkeypatch.setattr(support, "SETTLE", 0)
    return tmp_path


def _owned_by(lab: str, pid: int, start: int | None) -> None:
    LabState(lab_id=lab, owner_pid=pid, owner_start=start, created=0.0).save()


def test_only_a_live_owner_outside_this_run_makes_a_lab_someone_elses(run_dir):
    assert not support.someone_elses(None) and not support.someone_elses("aaaaa")  # no state
    _owned_by("bbbbb", 1, proc_start_time(1))                  # another run's, still running
    _owned_by("ccccc", 1, proc_start_time(1) + 1)              # its owner died (pid recycled)
    _owned_by("ddddd", os.getpid(), proc_start_time(os.getpid()))  # this run's own
    child = subprocess.Popen(["sleep", "30"])
    try:
        _owned_by("eeeee", child.pid, proc_start_time(child.pid))  # an owner this run started
        got = {lab: support.someone_elses(lab) for lab in ("bbbbb", "ccccc", "ddddd", "eeeee")}
    finally:
        child.kill()
        child.wait()
    assert got == {"bbbbb": True, "ccccc": False, "ddddd": False, "eeeee": False}


def test_a_detached_lab_is_someone_elses_while_its_owners_parent_lives(run_dir):
    """`lab up` exits and leaves its lab detached: whose it is, its parent (the shell or
    test run that asked for it) tells."""
    dead = 2**22 + 1  # above pid_max: never a live process
    for lab, parent in (("fffff", 1), ("ggggg", os.getpid()), ("hhhhh", dead)):
        LabState(lab_id=lab, owner_pid=dead, owner_start=None, created=0.0, detached=True,
                 parent_pid=parent, parent_start=proc_start_time(parent)).save()
    assert [support.someone_elses(lab) for lab in ("fffff", "ggggg", "hhhhh")] == [
        True, False, False]


def test_leaked_counts_what_this_run_left_and_not_other_runs_labs(run_dir, monkeypatch):
    _owned_by("bbbbb", 1, proc_start_time(1))
    old = Resource("netns", "flaaaaa-h1", "aaaaa")
    foreign = {Resource("netns", "flbbbbb-h1", "bbbbb"), Resource("link", "flbbbbbp1", "bbbbb"),
               Resource("process", "9@1: python -m ftsslab.ftss.daemon", "bbbbb")}
    ours = {Resource("netns", "flccccc-s1", "ccccc"), Resource("link", "flnolab", None),
            Resource("process", "7@1: python -m ftsslab.lab.veth.switchd", None)}
    now = {old} | foreign | ours
    monkeypatch.setattr(support, "lab_resources", lambda: now)
    assert support.leaked({old}) == sorted(ours)
    assert support.leaked({old} | ours) == []
    snapshots = iter([now, {old}])  # another run's lab went away while it was being classified
    monkeypatch.setattr(support, "lab_resources", lambda: next(snapshots))
    assert support.leaked({old}) == []


def test_a_node_process_is_traced_to_its_lab_by_its_command_line(run_dir):
    switchd = ["python", "-S", "-m", "ftsslab.lab.veth.switchd", "--lab", "a1b2c", "--node", "s1"]
    daemon = ["python", "-m", "ftsslab.ftss.daemon", "--state", f"{run_dir}/0f0f0"]
    socket = ["python", "-m", "ftsslab.lab.veth.switchd", "--socket", f"{run_dir}/12345/s1.sock"]
    assert support._lab_of_cmdline(switchd) == "a1b2c"
    assert support._lab_of_cmdline(daemon) == "0f0f0"
    assert support._lab_of_cmdline(socket) == "12345"
    assert support._lab_of_cmdline(["python", "-m", "ftsslab.ftss.daemon", "a1b2c",
                                    "--state", "/elsewhere/a1b2c"]) is None


def test_every_kinds_node_process_is_one_the_leak_check_looks_for():
    """A kind whose node process the leak check did not know would leak unseen (the
    product's kinds; tests register kinds of their own, with processes of their own)."""
    from ftsslab.lab.kinds import kinds
    from ftsslab.lab.model import Node
    from ftsslab.lab.veth.drivers import NodeEnv

    env = NodeEnv("a1b2c", "/run/ftsslab/a1b2c", "/x.yaml", ("eth0",))
    for spec in kinds():
        if spec.veth is None or spec.veth.program is None:
            continue
        argv = spec.veth.program(Node("n", spec.name, dict(spec.defaults)), env)
        module = argv[argv.index("-m") + 1].encode()
        if module.startswith(b"ftsslab."):
            assert module in support.LAB_PROCESSES, f"{spec.name}: {module!r}"


def test_why_failed_tells_the_failed_expectation_the_events_and_each_flow_s_data():
    """What a flaky veth run's CI log shows: a resent segment is counted, and a connection
    that went silent shows where its data stopped."""
    from scapy.layers.inet import IP, TCP
    from scapy.layers.l2 import Ether

    from ftsslab.lab.backend import CapturedFrame, Event
    from ftsslab.lab.runner import Outcome, RunResult

    def seg(t, seq, flags="A", data=b"x" * 100):
        pkt = Ether() / IP(src="10.0.0.100", dst="10.0.0.1") / TCP(sport=80, dport=4321,
                                                                  seq=seq, flags=flags) / data
        return CapturedFrame(t, "c1:eth0 s1:p1", "s1:p1", "c1:eth0", bytes(pkt), "")

    run = RunResult(scenario=None, backend="veth", frames=[
        seg(0.5, 1000), seg(0.6, 1100), seg(1.5, 1100), seg(2.0, 1200, "FA", b"")],
        events=[Event(0.4, "s1", "table", "why=xap old=d1 new=d3"),
                Event(0.4, "d1", "tch", "new=OPEN old=IDLE"),
                Event(0.9, "d1", "tch", "new=ACTIVE old=ACTIVE why=Update")],
        outcomes=[Outcome("expect[1].command", 3, "end", "command second", False,
                          "status 124; stdout ''"),
                  Outcome("expect[0].command", 2, "end", "command first", True, "ok")])
    text = support.why_failed(run)
    assert "command second: status 124; stdout ''" in text and "command first" not in text
    assert "   0.400 s1 table why=xap old=d1 new=d3" in text and "new=OPEN old=IDLE" in text
    assert "why=Update" not in text and "last event: d1 0.900, s1 0.400" in text
    assert ("c1:eth0 s1:p1 10.0.0.100:80>10.0.0.1:4321: 3 seg, 1 resent, 300 B, "
            "0.500..2.000 F") in text
