"""Safe packet expressions: Scapy's ``/`` syntax, parsed with ``ast``, never evaluated.

``Ether(dst="02:00:00:00:00:02")/IP(dst="10.0.0.2")/UDP(dport=4791)/b"hi"`` is accepted:
calls of known layer constructors (and a short allowlist of value helpers) with
literal arguments, joined by ``/``. Names, attributes, subscripts, comprehensions,
lambdas and every other construct are refused, so a scenario file or a command
line can never make ftsslab run code.
"""

from __future__ import annotations

import ast
import logging
import re
import socket
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from scapy.config import conf
from scapy.fields import FieldListField, IP6Field, IPField, MACField, MultipleTypeField
from scapy.fields import _FieldContainer as FieldContainer
from scapy.layers.inet6 import IP6ListField
from scapy.packet import NoPayload, Packet, Raw

from ftsslab.layers import check_tcp_options

from .catalog import all_layers


class ExprError(ValueError):
    """A refused or failing expression; the message is one line for the user."""


def one_line(exc: BaseException) -> str:
    """Scapy's multi-line build errors folded into one line, without its RawVal tip."""
    text = str(exc).split("To inject bytes")[0]
    return " ".join(text.split()) or type(exc).__name__


_LITERALS = (int, float, str, bytes, bool, type(None))

# Bounds, so no expression can exhaust the recursion limit, memory or time: Scapy builds and
# dissects a packet recursively (a few frames per layer) and '/' copies what is left of it.
MAX_CHARS = 1_000_000   # the expression's text
MAX_LAYERS = 100        # layers joined by '/'
MAX_DEPTH = 32          # nesting inside one layer's arguments (calls, lists, signs, '|')
MAX_NODES = 100_000     # syntax-tree nodes in all

NOT_LITERAL = "addresses must be literal IPv4/IPv6 addresses, not host names, networks or ranges"
_MAC = re.compile(r"[0-9A-Fa-f]{1,2}(:[0-9A-Fa-f]{1,2}){5}")


def default_namespace() -> dict[str, Callable[..., Any]]:
    """Layer constructors by class name plus the layer modules' craft helpers."""
    import ftsslab.layers as layers

    names: dict[str, Callable[..., Any]] = dict(all_layers())
    for module in layers.MODULES:
        for helper in getattr(module, "CRAFT_HELPERS", ()):
            names[helper.__name__] = helper
    return names


class _Builder:
    def __init__(self, text: str, namespace: Mapping[str, Callable[..., Any]]):
        self.text = text
        self.ns = namespace

    def fail(self, node: ast.AST, why: str) -> ExprError:
        col = getattr(node, "col_offset", 0)
        return ExprError(f"{why} (at column {col + 1})")

    def value(self, node: ast.AST) -> Any:
        """A literal, a container of literals, or an allowed call."""
        if isinstance(node, ast.Constant):
            if isinstance(node.value, _LITERALS):
                return node.value
            raise self.fail(node, f"literal {node.value!r} is not allowed")
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
            inner = self.value(node.operand)
            if isinstance(inner, int | float) and not isinstance(inner, bool):
                return -inner if isinstance(node.op, ast.USub) else inner
            raise self.fail(node, "a sign goes only before a number")
        if isinstance(node, ast.List | ast.Tuple):
            items = [self.value(e) for e in node.elts]
            return items if isinstance(node, ast.List) else tuple(items)
        if isinstance(node, ast.Dict):
            if any(k is None for k in node.keys):
                raise self.fail(node, "'**' in a dict is not allowed")
            return {
                self.value(k): self.value(v) for k, v in zip(node.keys, node.values, strict=True)
            }
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
            left, right = self.value(node.left), self.value(node.right)
            if isinstance(left, int) and isinstance(right, int):
                return left | right
            raise self.fail(node, "'|' combines integers only")
        if isinstance(node, ast.Call):
            return self.call(node)
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
            return self.stack(node)
        if isinstance(node, ast.Name):
            hint = f"; did you mean {node.id}()?" if node.id in self.ns else ""
            raise self.fail(node, f"bare name {node.id!r} is not allowed{hint}")
        raise self.fail(node, f"{type(node).__name__} is not allowed in a packet expression")

    def call(self, node: ast.Call) -> Any:
        if not isinstance(node.func, ast.Name):
            raise self.fail(node, "only plain layer names can be called (no attributes)")
        name = node.func.id
        func = self.ns.get(name)
        if func is None:
            raise self.fail(node, f"unknown layer {name!r} (see `ftsslab layers`)")
        if any(k.arg is None for k in node.keywords):
            raise self.fail(node, "'**kwargs' is not allowed")
        if any(isinstance(a, ast.Starred) for a in node.args):
            raise self.fail(node, "'*args' is not allowed")
        args = [self.value(a) for a in node.args]
        kwargs = {k.arg: self.value(k.value) for k in node.keywords}
        if isinstance(func, type) and issubclass(func, Packet):
            self.check_fields(node, func, kwargs)
        try:
            return func(*args, **kwargs)
        except Exception as exc:  # Scapy raises many types on bad values
            raise self.fail(node, f"{name}(...): {one_line(exc)}") from None

    def check_fields(self, node: ast.AST, cls: type[Packet], kwargs: Mapping[str, Any]) -> None:
        fields = {f.name: f for f in cls.fields_desc}
        for key, value in kwargs.items():
            if key not in fields:
                raise self.fail(node, f"{cls.__name__} has no field {key!r}; "
                                      f"fields: {', '.join(sorted(fields))}")
            why = _address_problem(fields[key], value)
            if why:
                raise self.fail(node, f"{cls.__name__}.{key}: {why}")

    def operand(self, node: ast.AST) -> Packet:
        val = self.value(node)
        if isinstance(val, str | bytes):
            return Raw(load=val)
        if not isinstance(val, Packet):
            raise self.fail(node, f"{val!r} is not a packet layer")
        return val

    def stack(self, node: ast.AST) -> Packet:
        pkt = None
        for item in _layers(node):
            layer = self.operand(item)
            pkt = layer if pkt is None else pkt / layer
        return pkt


def _layers(node: ast.AST) -> list[ast.AST]:
    """The operands of a '/' chain, left to right (walked without recursion)."""
    items: list[ast.AST] = []
    while isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
        items.append(node.right)
        node = node.left
    items.append(node)
    return items[::-1]


def _check_size(tree: ast.Expression) -> None:
    """Refuse what would exhaust the builder or Scapy: too many layers, nodes or levels."""
    layers = _layers(tree.body)
    if len(layers) > MAX_LAYERS:
        raise ExprError(f"{len(layers)} layers joined by '/'; at most {MAX_LAYERS}")
    count, nodes = len(layers), 0
    todo = [(item, 1) for item in layers]
    while todo and count <= MAX_LAYERS:
        node, depth = todo.pop()
        nodes += 1
        if nodes > MAX_NODES:
            raise ExprError(f"expression too large: more than {MAX_NODES} syntax nodes")
        if depth > MAX_DEPTH:
            raise ExprError(f"expression nested too deeply: more than {MAX_DEPTH} levels "
                            f"(at column {getattr(node, 'col_offset', 0) + 1})")
        count += isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div)  # a nested '/'
        todo.extend((child, depth + 1) for child in ast.iter_child_nodes(node))
    if count > MAX_LAYERS:
        raise ExprError(f"more than {MAX_LAYERS} layers joined by '/' (some in parentheses)")


def _leaf_fields(fld: Any) -> Iterator[tuple[Any, bool]]:
    """(field, takes a list) for each field a wrapper (conditional, multiple-type, list of)
    may hand a value to."""
    todo = [(fld, False)]
    while todo:
        f, listed = todo.pop()
        if isinstance(f, MultipleTypeField):
            todo += [(sub, listed) for sub, _ in f.flds] + [(f.dflt, listed)]
        elif isinstance(f, FieldContainer):
            todo.append((f.fld, listed))
        elif isinstance(f, FieldListField):
            todo.append((f.field, True))
        else:
            yield f, listed or isinstance(f, IP6ListField)


def _address_problem(fld: Any, value: Any) -> str | None:
    """Why ``value`` is not a literal address for an address field, or None.

    Scapy resolves whatever an IP field's value is not the literal of (a host name, a
    network, a range) by DNS, while crafting and while matching; a MAC field takes the
    characters of a name as its bytes. Neither may happen silently.
    """
    leaves = list(_leaf_fields(fld))
    families = {socket.AF_INET for f, _ in leaves if isinstance(f, IPField)}
    families |= {socket.AF_INET6 for f, _ in leaves if isinstance(f, IP6Field | IP6ListField)}
    mac = any(isinstance(f, MACField) for f, _ in leaves)
    if not (families or mac):
        return None
    listed = any(in_list for _, in_list in leaves)
    # (a list for a single IP field is Scapy's packet set: one packet per address)
    values = value if isinstance(value, list) or (listed and isinstance(value, tuple)) \
        else [value]
    for v in values:
        if v is None:
            continue
        if families and not _literal_ip(v, families):
            return f"{NOT_LITERAL} (got {v!r})"
        if mac and isinstance(v, str) and not _MAC.fullmatch(v):
            return f"MAC addresses must be literal, like 02:00:00:00:00:01 (got {v!r})"
    return None


def _literal_ip(value: Any, families: set[int]) -> bool:
    if isinstance(value, bytes):
        try:
            value = value.decode("ascii")
        except UnicodeDecodeError:
            return False
    if not isinstance(value, str):
        return False
    addr = value.partition("%")[0]  # a scope ("fe80::1%eth0") is not resolved
    for family in families:
        try:
            socket.inet_pton(family, addr)
        except OSError:
            continue
        return True
    return False


@contextmanager
def offline() -> Iterator[None]:
    """Build without ARP/ND: an unset Ether.dst becomes broadcast instead of a network query.

    Crafting must be deterministic and must never send traffic to resolve a MAC.
    """
    saved = conf.neighbor.resolvers
    conf.neighbor.resolvers = {}
    runtime = logging.getLogger("scapy.runtime")
    level = runtime.level
    runtime.setLevel(logging.ERROR)  # the "using broadcast" warning is expected here
    try:
        yield
    finally:
        conf.neighbor.resolvers = saved
        runtime.setLevel(level)


def _parse(text: str, namespace: Mapping[str, Callable[..., Any]] | None
           ) -> tuple[ast.Expression, _Builder]:
    if len(text) > MAX_CHARS:
        raise ExprError(f"expression too long: {len(text)} characters; at most {MAX_CHARS}")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as exc:
        raise ExprError(f"syntax error at column {exc.offset}: {exc.msg}") from None
    except (RecursionError, MemoryError):  # the parser's own limits, far above ours
        raise ExprError(f"expression too large or nested too deeply for the parser "
                        f"(at most {MAX_LAYERS} layers, {MAX_DEPTH} levels)") from None
    _check_size(tree)
    return tree, _Builder(text, namespace if namespace is not None else default_namespace())


def parse_packet(text: str, namespace: Mapping[str, Callable[..., Any]] | None = None) -> Packet:
    """Build the packet an expression describes, or raise ExprError.

    The result is frozen: re-dissected from its bytes, so computed lengths,
    checksums and addresses are the values a capture will show.
    """
    tree, builder = _parse(text, namespace)
    with offline():
        pkt = builder.stack(tree.body)
        try:
            check_tcp_options(pkt)  # Scapy would wrap the data offset: a corrupt header
            data = bytes(pkt)
        except Exception as exc:
            raise ExprError(f"cannot build {pkt.summary()}: {one_line(exc)}") from None
    if not data:  # e.g. b"" alone: nothing a link could carry
        raise ExprError("the expression builds an empty packet (0 bytes)")
    return pkt.__class__(data)


@dataclass(frozen=True)
class Pattern:
    """A packet pattern: layers in order (not necessarily adjacent), each with field values.

    Written like a packet expression: ``IP(dst="10.0.0.2")/UDP(dport=7)/b"hello"``
    matches any frame holding an IP layer to 10.0.0.2 and, above it, a UDP layer to
    port 7 whose payload bytes contain ``hello``.
    """

    text: str
    layers: tuple[tuple[type[Packet], tuple[tuple[str, Any], ...]], ...]

    def matches(self, pkt: Packet) -> bool:
        return self._last(pkt) is not None

    def count(self, pkt: Packet) -> int:
        """How many messages the frame counts for: 0 if it does not match, else what the
        last matched layer stands for -- its ``messages()`` if it has one (an FTSS ACK that
        answers several PKTs), otherwise 1."""
        last = self._last(pkt)
        if last is None:
            return 0
        messages = getattr(last, "messages", None)
        return messages() if callable(messages) else 1

    def _last(self, pkt: Packet) -> Packet | None:
        """The layer the pattern's last layer matched, None if the pattern does not match."""
        layer, last = pkt, None
        for cls, fields in self.layers:
            while not (isinstance(layer, cls) and _fields_equal(layer, fields)):
                if isinstance(layer, NoPayload):
                    return None
                layer = layer.payload
            last, layer = layer, layer.payload
        return last if last is not None else pkt


def _fields_equal(layer: Packet, fields: tuple[tuple[str, Any], ...]) -> bool:
    for name, want in fields:
        if name == "load" and isinstance(layer, Raw):
            if bytes(want if isinstance(want, bytes) else str(want).encode()) not in layer.load:
                return False
            continue
        fld = layer.get_field(name)
        got = layer.getfieldval(name)
        try:
            want_i = fld.any2i(layer, want)
        except Exception:
            return False
        if got != want_i and str(got) != str(want_i):
            return False
    return True


def parse_pattern(text: str, namespace: Mapping[str, Callable[..., Any]] | None = None) -> Pattern:
    """Parse a pattern (same syntax as packets; values are compared, nothing is built)."""
    tree, builder = _parse(text, namespace)
    layers = []
    for item in _layers(tree.body):
        if isinstance(item, ast.Constant) and isinstance(item.value, str | bytes):
            layers.append((Raw, (("load", item.value),)))
            continue
        if not (isinstance(item, ast.Call) and isinstance(item.func, ast.Name)):
            raise builder.fail(item, "a pattern is layer calls and byte strings joined by '/'")
        cls = builder.ns.get(item.func.id)
        if not (isinstance(cls, type) and issubclass(cls, Packet)):
            raise builder.fail(item, f"unknown layer {item.func.id!r} (see `ftsslab layers`)")
        if item.args:
            raise builder.fail(item, "pattern layers take field=value arguments only")
        kwargs = {k.arg: builder.value(k.value) for k in item.keywords if k.arg is not None}
        if len(kwargs) != len(item.keywords):
            raise builder.fail(item, "'**kwargs' is not allowed")
        builder.check_fields(item, cls, kwargs)
        layers.append((cls, tuple(kwargs.items())))
    return Pattern(text, tuple(layers))
