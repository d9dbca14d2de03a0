"""Plain YAML only: the text is parsed and composed into nodes, never constructed.

Tags, aliases, more than one document and deep nesting are refused from the event
stream before composing, so no YAML tag can construct anything; the loader then
walks the nodes itself and every value keeps its line.
"""

from __future__ import annotations

import re
from typing import Any

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from .errors import MAX_ERRORS, Collector

MAX_BYTES = 1 << 20          # scenario files larger than this are refused
MAX_DEPTH = 64               # YAML nesting

INT = "tag:yaml.org,2002:int"
FLOAT = "tag:yaml.org,2002:float"
BOOL = "tag:yaml.org,2002:bool"
NULL = "tag:yaml.org,2002:null"
STR = "tag:yaml.org,2002:str"
CONSTRUCTOR = SafeConstructor()  # only its scalar constructors are used, on checked tags
# libyaml's parser when present (same events and marks, ~10x faster); both are safe: only
# events and nodes are built, never objects.
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_EMPTY = ("the file is empty", "start with `name:` and `nodes:`")


def compose(c: Collector, text: str) -> MappingNode | None:
    """The document's top-level mapping, or None with the reasons in ``c``."""
    if not _sized(c, text):
        return None
    try:
        _scan(c, text)
    except yaml.YAMLError as exc:
        c.err("", *_syntax_error(exc, text),
              "check indentation, colons and quotes around this line")
        return None
    if c.errors:
        return None
    try:
        root = yaml.compose(text, Loader=_YAML_LOADER)
    except yaml.YAMLError as exc:  # pragma: no cover - the parse above saw it first
        c.err("", None, f"YAML error: {str(exc).splitlines()[0]}", "check the syntax")
        return None
    if root is None or (isinstance(root, ScalarNode) and root.tag == NULL):
        c.err("", None, *_EMPTY)
        return None
    if not isinstance(root, MappingNode):
        c.err("", root, f"the top level must be a mapping, not {describe(root)}",
              "start with `name:` and `nodes:`")
        return None
    return root


def _sized(c: Collector, text: str) -> bool:
    """UTF-8 encodable, at most ``MAX_BYTES``, not blank."""
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError as exc:
        c.err("", text[: exc.start].count("\n") + 1,
              "the text holds a character that cannot be UTF-8 encoded",
              "remove the lone surrogate")
        return False
    if size > MAX_BYTES:
        c.err("", None, f"file is {size} bytes, more than the 1 MiB limit",
              "split the scenario or generate it")
        return False
    if not text.strip():
        c.err("", None, *_EMPTY)
        return False
    return True


def _scan(c: Collector, text: str) -> None:
    """Refuse tags, aliases, a second document and deep nesting, from the parser's events."""
    depth = docs = 0
    for ev in yaml.parse(text, Loader=_YAML_LOADER):
        line = ev.start_mark.line + 1
        if isinstance(ev, yaml.DocumentStartEvent):
            docs += 1
            if docs == 2:
                c.err("", line, "more than one YAML document",
                      "a scenario file holds one document; remove the second `---`")
        elif isinstance(ev, yaml.AliasEvent):
            c.err("", line, f"YAML alias *{ev.anchor} is not allowed",
                  "write the value out; anchors and aliases are not supported")
        elif isinstance(ev, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                c.err("", line, "the document is nested too deeply", "flatten it")
                return
        elif isinstance(ev, yaml.CollectionEndEvent):
            depth -= 1
        tag = getattr(ev, "tag", None)
        if tag is not None and isinstance(ev, yaml.NodeEvent):
            c.err("", line, f"YAML tag {tag} is not allowed",
                  "scenario files use plain YAML values; quote the text instead")
        if len(c.errors) > MAX_ERRORS:
            return


def _syntax_error(exc: yaml.YAMLError, text: str) -> tuple[int | None, str]:
    """(line, message) for a parser or reader error."""
    if isinstance(exc, yaml.reader.ReaderError):
        char = exc.character
        code = char if isinstance(char, int) else ord(char[:1] or "\0")
        return (text[: exc.position].count("\n") + 1,
                f"YAML syntax error: {exc.reason} (character #x{code:04x})")
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    context = getattr(exc, "context", None)
    msg = f"YAML syntax error: {problem}" + (f" ({context})" if context else "")
    return (mark.line + 1 if mark else None), msg


def describe(node: Node) -> str:
    """What a node is, for "expected X, got Y" messages."""
    if isinstance(node, MappingNode):
        return "a mapping"
    if isinstance(node, SequenceNode):
        return "a list"
    if node.tag == NULL:
        return "nothing (null)"
    text = node.value if len(node.value) <= 40 else node.value[:37] + "..."
    return repr(text) if node.tag == STR else text


def plain(node: Node) -> Any:
    """A node as plain Python (for kind options); tags were refused before composing."""
    if isinstance(node, MappingNode):
        return {(k.value if isinstance(k, ScalarNode) else repr(plain(k))): plain(v)
                for k, v in node.value}
    if isinstance(node, SequenceNode):
        return [plain(v) for v in node.value]
    try:
        if node.tag == INT:
            return CONSTRUCTOR.construct_yaml_int(node)
        if node.tag == FLOAT:
            return CONSTRUCTOR.construct_yaml_float(node)
        if node.tag == BOOL:
            return CONSTRUCTOR.construct_yaml_bool(node)
        if node.tag == NULL:
            return None
    except (ValueError, TypeError):
        pass
    return node.value


def find(node: Node, key: str) -> Node | None:
    """The node at ``key`` ("a.b[2]") below ``node``, as deep as it goes."""
    found = None
    for part in re.findall(r"[^.\[\]]+|\[\d+\]", key):
        if part.startswith("[") and isinstance(node, SequenceNode):
            idx = int(part[1:-1])
            if idx >= len(node.value):
                break
            node = node.value[idx]
        elif isinstance(node, MappingNode):
            nxt = next(((k, v) for k, v in node.value
                        if isinstance(k, ScalarNode) and k.value == part), None)
            if nxt is None:
                break
            found = nxt[0]
            node = nxt[1]
            continue
        else:
            break
        found = node
    return found
