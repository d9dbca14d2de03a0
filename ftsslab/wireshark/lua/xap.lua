-- SPDX-License-Identifier: GPL-2.0-or-later
-- ftsslab: XAP, the Extended Addressing Protocol of seed 002 (Wireshark 4.0 Lua).
--
-- One source of truth: layers/xap.py.  Field abbreviations are "<prefix>.<Scapy field>":
--   XAP, XAPShort  -> "xap"        (one message, full 15 / short 11 bytes)
--   XAPUDP         -> "xap.udp"    (UDP port 5016: form, count, messages, TLVs)
--   XAPTLV, XAPTLVClientIP, XAPTLVTargetIP -> "xap.tlv" (type, length, value / client_ip /
--                                             target_ip)
--   IPOption_XAP   -> "xap.ipopt"  (IP option type 158)
--   TCP option 253 -> "xap.tcpopt" (kind, len, exid; not a Scapy class)
-- Registration: udp.port 5016, ip.option 158, tcp.option 253 (replaces Wireshark's
-- RFC 6994 experimental handler, which still shows kind-253 options of other ExIDs).

local XAP_VERSION = 1
local XAP_FULL_LEN = 15
local XAP_SHORT_LEN = 11
local XAP_TCP_OPTION_KIND = 253
local XAP_TCP_EXID = 0x5841
local XAP_IP_OPTION_TYPE = 158
local XAP_UDP_PORT = 5016
local XAP_FORM_SHORT = 0
local XAP_FORM_FULL = 1
local XAP_TLV_CLIENT_IP = 1
local XAP_TLV_TARGET_IP = 2
local XAP_TLV_IP_LEN = 4

-- Value tables: the names of Scapy's enums.
local OPERATIONS = { [1] = "query", [2] = "change_connection", [3] = "set", [4] = "redirect",
                     [8] = "ack" }
local FORMS = { [XAP_FORM_SHORT] = "short", [XAP_FORM_FULL] = "full" }
local TLV_TYPES = { [XAP_TLV_CLIENT_IP] = "client_ip", [XAP_TLV_TARGET_IP] = "target_ip" }
-- scapy.data.IP_PROTOS (read from /etc/protocols, "-" written "_"), 0..255.
local IP_PROTOS = {
    [0] = "hopopt", [1] = "icmp", [2] = "igmp", [3] = "ggp", [4] = "ipencap", [5] = "st",
    [6] = "tcp", [8] = "egp", [9] = "igp", [12] = "pup", [17] = "udp", [20] = "hmp",
    [22] = "xns_idp", [27] = "rdp", [29] = "iso_tp4", [33] = "dccp", [36] = "xtp",
    [37] = "ddp", [38] = "idpr_cmtp", [41] = "ipv6", [43] = "ipv6_route", [44] = "ipv6_frag",
    [45] = "idrp", [46] = "rsvp", [47] = "gre", [50] = "esp", [51] = "ah", [57] = "skip",
    [58] = "ipv6_icmp", [59] = "ipv6_nonxt", [60] = "ipv6_opts", [73] = "rspf", [81] = "vmtp",
    [88] = "eigrp", [89] = "ospf", [93] = "ax_25", [94] = "ipip", [97] = "etherip",
    [98] = "encap", [103] = "pim", [108] = "ipcomp", [112] = "vrrp", [115] = "l2tp",
    [124] = "isis", [132] = "sctp", [133] = "fc", [135] = "mobility_header", [136] = "udplite",
    [137] = "mpls_in_ip", [138] = "manet", [139] = "hip", [140] = "shim6", [141] = "wesp",
    [142] = "rohc", [143] = "ethernet",
}
-- scapy.layers.inet._IPOption_HDR enums.
local IPOPT_CLASSES = { [0] = "control", [2] = "debug" }
local IPOPT_NUMBERS = {
    [0] = "end_of_list", [1] = "nop", [2] = "security", [3] = "loose_source_route",
    [4] = "timestamp", [5] = "extended_security", [6] = "commercial_security",
    [7] = "record_route", [8] = "stream_id", [9] = "strict_source_route",
    [10] = "experimental_measurement", [11] = "mtu_probe", [12] = "mtu_reply",
    [13] = "flow_control", [14] = "access_control", [15] = "encode",
    [16] = "imi_traffic_descriptor", [17] = "extended_IP", [18] = "traceroute",
    [19] = "address_extension", [20] = "router_alert", [21] = "selective_directed_broadcast_mode",
    [23] = "dynamic_packet_state", [24] = "upstream_multicast_packet", [25] = "quick_start",
    [30] = "rfc4727_experiment",
}

local p_xap = Proto("xap", "XAP (Extended Addressing Protocol)")
local p_udp = Proto("xap.udp", "XAP over UDP")
local p_tlv = Proto("xap.tlv", "XAP TLV")
local p_tcpopt = Proto("xap.tcpopt", "TCP Option - XAP (kind 253, ExID 0x5841)")
local p_ipopt = Proto("xap.ipopt", "IP Option XAP (Extended Addressing Protocol)")

-- XAP / XAPShort (one message)
local f = {
    index = ProtoField.uint8("xap.index", "Index in cascade", base.DEC),
    version = ProtoField.uint8("xap.version", "Version", base.DEC, nil, 0xF0),
    operation = ProtoField.uint8("xap.operation", "Operation", base.DEC, OPERATIONS, 0x0F),
    nonce = ProtoField.uint24("xap.nonce", "Nonce", base.HEX),
    proto = ProtoField.uint8("xap.proto", "Protocol", base.DEC, IP_PROTOS),
    sport = ProtoField.uint16("xap.sport", "Source Port", base.DEC),
    dport = ProtoField.uint16("xap.dport", "Destination Port", base.DEC),
    xid = ProtoField.uint16("xap.xid", "Transaction ID", base.HEX),
    cluster_id = ProtoField.ipv4("xap.cluster_id", "Cluster ID"),
    -- XAPUDP
    udp_form = ProtoField.uint8("xap.udp.form", "Form", base.DEC, FORMS),
    udp_count = ProtoField.uint8("xap.udp.count", "Count", base.DEC),
    udp_data = ProtoField.bytes("xap.udp.data", "Undissected bytes"),
    -- XAPTLV, XAPTLVClientIP, XAPTLVTargetIP
    tlv_type = ProtoField.uint8("xap.tlv.type", "Type", base.DEC, TLV_TYPES),
    tlv_length = ProtoField.uint8("xap.tlv.length", "Length", base.DEC),
    tlv_value = ProtoField.bytes("xap.tlv.value", "Value"),
    tlv_client_ip = ProtoField.ipv4("xap.tlv.client_ip", "Client IP"),
    tlv_target_ip = ProtoField.ipv4("xap.tlv.target_ip", "Target IP"),
    -- TCP option 253
    tcp_kind = ProtoField.uint8("xap.tcpopt.kind", "Kind", base.DEC),
    tcp_len = ProtoField.uint8("xap.tcpopt.len", "Length", base.DEC),
    tcp_exid = ProtoField.uint16("xap.tcpopt.exid", "Experiment Identifier (ExID)", base.HEX),
    tcp_data = ProtoField.bytes("xap.tcpopt.data", "Undissected bytes"),
    -- IPOption_XAP
    ip_type = ProtoField.uint8("xap.ipopt.type", "Type", base.HEX),
    ip_copy_flag = ProtoField.uint8("xap.ipopt.copy_flag", "Copy on fragmentation", base.DEC,
                                    nil, 0x80),
    ip_optclass = ProtoField.uint8("xap.ipopt.optclass", "Class", base.DEC, IPOPT_CLASSES, 0x60),
    ip_option = ProtoField.uint8("xap.ipopt.option", "Number", base.DEC, IPOPT_NUMBERS, 0x1F),
    ip_length = ProtoField.uint8("xap.ipopt.length", "Length", base.DEC),
    ip_data = ProtoField.bytes("xap.ipopt.data", "Undissected bytes"),
}
p_xap.fields = { f.index, f.version, f.operation, f.nonce, f.proto, f.sport, f.dport, f.xid,
                 f.cluster_id }
p_udp.fields = { f.udp_form, f.udp_count, f.udp_data }
p_tlv.fields = { f.tlv_type, f.tlv_length, f.tlv_value, f.tlv_client_ip, f.tlv_target_ip }
p_tcpopt.fields = { f.tcp_kind, f.tcp_len, f.tcp_exid, f.tcp_data }
p_ipopt.fields = { f.ip_type, f.ip_copy_flag, f.ip_optclass, f.ip_option, f.ip_length, f.ip_data }

local e = {
    short = ProtoExpert.new("xap.too_short", "XAP: too short",
                            expert.group.MALFORMED, expert.severity.ERROR),
    bad_length = ProtoExpert.new("xap.bad_length", "XAP: bad length",
                                 expert.group.MALFORMED, expert.severity.WARN),
    count = ProtoExpert.new("xap.count_mismatch", "XAP: count does not match the length",
                            expert.group.MALFORMED, expert.severity.WARN),
    tlv_cut = ProtoExpert.new("xap.tlv_truncated", "XAP: TLV cut short by the datagram's end",
                              expert.group.MALFORMED, expert.severity.WARN),
    tlv_length = ProtoExpert.new("xap.tlv_bad_length", "XAP: address TLV not of 4 bytes",
                                 expert.group.MALFORMED, expert.severity.WARN),
    operation = ProtoExpert.new("xap.unknown_operation", "XAP: unknown operation",
                                expert.group.PROTOCOL, expert.severity.WARN),
    form = ProtoExpert.new("xap.unknown_form", "XAP: unknown form",
                           expert.group.PROTOCOL, expert.severity.WARN),
    version = ProtoExpert.new("xap.unknown_version", "XAP: unknown version",
                              expert.group.PROTOCOL, expert.severity.NOTE),
    exid = ProtoExpert.new("xap.foreign_exid", "TCP option 253 of another experiment",
                           expert.group.PROTOCOL, expert.severity.NOTE),
}
p_xap.experts = { e.short, e.bad_length, e.count, e.tlv_cut, e.tlv_length, e.operation, e.form,
                  e.version, e.exid }

-- Wireshark's own RFC 6994 handler for kind 253, kept for other experiments' ExIDs.
local tcp_option_table = DissectorTable.get("tcp.option")
local generic_exp = tcp_option_table:get_dissector(XAP_TCP_OPTION_KIND)

-- Summaries to append to the Info column after every other dissector ran (TCP and the
-- TCP payload dissectors rewrite the column after the IP and TCP options are read).
local pending = {}

local function name_or_number(tbl, v)
    return tbl[v] or tostring(v)
end

-- Scapy's XAPShort/XAP mysummary(): "XAP %operation% %proto% %sport%>%dport% xid=%xid%".
local function summary(op, proto, sport, dport, xid, cluster)
    local s = string.format("XAP %s %s %d>%d xid=0x%x", name_or_number(OPERATIONS, op),
                            name_or_number(IP_PROTOS, proto), sport, dport, xid)
    if cluster then
        s = s .. " cluster=" .. cluster
    end
    return s
end

-- One message of msglen (15 or 11) bytes at offset; the caller checked the length.
local function dissect_message(tvb, offset, msglen, index, tree)
    local r = tvb(offset, msglen)
    local item = tree:add(p_xap, r)
    local b0 = tvb(offset, 1):uint()
    local version, op = math.floor(b0 / 16), b0 % 16
    local proto = tvb(offset + 4, 1):uint()
    local sport, dport = tvb(offset + 5, 2):uint(), tvb(offset + 7, 2):uint()
    local xid = tvb(offset + 9, 2):uint()
    item:add(f.index, index):set_generated()
    item:add(f.version, tvb(offset, 1))
    local op_item = item:add(f.operation, tvb(offset, 1))
    item:add(f.nonce, tvb(offset + 1, 3))
    item:add(f.proto, tvb(offset + 4, 1))
    item:add(f.sport, tvb(offset + 5, 2))
    item:add(f.dport, tvb(offset + 7, 2))
    item:add(f.xid, tvb(offset + 9, 2))
    local cluster
    if msglen == XAP_FULL_LEN then
        item:add(f.cluster_id, tvb(offset + 11, 4))
        cluster = tostring(tvb(offset + 11, 4):ipv4())
    end
    if OPERATIONS[op] == nil then
        op_item:add_proto_expert_info(e.operation, string.format("Unknown XAP operation %d", op))
    end
    if version ~= XAP_VERSION then
        item:add_proto_expert_info(e.version,
            string.format("XAP version %d (only %d is defined)", version, XAP_VERSION))
    end
    local s = summary(op, proto, sport, dport, xid, cluster)
    item:set_text(string.format("XAP message %d (%s form): %s", index,
                                msglen == XAP_FULL_LEN and "full" or "short", s))
    return s
end

-- count messages of msglen bytes from offset; returns their summaries.
local function dissect_messages(tvb, offset, count, msglen, tree)
    local out = {}
    for i = 1, count do
        out[i] = dissect_message(tvb, offset + (i - 1) * msglen, msglen, i, tree)
    end
    return out
end

-- The form an option body length tells (layers/xap.py xap_message_class).
local function message_len(body_len)
    if body_len % XAP_FULL_LEN == 0 then
        return XAP_FULL_LEN
    elseif body_len % XAP_SHORT_LEN == 0 then
        return XAP_SHORT_LEN
    end
    return nil
end

local function add_pending(pinfo, text)
    local list = pending[pinfo.number]
    if list == nil then
        list = {}
        pending[pinfo.number] = list
    end
    list[#list + 1] = text
end

-- An option body: messages if its length tells a form, else bytes and a warning.
local function dissect_option_body(tvb, offset, body_len, item, data_field, what, pinfo)
    local msglen = message_len(body_len)
    if msglen == nil then
        if body_len > 0 then
            item:add(data_field, tvb(offset, body_len))
        end
        item:add_proto_expert_info(e.bad_length, string.format(
            "%s body of %d bytes is not a multiple of %d (full) or %d (short) bytes",
            what, body_len, XAP_FULL_LEN, XAP_SHORT_LEN))
        return 0
    end
    local n = math.floor(body_len / msglen)
    local sums = dissect_messages(tvb, offset, n, msglen, item)
    for _, s in ipairs(sums) do
        add_pending(pinfo, s)
    end
    return n, msglen
end

-- ": 2 full messages" after an option's title.
local function count_text(item, n, msglen)
    if msglen then
        item:append_text(string.format(": %d %s message%s", n,
                                       msglen == XAP_FULL_LEN and "full" or "short",
                                       n == 1 and "" or "s"))
    end
end

-- XAP over UDP --------------------------------------------------------------------------

-- The TLVs from offset to the end (XAPTLV, XAPTLVClientIP, XAPTLVTargetIP); returns the
-- Info text for the known ones ("client=... target=...").
local function dissect_tlvs(tvb, offset, tree)
    local len = tvb:len()
    local texts = {}
    while offset < len do
        local left = len - offset
        local length = left >= 2 and tvb(offset + 1, 1):uint() or nil
        if length == nil or 2 + length > left then
            local data = tree:add(f.udp_data, tvb(offset))
            data:add_proto_expert_info(e.tlv_cut, string.format(
                "%d bytes after the messages are not a whole TLV (type, length, value)", left))
            break
        end
        local t = tvb(offset, 1):uint()
        local item = tree:add(p_tlv, tvb(offset, 2 + length))
        item:add(f.tlv_type, tvb(offset, 1))
        item:add(f.tlv_length, tvb(offset + 1, 1))
        local name = TLV_TYPES[t]
        if name ~= nil and length == XAP_TLV_IP_LEN then
            local addr = tvb(offset + 2, 4)
            item:add(t == XAP_TLV_CLIENT_IP and f.tlv_client_ip or f.tlv_target_ip, addr)
            local text = (t == XAP_TLV_CLIENT_IP and "client=" or "target=")
                .. tostring(addr:ipv4())
            item:set_text("XAP TLV " .. name .. ": " .. tostring(addr:ipv4()))
            texts[#texts + 1] = text
        else
            local value = item:add(f.tlv_value, tvb(offset + 2, length))
            if length == 0 then
                value:set_text("Value: (none)")
            end
            item:set_text(string.format("XAP TLV %s, %d bytes", name or tostring(t), length))
            if name ~= nil then
                item:add_proto_expert_info(e.tlv_length, string.format(
                    "%s TLV of %d bytes (an IPv4 address has %d)", name, length,
                    XAP_TLV_IP_LEN))
            end
        end
        offset = offset + 2 + length
    end
    return table.concat(texts, " ")
end

function p_udp.dissector(tvb, pinfo, tree)
    local len = tvb:len()
    pinfo.cols.protocol = "XAP"
    local item = tree:add(p_udp, tvb())
    if len < 2 then
        item:add_proto_expert_info(e.short, string.format(
            "XAP/UDP datagram of %d bytes is shorter than its 2-byte header", len))
        if len > 0 then
            item:add(f.udp_data, tvb())
        end
        pinfo.cols.info = "XAP/UDP [too short]"
        return len
    end
    local form, count = tvb(0, 1):uint(), tvb(1, 1):uint()
    local form_item = item:add(f.udp_form, tvb(0, 1))
    local count_item = item:add(f.udp_count, tvb(1, 1))
    local msglen = (form == XAP_FORM_FULL and XAP_FULL_LEN)
        or (form == XAP_FORM_SHORT and XAP_SHORT_LEN) or nil
    local info
    if msglen == nil then
        form_item:add_proto_expert_info(e.form, string.format(
            "Unknown XAP/UDP form %d (0 short, 1 full)", form))
        if len > 2 then
            item:add(f.udp_data, tvb(2))
        end
        info = string.format("XAP/UDP %d x%d", form, len > 2 and 1 or 0)
        item:append_text(", " .. info)
    else
        local avail = len - 2
        local n = math.min(count, math.floor(avail / msglen))
        local sums = dissect_messages(tvb, 2, n, msglen, item)
        local used = 2 + n * msglen
        local shown = n
        local tlvs = ""
        if n < count then
            count_item:add_proto_expert_info(e.count, string.format(
                "Count %d needs %d bytes of %s messages, only %d follow",
                count, count * msglen, FORMS[form], avail))
            if used < len then
                item:add(f.udp_data, tvb(used))
                shown = shown + 1
            end
        elseif used < len then
            tlvs = dissect_tlvs(tvb, used, item)
        end
        info = string.format("XAP/UDP %s x%d", FORMS[form], shown)
        item:append_text(", " .. info)
        if #sums > 0 then
            info = info .. ": " .. table.concat(sums, "; ")
        end
        if tlvs ~= "" then
            info = info .. " [" .. tlvs .. "]"
        end
    end
    pinfo.cols.info = info
    return len
end

-- TCP option kind 253 -------------------------------------------------------------------

function p_tcpopt.dissector(tvb, pinfo, tree)
    local len = tvb:len()
    if len >= 4 and tvb(2, 2):uint() ~= XAP_TCP_EXID and generic_exp ~= nil then
        -- Another experiment's option: Wireshark's generic RFC 6994 view, not a misparse.
        generic_exp:call(tvb, pinfo, tree)
        tree:add_proto_expert_info(e.exid, string.format(
            "TCP option 253 with ExID 0x%04x is not XAP (0x%04x)", tvb(2, 2):uint(), XAP_TCP_EXID))
        return len
    end
    local item = tree:add(p_tcpopt, tvb())
    item:set_text("TCP Option - XAP (Extended Addressing Protocol)")
    if len < 2 then
        item:add_proto_expert_info(e.short, "TCP option 253 truncated before its length byte")
        return len
    end
    item:add(f.tcp_kind, tvb(0, 1))
    local optlen = tvb(1, 1):uint()
    local len_item = item:add(f.tcp_len, tvb(1, 1))
    if len < 4 then
        len_item:add_proto_expert_info(e.short, string.format(
            "TCP option 253 of %d bytes is too short for its 2-byte ExID", len))
        if len > 2 then
            item:add(f.tcp_data, tvb(2))
        end
        return len
    end
    local exid_item = item:add(f.tcp_exid, tvb(2, 2))
    if tvb(2, 2):uint() ~= XAP_TCP_EXID then  -- only when Wireshark has no generic handler
        exid_item:add_proto_expert_info(e.exid, string.format(
            "TCP option 253 with ExID 0x%04x is not XAP (0x%04x)", tvb(2, 2):uint(), XAP_TCP_EXID))
        item:add(f.tcp_data, tvb(4))
        return len
    end
    if optlen ~= len then
        len_item:add_proto_expert_info(e.bad_length, string.format(
            "Length byte %d but the option has %d bytes", optlen, len))
    end
    count_text(item, dissect_option_body(tvb, 4, len - 4, item, f.tcp_data, "TCP option 253",
                                         pinfo))
    return len
end

-- IP option type 158 ----------------------------------------------------------------------

function p_ipopt.dissector(tvb, pinfo, tree)
    local len = tvb:len()
    local item = tree:add(p_ipopt, tvb())
    if len < 2 then
        item:add_proto_expert_info(e.short, "IP option 158 truncated before its length byte")
        return len
    end
    local type_item = item:add(f.ip_type, tvb(0, 1))
    type_item:add(f.ip_copy_flag, tvb(0, 1))
    type_item:add(f.ip_optclass, tvb(0, 1))
    type_item:add(f.ip_option, tvb(0, 1))
    local optlen = tvb(1, 1):uint()
    local len_item = item:add(f.ip_length, tvb(1, 1))
    local body_len = len - 2
    if optlen < 2 then
        len_item:add_proto_expert_info(e.bad_length, string.format(
            "Length byte %d is less than the 2-byte option header", optlen))
        return len
    elseif optlen ~= len then
        len_item:add_proto_expert_info(e.bad_length, string.format(
            "Length byte %d but the option has %d bytes", optlen, len))
        body_len = math.min(optlen, len) - 2
    end
    count_text(item, dissect_option_body(tvb, 2, body_len, item, f.ip_data, "IP option 158",
                                         pinfo))
    return len
end

-- Info column: option-carried messages, appended once every dissector has run.
function p_xap.dissector(tvb, pinfo, tree)
    local list = pending[pinfo.number]
    if list ~= nil then
        pending[pinfo.number] = nil
        pinfo.cols.info:append(" [" .. table.concat(list, "; ") .. "]")
    end
end

function p_xap.init()
    pending = {}
end

DissectorTable.get("udp.port"):add(XAP_UDP_PORT, p_udp)
tcp_option_table:add(XAP_TCP_OPTION_KIND, p_tcpopt)
DissectorTable.get("ip.option"):add(XAP_IP_OPTION_TYPE, p_ipopt)
register_postdissector(p_xap)
