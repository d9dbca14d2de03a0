"""Node kinds: what a scenario's ``kind:`` may name, and what each kind allows.

The loader (``ftsslab.lab.scenario``) checks every node against its ``KindSpec``: its
options (``validate_options``), then those options against the links
(``validate_topology``: what a backend would refuse at lab-up is an error in the
file instead), whether ``kill``/``restart`` apply
(``has_process``), whether only the veth backend can run it (``needs_kernel``),
whether its interfaces take IPv4 addresses, whether it has a forwarding table
(``table`` steps and expectations), and whether it passes frames between its
interfaces (the loader refuses loops of such nodes: there is no STP).

A kind is registered once, with ``register_kind(KindSpec(...))``: its options
(``option_schema`` builds a validator and defaults from a small declarative table),
its sim model and its veth driver. The modules that register kinds are listed in
``ftsslab/systems.py`` and imported on the first lookup, so the engine imports no
system and no system module is imported twice over a cycle.
"""

from __future__ import annotations

import difflib
import importlib
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .veth.drivers import VethDriver

if TYPE_CHECKING:
    from .model import Node, Scenario


@dataclass(frozen=True)
class OptionIssue:
    """One problem with a node's options.

    ``key`` is the path below the node (``"disks"``, ``"disks[1]"``, ``""`` for the
    node as a whole); the loader turns it into ``nodes.<name>.<key>`` and finds its line.
    """

    key: str
    message: str
    hint: str = ""


OptionValidator = Callable[[Mapping[str, Any]], list[OptionIssue]]


@dataclass(frozen=True)
class Port:
    """One interface of a node, with the far end of its link."""

    iface: str
    mac: str
    mtu: int
    peer_node: str
    peer_kind: str
    peer_iface: str
    ipv4: str | None = None  # "10.0.0.11/24" when the endpoint has one


@dataclass(frozen=True)
class NodeView:
    """A node as a topology check sees it: options with defaults, and its ports."""

    name: str
    kind: str
    options: Mapping[str, Any]  # the kind's defaults under what the file gives
    given: frozenset[str]  # option keys written in the file (the rest are defaults)
    ports: Mapping[str, Port]  # by interface, in order of appearance in `links`


# (the node, every node of the scenario by name) -> issues, keyed like OptionIssue
TopologyValidator = Callable[[NodeView, Mapping[str, NodeView]], list[OptionIssue]]


# (the node, the scenario) -> the node's sim model (a sans-IO core; see ``sim.py``)
SimFactory = Callable[["Node", "Scenario"], Any]

# (a `verb` step's arguments with its ``op``, the node's options, every node's options: a verb
# may name what another node has) -> issues, keyed below the step
VerbValidator = Callable[[Mapping[str, Any], Mapping[str, Any], Mapping[str, Mapping[str, Any]]],
                         list[OptionIssue]]


@dataclass(frozen=True)
class KindSpec:
    """Everything about one node kind, registered once: the loader, both backends and
    the docs read it from here."""

    name: str
    has_process: bool                 # a process of its own: `kill:` / `restart:` apply
    needs_kernel: bool                # only the veth backend can run it
    validate_options: OptionValidator  # every key of the node except `kind`
    summary: str                      # one line for docs and `ftsslab` listings
    sim: SimFactory | None = None     # its model in the sim backend (None: veth only)
    veth: VethDriver | None = None    # how the veth backend realizes it
    defaults: Mapping[str, Any] = field(default_factory=dict)  # merged under the given options
    ip_interfaces: bool = False       # endpoints of this kind may carry `ipv4:`
    has_table: bool = False           # a seed-002 forwarding table (`table:` steps/expectations)
    forwards: bool = False            # passes frames between its interfaces (no loops allowed)
    # the node (by its options) whose link this one never bridges into a loop -- a hot
    # standby bridges its client ports only after cutting its link to the active: that
    # link is left out of the loop check
    fenced_peer: Callable[[Mapping[str, Any]], str | None] | None = None
    hands_off: bool = False           # its process answers `handoff` steps (a live
    #                                   connection moves to another node of the kind)
    kill_stops_dataplane: bool = True  # a killed process takes its frames with it (a
    #                                    switch's kernel data plane keeps forwarding)
    link_mtu: int | None = None       # default MTU of a link whose two ends both set one
    # veth: its ends keep the kernel's checksum offload (and with it TSO/GSO) on a link whose
    # other end's kind keeps it too -- nothing there reads or writes frames in user space that
    # would need complete checksums or frames no bigger than the MTU (the default turns it off)
    keeps_offload: bool = False
    reserved_ifaces: frozenset[str] = frozenset({"lo"})  # names a scenario may not use
    # options against the links; runs only when validate_options found nothing
    validate_topology: TopologyValidator | None = None
    # its process takes `verb` steps (an application's calls on the node): their arguments
    verbs: VerbValidator | None = None


_KINDS: dict[str, KindSpec] = {}
_loaded = False
SYSTEMS = "ftsslab.systems"  # the one module that lists what registers kinds


def _load() -> None:
    """Import the systems list once, on the first lookup: the engine names no system."""
    global _loaded
    if not _loaded:
        _loaded = True
        importlib.import_module(SYSTEMS)


def register_kind(spec: KindSpec, *, replace: bool = False) -> KindSpec:
    """Add a kind; registering a name twice is an error unless ``replace``."""
    if not spec.name or not spec.name.replace("-", "").isalnum() or spec.name != spec.name.lower():
        raise ValueError(f"bad kind name {spec.name!r} (lower-case letters, digits, '-')")
    if spec.name in _KINDS and not replace:
        raise ValueError(f"kind {spec.name!r} is already registered")
    _KINDS[spec.name] = spec
    return spec


def unregister_kind(name: str) -> None:
    """Remove a kind (tests that register temporary kinds clean up with this)."""
    _KINDS.pop(name, None)


def get_kind(name: str) -> KindSpec | None:
    _load()
    return _KINDS.get(name)


def kind_names() -> list[str]:
    _load()
    return sorted(_KINDS)


def kinds() -> list[KindSpec]:
    _load()
    return [_KINDS[n] for n in sorted(_KINDS)]


def did_you_mean(word: str, choices: list[str] | tuple[str, ...]) -> str:
    """``"did you mean 'x'?"`` for the closest choice, else the list of choices."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.5)
    if close:
        return f"did you mean {close[0]!r}?"
    if not choices:
        return "nothing is allowed here"
    return "expected one of: " + ", ".join(sorted(choices))


# ---- a small declarative option schema ----------------------------------------------------

@dataclass(frozen=True)
class Option:
    """One option of a kind: its Python type(s), whether required, default, allowed values.

    ``range`` bounds a number (inclusive; floats must be finite), or the length of a
    list. ``check`` returns a message (or an ``OptionIssue`` keyed below the option,
    ``"[1].macs"``) when the value is bad. ``doc`` is the hint: say the range there.
    """

    types: type | tuple[type, ...]
    required: bool = False
    default: Any = None
    choices: tuple[Any, ...] | None = None
    range: tuple[int | float, int | float] | None = None
    check: Callable[[Any], str | OptionIssue | None] | None = None
    doc: str = ""


def _type_name(types: type | tuple[type, ...]) -> str:
    names = {bool: "true/false", int: "an integer", float: "a number", str: "a string",
             list: "a list", dict: "a mapping"}
    seq = types if isinstance(types, tuple) else (types,)
    return " or ".join(names.get(t, t.__name__) for t in seq)


def option_schema(fields: Mapping[str, Option]) -> tuple[OptionValidator, dict[str, Any]]:
    """A validator and the defaults for a kind whose options are ``fields``."""
    fields = dict(fields)

    def validate(options: Mapping[str, Any]) -> list[OptionIssue]:
        issues: list[OptionIssue] = []
        for key, value in options.items():
            opt = fields.get(key)
            if opt is None:
                hint = did_you_mean(key, tuple(fields)) if fields else "this kind takes no options"
                issues.append(OptionIssue(key, f"unknown option {key!r}", hint))
                continue
            types = opt.types if isinstance(opt.types, tuple) else (opt.types,)
            ok = isinstance(value, types) and not (isinstance(value, bool) and bool not in types)
            if not ok:
                issues.append(OptionIssue(key, f"expected {_type_name(opt.types)}, got {value!r}",
                                          opt.doc or f"{key}: {_type_name(opt.types)}"))
                continue
            if opt.choices is not None and value not in opt.choices:
                issues.append(OptionIssue(key, f"{value!r} is not allowed",
                                          "one of: " + ", ".join(map(str, opt.choices))))
                continue
            if opt.range is not None:
                why = _out_of_range(value, opt.range)
                if why:
                    issues.append(OptionIssue(key, why, opt.doc))
                    continue
            if opt.check is not None:
                why = opt.check(value)
                if isinstance(why, OptionIssue):
                    issues.append(OptionIssue(key + why.key, why.message, why.hint or opt.doc))
                elif why:
                    issues.append(OptionIssue(key, why, opt.doc))
        for key, opt in fields.items():
            if opt.required and key not in options:
                issues.append(OptionIssue("", f"option {key!r} is required", opt.doc))
        return issues

    defaults = {k: o.default for k, o in fields.items() if not o.required and o.default is not None}
    return validate, defaults


def _out_of_range(value: Any, bounds: tuple[int | float, int | float]) -> str | None:
    lo, hi = bounds
    if isinstance(value, list):
        return None if lo <= len(value) <= hi else f"{len(value)} items; {lo}..{hi} allowed"
    if isinstance(value, float) and not math.isfinite(value):
        return f"{value} is not a finite number ({lo}..{hi})"
    if isinstance(value, int | float) and lo <= value <= hi:
        return None
    if value <= 0 < lo:
        return f"{value}: must be > 0 ({lo}..{hi})"
    return f"{value} is out of range ({lo}..{hi})"


NO_OPTIONS, _ = option_schema({})
