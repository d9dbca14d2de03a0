"""FTSS store: acks/s and ack latency for group commit, fsync-per-record and SQLite, in one run.

    python bench/store.py [--seconds S] [--members N] [--dir D] [--json]

Every producer thread loops "submit one 64-byte record, wait for its ack". Modes: (a) the store
with group commit, (b) the same store with ``max_batch=1`` (one fsync round per record: the
baseline), (c) SQLite in WAL mode with ``synchronous=FULL``, one connection per thread, one
transaction per record. The raw latency of a small write + fsync is measured first, on the same
disk, because absolute figures mean nothing across machines: compare the ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import tempfile
import threading
import time
from collections.abc import Callable

from rich.console import Console
from rich.table import Table

from ftsslab.ftss.store import Store

PAYLOAD = bytes(64)
THREADS = (1, 16, 64)


def _pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def raw_fsync(root: str, n: int = 400) -> dict:
    fd = os.open(os.path.join(root, "raw"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    lat = []
    try:
        for _ in range(n):
            t = time.perf_counter()
            os.write(fd, PAYLOAD)
            os.fsync(fd)
            lat.append(time.perf_counter() - t)
    finally:
        os.close(fd)
    return {"p50_us": _pct(lat, 0.5) * 1e6, "p99_us": _pct(lat, 0.99) * 1e6}


def _drive(make_ack: Callable[[], Callable[[int], None]], threads: int, seconds: float) -> dict:
    """Run ``threads`` closed-loop producers; each gets its own ack function from ``make_ack``."""
    lat: list[list[float]] = [[] for _ in range(threads)]
    start = threading.Barrier(threads + 1)
    stop = threading.Event()

    def producer(i: int) -> None:
        ack = make_ack()
        mine, n = lat[i], i << 40
        start.wait()
        while not stop.is_set():
            t = time.perf_counter()
            ack(n)
            mine.append(time.perf_counter() - t)
            n += 1

    workers = [threading.Thread(target=producer, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    start.wait()
    t0 = time.perf_counter()
    time.sleep(seconds)
    stop.set()
    for w in workers:
        w.join()
    elapsed = time.perf_counter() - t0
    flat = [x for per in lat for x in per]
    return {
        "acks_per_s": len(flat) / elapsed,
        "p50_us": _pct(flat, 0.5) * 1e6,
        "p99_us": _pct(flat, 0.99) * 1e6,
    }


def bench_store(root: str, members: int, threads: int, seconds: float, max_batch: int | None):
    dirs = [os.path.join(root, f"m{i}") for i in range(members)]
    store = Store(dirs, max_batch=max_batch)
    try:
        return _drive(lambda: lambda n: store.submit(1, n, PAYLOAD).result(), threads, seconds)
    finally:
        store.close()
        for d in dirs:
            shutil.rmtree(d)


def bench_sqlite(root: str, threads: int, seconds: float) -> dict:
    path = os.path.join(root, "store.db")
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("CREATE TABLE rec (seq INTEGER PRIMARY KEY, kind INT, key INT, payload BLOB)")
    conns: list[sqlite3.Connection] = []

    def make_ack() -> Callable[[int], None]:
        db = sqlite3.connect(path, timeout=60, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA synchronous=FULL")
        conns.append(db)

        def ack(n: int) -> None:
            db.execute("BEGIN IMMEDIATE")
            db.execute("INSERT INTO rec (kind, key, payload) VALUES (1, ?, ?)", (n, PAYLOAD))
            db.execute("COMMIT")

        return ack

    try:
        return _drive(make_ack, threads, seconds)
    finally:
        for db in conns:
            db.close()
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(path + suffix):
                os.remove(path + suffix)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=1.5, help="per mode and thread count")
    ap.add_argument("--members", type=int, default=2, help="RAID 1 mirror members")
    ap.add_argument("--dir", default=None, help="where to write (default: a temp dir)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    root = tempfile.mkdtemp(prefix="ftss-store-bench-", dir=args.dir)
    try:
        fsync = raw_fsync(root)
        rows = []
        for threads in THREADS:
            for mode, run in (
                ("group commit", lambda t: bench_store(root, args.members, t, args.seconds, None)),
                ("fsync per record", lambda t: bench_store(root, args.members, t, args.seconds, 1)),
                ("sqlite wal full", lambda t: bench_sqlite(root, t, args.seconds)),
            ):
                rows.append({"mode": mode, "threads": threads, **run(threads)})
    finally:
        shutil.rmtree(root, ignore_errors=True)
    lone = next(r for r in rows if r["mode"] == "group commit" and r["threads"] == 1)
    many = next(r for r in rows if r["mode"] == "group commit" and r["threads"] == 64)
    targets = {
        "group_commit_64_acks_per_s": many["acks_per_s"],
        "target_15k_met": many["acks_per_s"] >= 15000,
        "lone_p50_over_fsync_p50": lone["p50_us"] / fsync["p50_us"],
        "target_2x_met": lone["p50_us"] <= 2 * fsync["p50_us"],
    }
    report = {"members": args.members, "raw_fsync": fsync, "rows": rows, "targets": targets}
    if args.json:
        print(json.dumps(report, indent=2))
        return
    table = Table(title=f"FTSS store, {args.members} mirror member(s), 64-byte records")
    for col in ("mode", "threads", "acks/s", "p50 µs", "p99 µs"):
        table.add_column(col, justify="left" if col == "mode" else "right")
    for r in rows:
        table.add_row(r["mode"], str(r["threads"]), f"{r['acks_per_s']:,.0f}",
                      f"{r['p50_us']:,.0f}", f"{r['p99_us']:,.0f}")
    console = Console()
    console.print(table)
    console.print(f"raw write+fsync: p50 {fsync['p50_us']:.0f} µs, p99 {fsync['p99_us']:.0f} µs")
    console.print(
        f"group commit @64: {many['acks_per_s']:,.0f} acks/s (target 15k: "
        f"{'met' if targets['target_15k_met'] else 'missed'}); lone ack p50 = "
        f"{targets['lone_p50_over_fsync_p50']:.2f}× fsync p50 (target ≤ 2: "
        f"{'met' if targets['target_2x_met'] else 'missed'})"
    )


if __name__ == "__main__":
    main()
