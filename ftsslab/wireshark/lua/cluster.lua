-- SPDX-License-Identifier: GPL-2.0-or-later
-- ftsslab: ClusterStatus, the load and health heartbeat of seed 002, D2.12 (Wireshark 4.0 Lua).
--
-- One source of truth: layers/cluster.py.  Field abbreviations are "clusterstatus.<Scapy
-- field>".  Registration: udp.port 4497 (either direction).

local CLUSTER_UDP_PORT = 4497
local CLUSTER_MAGIC = 0x4353
local CLUSTER_VERSION = 1
local CLUSTER_STATUS_LEN = 44

-- Value tables: the names of Scapy's enums.
local TYPES = { [1] = "status" }
local SENDER_KINDS = { [1] = "device", [2] = "switch" }
local HEALTH = { [0] = "OK", [1] = "DEGRADED", [2] = "PREDICTED_FAIL" }

local p_cs = Proto("clusterstatus", "ClusterStatus (load and health heartbeat)")

local f = {
    magic = ProtoField.uint16("clusterstatus.magic", "Magic", base.HEX),
    version = ProtoField.uint8("clusterstatus.version", "Version", base.DEC),
    type = ProtoField.uint8("clusterstatus.type", "Type", base.DEC, TYPES),
    length = ProtoField.uint16("clusterstatus.length", "Length", base.DEC),
    sender_kind = ProtoField.uint8("clusterstatus.sender_kind", "Sender kind", base.DEC,
                                   SENDER_KINDS),
    health = ProtoField.uint8("clusterstatus.health", "Health", base.DEC, HEALTH),
    sender_id = ProtoField.ipv4("clusterstatus.sender_id", "Sender ID"),
    boot = ProtoField.uint32("clusterstatus.boot", "Boot", base.HEX),
    seq = ProtoField.uint32("clusterstatus.seq", "Sequence number", base.DEC),
    interval_ms = ProtoField.uint16("clusterstatus.interval_ms", "Interval (ms)", base.DEC),
    weight = ProtoField.uint16("clusterstatus.weight", "Capacity weight", base.DEC),
    bytes_per_s = ProtoField.uint64("clusterstatus.bytes_per_s", "Bytes per second", base.DEC),
    sessions = ProtoField.uint32("clusterstatus.sessions", "Sessions", base.DEC),
    queue_depth = ProtoField.uint32("clusterstatus.queue_depth", "Queue depth", base.DEC),
    errors = ProtoField.uint32("clusterstatus.errors", "Errors (cumulative)", base.DEC),
    ext = ProtoField.bytes("clusterstatus.ext", "Extension"),
    data = ProtoField.bytes("clusterstatus.data", "Undissected bytes"),
}
p_cs.fields = { f.magic, f.version, f.type, f.length, f.sender_kind, f.health, f.sender_id,
                f.boot, f.seq, f.interval_ms, f.weight, f.bytes_per_s, f.sessions,
                f.queue_depth, f.errors, f.ext, f.data }

local e = {
    short = ProtoExpert.new("clusterstatus.too_short", "ClusterStatus: too short",
                            expert.group.MALFORMED, expert.severity.ERROR),
    magic = ProtoExpert.new("clusterstatus.bad_magic", "ClusterStatus: not its magic",
                            expert.group.PROTOCOL, expert.severity.NOTE),
    length = ProtoExpert.new("clusterstatus.bad_length", "ClusterStatus: bad length",
                             expert.group.MALFORMED, expert.severity.WARN),
    unknown = ProtoExpert.new("clusterstatus.unknown_value", "ClusterStatus: unknown value",
                              expert.group.PROTOCOL, expert.severity.WARN),
    version = ProtoExpert.new("clusterstatus.unknown_version", "ClusterStatus: unknown version",
                              expert.group.PROTOCOL, expert.severity.NOTE),
    interval = ProtoExpert.new("clusterstatus.zero_interval", "ClusterStatus: interval 0",
                               expert.group.PROTOCOL, expert.severity.WARN),
}
p_cs.experts = { e.short, e.magic, e.length, e.unknown, e.version, e.interval }

-- A warning when v has no name in tbl.
local function check_enum(item, tbl, v, what)
    if tbl[v] == nil then
        item:add_proto_expert_info(e.unknown, string.format("Unknown ClusterStatus %s %d",
                                                            what, v))
    end
end

function p_cs.dissector(tvb, pinfo, tree)
    local len = tvb:len()
    pinfo.cols.protocol = "ClusterStatus"
    local item = tree:add(p_cs, tvb())
    if len < 2 or tvb(0, 2):uint() ~= CLUSTER_MAGIC then
        item:add_proto_expert_info(e.magic, string.format(
            "Datagram on UDP %d does not start with the magic 0x%04x", CLUSTER_UDP_PORT,
            CLUSTER_MAGIC))
        if len > 0 then
            item:add(f.data, tvb())
        end
        pinfo.cols.info = "ClusterStatus [not ours]"
        return len
    end
    if len < CLUSTER_STATUS_LEN then
        item:add_proto_expert_info(e.short, string.format(
            "ClusterStatus of %d bytes is shorter than its %d-byte fixed part", len,
            CLUSTER_STATUS_LEN))
        item:add(f.data, tvb())
        pinfo.cols.info = "ClusterStatus [too short]"
        return len
    end
    item:add(f.magic, tvb(0, 2))
    local version = tvb(2, 1):uint()
    local version_item = item:add(f.version, tvb(2, 1))
    if version ~= CLUSTER_VERSION then
        version_item:add_proto_expert_info(e.version, string.format(
            "ClusterStatus version %d (this dissector knows %d)", version, CLUSTER_VERSION))
    end
    local mtype = tvb(3, 1):uint()
    check_enum(item:add(f.type, tvb(3, 1)), TYPES, mtype, "type")
    local length = tvb(4, 2):uint()
    local length_item = item:add(f.length, tvb(4, 2))
    local kind, health = tvb(6, 1):uint(), tvb(7, 1):uint()
    check_enum(item:add(f.sender_kind, tvb(6, 1)), SENDER_KINDS, kind, "sender kind")
    check_enum(item:add(f.health, tvb(7, 1)), HEALTH, health, "health")
    item:add(f.sender_id, tvb(8, 4))
    item:add(f.boot, tvb(12, 4))
    item:add(f.seq, tvb(16, 4))
    local interval_item = item:add(f.interval_ms, tvb(20, 2))
    if tvb(20, 2):uint() == 0 then
        interval_item:add_proto_expert_info(e.interval,
            "Interval 0: the receiver cannot tell when silence starts")
    end
    item:add(f.weight, tvb(22, 2))
    item:add(f.bytes_per_s, tvb(24, 8))
    item:add(f.sessions, tvb(32, 4))
    item:add(f.queue_depth, tvb(36, 4))
    item:add(f.errors, tvb(40, 4))
    -- Scapy's ext: the bytes up to length (as many as there are); the rest is padding.
    local ext_len = math.max(math.min(length, len) - CLUSTER_STATUS_LEN, 0)
    local ext_item = item:add(f.ext, tvb(CLUSTER_STATUS_LEN, ext_len))
    if ext_len == 0 then
        ext_item:set_text("Extension: (none)")
    end
    if length < CLUSTER_STATUS_LEN or length > len then
        length_item:add_proto_expert_info(e.length, string.format(
            "Length %d, but the fixed part has %d bytes and the datagram %d", length,
            CLUSTER_STATUS_LEN, len))
    elseif length < len then  -- padding, as Scapy has it
        item:add(f.data, tvb(length))
    end
    -- Scapy's ClusterStatus mysummary().
    local info = string.format("ClusterStatus %s %s seq=%d %s sessions=%d weight=%d",
        SENDER_KINDS[kind] or tostring(kind), tostring(tvb(8, 4):ipv4()), tvb(16, 4):uint(),
        HEALTH[health] or tostring(health), tvb(32, 4):uint(), tvb(22, 2):uint())
    item:append_text(", " .. info)
    pinfo.cols.info = info
    return len
end

DissectorTable.get("udp.port"):add(CLUSTER_UDP_PORT, p_cs)
