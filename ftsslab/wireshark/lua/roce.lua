-- SPDX-License-Identifier: GPL-2.0-or-later
-- ftsslab: RKeyAdvert, seed 003's message 748, carried as a RoCE SEND payload.
--
-- Wireshark 4.0 dissects RoCEv2 (BTH, RETH, AETH, AtomicETH, DETH, ImmDt, ...) natively
-- ("infiniband"); this file only adds the 32-byte RKey advertisement of layers/roce.py
-- (class RKeyAdvert), claimed by a heuristic on "infiniband.payload" when the SEND payload
-- starts with the magic 0x524B4559 ("RKEY").  The ICRC is not part of that payload tvb.

local RKEY_ADVERT_MAGIC = 0x524B4559
local RKEY_ADVERT_VERSION = 1
local RKEY_ADVERT_LEN = 32

local kinds = {
    [1] = "BIND",
    [2] = "UNBIND",
}

-- bit i of "access" = RKEY_ACCESS_FLAGS[i] of layers/roce.py (bit 0 first)
local access_flags = {
    { 0x0001, "LOCAL_WRITE", "local_write" },
    { 0x0002, "REMOTE_WRITE", "remote_write" },
    { 0x0004, "REMOTE_READ", "remote_read" },
    { 0x0008, "REMOTE_ATOMIC", "remote_atomic" },
    { 0x0010, "BIND", "bind" },
    { 0x0020, "ONE_SHOT", "one_shot" },
    { 0x0040, "VIRTUAL", "virtual" },
}
local ACCESS_KNOWN = 0x007F

local p_rkey = Proto("rkeyadvert", "RKey Advertisement (seed 003 msg 748)")

local f = {
    magic = ProtoField.uint32("rkeyadvert.magic", "Magic", base.HEX),
    version = ProtoField.uint8("rkeyadvert.version", "Version", base.DEC),
    kind = ProtoField.uint8("rkeyadvert.kind", "Kind", base.DEC, kinds),
    access = ProtoField.uint16("rkeyadvert.access", "Access flags", base.HEX),
    va = ProtoField.uint64("rkeyadvert.va", "Address (va)", base.HEX),
    rkey = ProtoField.uint32("rkeyadvert.rkey", "RKey", base.HEX),
    reserved = ProtoField.uint8("rkeyadvert.reserved", "Reserved", base.HEX),
    qpn = ProtoField.uint24("rkeyadvert.qpn", "QP number", base.DEC),
    length = ProtoField.uint64("rkeyadvert.length", "Region length", base.HEX),
}
local f_access_bits = {}
for _, flag in ipairs(access_flags) do
    f_access_bits[#f_access_bits + 1] = ProtoField.bool("rkeyadvert.access." .. flag[3], flag[2],
        16, nil, flag[1])
end
local f_access_unknown = ProtoField.uint16("rkeyadvert.access.unknown", "Unknown bits", base.HEX,
    nil, 0xFF80)

local pf = {}
for _, name in ipairs({ "magic", "version", "kind", "access", "va", "rkey", "reserved", "qpn",
    "length" }) do
    pf[#pf + 1] = f[name]
end
for _, b in ipairs(f_access_bits) do pf[#pf + 1] = b end
pf[#pf + 1] = f_access_unknown
p_rkey.fields = pf

local e = {
    truncated = ProtoExpert.new("rkeyadvert.truncated", "RKeyAdvert truncated",
        expert.group.MALFORMED, expert.severity.ERROR),
    bad_version = ProtoExpert.new("rkeyadvert.bad_version", "RKeyAdvert unsupported version",
        expert.group.PROTOCOL, expert.severity.WARN),
    unknown_kind = ProtoExpert.new("rkeyadvert.unknown_kind", "RKeyAdvert unknown kind",
        expert.group.PROTOCOL, expert.severity.WARN),
    unbind_range = ProtoExpert.new("rkeyadvert.unbind_range",
        "RKeyAdvert UNBIND with non-zero address or length",
        expert.group.PROTOCOL, expert.severity.NOTE),
}
p_rkey.experts = { e.truncated, e.bad_version, e.unknown_kind, e.unbind_range }

local data_dissector = Dissector.get("data")

local function flag_names(access)
    local names = {}
    for _, flag in ipairs(access_flags) do
        if bit.band(access, flag[1]) ~= 0 then names[#names + 1] = flag[2] end
    end
    -- Scapy's FlagValue shows every set bit it has no name for as "?"
    local extra = bit.band(access, bit.bnot(ACCESS_KNOWN))
    for i = 7, 15 do
        if bit.band(extra, bit.lshift(1, i)) ~= 0 then names[#names + 1] = "?" end
    end
    return table.concat(names, "+")
end

local function hex64(v)
    -- UInt64 -> "0x..." without leading zeros, like Scapy's XLongField in sprintf
    local s = v:tohex():gsub("^0+", "")
    if s == "" then s = "0" end
    return "0x" .. s:lower()
end

local function info_append(pinfo, text)
    -- the infiniband dissector leaves a trailing blank after "QP=0x......"
    local info = tostring(pinfo.cols.info)
    if info ~= "" and info:sub(-1) ~= " " then text = " " .. text end
    pinfo.cols.info:append(text)
end

local function heuristic(tvb, pinfo, tree)
    local len = tvb:len()
    if len < 4 or tvb(0, 4):uint() ~= RKEY_ADVERT_MAGIC then
        return false
    end
    local avail = math.min(len, RKEY_ADVERT_LEN)
    local root = tree:add(p_rkey, tvb(0, avail))
    root:add(f.magic, tvb(0, 4))
    if len < RKEY_ADVERT_LEN then
        -- "RKEY" then fewer than 32 bytes: show what there is, flag the rest as missing
        root:add_proto_expert_info(e.truncated, string.format(
            "RKeyAdvert truncated: %d bytes, need %d", len, RKEY_ADVERT_LEN))
        if len >= 5 then root:add(f.version, tvb(4, 1)) end
        if len >= 6 then root:add(f.kind, tvb(5, 1)) end
        if len >= 8 then root:add(f.access, tvb(6, 2)) end
        if len >= 16 then root:add(f.va, tvb(8, 8)) end
        if len >= 20 then root:add(f.rkey, tvb(16, 4)) end
        if len >= 21 then root:add(f.reserved, tvb(20, 1)) end
        if len >= 24 then root:add(f.qpn, tvb(21, 3)) end
        root:append_text(" [truncated]")
        info_append(pinfo, "RKeyAdvert [truncated]")
        return true
    end

    local version = tvb(4, 1):uint()
    local kind = tvb(5, 1):uint()
    local access = tvb(6, 2):uint()
    local va = tvb(8, 8):uint64()
    local rkey = tvb(16, 4):uint()
    local qpn = tvb(21, 3):uint()
    local length = tvb(24, 8):uint64()

    local vi = root:add(f.version, tvb(4, 1))
    if version ~= RKEY_ADVERT_VERSION then
        vi:add_proto_expert_info(e.bad_version, string.format(
            "RKeyAdvert unsupported version %d (expected %d)", version, RKEY_ADVERT_VERSION))
    end
    local ki = root:add(f.kind, tvb(5, 1))
    if kinds[kind] == nil then
        ki:add_proto_expert_info(e.unknown_kind, string.format("RKeyAdvert unknown kind %d", kind))
    end
    local ai = root:add(f.access, tvb(6, 2))
    ai:append_text(" (" .. flag_names(access) .. ")")
    for _, b in ipairs(f_access_bits) do ai:add(b, tvb(6, 2)) end
    if bit.band(access, bit.bnot(ACCESS_KNOWN)) ~= 0 then ai:add(f_access_unknown, tvb(6, 2)) end
    root:add(f.va, tvb(8, 8))
    root:add(f.rkey, tvb(16, 4))
    root:add(f.reserved, tvb(20, 1))
    root:add(f.qpn, tvb(21, 3))
    root:add(f.length, tvb(24, 8))
    if kind == 2 and (va ~= UInt64(0) or length ~= UInt64(0)) then
        root:add_proto_expert_info(e.unbind_range, string.format(
            "RKeyAdvert UNBIND with non-zero address or length (va=%s, length=%s)",
            hex64(va), hex64(length)))
    end

    local summary = string.format("RKeyAdvert %s rkey=0x%x va=%s len=%s qpn=%d [%s]",
        kinds[kind] or tostring(kind), rkey, hex64(va), hex64(length), qpn, flag_names(access))
    root:append_text(", " .. summary:sub(12))
    info_append(pinfo, summary)
    if len > RKEY_ADVERT_LEN and data_dissector ~= nil then
        data_dissector:call(tvb(RKEY_ADVERT_LEN):tvb(), pinfo, tree)
    end
    return true
end

p_rkey:register_heuristic("infiniband.payload", heuristic)
