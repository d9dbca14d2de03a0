-- SPDX-License-Identifier: GPL-2.0-or-later
-- ftsslab: TCP handoff (TCH, seed 002) for Wireshark 4.0.
--
-- Source of truth: layers/tch.py (Scapy). Three parts:
--   * "tch"          postdissector: HND/SET/END in the TCP reserved bits (Scapy TCP.reserved)
--   * "tch.endpoint" TCP option kind 255, length 8 (client port, client IPv4)
--   * "tch.update"   TCP option kind 254, length 10 (seq, ack); replaces the RFC 6994 handler
--   * "tch.msg"      TCHMessage (Open / Open Response / Message) on UDP port 4494
-- Field abbreviations are <prefix>.<Scapy field name>.

local TCH_UDP_PORT = 4494
local TCH_ENDPOINT_KIND = 255
local TCH_UPDATE_KIND = 254
local TCH_ENDPOINT_LEN = 8
local TCH_UPDATE_LEN = 10
local TCH_HEADER_LEN = 16
local TCH_STATE_LEN = 68
local TCH_MAX_MESSAGE = 1472
local TCH_VERSION = 1

local TCH_OPEN, TCH_OPEN_RESPONSE, TCH_MESSAGE = 1, 2, 3
local TCH_MSG_UPDATE, TCH_MSG_HANDOFF = 1, 4

-- value tables: the names of Scapy's enums
local PACKET_TYPES = { [1] = "Open", [2] = "OpenResponse", [3] = "Message" }
local MESSAGE_TYPES = {
    [0] = "none", [1] = "Update", [2] = "Fail", [3] = "Done",
    [4] = "Handoff", [5] = "Complete", [6] = "Ack",
}
local HANDOFF_TYPES = { [1] = "full", [2] = "half-client", [3] = "half-cluster", [4] = "predictive" }
local STATUSES = { [0] = "ok", [1] = "timeout", [2] = "denied", [3] = "client-closed", [4] = "superseded" }
local INITIATORS = { [1] = "first", [2] = "second", [3] = "other" }

---------------------------------------------------------------------------
-- (a) HND / SET / END in the TCP reserved bits: postdissector
---------------------------------------------------------------------------

local p_tch = Proto("tch", "TCP Handoff (TCH) Flags")

-- masks are those of the 16-bit word "data offset | reserved | flags" of the TCP header
local pf_flags = ProtoField.uint16("tch.flags", "TCH flags", base.HEX, nil, 0x0E00,
    "TCP.reserved: the three reserved TCP header bits carrying HND, SET, END")
local pf_flags_hnd = ProtoField.bool("tch.flags.hnd", "HND", 16, { "Set", "Not set" }, 0x0800,
    "Part of a TCH session")
local pf_flags_set = ProtoField.bool("tch.flags.set", "SET", 16, { "Set", "Not set" }, 0x0400,
    "Force a handoff")
local pf_flags_end = ProtoField.bool("tch.flags.end", "END", 16, { "Set", "Not set" }, 0x0200,
    "Handoff complete")
p_tch.fields = { pf_flags, pf_flags_hnd, pf_flags_set, pf_flags_end }

local fx_tcp_flags = Field.new("tcp.flags")

local function flag_names(reserved)
    local names = {}
    if bit.band(reserved, 0x4) ~= 0 then names[#names + 1] = "HND" end
    if bit.band(reserved, 0x2) ~= 0 then names[#names + 1] = "SET" end
    if bit.band(reserved, 0x1) ~= 0 then names[#names + 1] = "END" end
    return table.concat(names, ",")
end

function p_tch.dissector(_, pinfo, tree)
    local ok, infos = pcall(function() return { fx_tcp_flags() } end)
    if not ok or infos == nil then return end
    local first = true
    for _, fi in ipairs(infos) do
        local v = fi.value
        local reserved = 0
        if type(v) == "number" then
            reserved = bit.band(bit.rshift(v, 9), 0x7)
        end
        if reserved ~= 0 then
            local names = flag_names(reserved)
            local sub
            local rng = fi.range
            if rng ~= nil then
                sub = tree:add(p_tch, rng)
            else
                sub = tree:add(p_tch)
            end
            sub:set_text("TCP Handoff (TCH) Flags: " .. names)
            local word = bit.lshift(reserved, 9)
            local item
            if rng ~= nil and rng:len() == 2 then
                item = sub:add(pf_flags, rng)
                item:add(pf_flags_hnd, rng)
                item:add(pf_flags_set, rng)
                item:add(pf_flags_end, rng)
            else
                item = sub:add(pf_flags, word)
                item:add(pf_flags_hnd, word)
                item:add(pf_flags_set, word)
                item:add(pf_flags_end, word)
            end
            item:append_text(" (" .. names .. ")")
            if first then
                pinfo.cols.info:append(" [TCH " .. names .. "]")
                first = false
            end
        end
    end
end

register_postdissector(p_tch)

---------------------------------------------------------------------------
-- (b) TCP options 255 (endpoint) and 254 (update)
---------------------------------------------------------------------------

local p_ep = Proto("tch.endpoint", "TCH Endpoint")
local pf_ep_kind = ProtoField.uint8("tch.endpoint.kind", "Kind", base.DEC)
local pf_ep_len = ProtoField.uint8("tch.endpoint.len", "Length", base.DEC)
local pf_ep_port = ProtoField.uint16("tch.endpoint.port", "Client port", base.DEC)
local pf_ep_ip = ProtoField.ipv4("tch.endpoint.ip", "Client IPv4 address")
p_ep.fields = { pf_ep_kind, pf_ep_len, pf_ep_port, pf_ep_ip }
local ex_ep_len = ProtoExpert.new("tch.endpoint.bad_len", "TCH endpoint option length wrong",
    expert.group.MALFORMED, expert.severity.ERROR)
p_ep.experts = { ex_ep_len }

local p_up = Proto("tch.update", "TCH Update")
local pf_up_kind = ProtoField.uint8("tch.update.kind", "Kind", base.DEC)
local pf_up_len = ProtoField.uint8("tch.update.len", "Length", base.DEC)
local pf_up_seq = ProtoField.uint32("tch.update.seq", "Sequence number", base.DEC)
local pf_up_ack = ProtoField.uint32("tch.update.ack", "Acknowledgment number", base.DEC)
p_up.fields = { pf_up_kind, pf_up_len, pf_up_seq, pf_up_ack }
local ex_up_len = ProtoExpert.new("tch.update.bad_len", "TCH update option length wrong",
    expert.group.MALFORMED, expert.severity.ERROR)
p_up.experts = { ex_up_len }

-- The tvb is the whole option (kind, length, value), as TCP hands it to tcp.option.
local function option_header(tvb, tree, proto, title, pf_kind, pf_len, want, ex_len)
    local n = tvb:len()
    local item = tree:add(proto, tvb())
    item:set_text("TCP Option - " .. title)
    if n >= 1 then item:add(pf_kind, tvb(0, 1)) end
    local optlen = nil
    if n >= 2 then
        optlen = tvb(1, 1):uint()
        item:add(pf_len, tvb(1, 1))
    end
    if optlen ~= want or n < want then
        item:add_proto_expert_info(ex_len, string.format(
            "%s option length %s, expected %d", title, tostring(optlen or n), want))
        item:append_text(" (bad length)")
        return item, false
    end
    return item, true
end

function p_ep.dissector(tvb, pinfo, tree)
    local item, ok = option_header(tvb, tree, p_ep, "TCH Endpoint", pf_ep_kind, pf_ep_len,
        TCH_ENDPOINT_LEN, ex_ep_len)
    if ok then
        item:add(pf_ep_port, tvb(2, 2))
        item:add(pf_ep_ip, tvb(4, 4))
        item:append_text(string.format(": %s:%d", tostring(tvb(4, 4):ipv4()), tvb(2, 2):uint()))
    end
    return tvb:len()
end

function p_up.dissector(tvb, pinfo, tree)
    local item, ok = option_header(tvb, tree, p_up, "TCH Update", pf_up_kind, pf_up_len,
        TCH_UPDATE_LEN, ex_up_len)
    if ok then
        item:add(pf_up_seq, tvb(2, 4))
        item:add(pf_up_ack, tvb(6, 4))
        item:append_text(string.format(": seq=%d ack=%d", tvb(2, 4):uint(), tvb(6, 4):uint()))
    end
    return tvb:len()
end

do
    local opts = DissectorTable.get("tcp.option")
    opts:add(TCH_ENDPOINT_KIND, p_ep)
    opts:add(TCH_UPDATE_KIND, p_up)
end

---------------------------------------------------------------------------
-- (c) TCHMessage on UDP 4494
---------------------------------------------------------------------------

local p_msg = Proto("tch.msg", "TCP Handoff (TCH) Message")

local F = {
    version = ProtoField.uint8("tch.msg.version", "Version", base.DEC, nil, 0xF0),
    ptype = ProtoField.uint8("tch.msg.ptype", "Packet type", base.DEC, PACKET_TYPES, 0x0F),
    mtype = ProtoField.uint8("tch.msg.mtype", "Message type", base.DEC, MESSAGE_TYPES),
    htype = ProtoField.uint8("tch.msg.htype", "Handoff type", base.DEC, HANDOFF_TYPES),
    status = ProtoField.uint8("tch.msg.status", "Status", base.DEC, STATUSES),
    session_id = ProtoField.uint32("tch.msg.session_id", "Session ID", base.HEX),
    xid = ProtoField.uint32("tch.msg.xid", "Transaction ID", base.DEC),
    initiator = ProtoField.uint8("tch.msg.initiator", "Initiator", base.DEC, INITIATORS),
    reserved = ProtoField.uint8("tch.msg.reserved", "Reserved", base.DEC),
    app_len = ProtoField.uint16("tch.msg.app_len", "Application state length", base.DEC),
    client_ip = ProtoField.ipv4("tch.msg.client_ip", "Client IPv4 address"),
    cluster_ip = ProtoField.ipv4("tch.msg.cluster_ip", "Cluster (virtual) IPv4 address"),
    client_port = ProtoField.uint16("tch.msg.client_port", "Client port", base.DEC),
    cluster_port = ProtoField.uint16("tch.msg.cluster_port", "Cluster port", base.DEC),
    seq = ProtoField.uint32("tch.msg.seq", "Sequence (SND.NXT)", base.DEC),
    ack = ProtoField.uint32("tch.msg.ack", "Acknowledgment (RCV.NXT)", base.DEC),
    snd_una = ProtoField.uint32("tch.msg.snd_una", "SND.UNA", base.DEC),
    snd_wnd = ProtoField.uint32("tch.msg.snd_wnd", "Send window (bytes)", base.DEC),
    rcv_wnd = ProtoField.uint32("tch.msg.rcv_wnd", "Receive window (bytes)", base.DEC),
    snd_wscale = ProtoField.uint8("tch.msg.snd_wscale", "Send window scale", base.DEC),
    rcv_wscale = ProtoField.uint8("tch.msg.rcv_wscale", "Receive window scale", base.DEC),
    mss = ProtoField.uint16("tch.msg.mss", "MSS", base.DEC),
    cwnd = ProtoField.uint32("tch.msg.cwnd", "Congestion window (bytes)", base.DEC),
    ssthresh = ProtoField.uint32("tch.msg.ssthresh", "Slow-start threshold (bytes)", base.DEC),
    srtt = ProtoField.uint32("tch.msg.srtt", "SRTT (us)", base.DEC),
    rttvar = ProtoField.uint32("tch.msg.rttvar", "RTTVAR (us)", base.DEC),
    rto = ProtoField.uint32("tch.msg.rto", "Retransmission timer (ms)", base.DEC),
    keepalive = ProtoField.uint32("tch.msg.keepalive", "Keep-alive timer (ms)", base.DEC),
    persist = ProtoField.uint32("tch.msg.persist", "Persist timer (ms)", base.DEC),
    delack = ProtoField.uint32("tch.msg.delack", "Delayed-ACK timer (ms)", base.DEC),
    app_state = ProtoField.bytes("tch.msg.app_state", "Application state"),
    padding = ProtoField.bytes("tch.msg.padding", "Padding"),
}
-- wire order of the TCP state block: {name, size}
local STATE = {
    { "client_ip", 4 }, { "cluster_ip", 4 }, { "client_port", 2 }, { "cluster_port", 2 },
    { "seq", 4 }, { "ack", 4 }, { "snd_una", 4 }, { "snd_wnd", 4 }, { "rcv_wnd", 4 },
    { "snd_wscale", 1 }, { "rcv_wscale", 1 }, { "mss", 2 }, { "cwnd", 4 }, { "ssthresh", 4 },
    { "srtt", 4 }, { "rttvar", 4 }, { "rto", 4 }, { "keepalive", 4 }, { "persist", 4 },
    { "delack", 4 },
}
do
    local order = { "version", "ptype", "mtype", "htype", "status", "session_id", "xid",
        "initiator", "reserved", "app_len" }
    for _, e in ipairs(STATE) do order[#order + 1] = e[1] end
    order[#order + 1] = "app_state"
    order[#order + 1] = "padding"
    local list = {}
    for _, name in ipairs(order) do list[#list + 1] = F[name] end
    p_msg.fields = list
end

local EX = {
    short = ProtoExpert.new("tch.msg.too_short", "TCH message too short",
        expert.group.MALFORMED, expert.severity.ERROR),
    no_state = ProtoExpert.new("tch.msg.state_missing", "TCH TCP state block missing",
        expert.group.MALFORMED, expert.severity.ERROR),
    bad_len = ProtoExpert.new("tch.msg.bad_app_len", "TCH application state length exceeds the message",
        expert.group.MALFORMED, expert.severity.ERROR),
    ptype = ProtoExpert.new("tch.msg.unknown_ptype", "Unknown TCH packet kind",
        expert.group.PROTOCOL, expert.severity.WARN),
    mtype = ProtoExpert.new("tch.msg.unknown_mtype", "Unknown TCH message type",
        expert.group.PROTOCOL, expert.severity.WARN),
    version = ProtoExpert.new("tch.msg.bad_version", "Unknown TCH version",
        expert.group.PROTOCOL, expert.severity.WARN),
    too_big = ProtoExpert.new("tch.msg.too_big", "TCH message larger than 1472 bytes",
        expert.group.PROTOCOL, expert.severity.WARN),
}
p_msg.experts = { EX.short, EX.no_state, EX.bad_len, EX.ptype, EX.mtype, EX.version, EX.too_big }

local function carries_state(ptype, mtype)
    return ptype == TCH_OPEN or
        (ptype == TCH_MESSAGE and (mtype == TCH_MSG_UPDATE or mtype == TCH_MSG_HANDOFF))
end

local function enum_name(tbl, v)
    return tbl[v] or tostring(v)
end

function p_msg.dissector(tvb, pinfo, tree)
    local n = tvb:len()
    pinfo.cols.protocol:set("TCH")
    local root = tree:add(p_msg, tvb())

    if n < 2 then
        root:add_proto_expert_info(EX.short, string.format(
            "TCH message too short: %d bytes, the header needs %d", n, TCH_HEADER_LEN))
        pinfo.cols.info:set("TCH [too short]")
        return n
    end
    local b0 = tvb(0, 1):uint()
    local version = bit.rshift(b0, 4)
    local ptype = bit.band(b0, 0x0F)
    local mtype = tvb(1, 1):uint()
    local stateful = carries_state(ptype, mtype)
    local kind = enum_name(PACKET_TYPES, ptype)
    if ptype == TCH_MESSAGE then kind = enum_name(MESSAGE_TYPES, mtype) end

    if n < TCH_HEADER_LEN then
        root:add(F.version, tvb(0, 1))
        root:add(F.ptype, tvb(0, 1))
        root:add(F.mtype, tvb(1, 1))
        root:add_proto_expert_info(EX.short, string.format(
            "TCH message too short: %d bytes, the header needs %d", n, TCH_HEADER_LEN))
        root:append_text(", " .. kind .. " [too short]")
        pinfo.cols.info:set("TCH " .. kind .. " [too short]")
        return n
    end

    local htype = tvb(2, 1):uint()
    local status = tvb(3, 1):uint()
    local session_id = tvb(4, 4):uint()
    local xid = tvb(8, 4):uint()
    local app_len = tvb(14, 2):uint()

    local vitem = root:add(F.version, tvb(0, 1))
    if version ~= TCH_VERSION then
        vitem:add_proto_expert_info(EX.version, string.format("Unknown TCH version %d", version))
    end
    local pitem = root:add(F.ptype, tvb(0, 1))
    if PACKET_TYPES[ptype] == nil then
        pitem:add_proto_expert_info(EX.ptype, string.format("Unknown TCH packet kind %d", ptype))
    end
    local mitem = root:add(F.mtype, tvb(1, 1))
    if ptype == TCH_MESSAGE and (MESSAGE_TYPES[mtype] == nil or mtype == 0) then
        mitem:add_proto_expert_info(EX.mtype, string.format("Unknown TCH message type %d", mtype))
    end
    root:add(F.htype, tvb(2, 1))
    root:add(F.status, tvb(3, 1))
    root:add(F.session_id, tvb(4, 4))
    root:add(F.xid, tvb(8, 4))
    root:add(F.initiator, tvb(12, 1))
    root:add(F.reserved, tvb(13, 1))
    local litem = root:add(F.app_len, tvb(14, 2))

    local summary = string.format("TCH %s %s session=0x%x xid=%d %s", kind,
        enum_name(HANDOFF_TYPES, htype), session_id, xid, enum_name(STATUSES, status))
    root:append_text(", " .. string.sub(summary, 5))
    pinfo.cols.info:set(summary)

    local size = tvb:reported_length_remaining()
    if size > TCH_MAX_MESSAGE then
        root:add_proto_expert_info(EX.too_big, string.format(
            "TCH message is %d bytes; a 1500-byte IP packet over UDP carries at most %d",
            size, TCH_MAX_MESSAGE))
    end

    local off = TCH_HEADER_LEN
    if stateful then
        if n < TCH_HEADER_LEN + TCH_STATE_LEN then
            root:add_proto_expert_info(EX.no_state, string.format(
                "%s carries the %d-byte TCP state block, but only %d bytes follow the header",
                kind, TCH_STATE_LEN, n - TCH_HEADER_LEN))
            root:append_text(" [state block missing]")
            pinfo.cols.info:append(" [state block missing]")
            return n
        end
        local st = root:add(tvb(off, TCH_STATE_LEN), "TCP state")
        for _, e in ipairs(STATE) do
            st:add(F[e[1]], tvb(off, e[2]))
            off = off + e[2]
        end
    end

    local avail = n - off
    local take = app_len
    if app_len > avail then
        take = avail
        litem:add_proto_expert_info(EX.bad_len, string.format(
            "Application state length %d exceeds the %d bytes left in the message", app_len, avail))
    end
    -- always added (empty too): the occurrence count stays equal to Scapy's
    local aitem = root:add(F.app_state, tvb(off, take))
    if take == 0 then aitem:set_text("Application state: (none)") end
    off = off + take
    if off < n then
        root:add(F.padding, tvb(off, n - off))
    end
    return n
end

DissectorTable.get("udp.port"):add(TCH_UDP_PORT, p_msg)
