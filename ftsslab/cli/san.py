"""``ftsslab san``: perftest's tools between two `sanic` nodes of a running lab (seed 003).

As ``ib_write_bw`` and friends exchange their keys and addresses out of band, the tool does it
for the nodes: the responder allocates a key and binds it over its buffer (its first process's
first segment), the requester runs ``--iters`` work requests against it through the RC QP
that connects the two (``depth`` posted at once for bandwidth; one after another, each timed,
for latency), and the responder deallocates the key. The figures are the node's own: the
requester's first post to its last completion, on its monotonic clock. MB is 2^20 bytes, as
perftest counts it.
"""

from __future__ import annotations

import json
import time
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from . import UserError, app, out
from .nodes import LabNodes
from .running import LabOpt

san_app = typer.Typer(help="perftest-style tools between two sanic nodes of a running lab.",
                      no_args_is_help=True)
app.add_typer(san_app, name="san", rich_help_panel="Systems")

MB = 1 << 20
PAGE = 4096
MAX_RECV = 1024  # receives a QP holds: the most messages of one send-bw
WAIT = 300.0  # seconds a test may take before the tool gives up

Requester = Annotated[str, typer.Argument(help="The sanic node that posts the work.")]
Responder = Annotated[str, typer.Argument(help="The sanic node whose memory it targets.")]
SizeOpt = Annotated[int, typer.Option("--size", "-s", min=1, max=1 << 24,
                                      help="Bytes per message.")]
ItersOpt = Annotated[int, typer.Option("--iters", "-n", min=1, max=1_000_000,
                                       help="Messages to send.")]
QpOpt = Annotated[str | None, typer.Option("--qp", help="The requester's QP (default: its "
                                                        "first RC QP to the responder).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="JSON for machines.")]


class _Lab(LabNodes):
    """The two nodes, and the QP between them."""

    def __init__(self, lab: str | None, a: str, b: str, qp: str | None) -> None:
        super().__init__(lab, (a, b), "sanic")
        scenario = self.scenario
        self.a, self.b = a, b
        qps = scenario.node(a).options.get("qps", {})
        to_b = [q for q, o in qps.items() if o.get("type", "rc") == "rc"
                and o["peer"].partition(".")[0] == b]
        if qp is not None and qp not in to_b:
            raise UserError(f"{a} has no RC QP {qp!r} to {b}"
                            + (f" (it has: {', '.join(to_b)})" if to_b else ""))
        if not to_b:
            raise UserError(f"{a} has no RC QP connected to {b}")
        self.qp = qp or to_b[0]
        peer = qps[self.qp]["peer"].partition(".")[2] or self.qp
        self.remote_qp = peer
        bopts = scenario.node(b).options
        self.b_process = bopts["qps"][peer]["process"]
        esid, seg = next(iter(bopts["processes"][self.b_process]["segments"].items()))
        self.b_base = int(str(esid), 0) << 28
        self.b_mapped = (seg if isinstance(seg, int) else seg.get("mapped", seg["pages"])) * PAGE


def _run(lab: str | None, a: str, b: str, qp: str | None, opcode: str, size: int, iters: int,
         latency: bool) -> dict:
    L = _Lab(lab, a, b, qp)
    if size > L.b_mapped:
        raise UserError(f"{size} bytes do not fit in {b}'s buffer ({L.b_mapped} bytes mapped "
                        f"in {L.b_process}'s first segment)")
    if opcode == "send" and iters > MAX_RECV:
        raise UserError(f"send-bw: {b} posts one receive per message, and a QP holds "
                        f"{MAX_RECV}: --iters at most {MAX_RECV}")
    key = f"perf-{time.monotonic_ns()}"
    since_b = L.logged_since(b)
    L.verb(b, op="allocate_rkey", process=L.b_process, key=key)
    made = L.wait_for(b, since_b, lambda e: e.get("kind") == "verb" and e.get("key") == key,
                      10.0)
    if made.get("result") != "OK":
        raise UserError(f"{b}: allocate_rkey: {made.get('error')}")
    try:
        L.verb(b, op="bind_rkey", process=L.b_process, key=key, address=L.b_base, length=size,
               access=["REMOTE_WRITE", "REMOTE_READ"])
        if opcode == "send":
            L.verb(b, op="post_recv", qp=L.remote_qp, address=L.b_base, length=size,
                   count=iters)
        since_a = L.logged_since(a)
        args = {"op": "post_send", "qp": L.qp, "opcode": opcode, "length": size,
                "count": iters, "depth": 1 if latency else 256}
        if opcode != "send":
            args |= {"rkey": made["rkey"], "address": L.b_base}
        L.verb(a, **args)
        burst = L.wait_for(a, since_a, lambda e: e.get("kind") == "burst"
                           and e.get("qp") == L.qp and e.get("count") == iters, WAIT)
    finally:
        L.verb(b, op="deallocate_rkey", process=L.b_process, key=key)
    secs = burst.get("seconds") or 0.0
    report = {"requester": a, "responder": b, "qp": L.qp, "opcode": opcode, "bytes": size,
              "iterations": iters, "completed": burst["success"],
              "first_error": burst["first_error"], "seconds": secs}
    if latency:
        report |= {"t_min_us": burst["lat_min_us"], "t_typical_us": burst["lat_p50_us"],
                   "t_99_us": burst["lat_p99_us"]}
    else:
        report |= {"bw_average_MBps": burst["bytes"] / secs / MB if secs else 0.0,
                   "msg_rate_Mpps": burst["success"] / secs / 1e6 if secs else 0.0}
    return report


def _show(report: dict, as_json: bool, title: str) -> None:
    if as_json:
        out.print_json(json.dumps(report))
    elif "t_min_us" in report:
        t = Table(*map(escape, ("#bytes", "#iterations", "t_min[usec]", "t_typical[usec]",
                                "99% percentile[usec]")), title=title)
        t.add_row(str(report["bytes"]), str(report["iterations"]), f"{report['t_min_us']:.2f}",
                  f"{report['t_typical_us']:.2f}", f"{report['t_99_us']:.2f}")
        out.print(t)
    else:
        t = Table(*map(escape, ("#bytes", "#iterations", "BW average[MB/sec]",
                                "MsgRate[Mpps]")), title=title)
        t.add_row(str(report["bytes"]), str(report["iterations"]),
                  f"{report['bw_average_MBps']:.2f}", f"{report['msg_rate_Mpps']:.6f}")
        out.print(t)
    if report["first_error"]:
        out.print(f"[red]{report['iterations'] - report['completed']} of "
                  f"{report['iterations']} did not complete: {report['first_error']}[/red]")
        raise typer.Exit(1)


@san_app.command("write-bw")
def write_bw(a: Requester, b: Responder, size: SizeOpt = 65536, iters: ItersOpt = 1000,
             qp: QpOpt = None, lab: LabOpt = None, as_json: JsonOpt = False) -> None:
    """RDMA WRITE bandwidth from A into B's memory (ib_write_bw)."""
    _show(_run(lab, a, b, qp, "write", size, iters, False), as_json,
          f"RDMA_Write BW {a} -> {b}")


@san_app.command("read-bw")
def read_bw(a: Requester, b: Responder, size: SizeOpt = 65536, iters: ItersOpt = 1000,
            qp: QpOpt = None, lab: LabOpt = None, as_json: JsonOpt = False) -> None:
    """RDMA READ bandwidth: A reads B's memory (ib_read_bw)."""
    _show(_run(lab, a, b, qp, "read", size, iters, False), as_json, f"RDMA_Read BW {a} <- {b}")


@san_app.command("send-bw")
def send_bw(a: Requester, b: Responder, size: SizeOpt = 65536, iters: ItersOpt = 1000,
            qp: QpOpt = None, lab: LabOpt = None, as_json: JsonOpt = False) -> None:
    """SEND bandwidth from A to receives B posts (ib_send_bw; at most 1024 messages)."""
    _show(_run(lab, a, b, qp, "send", size, iters, False), as_json, f"Send BW {a} -> {b}")


@san_app.command("write-lat")
def write_lat(a: Requester, b: Responder, size: SizeOpt = 8, iters: ItersOpt = 1000,
              qp: QpOpt = None, lab: LabOpt = None, as_json: JsonOpt = False) -> None:
    """RDMA WRITE latency, one at a time, post to completion (ib_write_lat's figure is half
    a ping-pong; this is the whole round trip the requester waits for)."""
    _show(_run(lab, a, b, qp, "write", size, iters, True), as_json,
          f"RDMA_Write latency {a} -> {b}")


@san_app.command("read-lat")
def read_lat(a: Requester, b: Responder, size: SizeOpt = 8, iters: ItersOpt = 1000,
             qp: QpOpt = None, lab: LabOpt = None, as_json: JsonOpt = False) -> None:
    """RDMA READ latency, one at a time, post to completion (ib_read_lat)."""
    _show(_run(lab, a, b, qp, "read", size, iters, True), as_json,
          f"RDMA_Read latency {a} <- {b}")
