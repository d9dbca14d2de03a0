-- SPDX-License-Identifier: GPL-2.0-or-later
-- ftsslab: FTSS, the messages between the fault tolerant storage system and its nodes
-- (seed 000), carried as the payload of FC frames of TYPE 0xE0 (layers/ftss.py).
--
-- Wireshark 4.0 dissects Ether/FCoE/FC natively and shows an FC payload of an unknown TYPE as
-- "data".  FC hands the payload to the "fc.ftype" table keyed by its *derived* frame type,
-- which is 0 (FC_FTYPE_UNDEF) for a vendor-unique TYPE, so this file registers under 0 and
-- checks fc.type == 0xE0 itself (returning 0 otherwise, so FC falls back to "data").
--
-- ProtoField names are "<prefix>.<Scapy field name>", one prefix per Scapy class:
--   FTSS ftss, FTSSPacket ftss.pkt, FTSSAck ftss.ack, FTSSHello ftss.hello,
--   FTSSStatus ftss.status, FTSSWrite ftss.write, FTSSRead ftss.read, FTSSList ftss.list,
--   FTSSDelete ftss.delete, FTSSFileResponse ftss.response, FTSSFileName ftss.fname.
-- A PKT's inner Ethernet frame goes to Wireshark's own "eth_withoutfcs".

local FTSS_FC_TYPE = 0xE0
local FTSS_VERSION = 1
local HDR_LEN = 4

local OP_PKT, OP_ACK, OP_HELLO, OP_STATUS = 0x01, 0x02, 0x03, 0x04
local OP_WRITE, OP_READ, OP_LIST, OP_DELETE, OP_RESPONSE = 0x10, 0x11, 0x12, 0x13, 0x14

local opcodes = {
    [OP_PKT] = "PKT",
    [OP_ACK] = "ACK",
    [OP_HELLO] = "HELLO",
    [OP_STATUS] = "STATUS",
    [OP_WRITE] = "WRITE",
    [OP_READ] = "READ",
    [OP_LIST] = "LIST",
    [OP_DELETE] = "DELETE",
    [OP_RESPONSE] = "RESPONSE",
}
local ack_status = {
    [1] = "STORED_GUARANTEED",
    [2] = "STORED_BEST_EFFORT",
    [3] = "UNDELIVERABLE",
    [4] = "DELIVERED",
    [5] = "REJECTED",
}
local ack_reasons = {
    [0x00] = "NONE",
    [0x01] = "MALFORMED",
    [0x02] = "UNKNOWN_OPCODE",
    [0x03] = "OVERSIZE",
    [0x04] = "STORE_FULL",
    [0x05] = "BAD_LENGTH",
    [0x06] = "BAD_VERSION",
    [0x10] = "DEST_DOWN",
    [0x11] = "DEST_UNKNOWN",
}
local node_states = {
    [0] = "DOWN",
    [1] = "UP",
    [2] = "DRAINING",
    [3] = "MAINTENANCE",
}
local file_status = {
    [0] = "OK",
    [1] = "NOT_FOUND",
    [2] = "EXISTS",
    [3] = "NO_SPACE",
    [4] = "IO_ERROR",
    [5] = "BAD_REQUEST",
    [6] = "DENIED",
}
-- flag lists, bit 0 first (FTSS_FLAGS, FTSS_PKT_FLAGS, FTSS_WRITE_FLAGS)
local hdr_flag_names = { "ALTPATH", "RSV1", "RSV2", "RSV3" }
local pkt_flag_names = { "BROADCAST", "RETRANSMIT", "EXTERNAL", "ROLLBACK" }
local write_flag_names = { "CREATE", "TRUNCATE", "SYNC" }

local p_ftss = Proto("ftss", "FTSS (Fault Tolerant Storage System)")

local pf = {}
local function field(pfield)
    pf[#pf + 1] = pfield
    return pfield
end
local function uint(size, abbr, label, base_, vs, mask)
    return field(ProtoField["uint" .. size](abbr, label, base_, vs, mask))
end
local function bits(prefix, width, names)
    local out = {}
    for i, name in ipairs(names) do
        out[i] = field(ProtoField.bool(prefix .. "." .. name:lower(), name, width, nil, 2 ^ (i - 1)))
    end
    return out
end

-- FTSS common header
local F = {
    version = uint(8, "ftss.version", "Version", base.DEC, nil, 0xF0),
    flags = uint(8, "ftss.flags", "Flags", base.HEX, nil, 0x0F),
    opcode = uint(8, "ftss.opcode", "Opcode", base.HEX, opcodes),
    length = uint(16, "ftss.length", "Length", base.DEC),
    padding = field(ProtoField.bytes("ftss.padding", "Padding")),
    trailer = field(ProtoField.bytes("ftss.trailer", "Bytes after the message")),
}
local F_flag_bits = bits("ftss.flags", 8, hdr_flag_names)

-- one subtree marker per body, named like the body's prefix
local B = {
    pkt = field(ProtoField.none("ftss.pkt", "FTSS Network Packet")),
    ack = field(ProtoField.none("ftss.ack", "FTSS Acknowledgment")),
    hello = field(ProtoField.none("ftss.hello", "FTSS Node Hello")),
    status = field(ProtoField.none("ftss.status", "FTSS Node Status")),
    write = field(ProtoField.none("ftss.write", "FTSS File Write")),
    read = field(ProtoField.none("ftss.read", "FTSS File Read")),
    list = field(ProtoField.none("ftss.list", "FTSS File List")),
    delete = field(ProtoField.none("ftss.delete", "FTSS File Delete")),
    response = field(ProtoField.none("ftss.response", "FTSS File Response")),
    fname = field(ProtoField.none("ftss.fname", "FTSS File Name")),
}

local PKT = {
    msg_id = uint(64, "ftss.pkt.msg_id", "Message ID", base.HEX),
    src_node = uint(32, "ftss.pkt.src_node", "Source node", base.HEX),
    pkt_flags = uint(16, "ftss.pkt.pkt_flags", "PKT flags", base.HEX),
    retention = uint(16, "ftss.pkt.retention", "Retention (s)", base.DEC),
}
local PKT_flag_bits = bits("ftss.pkt.pkt_flags", 16, pkt_flag_names)

local ACK = {
    msg_id = uint(64, "ftss.ack.msg_id", "Message ID", base.HEX),
    node_id = uint(32, "ftss.ack.node_id", "Node ID", base.HEX),
    status = uint(8, "ftss.ack.status", "Status", base.DEC, ack_status),
    reason = uint(8, "ftss.ack.reason", "Reason", base.HEX, ack_reasons),
    more = uint(16, "ftss.ack.more", "More (msg ids after this one it answers)", base.DEC),
}

local function node_fields(prefix)
    return {
        node_id = uint(32, prefix .. ".node_id", "Node ID", base.HEX),
        seq = uint(16, prefix .. ".seq", "Sequence", base.DEC),
        state = uint(8, prefix .. ".state", "State", base.DEC, node_states),
        port = uint(8, prefix .. ".port", "FC port", base.DEC),
        hold_time = uint(16, prefix .. ".hold_time", "Hold time (s)", base.DEC),
        mac_count = uint(16, prefix .. ".mac_count", "MAC count", base.DEC),
        macs = field(ProtoField.ether(prefix .. ".macs", "MAC")),
    }
end
local HELLO = node_fields("ftss.hello")
local STATUS = node_fields("ftss.status")

local function name_fields(prefix, t)
    t.name_len = uint(16, prefix .. ".name_len", "Name length", base.DEC)
    t.filename = field(ProtoField.string(prefix .. ".filename", "File name"))
    return t
end

local WRITE = {
    req_id = uint(32, "ftss.write.req_id", "Request ID", base.HEX),
    offset = uint(64, "ftss.write.offset", "Offset", base.DEC),
    wflags = uint(16, "ftss.write.wflags", "Write flags", base.HEX),
    name_len = uint(16, "ftss.write.name_len", "Name length", base.DEC),
    data_len = uint(32, "ftss.write.data_len", "Data length", base.DEC),
    filename = field(ProtoField.string("ftss.write.filename", "File name")),
    data = field(ProtoField.bytes("ftss.write.data", "Data")),
}
local WRITE_flag_bits = bits("ftss.write.wflags", 16, write_flag_names)

local READ = {
    req_id = uint(32, "ftss.read.req_id", "Request ID", base.HEX),
    offset = uint(64, "ftss.read.offset", "Offset", base.DEC),
    count = uint(32, "ftss.read.count", "Count", base.DEC),
}
name_fields("ftss.read", READ)
local LIST = name_fields("ftss.list", { req_id = uint(32, "ftss.list.req_id", "Request ID", base.HEX) })
local DELETE = name_fields("ftss.delete",
    { req_id = uint(32, "ftss.delete.req_id", "Request ID", base.HEX) })

local RESP = {
    req_id = uint(32, "ftss.response.req_id", "Request ID", base.HEX),
    status = uint(8, "ftss.response.status", "Status", base.DEC, file_status),
    op = uint(8, "ftss.response.op", "Request opcode", base.HEX, opcodes),
    data_len = uint(16, "ftss.response.data_len", "Data length", base.DEC),
    data = field(ProtoField.bytes("ftss.response.data", "Data")),
    names = field(ProtoField.none("ftss.response.names", "Names")),
}
local FNAME = name_fields("ftss.fname", {})

p_ftss.fields = pf

local E = {
    short = ProtoExpert.new("ftss.expert.short", "FTSS message too short",
        expert.group.MALFORMED, expert.severity.ERROR),
    version = ProtoExpert.new("ftss.expert.bad_version", "Unsupported FTSS version",
        expert.group.PROTOCOL, expert.severity.WARN),
    opcode = ProtoExpert.new("ftss.expert.unknown_opcode", "Unknown FTSS opcode",
        expert.group.PROTOCOL, expert.severity.WARN),
    length = ProtoExpert.new("ftss.expert.bad_length", "FTSS length disagrees with the captured bytes",
        expert.group.MALFORMED, expert.severity.ERROR),
    trailing = ProtoExpert.new("ftss.expert.trailing", "Bytes after the padded FTSS message",
        expert.group.PROTOCOL, expert.severity.WARN),
    padding = ProtoExpert.new("ftss.expert.padding", "FTSS padding is not zero",
        expert.group.PROTOCOL, expert.severity.WARN),
    truncated = ProtoExpert.new("ftss.expert.truncated", "Truncated FTSS body",
        expert.group.MALFORMED, expert.severity.ERROR),
    field_len = ProtoExpert.new("ftss.expert.bad_field_length", "FTSS length field exceeds the body",
        expert.group.MALFORMED, expert.severity.ERROR),
    extra = ProtoExpert.new("ftss.expert.extra", "Unexpected bytes after the FTSS body",
        expert.group.PROTOCOL, expert.severity.WARN),
    inner = ProtoExpert.new("ftss.expert.inner_malformed", "Malformed inner frame",
        expert.group.MALFORMED, expert.severity.ERROR),
    no_frame = ProtoExpert.new("ftss.expert.no_frame", "FTSS PKT carries no frame",
        expert.group.PROTOCOL, expert.severity.WARN),
}
p_ftss.experts = { E.short, E.version, E.opcode, E.length, E.trailing, E.padding, E.truncated,
    E.field_len, E.extra, E.inner, E.no_frame }

local fc_type_field = Field.new("fc.type")
local eth_handle = Dissector.get("eth_withoutfcs")

---------------------------------------------------------------------------------------------
-- helpers

-- 0x-prefixed hex without leading zeros, like Scapy's lhex()
local function lhex(v)
    local s
    if type(v) == "number" then
        s = string.format("%x", v)
    else
        s = v:tohex():gsub("^0+", "")
    end
    if s == "" then s = "0" end
    return "0x" .. s
end

local function name_of(tbl, v)
    return tbl[v] or tostring(v)
end

-- printable ASCII as is, anything else as \xNN (a file name can hold any byte)
local function escaped(bytes)
    return (bytes:gsub("[^\32-\126]", function(c) return string.format("\\x%02x", c:byte()) end))
end

local function printable(bytes)
    return "'" .. escaped(bytes):gsub("'", "\\'") .. "'"
end

local function flag_text(value, names)
    local out = {}
    for i, name in ipairs(names) do
        if bit.band(value, 2 ^ (i - 1)) ~= 0 then out[#out + 1] = name end
    end
    return table.concat(out, "+")
end

local function add_flags(tree, pfield, bit_fields, range, value, names)
    local item = tree:add(pfield, range)
    local text = flag_text(value, names)
    if text ~= "" then item:append_text(" (" .. text .. ")") end
    for _, b in ipairs(bit_fields) do item:add(b, range) end
    return item
end

-- Reads a body field by field; ``off`` is the next byte, ``ok`` false after a problem.
local Reader = {}
Reader.__index = Reader

local function reader(body, tree, pinfo, kind)
    return setmetatable({ tvb = body, tree = tree, pinfo = pinfo, off = 0, ok = true, kind = kind,
        len = body:len() }, Reader)
end

function Reader:left()
    return self.len - self.off
end

-- the fixed part of a body: needs ``n`` bytes, else the truncated-body expert
function Reader:need(n, what)
    if self:left() >= n then return true end
    self.tree:add_proto_expert_info(E.truncated, string.format(
        "Truncated %s body: %d bytes left, %s needs %d", self.kind, self:left(), what, n))
    self.ok = false
    return false
end

function Reader:uint(pfield, size, tree)
    local r = self.tvb(self.off, size)
    self.off = self.off + size
    local v
    if size == 8 then
        v = r:uint64()
    elseif size <= 4 then
        v = r:uint()
    end
    return (tree or self.tree):add(pfield, r), v, r
end

-- ``n`` bytes of a length-prefixed field; a length beyond the body raises an expert
function Reader:bytes(pfield, n, lenname, tree, lenitem, text)
    tree = tree or self.tree
    if n > self:left() then
        local item = lenitem or tree
        item:add_proto_expert_info(E.field_len, string.format(
            "%s %s = %d exceeds the %d bytes left in the %s body", self.kind, lenname, n,
            self:left(), self.kind))
        self.ok = false
        n = self:left()
    end
    local r = self.tvb:range(self.off, n)
    self.off = self.off + n
    if text then
        -- a file name may hold any byte: show it escaped (FT_STRING would warn on a NUL)
        return tree:add(pfield, r, escaped(r:raw())), r
    end
    return tree:add(pfield, r), r
end

function Reader:extra()
    if self.ok and self:left() > 0 then
        self.tree:add_proto_expert_info(E.extra, string.format(
            "%d unexpected bytes after the %s body", self:left(), self.kind))
    end
end

---------------------------------------------------------------------------------------------
-- bodies: each returns the Info summary (Scapy's mysummary()) or nil

local function dissect_pkt(rd, body, pinfo, root)
    if not rd:need(16, "the PKT header") then return nil end
    local _, msg_id = rd:uint(PKT.msg_id, 8)
    rd:uint(PKT.src_node, 4)
    local r = body(rd.off, 2)
    add_flags(rd.tree, PKT.pkt_flags, PKT_flag_bits, r, r:uint(), pkt_flag_names)
    rd.off = rd.off + 2
    rd:uint(PKT.retention, 2)
    local n = rd:left()
    local summary = string.format("FTSS PKT id=%s %dB", lhex(msg_id), n)
    if n == 0 then
        rd.tree:add_proto_expert_info(E.no_frame)
        return summary
    end
    -- Info: our summary, then (behind a fence) what the inner frame's dissectors say
    pinfo.cols.info:set(summary .. " | ")
    pinfo.cols.info:fence()
    rd.tree:append_text(string.format(", %d-byte frame", n))
    -- the inner dissectors throw on a malformed frame; keep that out of Lua's error path
    local ok, err = pcall(function() eth_handle:call(body(rd.off, n):tvb(), pinfo, root) end)
    if not ok then
        rd.tree:add_proto_expert_info(E.inner, string.format("Malformed inner frame (%d bytes): %s",
            n, tostring(err):gsub("^.*: ", "")))
    end
    return summary, true
end

local function dissect_ack(rd)
    if not rd:need(16, "ACK") then return nil end
    local _, msg_id = rd:uint(ACK.msg_id, 8)
    rd:uint(ACK.node_id, 4)
    local _, status = rd:uint(ACK.status, 1)
    local _, reason = rd:uint(ACK.reason, 1)
    local _, more = rd:uint(ACK.more, 2)
    rd:extra()
    local s = string.format("FTSS ACK id=%s", lhex(msg_id))
    if more ~= 0 then s = s .. string.format(" +%d", more) end
    s = s .. " " .. name_of(ack_status, status)
    if reason ~= 0 then s = s .. " (" .. name_of(ack_reasons, reason) .. ")" end
    return s
end

local function dissect_node(rd, fl, kind)
    if not rd:need(12, kind) then return nil end
    local _, node = rd:uint(fl.node_id, 4)
    rd:uint(fl.seq, 2)
    local _, state = rd:uint(fl.state, 1)
    local _, port = rd:uint(fl.port, 1)
    rd:uint(fl.hold_time, 2)
    local cnt_item, count = rd:uint(fl.mac_count, 2)
    local have = count
    if count * 6 > rd:left() then
        cnt_item:add_proto_expert_info(E.field_len, string.format(
            "%s mac_count = %d needs %d bytes, %d left", kind, count, count * 6, rd:left()))
        rd.ok = false
        have = math.floor(rd:left() / 6)
    end
    for _ = 1, have do rd:uint(fl.macs, 6) end
    if rd.ok then rd:extra() end
    return string.format("FTSS %s node=%s %s port=%d %d MACs", kind, lhex(node),
        name_of(node_states, state), port, have)
end

local function add_name(rd, fl, tree)
    local len_item, n = rd:uint(fl.name_len, 2, tree)
    local item, r = rd:bytes(fl.filename, n, "name_len", tree, len_item, true)
    return r:raw(), item
end

local function dissect_write(rd)
    if not rd:need(20, "WRITE") then return nil end
    local _, req = rd:uint(WRITE.req_id, 4)
    rd:uint(WRITE.offset, 8)
    local r = rd.tvb(rd.off, 2)
    add_flags(rd.tree, WRITE.wflags, WRITE_flag_bits, r, r:uint(), write_flag_names)
    rd.off = rd.off + 2
    local nl_item, name_len = rd:uint(WRITE.name_len, 2)
    local dl_item, data_len = rd:uint(WRITE.data_len, 4)
    local _, nr = rd:bytes(WRITE.filename, name_len, "name_len", nil, nl_item, true)
    local _, dr = rd:bytes(WRITE.data, data_len, "data_len", nil, dl_item)
    rd:extra()
    return string.format("FTSS WRITE req=%s %s %dB", lhex(req), printable(nr:raw()), dr:len())
end

local function dissect_read(rd)
    if not rd:need(18, "READ") then return nil end
    local _, req = rd:uint(READ.req_id, 4)
    rd:uint(READ.offset, 8)
    rd:uint(READ.count, 4)
    local name = add_name(rd, READ)
    rd:extra()
    return string.format("FTSS READ req=%s %s", lhex(req), printable(name))
end

local function dissect_named(rd, fl, kind)
    if not rd:need(6, kind) then return nil end
    local _, req = rd:uint(fl.req_id, 4)
    local name = add_name(rd, fl)
    rd:extra()
    return string.format("FTSS %s req=%s %s", kind, lhex(req), printable(name))
end

local function dissect_response(rd)
    if not rd:need(8, "RESPONSE") then return nil end
    local _, req = rd:uint(RESP.req_id, 4)
    local _, status = rd:uint(RESP.status, 1)
    local _, op = rd:uint(RESP.op, 1)
    local dl_item, data_len = rd:uint(RESP.data_len, 2)
    local s = string.format("FTSS RESPONSE req=%s %s %s", lhex(req), name_of(opcodes, op),
        name_of(file_status, status))
    if op ~= OP_LIST then
        local _, dr = rd:bytes(RESP.data, data_len, "data_len", nil, dl_item)
        rd:extra()
        return string.format("%s %dB", s, dr:len())
    end
    -- LIST: data_len bytes of (name_len, filename) entries
    if data_len > rd:left() then
        dl_item:add_proto_expert_info(E.field_len, string.format(
            "RESPONSE data_len = %d exceeds the %d bytes left in the RESPONSE body", data_len,
            rd:left()))
        rd.ok = false
        data_len = rd:left()
    end
    local list_item = rd.tree:add(RESP.names, rd.tvb(rd.off, data_len))
    local list_end = rd.off + data_len
    local count = 0
    local list_rd = reader(rd.tvb(0, list_end):tvb(), list_item, rd.pinfo, "RESPONSE name list")
    list_rd.off = rd.off
    while list_rd.off < list_end do
        local start = list_rd.off
        local entry = list_item:add(B.fname, rd.tvb(start, list_end - start))
        if list_rd:left() < 2 then
            entry:add_proto_expert_info(E.truncated, string.format(
                "Truncated name list entry: %d byte left, name_len needs 2", list_rd:left()))
            rd.ok = false
            list_rd.off = list_end
        else
            local name = add_name(list_rd, FNAME, entry)
            entry:set_len(list_rd.off - start)
            entry:append_text(": " .. printable(name))
            if not list_rd.ok then rd.ok = false end
        end
        count = count + 1
    end
    list_item:append_text(string.format(" (%d)", count))
    rd.off = list_end
    rd:extra()
    return string.format("%s %d names", s, count)
end

---------------------------------------------------------------------------------------------

local function dissect_message(tvb, pinfo, tree)
    local captured = tvb:len()
    pinfo.cols.protocol:set("FTSS")
    local root = tree:add(p_ftss, tvb())
    if captured < HDR_LEN then
        root:add_proto_expert_info(E.short, string.format(
            "FTSS message too short: %d bytes, the header needs %d", captured, HDR_LEN))
        pinfo.cols.info:set(string.format("FTSS [too short: %d bytes]", captured))
        return
    end
    local b0 = tvb(0, 1):uint()
    local version, flags = math.floor(b0 / 16), b0 % 16
    local opcode = tvb(1, 1):uint()
    local length = tvb(2, 2):uint()

    local vitem = root:add(F.version, tvb(0, 1))
    if version ~= FTSS_VERSION then
        vitem:add_proto_expert_info(E.version, string.format(
            "Unsupported FTSS version %d (expected %d)", version, FTSS_VERSION))
    end
    add_flags(root, F.flags, F_flag_bits, tvb(0, 1), flags, hdr_flag_names)
    local oitem = root:add(F.opcode, tvb(1, 1))
    local litem = root:add(F.length, tvb(2, 2))

    local reported = tvb:reported_length_remaining(0)
    local msg_len = length
    if length < HDR_LEN then
        litem:add_proto_expert_info(E.length, string.format(
            "FTSS length %d is less than the %d-byte header", length, HDR_LEN))
        msg_len = HDR_LEN
    elseif length > reported then
        litem:add_proto_expert_info(E.length, string.format(
            "FTSS length %d exceeds the %d bytes captured", length, reported))
        msg_len = reported
    end
    if msg_len > captured then msg_len = captured end -- snapshot-truncated capture

    local kind = opcodes[opcode]
    local header = string.format("FTSS v%d %s len=%d", version, kind or tostring(opcode), length)
    if flags ~= 0 then header = header .. " [" .. flag_text(flags, hdr_flag_names) .. "]" end

    local summary, info_done
    if kind == nil then
        oitem:add_proto_expert_info(E.opcode, string.format("Unknown FTSS opcode 0x%02x", opcode))
        summary = header
    else
        local body = tvb(HDR_LEN, msg_len - HDR_LEN):tvb()
        local btree = root:add(B[kind:lower()],
            tvb(HDR_LEN, msg_len - HDR_LEN))
        local rd = reader(body, btree, pinfo, kind)
        if opcode == OP_PKT then
            summary, info_done = dissect_pkt(rd, body, pinfo, tree)
        elseif opcode == OP_ACK then
            summary = dissect_ack(rd)
        elseif opcode == OP_HELLO then
            summary = dissect_node(rd, HELLO, kind)
        elseif opcode == OP_STATUS then
            summary = dissect_node(rd, STATUS, kind)
        elseif opcode == OP_WRITE then
            summary = dissect_write(rd)
        elseif opcode == OP_READ then
            summary = dissect_read(rd)
        elseif opcode == OP_LIST then
            summary = dissect_named(rd, LIST, kind)
        elseif opcode == OP_DELETE then
            summary = dissect_named(rd, DELETE, kind)
        else
            summary = dissect_response(rd)
        end
        if summary == nil then summary = header .. " [truncated]" end
    end
    if not info_done then pinfo.cols.info:set(summary) end
    root:append_text(string.format(", v%d len=%d: %s", version, length, summary:sub(6)))

    -- padding to 32 bits, then anything else FC carried
    if length >= HDR_LEN and length <= captured then
        local pad = (4 - length % 4) % 4
        local rest = captured - length
        local pad_n = math.min(pad, rest)
        if pad_n > 0 then
            local pr = tvb(length, pad_n)
            local item = root:add(F.padding, pr)
            if pr:bytes():tohex():find("[^0]") then item:add_proto_expert_info(E.padding) end
        end
        if rest > pad_n then
            local tr = tvb(length + pad_n, rest - pad_n)
            root:add(F.trailer, tr):add_proto_expert_info(E.trailing, string.format(
                "%d bytes after the padded FTSS message (length %d)", rest - pad_n, length))
        end
    end
end

function p_ftss.dissector(tvb, pinfo, tree)
    local types = { fc_type_field() }
    local fc_type = types[#types]
    if fc_type == nil or fc_type.value ~= FTSS_FC_TYPE then return 0 end
    dissect_message(tvb, pinfo, tree)
    return tvb:len()
end

DissectorTable.get("fc.ftype"):add(0, p_ftss)
