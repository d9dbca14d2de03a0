"""The loader's state: the errors so far, and what earlier parts of the file defined."""

from __future__ import annotations

from yaml.nodes import MappingNode, Node

from ..kinds import KindSpec
from ..model import Exec, Fetch, ForwardingEntry
from .errors import Collector


class Context(Collector):
    """One file's load. Later checks refer to what earlier ones recorded here."""

    def __init__(self, file: str):
        super().__init__(file)
        self.kinds: dict[str, KindSpec | None] = {}    # node -> spec (None: unknown kind)
        self.node_order: list[str] = []
        self.ifaces: dict[str, list[str]] = {}          # node -> its interfaces in order
        self.links_by_pair: dict[frozenset, str] = {}    # {ep, ep} -> Link.name
        self.endpoints: set[str] = set()
        self.labels: dict[str, Node] = {}
        self.exec_steps: dict[str, Exec | Fetch] = {}   # label -> step (a result to check)
        self.mtu: dict[str, int] = {}                   # endpoint -> link MTU
        self.link_where: dict[str, tuple[str, int | None]] = {}  # Link.name -> path, line
        self.tables: dict[str, list[ForwardingEntry]] = {}  # switch -> entries along the steps
        self.killed: dict[str, str] = {}                # node -> label of the step that killed it
        # node with valid options -> its mapping, the option keys given
        self.checked: dict[str, tuple[MappingNode, frozenset[str]]] = {}
        self.options: dict[str, dict] = {}              # node -> options with defaults (valid)
        self.unlinked: set[str] = set()                 # nodes named in a link that failed
