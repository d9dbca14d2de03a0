-- SPDX-License-Identifier: GPL-2.0-or-later
-- ftsslab: I2O message frames (seed 001) exported onto a SAN, as layers/i2o.py lays them out.
--
-- Wireshark 4.0 has no I2O dissector.  This file dissects the four-word standard header
-- (I2OMessage), the single reply body (I2OReply) and its BSA payload (I2OBlockReply), the
-- BSA requests BlockRead/BlockWrite/CacheFlush and their scatter-gather lists (I2OSGESimple,
-- I2OSGESimple64, I2OSGEAttributes and ftsslab's remote-buffer element I2OSGERemote, address
-- mode 0x34), and the private frames (Function 0xFF, I2OPrivate) of ftsslab's Connection Manager
-- (seed 001 L198, decision D1.5): I2OCMHello, I2OCMAdvertise with its I2OCMIOP / I2OCMDevice
-- list, I2OCMConnect / I2OCMConnectReply, I2OCMDisconnect / I2OCMDisconnectReply.
-- Everything is little-endian.  Carriers: UDP port 49122 ("udp.port") and the
-- payload of a RoCE SEND (heuristic on "infiniband.payload", the same test as Scapy's
-- looks_like_i2o).  Field names are "<prefix>.<Scapy field name>":
--   I2OMessage i2o, I2OReply i2o.reply, I2OBlockReply i2o.bsa_reply, I2OBlockRead i2o.read,
--   I2OBlockWrite i2o.write, I2OBlockCacheFlush i2o.flush, I2OSGESimple i2o.sge,
--   I2OSGESimple64 i2o.sge64, I2OSGEAttributes i2o.sge_attr, I2OSGERemote i2o.sge_remote,
--   I2OPrivate i2o.private, I2OCMHello i2o.cm_hello, I2OCMAdvertise i2o.cm_advertise,
--   I2OCMIOP i2o.cm_iop, I2OCMDevice i2o.cm_device, I2OCMConnect i2o.cm_connect,
--   I2OCMConnectReply i2o.cm_connect_reply, I2OCMDisconnect i2o.cm_disconnect,
--   I2OCMDisconnectReply i2o.cm_disconnect_reply.

local I2O_UDP_PORT = 49122
local HEADER_LEN = 16
local HEADER_WORDS = 4
local I2OVERSION = 1
local BSA_SGL_OFFSET = 8

local MSG_RESERVED = 0x0C
local MSG_FAIL = 0x20
local MSG_REPLY = 0x80

local BSA_BLOCK_READ = 0x30
local BSA_BLOCK_WRITE = 0x31
local BSA_CACHE_FLUSH = 0x37
local I2O_PRIVATE = 0xFF

-- Connection Manager (ftsslab/fast/i2o.py CM_*)
local FTSSLAB_ORGANIZATION_ID = 0xF755
local CM_NAME_LEN = 32
local CM_IOP_LEN = 4
local CM_DEVICE_LEN = 16
local CM_FUNCTIONS = {
    [1] = "CM_HELLO", [2] = "CM_ADVERTISE", [3] = "CM_CONNECT", [4] = "CM_DISCONNECT",
}
local CM_STATUS_NAMES = {
    [0] = "OK", [1] = "NO_SUCH_IOP", [2] = "IOP_UNAVAILABLE", [3] = "REFUSED",
    [4] = "CONNECTION_IN_USE", [5] = "UNKNOWN_CONNECTION", [6] = "NOT_STARTED",
}
-- the fixed part of each body (CM_BODIES): a shorter one is not dissected
local CM_REQUEST_SIZES = { [1] = 32, [2] = 36, [3] = 4, [4] = 4 }
local CM_REPLY_SIZES = { [3] = 16, [4] = 4 }

local SGL_FLAGS_LAST = 0x80
local SGL_ATTR_64BIT_ADDRESS = 0x0002

-- ---------------------------------------------------------------- value tables (layers/i2o.py)
local I2O_FUNCTIONS = {
    -- I2O_OTHER_FUNCTIONS
    [0x81] = "ScsiExec", [0x83] = "ScsiAbort", [0x85] = "BusAdapterReset",
    [0x87] = "BusReset", [0x89] = "BusScan", [0x8B] = "BusQuiesce", [0xFF] = "Private",
    -- I2O_UTIL_FUNCTIONS
    [0x00] = "UtilNOP", [0x01] = "UtilAbort", [0x05] = "UtilParamsSet", [0x06] = "UtilParamsGet",
    [0x09] = "UtilClaim", [0x0B] = "UtilClaimRelease", [0x0D] = "UtilDeviceReserve",
    [0x0F] = "UtilDeviceRelease", [0x10] = "UtilConfigDialog", [0x13] = "UtilEventRegister",
    [0x14] = "UtilEventAck", [0x15] = "UtilReplyFaultNotify", [0x17] = "UtilLock",
    [0x19] = "UtilLockRelease",
    -- I2O_BSA_FUNCTIONS
    [0x25] = "BsaStatusCheck", [0x27] = "BsaDeviceReset", [0x30] = "BsaBlockRead",
    [0x31] = "BsaBlockWrite", [0x33] = "BsaBlockWriteVerify", [0x35] = "BsaMediaVerify",
    [0x37] = "BsaCacheFlush", [0x41] = "BsaMediaMount", [0x43] = "BsaMediaEject",
    [0x45] = "BsaMediaFormat", [0x49] = "BsaMediaLock", [0x4B] = "BsaMediaUnlock",
    [0x70] = "BsaPowerManagement", [0x71] = "BsaBlockReassign",
    -- I2O_EXEC_FUNCTIONS
    [0xA0] = "ExecStatusGet", [0xA1] = "ExecOutboundInit", [0xA2] = "ExecLctNotify",
    [0xA3] = "ExecSysTabSet", [0xA5] = "ExecBiosInfoSet", [0xA7] = "ExecBootDeviceSet",
    [0xA8] = "ExecHrtGet", [0xA9] = "ExecSwDownload", [0xAB] = "ExecSwUpload",
    [0xAD] = "ExecSwRemove", [0xAF] = "ExecDdmSuspend", [0xB1] = "ExecDdmDestroy",
    [0xB2] = "ExecAdapterRead", [0xB3] = "ExecAdapterAssign", [0xB5] = "ExecAdapterRelease",
    [0xB7] = "ExecDeviceAssign", [0xB9] = "ExecDeviceRelease", [0xBB] = "ExecConfigValidate",
    [0xBD] = "ExecIopReset", [0xBE] = "ExecIopClear", [0xC1] = "ExecSysModify",
    [0xC3] = "ExecSysQuiesce", [0xC5] = "ExecPathQuiesce", [0xC7] = "ExecDdmQuiesce",
    [0xC9] = "ExecIopConnect", [0xCA] = "ExecConnSetup", [0xD1] = "ExecSysEnable",
    [0xD3] = "ExecPathEnable", [0xD5] = "ExecDdmEnable", [0xD7] = "ExecPathReset",
    [0xD9] = "ExecDdmReset", [0xDD] = "ExecStaticMfCreate", [0xDF] = "ExecStaticMfRelease",
}

local BSA_FUNCTIONS = {
    [0x25] = true, [0x27] = true, [0x30] = true, [0x31] = true, [0x33] = true, [0x35] = true,
    [0x37] = true, [0x41] = true, [0x43] = true, [0x45] = true, [0x49] = true, [0x4B] = true,
    [0x70] = true, [0x71] = true,
}

local I2O_REPLY_STATUS = {
    [0x00] = "SUCCESS", [0x01] = "ABORT_DIRTY", [0x02] = "ABORT_NO_DATA_TRANSFER",
    [0x03] = "ABORT_PARTIAL_TRANSFER", [0x04] = "ERROR_DIRTY", [0x05] = "ERROR_NO_DATA_TRANSFER",
    [0x06] = "ERROR_PARTIAL_TRANSFER", [0x08] = "PROCESS_ABORT_DIRTY",
    [0x09] = "PROCESS_ABORT_NO_DATA_TRANSFER", [0x0A] = "PROCESS_ABORT_PARTIAL_TRANSFER",
    [0x0B] = "TRANSACTION_ERROR", [0x80] = "PROGRESS_REPORT",
}
local REPLY_ERRORS = { [0x04] = true, [0x05] = true, [0x06] = true }

local I2O_DSC = {
    [0x0000] = "SUCCESS", [0x0002] = "BAD_KEY", [0x0003] = "TCL_ERROR",
    [0x0004] = "REPLY_BUFFER_FULL", [0x0005] = "NO_SUCH_PAGE",
    [0x0006] = "INSUFFICIENT_RESOURCE_SOFT", [0x0007] = "INSUFFICIENT_RESOURCE_HARD",
    [0x0009] = "CHAIN_BUFFER_TOO_LARGE", [0x000A] = "UNSUPPORTED_FUNCTION",
    [0x000B] = "DEVICE_LOCKED", [0x000C] = "DEVICE_RESET", [0x000D] = "INAPPROPRIATE_FUNCTION",
    [0x000E] = "INVALID_INITIATOR_ADDRESS", [0x000F] = "INVALID_MESSAGE_FLAGS",
    [0x0010] = "INVALID_OFFSET", [0x0011] = "INVALID_PARAMETER", [0x0012] = "INVALID_REQUEST",
    [0x0013] = "INVALID_TARGET_ADDRESS", [0x0014] = "MESSAGE_TOO_LARGE",
    [0x0015] = "MESSAGE_TOO_SMALL", [0x0016] = "MISSING_PARAMETER", [0x0017] = "TIMEOUT",
    [0x0018] = "UNKNOWN_ERROR", [0x0019] = "UNKNOWN_FUNCTION", [0x001A] = "UNSUPPORTED_VERSION",
    [0x001B] = "DEVICE_BUSY", [0x001C] = "DEVICE_NOT_AVAILABLE",
}
local I2O_BSA_DSC = {
    [0x0000] = "SUCCESS", [0x0001] = "MEDIA_ERROR", [0x0002] = "ACCESS_ERROR",
    [0x0003] = "DEVICE_FAILURE", [0x0004] = "DEVICE_NOT_READY", [0x0005] = "MEDIA_NOT_PRESENT",
    [0x0006] = "MEDIA_LOCKED", [0x0007] = "MEDIA_FAILURE", [0x0008] = "PROTOCOL_FAILURE",
    [0x0009] = "BUS_FAILURE", [0x000A] = "ACCESS_VIOLATION", [0x000B] = "WRITE_PROTECTED",
    [0x000C] = "DEVICE_RESET", [0x000D] = "VOLUME_CHANGED", [0x000E] = "TIMEOUT",
}

-- FlagsField bit names (bit 0 first); "resN" bits get no sub-field
local MSG_FLAG_NAMES = { "static", "ctx64", "res2", "res3", "multi", "fail", "last", "reply" }
local BSA_READ_FLAG_NAMES = { "dont_retry", "solo", "cache_read", "read_prefetch", "cache_data",
    "res5", "res6", "progress" }
local BSA_WRITE_FLAG_NAMES = { "dont_retry", "solo", "dont_cache", "write_thru", "write_to",
    "res5", "res6", "progress" }
local BSA_CTL_FLAG_NAMES = { "res0", "res1", "res2", "res3", "res4", "res5", "res6", "progress" }
local SGL_FLAG_NAMES = { "bc0", "bc1", "dir", "local", "simple", "page", "eob", "last" }
local SGL_ATTR_FLAG_NAMES = { "res0", "addr64", "trans64", "res3", "res4", "res5", "res6", "res7",
    "local_hint", "immediate_hint", "bit_bucket_hint" }

-- address mode (flags & 0x3C), keyed by the masked value shifted right by 2
local SGL_ADDRESS_MODES = {
    [0x04] = "simple [0x10]", [0x05] = "simple, towards IOP [0x14]",
    [0x06] = "simple, local [0x18]", [0x07] = "simple, local, towards IOP [0x1C]",
    [0x08] = "page list [0x20]", [0x09] = "page list, towards IOP [0x24]",
    [0x0A] = "page list, local [0x28]", [0x0B] = "page list, local, towards IOP [0x2C]",
    [0x0C] = "chain pointer [0x30]", [0x0D] = "remote buffer, ftsslab [0x34]",
    [0x0F] = "attributes / immediate data [0x3C]",
}

-- ---------------------------------------------------------------- protocol and fields
local p_i2o = Proto("i2o", "I2O Message Frame")

local pf = {}
local function field(pfield)
    pf[#pf + 1] = pfield
    return pfield
end

-- one boolean sub-field per named (non-reserved) bit: <abbrev>.<bit name>
local function flag_bits(abbrev, names, bits)
    local out = {}
    for i, name in ipairs(names) do
        if not name:match("^res%d+$") then
            local mask = 2 ^ (i - 1)
            out[#out + 1] = { mask = mask, name = name,
                field = field(ProtoField.bool(abbrev .. "." .. name, name, bits, nil, mask)) }
        end
    end
    return out
end

-- one FT_NONE item per layer (filter "i2o.sge_remote" = has a remote-buffer element)
local hl = {}
for _, l in ipairs({ { "header", "Standard message header" }, { "reply", "I2O Reply" },
    { "bsa_reply", "I2O BSA Block Reply" }, { "read", "I2O BSA Block Read" },
    { "write", "I2O BSA Block Write" }, { "flush", "I2O BSA Cache Flush" },
    { "sgl", "Scatter-gather list" }, { "sge", "I2O SGL Simple Element" },
    { "sge64", "I2O SGL Simple Element 64-bit" }, { "sge_attr", "I2O SGL Attributes Element" },
    { "sge_remote", "I2O SGL Remote Buffer Element" }, { "private", "I2O Private" },
    { "cm_hello", "I2O CM Hello" }, { "cm_advertise", "I2O CM Advertise" },
    { "cm_iop", "I2O CM IOP" }, { "cm_device", "I2O CM Device" },
    { "cm_connect", "I2O CM Connect" }, { "cm_connect_reply", "I2O CM Connect Reply" },
    { "cm_disconnect", "I2O CM Disconnect" },
    { "cm_disconnect_reply", "I2O CM Disconnect Reply" } }) do
    hl[l[1]] = field(ProtoField.none("i2o." .. l[1], l[2]))
end

local hf = {
    -- I2OMessage
    sgl_offset = field(ProtoField.uint8("i2o.sgl_offset", "SGL offset (words)", base.DEC, nil, 0xF0)),
    version = field(ProtoField.uint8("i2o.version", "Version", base.DEC, nil, 0x0F)),
    msg_flags = field(ProtoField.uint8("i2o.msg_flags", "MsgFlags", base.HEX)),
    msg_size = field(ProtoField.uint16("i2o.msg_size", "MessageSize (words)", base.DEC)),
    ["function"] = field(ProtoField.uint32("i2o.function", "Function", base.HEX, I2O_FUNCTIONS,
        0xFF000000)),
    initiator_tid = field(ProtoField.uint32("i2o.initiator_tid", "InitiatorAddress (TID)",
        base.DEC, nil, 0x00FFF000)),
    target_tid = field(ProtoField.uint32("i2o.target_tid", "TargetAddress (TID)", base.DEC, nil,
        0x00000FFF)),
    initiator_context = field(ProtoField.uint32("i2o.initiator_context", "InitiatorContext",
        base.HEX)),
    transaction_context = field(ProtoField.uint32("i2o.transaction_context", "TransactionContext",
        base.HEX)),
    payload = field(ProtoField.bytes("i2o.payload", "Body not dissected")),
    padding = field(ProtoField.bytes("i2o.padding", "Padding after MessageSize")),
    -- I2OReply
    detailed_status = field(ProtoField.uint16("i2o.reply.detailed_status", "DetailedStatusCode",
        base.HEX)),
    reply_reserved = field(ProtoField.uint8("i2o.reply.reserved", "Reserved (BSA RetryCount)",
        base.DEC)),
    req_status = field(ProtoField.uint8("i2o.reply.req_status", "ReqStatus", base.HEX,
        I2O_REPLY_STATUS)),
    -- I2OBlockReply
    transfer_count = field(ProtoField.uint32("i2o.bsa_reply.transfer_count", "TransferCount",
        base.DEC)),
    error_address = field(ProtoField.uint64("i2o.bsa_reply.error_address",
        "Failing LogicalByteAddress", base.HEX)),
}
local hf_msg_flag_bits = flag_bits("i2o.msg_flags", MSG_FLAG_NAMES, 8)

-- BSA request bodies: read/write share a layout, the third byte's name differs
local function block_fields(prefix, flag_names, third, third_label)
    local t = {
        control_flags = field(ProtoField.uint16(prefix .. ".control_flags", "ControlFlags",
            base.HEX)),
        time_multiplier = field(ProtoField.uint8(prefix .. ".time_multiplier", "TimeMultiplier",
            base.DEC)),
        third = field(ProtoField.uint8(prefix .. "." .. third, third_label, base.DEC)),
    }
    t.bits = flag_bits(prefix .. ".control_flags", flag_names, 16)
    if prefix ~= "i2o.flush" then
        t.byte_count = field(ProtoField.uint32(prefix .. ".byte_count", "TransferByteCount",
            base.DEC))
        t.byte_address = field(ProtoField.uint64(prefix .. ".byte_address", "LogicalByteAddress",
            base.HEX))
    end
    return t
end
local hf_read = block_fields("i2o.read", BSA_READ_FLAG_NAMES, "fetch_ahead", "FetchAhead")
local hf_write = block_fields("i2o.write", BSA_WRITE_FLAG_NAMES, "reserved", "Reserved")
local hf_flush = block_fields("i2o.flush", BSA_CTL_FLAG_NAMES, "reserved", "Reserved")

-- SGL elements
local function sge_fields(prefix, addr_bits)
    local t = {
        count = field(ProtoField.uint24(prefix .. ".count", "Count (bytes)", base.DEC)),
        flags = field(ProtoField.uint8(prefix .. ".flags", "Flags", base.HEX)),
    }
    t.bits = flag_bits(prefix .. ".flags", SGL_FLAG_NAMES, 8)
    t.mode = field(ProtoField.uint8(prefix .. ".flags.mode", "Address mode", base.HEX,
        SGL_ADDRESS_MODES, 0x3C))
    if addr_bits == 32 then
        t.address = field(ProtoField.uint32(prefix .. ".address", "Address", base.HEX))
    elseif addr_bits == 64 then
        t.address = field(ProtoField.uint64(prefix .. ".address", "Address", base.HEX))
    end
    return t
end
local hf_sge = sge_fields("i2o.sge", 32)
local hf_sge64 = sge_fields("i2o.sge64", 64)
local hf_remote = sge_fields("i2o.sge_remote", nil)
hf_remote.virtual_address = field(ProtoField.uint64("i2o.sge_remote.virtual_address",
    "Virtual address", base.HEX))
hf_remote.rkey = field(ProtoField.uint32("i2o.sge_remote.rkey", "RKey", base.HEX))
local hf_attr = {
    attribute_flags = field(ProtoField.uint16("i2o.sge_attr.attribute_flags", "AttributeFlags",
        base.HEX)),
    element_length = field(ProtoField.uint8("i2o.sge_attr.element_length",
        "Element length (words)", base.DEC)),
    flags = field(ProtoField.uint8("i2o.sge_attr.flags", "Flags", base.HEX)),
    page_frame_size = field(ProtoField.uint32("i2o.sge_attr.page_frame_size", "PageFrameSize",
        base.DEC)),
}
hf_attr.bits = flag_bits("i2o.sge_attr.attribute_flags", SGL_ATTR_FLAG_NAMES, 16)

-- private frames and the Connection Manager
local function u16(abbrev, label, b) return field(ProtoField.uint16(abbrev, label, b or base.DEC)) end
local function u32(abbrev, label, b) return field(ProtoField.uint32(abbrev, label, b or base.DEC)) end
local hf_cm = {
    xfunction = u16("i2o.private.xfunction", "XFunctionCode", base.HEX),
    organization_id = u16("i2o.private.organization_id", "OrganizationID", base.HEX),
    remote = field(ProtoField.string("i2o.cm_hello.remote", "Remote server name")),
    host = field(ProtoField.string("i2o.cm_advertise.host", "Host name")),
    iop_count = u16("i2o.cm_advertise.iop_count", "IOP count"),
    adv_reserved = u16("i2o.cm_advertise.reserved", "Reserved"),
    iop_id = u16("i2o.cm_iop.iop_id", "IOP id"),
    device_count = u16("i2o.cm_iop.device_count", "Device count"),
    tid = u16("i2o.cm_device.tid", "TID"),
    dev_reserved = u16("i2o.cm_device.reserved", "Reserved"),
    block_size = u32("i2o.cm_device.block_size", "Block size (bytes)"),
    capacity = field(ProtoField.uint64("i2o.cm_device.capacity", "Capacity (bytes)", base.DEC)),
    connect_iop_id = u16("i2o.cm_connect.iop_id", "IOP id"),
    connect_reserved = u16("i2o.cm_connect.reserved", "Reserved"),
    connect_status = field(ProtoField.uint16("i2o.cm_connect_reply.status", "Status", base.DEC,
        CM_STATUS_NAMES)),
    connect_reply_reserved = u16("i2o.cm_connect_reply.reserved", "Reserved"),
    conn_id = u32("i2o.cm_connect_reply.conn_id", "Connection id"),
    message_qpn = u32("i2o.cm_connect_reply.message_qpn", "Message QPN", base.HEX),
    data_qpn = u32("i2o.cm_connect_reply.data_qpn", "Data QPN", base.HEX),
    disconnect_conn_id = u32("i2o.cm_disconnect.conn_id", "Connection id"),
    disconnect_status = field(ProtoField.uint16("i2o.cm_disconnect_reply.status", "Status",
        base.DEC, CM_STATUS_NAMES)),
    disconnect_reserved = u16("i2o.cm_disconnect_reply.reserved", "Reserved"),
}

p_i2o.fields = pf

-- ---------------------------------------------------------------- expert items
local ef = {
    short = ProtoExpert.new("i2o.expert.short", "I2O frame shorter than the 16-byte header",
        expert.group.MALFORMED, expert.severity.ERROR),
    size_exceeds = ProtoExpert.new("i2o.expert.msg_size_exceeds",
        "MessageSize exceeds the bytes available", expert.group.MALFORMED, expert.severity.ERROR),
    size_small = ProtoExpert.new("i2o.expert.msg_size_small",
        "MessageSize smaller than the 4-word header", expert.group.MALFORMED,
        expert.severity.ERROR),
    version = ProtoExpert.new("i2o.expert.version", "Unsupported I2O version",
        expert.group.PROTOCOL, expert.severity.WARN),
    reserved_flags = ProtoExpert.new("i2o.expert.reserved_flags", "Reserved MsgFlags bits set",
        expert.group.PROTOCOL, expert.severity.WARN),
    unknown_function = ProtoExpert.new("i2o.expert.unknown_function", "Unknown function code",
        expert.group.PROTOCOL, expert.severity.WARN),
    sgl_offset = ProtoExpert.new("i2o.expert.sgl_offset", "SGL offset outside the frame",
        expert.group.PROTOCOL, expert.severity.WARN),
    sgl_offset_bsa = ProtoExpert.new("i2o.expert.sgl_offset_bsa",
        "SGL offset does not point at the BSA SGL", expert.group.PROTOCOL, expert.severity.WARN),
    reply_flag = ProtoExpert.new("i2o.expert.reply_flag", "Reply flag on a request body",
        expert.group.PROTOCOL, expert.severity.WARN),
    fail_flag = ProtoExpert.new("i2o.expert.fail_flag", "Fail flag on a request",
        expert.group.PROTOCOL, expert.severity.WARN),
    body_short = ProtoExpert.new("i2o.expert.body_short", "Body too short for its function",
        expert.group.MALFORMED, expert.severity.ERROR),
    sgl_no_last = ProtoExpert.new("i2o.expert.sgl_no_last", "SGL without a LAST element",
        expert.group.MALFORMED, expert.severity.WARN),
    sgl_element = ProtoExpert.new("i2o.expert.sgl_element", "SGL element kind not dissected",
        expert.group.PROTOCOL, expert.severity.NOTE),
    failure_reply = ProtoExpert.new("i2o.expert.failure_reply",
        "Failure reply: preserved frame not dissected", expert.group.RESPONSE_CODE,
        expert.severity.NOTE),
    padding = ProtoExpert.new("i2o.expert.padding", "Bytes after MessageSize",
        expert.group.PROTOCOL, expert.severity.CHAT),
    cm_unknown = ProtoExpert.new("i2o.expert.cm_unknown", "No such CM message",
        expert.group.PROTOCOL, expert.severity.WARN),
    cm_count = ProtoExpert.new("i2o.expert.cm_count", "CM count beyond the list",
        expert.group.MALFORMED, expert.severity.WARN),
}
p_i2o.experts = { ef.short, ef.size_exceeds, ef.size_small, ef.version, ef.reserved_flags,
    ef.unknown_function, ef.sgl_offset, ef.sgl_offset_bsa, ef.reply_flag, ef.fail_flag,
    ef.body_short, ef.sgl_no_last, ef.sgl_element, ef.failure_reply, ef.padding, ef.cm_unknown,
    ef.cm_count }

-- ---------------------------------------------------------------- helpers (no bit library)
local function has(value, mask)
    return math.floor(value / mask) % 2 == 1
end

local function hex(v)
    return string.format("0x%x", v)
end

-- a UInt64 as Scapy's lhex prints it: 0x without leading zeros
local function hex64(v)
    local s = v:tohex():gsub("^0+", "")
    if s == "" then s = "0" end
    return "0x" .. s
end

local function flag_names(value, names)
    local out = {}
    for i, name in ipairs(names) do
        if has(value, 2 ^ (i - 1)) then out[#out + 1] = name end
    end
    return table.concat(out, "+")
end

local function add_flags(tree, hf_whole, bits, range, value, names)
    local item = tree:add_le(hf_whole, range)
    local set = flag_names(value, names)
    if set ~= "" then item:append_text(" (" .. set .. ")") end
    for _, b in ipairs(bits) do
        tree:add_le(b.field, range)
    end
    return item
end

-- layers/i2o.py sge_kind(): the element layer a FlagsCount top byte names
local SGE_SIZE = { simple = 8, simple64 = 12, attributes = 8, remote = 16 }
local function sge_kind(flags, addr64)
    if math.floor(flags / 4) % 32 == 31 then return "attributes" end  -- & 0x7C == 0x7C
    if math.floor(flags / 4) % 16 == 13 then return "remote" end      -- & 0x3C == 0x34
    if math.floor(flags / 16) % 4 == 1 then                         -- & 0x30 == 0x10
        return addr64 and "simple64" or "simple"
    end
    return nil
end

-- ---------------------------------------------------------------- SGL
local function dissect_sgl(tvb, pinfo, tree, off, stop)
    local sgl_tree = tree:add(hl.sgl, tvb(off, stop - off))
    local addr64 = false
    local n = 0
    local total = 0
    while stop - off >= 4 do
        local flags = tvb(off + 3, 1):uint()
        local kind = sge_kind(flags, addr64)
        if kind == nil then
            sgl_tree:add_proto_expert_info(ef.sgl_element, string.format(
                "SGL element %d: address mode 0x%02x not dissected (page list, chain, ...)",
                n, flags % 64 - flags % 4))
            break
        end
        local size = SGE_SIZE[kind]
        if stop - off < size then
            sgl_tree:add_proto_expert_info(ef.sgl_no_last, string.format(
                "SGL without a LAST element: element %d needs %d bytes, %d left",
                n, size, stop - off))
            break
        end
        local r = tvb(off, size)
        local st
        if kind == "attributes" then
            local attr = tvb(off, 2):le_uint()
            local page = tvb(off + 4, 4):le_uint()
            st = sgl_tree:add(hl.sge_attr, r)
            st:set_text(string.format(
                "I2O SGL Attributes Element %d: attributes 0x%04x%s, page frame %d", n, attr,
                has(attr, SGL_ATTR_64BIT_ADDRESS) and " (64-bit addresses)" or "", page))
            add_flags(st, hf_attr.attribute_flags, hf_attr.bits, tvb(off, 2), attr,
                SGL_ATTR_FLAG_NAMES)
            st:add(hf_attr.element_length, tvb(off + 2, 1))
            st:add(hf_attr.flags, tvb(off + 3, 1))
            st:add_le(hf_attr.page_frame_size, tvb(off + 4, 4))
            addr64 = addr64 or has(attr, SGL_ATTR_64BIT_ADDRESS)
        else
            local h = (kind == "remote" and hf_remote) or (kind == "simple64" and hf_sge64) or hf_sge
            local count = tvb(off, 3):le_uint()
            total = total + count
            local label
            if kind == "remote" then
                local va = tvb(off + 4, 8):le_uint64()
                local rkey = tvb(off + 12, 4):le_uint()
                label = string.format("I2O SGL Remote Buffer Element %d: %d bytes @%s rkey=0x%08x",
                    n, count, hex64(va), rkey)
            elseif kind == "simple64" then
                label = string.format("I2O SGL Simple Element 64-bit %d: %d bytes @%s", n, count,
                    hex64(tvb(off + 4, 8):le_uint64()))
            else
                label = string.format("I2O SGL Simple Element %d: %d bytes @0x%08x", n, count,
                    tvb(off + 4, 4):le_uint())
            end
            local names = flag_names(flags, SGL_FLAG_NAMES)
            st = sgl_tree:add(hl[kind == "simple" and "sge" or kind == "simple64" and "sge64"
                or "sge_remote"], r)
            st:set_text(label .. " [" .. names .. "]")
            st:add_le(h.count, tvb(off, 3))
            add_flags(st, h.flags, h.bits, tvb(off + 3, 1), flags, SGL_FLAG_NAMES)
            st:add(h.mode, tvb(off + 3, 1))
            if kind == "remote" then
                st:add_le(h.virtual_address, tvb(off + 4, 8))
                st:add_le(h.rkey, tvb(off + 12, 4))
            elseif kind == "simple64" then
                st:add_le(h.address, tvb(off + 4, 8))
            else
                st:add_le(h.address, tvb(off + 4, 4))
            end
        end
        off = off + size
        n = n + 1
        if flags >= SGL_FLAGS_LAST then
            sgl_tree:append_text(string.format(": %d element%s, %d bytes", n,
                n == 1 and "" or "s", total))
            return off, total
        end
    end
    if stop - off < 4 and stop - off >= 0 then
        sgl_tree:add_proto_expert_info(ef.sgl_no_last, string.format(
            "SGL without a LAST element (%d element%s before the end of the frame)", n,
            n == 1 and "" or "s"))
    end
    sgl_tree:append_text(string.format(": %d element%s, %d bytes", n, n == 1 and "" or "s", total))
    return off, total
end

-- ---------------------------------------------------------------- bodies
-- each returns (bytes used from off, summary or nil)
local function dissect_block_rw(tvb, pinfo, tree, off, stop, fn)
    local read = fn == BSA_BLOCK_READ
    local h = read and hf_read or hf_write
    local name = read and "I2O BSA Block Read" or "I2O BSA Block Write"
    if stop - off < 16 then
        tree:add_proto_expert_info(ef.body_short, string.format(
            "%s body needs 16 bytes before the SGL, %d present", name, stop - off))
        return 0, nil
    end
    local ctl = tvb(off, 2):le_uint()
    local count = tvb(off + 4, 4):le_uint()
    local lba = tvb(off + 8, 8):le_uint64()
    local summary = string.format("%s %d bytes @%s", name, count, hex64(lba))
    local st = tree:add(read and hl.read or hl.write, tvb(off, stop - off))
    st:set_text(summary)
    add_flags(st, h.control_flags, h.bits, tvb(off, 2), ctl,
        read and BSA_READ_FLAG_NAMES or BSA_WRITE_FLAG_NAMES)
    st:add(h.time_multiplier, tvb(off + 2, 1))
    st:add(h.third, tvb(off + 3, 1))
    st:add_le(h.byte_count, tvb(off + 4, 4))
    st:add_le(h.byte_address, tvb(off + 8, 8))
    local sgl_end = dissect_sgl(tvb, pinfo, st, off + 16, stop)
    st:set_len(sgl_end - off)
    return sgl_end - off, summary
end

local function dissect_cache_flush(tvb, pinfo, tree, off, stop)
    if stop - off < 4 then
        tree:add_proto_expert_info(ef.body_short, string.format(
            "I2O BSA Cache Flush body needs 4 bytes, %d present", stop - off))
        return 0, nil
    end
    local ctl = tvb(off, 2):le_uint()
    local summary = string.format("I2O BSA cache flush (time multiplier %d)",
        tvb(off + 2, 1):uint())
    local st = tree:add(hl.flush, tvb(off, 4))
    st:set_text(summary)
    add_flags(st, hf_flush.control_flags, hf_flush.bits, tvb(off, 2), ctl, BSA_CTL_FLAG_NAMES)
    st:add(hf_flush.time_multiplier, tvb(off + 2, 1))
    st:add(hf_flush.third, tvb(off + 3, 1))
    return 4, summary
end

local function dissect_reply(tvb, pinfo, tree, off, stop, fn)
    if stop - off < 4 then
        tree:add_proto_expert_info(ef.body_short, string.format(
            "I2O reply without its 4-byte status word (%d bytes of body)", stop - off))
        return 0, nil
    end
    local bsa = BSA_FUNCTIONS[fn] == true
    local dsc = tvb(off, 2):le_uint()
    local status = tvb(off + 3, 1):uint()
    local dsc_name = (bsa and I2O_BSA_DSC or I2O_DSC)[dsc] or tostring(dsc)
    local status_name = I2O_REPLY_STATUS[status] or tostring(status)
    local summary = string.format("I2O reply %s (%s)", status_name, dsc_name)
    local st = tree:add(hl.reply, tvb(off, 4))
    st:set_text(summary)
    local di = st:add_le(hf.detailed_status, tvb(off, 2))
    di:set_text(string.format("DetailedStatusCode: %s (0x%04x)%s", dsc_name, dsc,
        bsa and " [BSA]" or ""))
    st:add(hf.reply_reserved, tvb(off + 2, 1))
    st:add(hf.req_status, tvb(off + 3, 1))
    local used = 4
    local rest = stop - off - 4
    if bsa and rest >= 4 then
        local err = REPLY_ERRORS[status] == true
        if err and rest < 12 then
            st:add_proto_expert_info(ef.body_short, string.format(
                "BSA error reply needs 12 bytes (TransferCount + LogicalByteAddress), %d present",
                rest))
            return used, summary
        end
        local blen = err and 12 or 4
        local tc = tvb(off + 4, 4):le_uint()
        local bsummary = string.format("I2O BSA transferred %d bytes", tc)
        summary = summary .. " / " .. bsummary
        local bt = tree:add(hl.bsa_reply, tvb(off + 4, blen))
        bt:set_text("I2O BSA Block Reply: " .. bsummary)
        bt:add_le(hf.transfer_count, tvb(off + 4, 4))
        if err then
            bt:add_le(hf.error_address, tvb(off + 8, 8))
            bt:append_text(" (failing address " .. hex64(tvb(off + 8, 8):le_uint64()) .. ")")
        end
        used = used + blen
    end
    return used, summary
end

-- ---------------------------------------------------------------- private frames: the CM
-- each CM body dissector returns (bytes used, summary); its fixed part is there
local CM_BODY = {}

CM_BODY["1/request"] = function(tvb, tree, off)
    local summary = "CM_HELLO from " .. tvb(off, CM_NAME_LEN):stringz()
    local st = tree:add(hl.cm_hello, tvb(off, CM_NAME_LEN))
    st:set_text(summary)
    st:add(hf_cm.remote, tvb(off, CM_NAME_LEN))
    return CM_NAME_LEN, summary
end

-- the IOPs and their devices while both count and bytes last (Scapy's lists stop the same way)
CM_BODY["2/request"] = function(tvb, tree, off, stop)
    local st = tree:add(hl.cm_advertise, tvb(off, stop - off))
    st:add(hf_cm.host, tvb(off, CM_NAME_LEN))
    local count = tvb(off + CM_NAME_LEN, 2):le_uint()
    local ci = st:add_le(hf_cm.iop_count, tvb(off + CM_NAME_LEN, 2))
    st:add_le(hf_cm.adv_reserved, tvb(off + CM_NAME_LEN + 2, 2))
    local pos = off + CM_NAME_LEN + 4
    local n = 0
    while n < count and stop - pos >= CM_IOP_LEN do
        local start = pos
        local iop_id = tvb(pos, 2):le_uint()
        local devices = tvb(pos + 2, 2):le_uint()
        local it = st:add(hl.cm_iop, tvb(pos, CM_IOP_LEN))
        it:add_le(hf_cm.iop_id, tvb(pos, 2))
        local di = it:add_le(hf_cm.device_count, tvb(pos + 2, 2))
        pos = pos + CM_IOP_LEN
        local d = 0
        while d < devices and stop - pos >= CM_DEVICE_LEN do
            local dt = it:add(hl.cm_device, tvb(pos, CM_DEVICE_LEN))
            dt:set_text(string.format("I2O CM Device: TID %d: %s bytes in %d-byte blocks",
                tvb(pos, 2):le_uint(), tostring(tvb(pos + 8, 8):le_uint64()),
                tvb(pos + 4, 4):le_uint()))
            dt:add_le(hf_cm.tid, tvb(pos, 2))
            dt:add_le(hf_cm.dev_reserved, tvb(pos + 2, 2))
            dt:add_le(hf_cm.block_size, tvb(pos + 4, 4))
            dt:add_le(hf_cm.capacity, tvb(pos + 8, 8))
            pos = pos + CM_DEVICE_LEN
            d = d + 1
        end
        if d < devices then
            di:add_proto_expert_info(ef.cm_count, string.format(
                "Device count %d, but the frame holds %d devices", devices, d))
        end
        it:set_len(pos - start)
        it:set_text(string.format("I2O CM IOP: IOP %d: %d devices", iop_id, d))
        n = n + 1
    end
    if n < count then
        ci:add_proto_expert_info(ef.cm_count, string.format(
            "IOP count %d, but the frame holds %d IOPs", count, n))
    end
    local summary = string.format("CM_ADVERTISE from %s: %d IOPs", tvb(off, CM_NAME_LEN):stringz(),
        n)
    st:set_len(pos - off)
    st:set_text(summary)
    return pos - off, summary
end

CM_BODY["3/request"] = function(tvb, tree, off)
    local summary = string.format("CM_CONNECT iop %d", tvb(off, 2):le_uint())
    local st = tree:add(hl.cm_connect, tvb(off, 4))
    st:set_text(summary)
    st:add_le(hf_cm.connect_iop_id, tvb(off, 2))
    st:add_le(hf_cm.connect_reserved, tvb(off + 2, 2))
    return 4, summary
end

local function status_name(status)
    return CM_STATUS_NAMES[status] or tostring(status)
end

CM_BODY["3/reply"] = function(tvb, tree, off)
    local summary = string.format("CM_CONNECT reply %s conn %d",
        status_name(tvb(off, 2):le_uint()), tvb(off + 4, 4):le_uint())
    local st = tree:add(hl.cm_connect_reply, tvb(off, 16))
    st:set_text(summary)
    st:add_le(hf_cm.connect_status, tvb(off, 2))
    st:add_le(hf_cm.connect_reply_reserved, tvb(off + 2, 2))
    st:add_le(hf_cm.conn_id, tvb(off + 4, 4))
    st:add_le(hf_cm.message_qpn, tvb(off + 8, 4))
    st:add_le(hf_cm.data_qpn, tvb(off + 12, 4))
    return 16, summary
end

CM_BODY["4/request"] = function(tvb, tree, off)
    local summary = string.format("CM_DISCONNECT conn %d", tvb(off, 4):le_uint())
    local st = tree:add(hl.cm_disconnect, tvb(off, 4))
    st:set_text(summary)
    st:add_le(hf_cm.disconnect_conn_id, tvb(off, 4))
    return 4, summary
end

CM_BODY["4/reply"] = function(tvb, tree, off)
    local summary = "CM_DISCONNECT reply " .. status_name(tvb(off, 2):le_uint())
    local st = tree:add(hl.cm_disconnect_reply, tvb(off, 4))
    st:set_text(summary)
    st:add_le(hf_cm.disconnect_status, tvb(off, 2))
    st:add_le(hf_cm.disconnect_reserved, tvb(off + 2, 2))
    return 4, summary
end

-- word 4 (XFunctionCode, OrganizationID), then the CM body under ftsslab's OrganizationID
local function dissect_private(tvb, pinfo, tree, off, stop, reply)
    if stop - off < 4 then
        tree:add_proto_expert_info(ef.body_short, string.format(
            "Private frame without its XFunctionCode/OrganizationID word (%d bytes of body)",
            stop - off))
        return 0, nil
    end
    local xfn = tvb(off, 2):le_uint()
    local org = tvb(off + 2, 2):le_uint()
    local ours = org == FTSSLAB_ORGANIZATION_ID
    local summary
    if ours then
        summary = CM_FUNCTIONS[xfn] or string.format("CM XFunctionCode 0x%04x", xfn)
    else
        summary = string.format("I2O private 0x%04x of organization 0x%04x", xfn, org)
    end
    local pt = tree:add(hl.private, tvb(off, 4))
    pt:set_text("I2O Private: " .. summary)
    local xi = pt:add_le(hf_cm.xfunction, tvb(off, 2))
    local oi = pt:add_le(hf_cm.organization_id, tvb(off + 2, 2))
    if not ours then return 4, summary end
    oi:append_text(" (ftsslab)")
    if CM_FUNCTIONS[xfn] then xi:append_text(" (" .. CM_FUNCTIONS[xfn] .. ")") end
    local kind = reply and "reply" or "request"
    local size = (reply and CM_REPLY_SIZES or CM_REQUEST_SIZES)[xfn]
    if size == nil then
        xi:add_proto_expert_info(ef.cm_unknown, string.format(
            "No CM %s with XFunctionCode 0x%04x", kind, xfn))
        return 4, summary
    end
    if stop - off - 4 < size then
        pt:add_proto_expert_info(ef.body_short, string.format(
            "%s %s body needs %d bytes, %d present", CM_FUNCTIONS[xfn], kind, size,
            stop - off - 4))
        return 4, summary
    end
    local used, body_summary = CM_BODY[xfn .. "/" .. kind](tvb, tree, off + 4, stop)
    return 4 + used, body_summary
end

-- ---------------------------------------------------------------- the frame
local function dissect_i2o(tvb, pinfo, tree)
    local cap = tvb:len()
    local reported = tvb:reported_length_remaining(0)
    pinfo.cols.protocol:set("I2O")
    local root = tree:add(p_i2o, tvb())
    if cap < HEADER_LEN then
        root:append_text(": truncated frame")
        root:add_proto_expert_info(ef.short, string.format(
            "I2O frame shorter than the 16-byte header (%d bytes)", cap))
        if cap > 0 then root:add(hf.payload, tvb(0, cap)) end
        pinfo.cols.info:set("I2O truncated frame")
        return cap
    end

    local vo = tvb(0, 1):uint()
    local sgl_offset = math.floor(vo / 16)
    local version = vo % 16
    local flags = tvb(1, 1):uint()
    local size = tvb(2, 2):le_uint()
    local word1 = tvb(4, 4):le_uint()
    local fn = math.floor(word1 / 0x1000000)
    local itid = math.floor(word1 / 0x1000) % 0x1000
    local ttid = word1 % 0x1000
    local ictx = tvb(8, 4):le_uint()
    local tctx = tvb(12, 4):le_uint()
    local reply = has(flags, MSG_REPLY)
    local fname = I2O_FUNCTIONS[fn]

    local summary = string.format("I2O %s %s %d->%d ictx=%s tctx=%s", fname or hex(fn),
        reply and "reply" or "request", itid, ttid, hex(ictx), hex(tctx))
    root:append_text(string.format(", %s %s, TID %d -> %d", fname or hex(fn),
        reply and "reply" or "request", itid, ttid))

    local hdr = root:add(hl.header, tvb(0, HEADER_LEN))
    local so = hdr:add(hf.sgl_offset, tvb(0, 1))
    local vi = hdr:add(hf.version, tvb(0, 1))
    if version ~= I2OVERSION then
        vi:add_proto_expert_info(ef.version, string.format(
            "Unsupported I2O version %d (expected %d, I2O 1.5)", version, I2OVERSION))
    end
    local fi = add_flags(hdr, hf.msg_flags, hf_msg_flag_bits, tvb(1, 1), flags, MSG_FLAG_NAMES)
    if flags % 16 >= 4 then
        fi:add_proto_expert_info(ef.reserved_flags, string.format(
            "Reserved MsgFlags bits set (0x%02x)", flags % 16 - flags % 4))
    end
    if has(flags, MSG_FAIL) and not reply then
        fi:add_proto_expert_info(ef.fail_flag, "Fail flag (0x20) on a request (no reply flag)")
    end
    local si = hdr:add_le(hf.msg_size, tvb(2, 2))
    si:append_text(string.format(" (%d bytes)", size * 4))
    local fni = hdr:add_le(hf["function"], tvb(4, 4))
    if fname == nil then
        fni:add_proto_expert_info(ef.unknown_function, string.format(
            "Unknown function code 0x%02x", fn))
    end
    hdr:add_le(hf.initiator_tid, tvb(4, 4))
    hdr:add_le(hf.target_tid, tvb(4, 4))
    hdr:add_le(hf.initiator_context, tvb(8, 4))
    hdr:add_le(hf.transaction_context, tvb(12, 4))

    -- body: Scapy's extract_padding, s[:max(msg_size*4 - 16, 0)] of what is there
    local frame_len = size * 4
    if size < HEADER_WORDS then
        si:add_proto_expert_info(ef.size_small, string.format(
            "MessageSize %d words is smaller than the 4-word header", size))
        frame_len = HEADER_LEN
    elseif frame_len > reported then
        si:add_proto_expert_info(ef.size_exceeds, string.format(
            "MessageSize %d words (%d bytes) exceeds the %d bytes available", size, frame_len,
            reported))
    end
    local stop = math.min(frame_len, cap)

    if sgl_offset ~= 0 and (sgl_offset < HEADER_WORDS or sgl_offset >= size) then
        so:add_proto_expert_info(ef.sgl_offset, string.format(
            "SGL offset %d words is outside the frame (header 4 words, MessageSize %d)",
            sgl_offset, size))
    end
    if reply and sgl_offset ~= 0 then
        so:add_proto_expert_info(ef.reply_flag, string.format(
            "Reply flag on a request body: a reply carries no SGL, but SGL offset is %d",
            sgl_offset))
    end

    local used, body_summary = 0, nil
    local off = HEADER_LEN
    if reply and has(flags, MSG_FAIL) then
        if stop > off then
            root:add_proto_expert_info(ef.failure_reply)
        end
    elseif fn == I2O_PRIVATE then
        if not has(flags, MSG_FAIL) then
            used, body_summary = dissect_private(tvb, pinfo, root, off, stop, reply)
        end
    elseif reply then
        used, body_summary = dissect_reply(tvb, pinfo, root, off, stop, fn)
    elseif fn == BSA_BLOCK_READ or fn == BSA_BLOCK_WRITE then
        if sgl_offset ~= BSA_SGL_OFFSET and stop - off >= 16 then
            so:add_proto_expert_info(ef.sgl_offset_bsa, string.format(
                "SGL offset %d words does not point at the BSA SGL (word %d)", sgl_offset,
                BSA_SGL_OFFSET))
        end
        used, body_summary = dissect_block_rw(tvb, pinfo, root, off, stop, fn)
    elseif fn == BSA_CACHE_FLUSH then
        used, body_summary = dissect_cache_flush(tvb, pinfo, root, off, stop)
    end
    if stop - off - used > 0 then
        root:add(hf.payload, tvb(off + used, stop - off - used))
    end
    if cap > stop then
        local pad = root:add(hf.padding, tvb(stop, cap - stop))
        pad:add_proto_expert_info(ef.padding, string.format(
            "%d bytes after MessageSize (%d bytes)", cap - stop, frame_len))
    end

    if body_summary then
        summary = summary .. " / " .. body_summary
    end
    pinfo.cols.info:set(summary)
    return cap
end

function p_i2o.dissector(tvb, pinfo, tree)
    return dissect_i2o(tvb, pinfo, tree)
end

-- layers/i2o.py looks_like_i2o(): a plausible whole I2O frame
local function looks_like_i2o(tvb)
    local len = tvb:len()
    if len < HEADER_LEN then return false end
    local vo = tvb(0, 1):uint()
    local flags = tvb(1, 1):uint()
    local size = tvb(2, 2):le_uint()
    local fn = tvb(7, 1):uint()
    local sgl_offset = math.floor(vo / 16)
    return vo % 16 == I2OVERSION
        and flags % 16 < 4
        and size >= HEADER_WORDS
        and size * 4 <= len
        and I2O_FUNCTIONS[fn] ~= nil
        and (sgl_offset == 0 or (sgl_offset >= HEADER_WORDS and sgl_offset < size))
end

local function heuristic(tvb, pinfo, tree)
    if not looks_like_i2o(tvb) then return false end
    dissect_i2o(tvb, pinfo, tree)
    return true
end

DissectorTable.get("udp.port"):add(I2O_UDP_PORT, p_i2o)
p_i2o:register_heuristic("infiniband.payload", heuristic)
