"""`ftsslab san`'s perftest tools on a lab `lab up` left running (scenarios/san-perftest.yaml):
each completes every message and reports perftest's figures; wrong nodes or sizes exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support import ftsslab

pytestmark = [pytest.mark.root]
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def lab_id():
    up = ftsslab("lab", "up", str(ROOT / "scenarios" / "san-perftest.yaml"))
    assert up.returncode == 0, up.stderr
    lab = up.stdout.split()[1]
    yield lab
    ftsslab("lab", "down", "--lab", lab)


@pytest.mark.parametrize("tool, size, iters", [("write-bw", 16384, 300), ("read-bw", 16384, 200),
                                               ("send-bw", 4096, 200), ("write-lat", 8, 200),
                                               ("read-lat", 8, 200)])
def test_each_tool_completes_every_message_and_reports(lab_id, tool, size, iters):
    got = ftsslab("san", tool, "a", "b", "--size", str(size), "--iters", str(iters),
                  "--lab", lab_id, "--json")
    assert got.returncode == 0, got.stdout + got.stderr
    r = json.loads(got.stdout)
    assert (r["completed"], r["first_error"], r["bytes"], r["iterations"]) == (
        iters, None, size, iters)
    assert r["seconds"] > 0
    if tool.endswith("-lat"):
        assert 0 < r["t_min_us"] <= r["t_typical_us"] <= r["t_99_us"]
        # one at a time: the run lasts at least the sum of the fastest round trips
        assert r["seconds"] * 1e6 >= iters * r["t_min_us"]
    else:
        assert r["bw_average_MBps"] == pytest.approx(size * iters / r["seconds"] / (1 << 20))
    table = ftsslab("san", tool, "a", "b", "--size", str(size), "--iters", "20", "--lab", lab_id)
    assert table.returncode == 0 and ("BW average[MB/sec]" in table.stdout
                                      or "t_typical[usec]" in table.stdout), table.stdout


def test_wrong_nodes_and_sizes_exit_2(lab_id):
    for args, words in ((("a", "c"), "no node 'c'"), (("a", "a"), "no RC QP connected to a"),
                        (("a", "b", "--size", str(1 << 24)), "do not fit"),
                        (("a", "b", "--qp", "q9"), "no RC QP 'q9'")):
        got = ftsslab("san", "write-bw", *args, "--lab", lab_id)
        assert got.returncode == 2 and words in got.stdout + got.stderr, got.stdout + got.stderr
    got = ftsslab("san", "send-bw", "a", "b", "--iters", "2000", "--lab", lab_id)
    assert got.returncode == 2 and "at most 1024" in got.stdout + got.stderr
