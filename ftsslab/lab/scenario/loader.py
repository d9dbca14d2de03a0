"""The entry points: a file or text -> ``model.Scenario``, or ``ScenarioErrors``."""

from __future__ import annotations

import re
from pathlib import Path

from yaml.nodes import Node

from ..kinds import did_you_mean, get_kind
from ..model import Exec, Scenario, Step
from ..model import Node as ModelNode
from .context import Context
from .errors import ScenarioError, ScenarioErrors
from .expectations import load_expectations
from .impair import load_seed
from .links import check_loops, load_links
from .nodes import check_topology, load_nodes
from .safe_yaml import MAX_BYTES, compose
from .steps import load_steps
from .values import mapping
from .values import text as read_text

NAME_RE = re.compile(r"[a-z0-9-]+")
NAME_MAX = 63
TOP_KEYS = ("name", "description", "backend", "seed", "nodes", "links", "steps", "expect")
BACKENDS = ("auto", "veth", "sim")


def load_scenario(path: str | Path) -> Scenario:
    """Read and validate a scenario file."""
    name = str(path)
    try:
        p = Path(path)
        size = p.stat().st_size
        if size > MAX_BYTES:
            raise ScenarioErrors([ScenarioError(
                "", None, f"file is {size} bytes, more than the 1 MiB limit",
                "split the scenario or generate it", name)])
        data = p.read_bytes()
    except OSError as exc:
        raise ScenarioErrors([ScenarioError(
            "", None, f"cannot read the file: {exc.strerror or exc}", "check the path", name)
        ]) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ScenarioErrors([ScenarioError(
            "", line, "the file is not UTF-8 text", "save it as UTF-8", name)]) from None
    return load_scenario_text(text, name)


def load_scenario_text(text: str, path: str = "<string>") -> Scenario:
    """Validate scenario text; ``path`` names it in messages and in ``Scenario.path``."""
    if not isinstance(text, str):
        raise ScenarioErrors([ScenarioError("", None, "scenario text must be a str", "", path)])
    ctx = Context(path)
    try:
        scenario = _load(ctx, text)
    except RecursionError:
        ctx.err("", None, "the document is nested too deeply", "flatten it")
        scenario = None
    except Exception as exc:  # a loader bug must still come out as a scenario error
        ctx.err("", None, f"internal error in the scenario loader: {type(exc).__name__}: "
                f"{exc}", "please report this with the file")
        scenario = None
    if ctx.errors or scenario is None:
        raise ScenarioErrors(ctx.report())
    return scenario


def _load(ctx: Context, text: str) -> Scenario | None:
    """Every part in file order; topology checks once links are known, loops at the end."""
    root = compose(ctx, text)
    if root is None:
        return None
    top = mapping(ctx, root, "", TOP_KEYS, required=("name", "nodes"))
    assert top is not None
    value = {key: vnode for key, (_, vnode) in top.items()}
    name = _name(ctx, value["name"]) if "name" in value else ""
    description = ""
    if "description" in value:
        description = read_text(ctx, value["description"], "description") or ""
    backend = _backend(ctx, value["backend"]) if "backend" in value else "auto"
    seed = load_seed(ctx, value["seed"], "seed") if "seed" in value else 0
    nodes = load_nodes(ctx, value.get("nodes"))
    links = load_links(ctx, value.get("links"))
    check_topology(ctx, nodes, links)
    steps = load_steps(ctx, value.get("steps"))
    expectations = load_expectations(ctx, value.get("expect"), "expect", None)
    check_loops(ctx, links, nodes)
    if backend == "sim":
        _check_sim(ctx, value["backend"], nodes, steps)
    if ctx.errors:
        return None
    return Scenario(name=name, path=ctx.file, description=description, nodes=tuple(nodes),
                    links=tuple(links), steps=tuple(steps), expectations=tuple(expectations),
                    backend=backend, seed=seed or 0)  # type: ignore[arg-type]


def _name(ctx: Context, node: Node) -> str:
    got = read_text(ctx, node, "name")
    if got is None:
        return ""
    if not NAME_RE.fullmatch(got) or len(got) > NAME_MAX:
        ctx.err("name", node, f"bad scenario name {got!r}",
                "lower-case letters, digits and '-', at most 63 characters")
    return got


def _backend(ctx: Context, node: Node) -> str:
    got = read_text(ctx, node, "backend")
    if got is None:
        return "auto"
    if got not in BACKENDS:
        ctx.err("backend", node, f"unknown backend {got!r}", did_you_mean(got, BACKENDS))
        return "auto"
    return got


def _check_sim(ctx: Context, where: Node, nodes: list[ModelNode], steps: list[Step]) -> None:
    """``backend: sim`` only when nothing in the scenario needs a real kernel."""
    needs_kernel = any(isinstance(s, Exec) for s in steps)  # (a fetch step does not)
    kernel_kinds = sorted({n.kind for n in nodes if (k := get_kind(n.kind)) and k.needs_kernel})
    if needs_kernel or kernel_kinds:
        why = "exec steps need" if needs_kernel else \
            f"node kind {kernel_kinds[0]!r} needs"
        ctx.err("backend", where, f"backend sim cannot run this scenario: {why} "
                "a real kernel stack", "use backend: veth (or auto)")
