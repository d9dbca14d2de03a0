"""Every number and value table of the Lua dissectors equals the Python one it mirrors.

``ftsslab/fast/*.py`` defines each wire number once; the layers import them, the Lua files
repeat them.  This test reads every top-level ``local`` of every Lua file that is bound to a
literal (a number, or a table of literals: value-string tables, flag-name lists, sets) and
compares it with its Python source, so a Lua table nobody mirrors fails too.  No tshark
needed: it reads the Lua text.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

import pytest
from scapy.data import IP_PROTOS
from scapy.layers.inet import _IPOption_HDR

from ftsslab.fast import cluster, ftss, i2o, roce, tch, xap
from ftsslab.layers.tch import TCHMessage
from ftsslab.wireshark import LUA_DIR, lua_scripts

# ---------------------------------------------------------------- a reader of Lua literals
_TOKEN = re.compile(r"""
    (?P<comment>--[^\n]*)
  | (?P<string>"(?:\\.|[^"\\])*")
  | (?P<number>0[xX][0-9a-fA-F]+|\d+)
  | (?P<name>[A-Za-z_]\w*)
  | (?P<space>\s+)
  | (?P<op>\S)
""", re.X)
_LOCAL = re.compile(r"^local ([A-Za-z_]\w*(?:, *[A-Za-z_]\w*)*) *= *", re.M)
_CONTINUES = {"(", ".", ":", "[", "+", "-", "*", "/"}  # after a literal: an expression


class NotALiteral(Exception):
    pass


class _Reader:
    def __init__(self, text: str, scalars: dict):
        self.toks = [(m.lastgroup, m.group()) for m in _TOKEN.finditer(text)
                     if m.lastgroup not in ("comment", "space")]
        self.i = 0
        self.scalars = scalars

    def peek(self, k: int = 0) -> tuple[str, str]:
        return self.toks[self.i + k] if self.i + k < len(self.toks) else ("eof", "")

    def take(self) -> tuple[str, str]:
        self.i += 1
        return self.toks[self.i - 1]

    def value(self):
        kind, text = self.take()
        if kind == "number":
            return int(text, 0)
        if kind == "string":
            return text[1:-1]
        if text in ("true", "false"):
            return text == "true"
        if text in self.scalars and self.peek()[1] not in _CONTINUES:
            return self.scalars[text]
        if text == "{":
            return self.table()
        raise NotALiteral(text)

    def table(self):
        """``{[k] = v}`` / ``{k = v}`` is a dict (a set when every v is true), ``{a, b}`` a
        list (inner lists become tuples)."""
        keyed, listed = {}, []
        while self.peek()[1] != "}":
            if self.peek()[1] == "[":
                self.take()
                key = self.value()
                if (self.take()[1], self.take()[1]) != ("]", "="):
                    raise NotALiteral("key")
                keyed[key] = self.value()
            elif self.peek()[0] == "name" and self.peek(1)[1] == "=":
                key = self.take()[1]
                self.take()
                keyed[key] = self.value()
            else:
                listed.append(self.value())
            if self.peek()[1] in {",", ";"}:
                self.take()
            elif self.peek()[1] != "}":
                raise NotALiteral(self.peek()[1])
        self.take()
        if keyed and listed:
            raise NotALiteral("mixed table")
        if listed:
            return [tuple(v) if isinstance(v, list) else v for v in listed]
        if keyed and all(v is True for v in keyed.values()):
            return frozenset(keyed)
        return keyed


@functools.cache
def lua_literals(path: Path) -> dict[str, object]:
    """Top-level ``local`` names bound to a number, a string or a non-empty literal table."""
    text = path.read_text()
    found: dict[str, object] = {}
    for m in _LOCAL.finditer(text):
        names = [n.strip() for n in m.group(1).split(",")]
        reader = _Reader(text[m.end():], found)
        try:
            values = [reader.value()]
            while len(values) < len(names) and reader.peek()[1] == ",":
                reader.take()
                values.append(reader.value())
        except NotALiteral:
            continue
        if len(values) == len(names) and reader.peek()[1] not in _CONTINUES:
            found.update((n, v) for n, v in zip(names, values, strict=True) if v not in ({}, []))
    return found


# ---------------------------------------------------------------- what each Lua name mirrors
def _same_names(module, *names: str, prefix: str = "") -> dict[str, object]:
    return {n: getattr(module, prefix + n) for n in names}


def _state_block() -> list[tuple[str, int]]:
    """(name, bytes) of TCHMessage's TCP state block, in wire order."""
    return [(f.fld.name, f.fld.sz) for f in TCHMessage.fields_desc if hasattr(f, "cond")]


MIRRORS: dict[str, dict[str, object]] = {
    "cluster.lua": {
        **_same_names(cluster, "CLUSTER_UDP_PORT", "CLUSTER_MAGIC", "CLUSTER_VERSION",
                      "CLUSTER_STATUS_LEN"),
        "TYPES": cluster.CLUSTER_TYPES,
        "SENDER_KINDS": cluster.CLUSTER_SENDER_KINDS,
        "HEALTH": cluster.CLUSTER_HEALTH,
    },
    "ftss.lua": {
        **_same_names(ftss, "FTSS_FC_TYPE", "FTSS_VERSION"),
        "HDR_LEN": ftss.FTSS_HDR_LEN,
        **_same_names(ftss, "OP_PKT", "OP_ACK", "OP_HELLO", "OP_STATUS", "OP_WRITE", "OP_READ",
                      "OP_LIST", "OP_DELETE", "OP_RESPONSE", prefix="FTSS_"),
        "opcodes": ftss.FTSS_OPCODES,
        "ack_status": ftss.FTSS_ACK_STATUS,
        "ack_reasons": ftss.FTSS_ACK_REASONS,
        "node_states": ftss.FTSS_NODE_STATES,
        "file_status": ftss.FTSS_FILE_STATUS,
        "hdr_flag_names": ftss.FTSS_FLAGS,
        "pkt_flag_names": ftss.FTSS_PKT_FLAGS,
        "write_flag_names": ftss.FTSS_WRITE_FLAGS,
    },
    "i2o.lua": {
        **_same_names(i2o, "I2O_UDP_PORT", "I2OVERSION", "MSG_RESERVED", "MSG_FAIL", "MSG_REPLY",
                      "SGL_FLAGS_LAST", "SGL_ATTR_64BIT_ADDRESS", "I2O_FUNCTIONS",
                      "I2O_REPLY_STATUS", "I2O_DSC", "I2O_BSA_DSC", "MSG_FLAG_NAMES",
                      "BSA_READ_FLAG_NAMES", "BSA_WRITE_FLAG_NAMES", "BSA_CTL_FLAG_NAMES",
                      "SGL_FLAG_NAMES", "SGL_ATTR_FLAG_NAMES"),
        **_same_names(i2o, "HEADER_LEN", "HEADER_WORDS", prefix="I2O_"),
        **_same_names(i2o, "BSA_SGL_OFFSET", "BSA_BLOCK_READ", "BSA_BLOCK_WRITE",
                      "BSA_CACHE_FLUSH", prefix="I2O_"),
        **_same_names(i2o, "I2O_PRIVATE", "FTSSLAB_ORGANIZATION_ID", "CM_NAME_LEN", "CM_IOP_LEN",
                      "CM_DEVICE_LEN", "CM_FUNCTIONS", "CM_STATUS_NAMES"),
        "CM_REQUEST_SIZES": {x: size for (x, reply), (_, size) in i2o.CM_BODIES.items()
                             if not reply},
        "CM_REPLY_SIZES": {x: size for (x, reply), (_, size) in i2o.CM_BODIES.items() if reply},
        "BSA_FUNCTIONS": i2o.I2O_BSA_FUNCTION_CODES,
        "REPLY_ERRORS": frozenset(i2o.I2O_REPLY_ERRORS),
        "SGE_SIZE": {k: i2o.SGE_SIZE[f"I2OSGE{c}"] for k, c in (
            ("simple", "Simple"), ("simple64", "Simple64"), ("attributes", "Attributes"),
            ("remote", "Remote"))},
        "SGL_ADDRESS_MODES": "checked by test_i2o_address_modes",
    },
    "roce.lua": {
        **_same_names(roce, "RKEY_ADVERT_MAGIC", "RKEY_ADVERT_VERSION", "RKEY_ADVERT_LEN"),
        "kinds": roce.RKEY_ADVERT_KINDS,
        "access_flags": [(1 << i, n, n.lower()) for i, n in enumerate(roce.RKEY_ACCESS_FLAGS)],
        "ACCESS_KNOWN": (1 << len(roce.RKEY_ACCESS_FLAGS)) - 1,
    },
    "tch.lua": {
        **_same_names(tch, "TCH_UDP_PORT", "TCH_ENDPOINT_KIND", "TCH_UPDATE_KIND",
                      "TCH_ENDPOINT_LEN", "TCH_UPDATE_LEN", "TCH_HEADER_LEN", "TCH_STATE_LEN",
                      "TCH_MAX_MESSAGE", "TCH_VERSION", "TCH_OPEN", "TCH_OPEN_RESPONSE",
                      "TCH_MESSAGE", "TCH_MSG_UPDATE", "TCH_MSG_HANDOFF"),
        **_same_names(tch, "PACKET_TYPES", "MESSAGE_TYPES", "HANDOFF_TYPES", "STATUSES",
                      "INITIATORS", prefix="TCH_"),
        "STATE": _state_block(),
    },
    "xap.lua": {
        **_same_names(xap, "XAP_VERSION", "XAP_FULL_LEN", "XAP_SHORT_LEN", "XAP_TCP_OPTION_KIND",
                      "XAP_TCP_EXID", "XAP_IP_OPTION_TYPE", "XAP_UDP_PORT", "XAP_FORM_SHORT",
                      "XAP_FORM_FULL", "XAP_TLV_CLIENT_IP", "XAP_TLV_TARGET_IP", "XAP_TLV_IP_LEN"),
        "OPERATIONS": xap.XAP_OPERATIONS,
        "FORMS": xap.XAP_FORMS,
        "TLV_TYPES": xap.XAP_TLV_TYPES,
        # Scapy's names for the XAP message's ByteEnumField("proto", ..., IP_PROTOS)
        "IP_PROTOS": {k: IP_PROTOS[k] for k in IP_PROTOS.keys() if k < 256},
        "IPOPT_CLASSES": _IPOption_HDR.fields_desc[1].i2s,
        "IPOPT_NUMBERS": _IPOption_HDR.fields_desc[2].i2s,
    },
}


def test_every_lua_file_is_read():
    assert sorted(p.name for p in lua_scripts()) == sorted(MIRRORS)


@pytest.mark.parametrize("script", sorted(MIRRORS))
def test_every_lua_literal_has_a_python_source(script):
    assert sorted(lua_literals(LUA_DIR / script)) == sorted(MIRRORS[script])


@pytest.mark.parametrize("script, name", [(s, n) for s, names in MIRRORS.items()
                                          for n in names if n != "SGL_ADDRESS_MODES"])
def test_lua_literal_equals_python(script, name):
    assert lua_literals(LUA_DIR / script)[name] == MIRRORS[script][name]


def test_i2o_address_modes():
    """Keyed by (flags & 0x3C) >> 2; each name ends with the flags value it stands for."""
    modes = lua_literals(LUA_DIR / "i2o.lua")["SGL_ADDRESS_MODES"]
    assert all(name.endswith(f"[0x{key << 2:02X}]") for key, name in modes.items()), modes
    assert "remote buffer" in modes[i2o.SGL_REMOTE >> 2]
    assert "attributes" in modes[(i2o.SGL_ATTRIBUTES & i2o.SGL_ADDRESS_MODE_MASK) >> 2]
    assert max(modes) << 2 <= i2o.SGL_ADDRESS_MODE_MASK
