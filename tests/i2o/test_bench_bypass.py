"""bench/i2o_bypass.py (check 14) runs in its --quick mode and says something true: every path
and operation has positive figures, and every read returned the bytes written."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.support import load_bench

BENCH = Path(__file__).resolve().parents[2] / "bench" / "i2o_bypass.py"
PATHS = {"a", "b", "b_udp", "direct", "file"}
METRICS = ("p50_us", "p99_us", "ops_per_s", "server_cpu_us_per_op")


def test_quick_bypass_bench_reports_every_row_and_reads_back_what_was_written(tmp_path):
    out = subprocess.run([sys.executable, str(BENCH), "--quick", "--json", "--dir",
                          str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout)
    rows = {(r["path"], r["op"]): r for r in res["rows"]}
    assert set(rows) == {(p, op) for p in PATHS for op in ("read", "write")}
    for row in rows.values():
        assert all(row[m] > 0 for m in METRICS), row
        assert row["p99_us"] >= row["p50_us"]
        assert row["requests"] == 3 * 300 and len(row["rounds"]) == 3
        assert row["mismatches"] == 0
    v = res["verified"]
    assert v["reads_checked"] == 5 * 3 * 300 and v["read_mismatches"] == 0
    assert v["file_blocks_checked"] > 0 and v["file_mismatches"] == 0
    for name in ("a/b read", "a/b write", "a/b_udp read", "a/b_udp write"):
        assert all(res["ratios"][name][m] > 0 for m in METRICS)
    assert set(res["claim"]) == {"read", "write"}
    assert all(t > 0 for t in res["direct_split_us"].values())
    assert not list(tmp_path.iterdir())  # the backing files went with the run


def test_a_read_of_the_wrong_bytes_fails_the_check(tmp_path, monkeypatch):
    """The verification is real: a path that returns another block is caught."""
    bench = load_bench("i2o_bypass")
    base = bytes(range(256)) * 16
    writes, reads, expected = bench.workload(0, 50, 64, base)
    path = bench.DirectInProcess(str(tmp_path / "d.img"), 64 * bench.BLOCK, False)
    try:
        bench.phase(path, "write", writes, expected)
        assert bench.phase(path, "read", reads, expected)["mismatches"] == 0
        wrong = {o: expected[reads[0]] for o in expected}  # every block "should" be one block
        assert bench.phase(path, "read", reads, wrong)["mismatches"] > 0
    finally:
        path.close()
