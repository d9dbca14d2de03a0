"""The layer catalog: which Packet classes ftsslab adds, their fields and bindings.

Used by ``ftsslab layers``, the craft expression namespace and the shell, so all
three always agree with what ``ftsslab.layers`` registers.
"""

from __future__ import annotations

from dataclasses import dataclass

import scapy.layers.all  # noqa: F401  (registers Scapy's own layers for craft/shell)
from scapy.config import conf
from scapy.packet import Packet

import ftsslab.layers as _layers


@dataclass(frozen=True)
class Binding:
    lower: str
    upper: str
    condition: str


def family_of(cls: type[Packet]) -> str:
    return cls.__module__.rsplit(".", 1)[-1]


def ftsslab_layers() -> list[type[Packet]]:
    """Every public Packet class defined in ``ftsslab.layers``, in module order."""
    found: list[type[Packet]] = []
    for module in _layers.MODULES:
        for obj in vars(module).values():
            if (
                isinstance(obj, type)
                and issubclass(obj, Packet)
                and obj.__module__ == module.__name__
                and not obj.__name__.startswith("_")
                and obj not in found
            ):
                found.append(obj)
    return found


def scapy_layers() -> dict[str, type[Packet]]:
    """Scapy's registered layers by class name (first one wins on a clash)."""
    names: dict[str, type[Packet]] = {}
    for cls in conf.layers:
        names.setdefault(cls.__name__, cls)
    return names


def all_layers() -> dict[str, type[Packet]]:
    """Scapy's layers plus ftsslab's, by class name; ftsslab's win on a clash."""
    names = scapy_layers()
    names.update({cls.__name__: cls for cls in ftsslab_layers()})
    return names


def _condition(fval: dict) -> str:
    return ", ".join(f"{k}={v:#x}" if isinstance(v, int) else f"{k}={v!r}" for k, v in fval.items())


def bindings_of(cls: type[Packet]) -> list[Binding]:
    """Bindings in which ``cls`` is the lower or the upper layer (dissection side)."""
    out: list[Binding] = []
    for fval, upper in cls.payload_guess:
        out.append(Binding(cls.__name__, upper.__name__, _condition(fval)))
    for lower in set(scapy_layers().values()) | set(ftsslab_layers()):
        if lower is cls:
            continue
        for fval, upper in lower.payload_guess:
            if upper is cls:
                out.append(Binding(lower.__name__, cls.__name__, _condition(fval)))
    return sorted(set(out), key=lambda b: (b.lower != cls.__name__, b.lower, b.upper, b.condition))


def fields_of(cls: type[Packet]) -> list[tuple[str, str]]:
    """(field name, field type) pairs, conditional fields unwrapped."""
    out = []
    for fld in cls.fields_desc:
        inner = getattr(fld, "fld", fld)
        out.append((fld.name, type(inner).__name__))
    return out


def nested_layers(pkt: Packet):
    """Every layer of a packet, including layers held in fields (IP options,
    TCP option values, packet lists), depth first."""
    layer = pkt
    while isinstance(layer, Packet) and layer.__class__.__name__ != "NoPayload":
        yield layer
        for value in layer.fields.values():
            yield from _layers_in_value(value)
        layer = layer.payload


def _layers_in_value(value):
    if isinstance(value, Packet):
        yield from nested_layers(value)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _layers_in_value(item)
