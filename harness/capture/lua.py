"""The Wireshark Lua dissector for our captures, generated from the Scapy models.

Every field of every sndif message class becomes a Wireshark field named
``sndif.<class>.<field>`` (e.g. ``sndif.openreq.pcm_rate``) at the offset and width the
model gives, with the model's enum names (operations, formats, triggers, event types) and
status names as value strings; the body is chosen by the same bindings Scapy uses
(``payload_guess``). Nothing here is typed by hand twice: a change of the models changes
the dissector, and ``tests/test_capture.py`` checks the shipped ``sndif.lua`` is current.
"""

from __future__ import annotations

from collections.abc import Iterable
from importlib import resources
from typing import Any

from scapy.packet import Packet

from harness.capture.packets import HEADER, LINKTYPE, Direction, Kind
from protocol_models import codec, sndif
from protocol_models.constants import XENSND_MSG_SIZE, PcmFormat, XenErrno

SHIPPED = "sndif.lua"

#: Lua ProtoField constructor per struct code.
_PROTOFIELD = {"B": "uint8", "H": "uint16", "I": "uint32", "i": "int32", "Q": "uint64"}
#: The header classes, and which of our capture kinds each one dissects.
HEADERS: dict[type[Packet], Kind] = {
    sndif.XenSndReq: Kind.REQ, sndif.XenSndResp: Kind.RESP, sndif.XenSndEvt: Kind.EVT}


def abbrev(cls: type[Packet], field: str) -> str:
    """The Wireshark field name of a model field (what a display filter uses)."""
    return f"sndif.{cls.__name__.lower()}.{field}"


def _lua_str(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _valuestring(fld: Any) -> dict[int, str] | None:
    if isinstance(fld, sndif.StatusField):
        return {0: "OK", **{-int(e): f"-{e.name}" for e in XenErrno}}
    i2s = getattr(fld, "i2s", None)
    if isinstance(i2s, dict) and i2s:
        return {int(k): str(v) for k, v in i2s.items()}
    return None


def _lua_table(values: dict[int, str]) -> str:
    return "{" + ", ".join(f"[{k}]={_lua_str(v)}" for k, v in sorted(values.items())) + "}"


def _body_classes(header: type[Packet]) -> tuple[str, dict[int, type[Packet]], type[Packet]]:
    """The field that selects the body, the body class per value, and the default body
    (Scapy's own bindings and ``default_payload_class``)."""
    key = ""
    table: dict[int, type[Packet]] = {}
    for fval, cls in header.payload_guess:
        if len(fval) != 1:
            continue
        (name, value), = fval.items()
        key = key or name
        if name == key:
            table.setdefault(int(value), cls)
    default = header().default_payload_class(b"")
    return key, table, default


def _model_classes() -> list[type[Packet]]:
    out: list[type[Packet]] = []
    for header in HEADERS:
        out.append(header)
        _, table, default = _body_classes(header)
        for cls in [*table.values(), default]:
            if cls not in out:
                out.append(cls)
    return out


def _field_lines(classes: Iterable[type[Packet]]) -> tuple[list[str], list[str]]:
    """``ProtoField`` definitions, and the layout table the dissector walks."""
    fields, layouts = [], []
    for cls in classes:
        base = sndif.HEADER_SIZE if cls in sndif.BODY_CLASSES else 0
        rows = []
        offset = base
        for fld in cls.fields_desc:
            code = codec.struct_code(fld)
            size = int(code[:-1]) if code.endswith("s") else {"B": 1, "H": 2, "I": 4, "i": 4,
                                                                "Q": 8}[code]
            var = f"F_{cls.__name__}_{fld.name}"
            vs = _valuestring(fld)
            names = "nil"
            if vs:
                names = f"V_{cls.__name__}_{fld.name}"
                fields.append(f"local {names} = {_lua_table(vs)}")
            if code.endswith("s"):
                ctor = f"ProtoField.bytes({_lua_str(abbrev(cls, fld.name))}, " \
                       f"{_lua_str(fld.name)})"
            else:
                display = "base.HEX" if isinstance(fld, sndif.PcmFormatMaskField) else \
                    "base.DEC"
                extra = f", {names}" if vs else ""
                ctor = (f"ProtoField.{_PROTOFIELD[code]}({_lua_str(abbrev(cls, fld.name))}, "
                        f"{_lua_str(fld.name)}, {display}{extra})")
            fields.append(f"local {var} = {ctor}")
            fields.append(f"table.insert(all_fields, {var})")
            fmask = "true" if isinstance(fld, sndif.PcmFormatMaskField) else "false"
            signed = "true" if code == "i" else "false"
            rows.append(f"  {{name={_lua_str(fld.name)}, field={var}, offset={offset}, "
                        f"size={size}, signed={signed}, names={names}, formats={fmask}}},")
            offset += size
        doc = (cls.__doc__ or cls.__name__).strip().splitlines()[0].replace("``", "")
        layouts.append(f"LAYOUT[{_lua_str(cls.__name__)}] = {{title={_lua_str(doc)}, "
                       f"label={_lua_str(cls.__name__)}, fields={{")
        layouts += rows
        layouts.append("}}")
    return fields, layouts


def _dispatch_lines() -> list[str]:
    lines = []
    for header in HEADERS:
        key, table, default = _body_classes(header)
        offset = next(e.offset for e in codec.layout(header) if e.name == key)
        bodies = ", ".join(f"[{v}]={_lua_str(c.__name__)}" for v, c in sorted(table.items()))
        lines.append(f"DISPATCH[{_lua_str(header.__name__)}] = {{key={_lua_str(key)}, "
                     f"offset={offset}, bodies={{{bodies}}}, "
                     f"default={_lua_str(default.__name__)}}}")
    return lines


def generate() -> str:
    """The dissector's Lua source (deterministic: same models, same text)."""
    fields, layouts = _field_lines(_model_classes())
    kinds = {int(k): k.name.lower() for k in Kind}
    directions = {Direction.FRONT_TO_BACK: "frontend -> backend",
                  Direction.BACK_TO_FRONT: "backend -> frontend",
                  Direction.TO_XENSTORE: "domain -> xenstored",
                  Direction.FROM_XENSTORE: "xenstored -> domain", Direction.NONE: "none"}
    headers = ", ".join(f"[{int(k)}]={_lua_str(c.__name__)}" for c, k in HEADERS.items())
    formats = _lua_table({int(f): f.name for f in PcmFormat})
    subst = {
        "@FIELDS@": "\n".join(fields),
        "@LAYOUTS@": "\n".join(layouts),
        "@DISPATCH@": "\n".join(_dispatch_lines()),
        "@KINDS@": _lua_table(kinds),
        "@DIRECTIONS@": _lua_table({int(k): v for k, v in directions.items()}),
        "@HEADERS@": "{" + headers + "}",
        "@FORMATS@": formats,
        "@HDRSIZE@": str(HEADER.size),
        "@LINKTYPE@": str(LINKTYPE),
        "@MSGSIZE@": str(XENSND_MSG_SIZE),
    }
    text = _TEMPLATE
    for k, v in subst.items():
        text = text.replace(k, v)
    return text


def shipped() -> str:
    """The ``sndif.lua`` shipped in this package (the test keeps it equal to
    :func:`generate`)."""
    return resources.files("harness.capture").joinpath(SHIPPED).read_text()


_TEMPLATE = r"""-- Wireshark dissector for sndif-harness captures
-- (pcapng, link type DLT_USER0 = @LINKTYPE@).
-- GENERATED by `sndif-harness trace dissector` from the Scapy models
-- (protocol_models/sndif.py): do not edit, regenerate.
--
--   tshark -X lua_script:sndif.lua -r capture.pcapng -V
--   wireshark -X lua_script:sndif.lua capture.pcapng
--   (or copy it into ~/.local/lib/wireshark/plugins)

local sndif = Proto("sndif", "Xen PV sound (sndif)")
local all_fields = {}

local KINDS = @KINDS@
local DIRECTIONS = @DIRECTIONS@
local HEADERS = @HEADERS@
local FORMATS = @FORMATS@

-- our capture header (harness/capture/packets.py)
local F_version = ProtoField.uint8("sndif.cap.version", "Capture header version")
local F_kind = ProtoField.uint8("sndif.kind", "Kind", base.DEC, KINDS)
local F_direction = ProtoField.uint8("sndif.direction", "Direction", base.DEC, DIRECTIONS)
local F_domid = ProtoField.uint16("sndif.domid", "Domain", base.DEC)
local F_pcm = ProtoField.uint8("sndif.pcm", "PCM index", base.DEC)
local F_stream = ProtoField.uint8("sndif.stream", "Stream index in the PCM", base.DEC)
local F_channel = ProtoField.uint16("sndif.channel", "Stream index in the card", base.DEC)
local F_length = ProtoField.uint16("sndif.length", "Length", base.DEC)
local F_text = ProtoField.string("sndif.text", "Text")
local F_response_in = ProtoField.framenum("sndif.response_in", "Response in")
local F_request_in = ProtoField.framenum("sndif.request_in", "Response to the request in")
local F_unanswered = ProtoField.bool("sndif.unanswered", "No response in this capture")
local F_response_time = ProtoField.double("sndif.response_time", "Response time (ms)")
for _, f in ipairs({F_version, F_kind, F_direction, F_domid, F_pcm, F_stream, F_channel,
                    F_length, F_text, F_response_in, F_request_in, F_unanswered,
                    F_response_time}) do
  table.insert(all_fields, f)
end
local E_violation = ProtoExpert.new("sndif.violation.expert", "Protocol violation recorded",
                                    expert.group.PROTOCOL, expert.severity.WARN)
local E_unanswered = ProtoExpert.new("sndif.unanswered.expert", "Request without a response",
                                     expert.group.SEQUENCE, expert.severity.WARN)
local E_status = ProtoExpert.new("sndif.status.expert", "Request failed",
                                 expert.group.RESPONSE_CODE, expert.severity.NOTE)
sndif.experts = {E_violation, E_unanswered, E_status}

-- the models' fields
@FIELDS@

local LAYOUT = {}
@LAYOUTS@

local DISPATCH = {}
@DISPATCH@

sndif.fields = all_fields

-- request/response pairing by (domain, stream, id), made on the first pass
local pending, response_of, request_of, sent_at = {}, {}, {}, {}
function sndif.init()
  pending, response_of, request_of, sent_at = {}, {}, {}, {}
end

local function format_names(mask)
  local names = {}
  for bit = 0, 63 do
    if mask:band(UInt64(1):lshift(bit)) ~= UInt64(0) then
      table.insert(names, FORMATS[bit] or ("bit" .. bit))
    end
  end
  return table.concat(names, "|")
end

local function add_layout(tree, buf, name)
  local layout = LAYOUT[name]
  local sub = tree:add(sndif, buf(0, buf:len()), layout.label .. ": " .. layout.title)
  local values = {}
  for _, e in ipairs(layout.fields) do
    if e.offset + e.size <= buf:len() then
      local item = sub:add_le(e.field, buf(e.offset, e.size))
      if e.size == 1 or e.size == 2 or e.size == 4 then
        local v = e.signed and buf(e.offset, e.size):le_int() or buf(e.offset, e.size):le_uint()
        values[e.name] = (e.names and e.names[v]) or tostring(v)
      elseif e.size == 8 then
        values[e.name] = tostring(buf(e.offset, 8):le_uint64())
      end
      if e.formats then
        item:append_text(" (" .. format_names(buf(e.offset, 8):le_uint64()) .. ")")
      end
    end
  end
  return sub, values
end

local function summary(name, values)
  local parts = {}
  for _, e in ipairs(LAYOUT[name].fields) do
    local v = values[e.name]
    if v ~= nil and not e.name:find("reserved") then
      table.insert(parts, e.name .. "=" .. v)
    end
  end
  return table.concat(parts, " ")
end

function sndif.dissector(buf, pinfo, tree)
  if buf:len() < @HDRSIZE@ then return 0 end
  pinfo.cols.protocol = "sndif"
  local kind = buf(1, 1):uint()
  local direction = buf(2, 1):uint()
  local domid = buf(4, 2):le_uint()
  local pcm, stream = buf(6, 1):uint(), buf(7, 1):uint()
  local length = buf(10, 2):le_uint()
  local root = tree:add(sndif, buf(), "sndif " .. (KINDS[kind] or "?"))
  local cap = root:add(sndif, buf(0, @HDRSIZE@), "Capture header")
  cap:add(F_version, buf(0, 1))
  cap:add(F_kind, buf(1, 1))
  cap:add(F_direction, buf(2, 1))
  cap:add_le(F_domid, buf(4, 2))
  cap:add(F_pcm, buf(6, 1))
  cap:add(F_stream, buf(7, 1))
  cap:add_le(F_channel, buf(8, 2))
  cap:add_le(F_length, buf(10, 2))
  local where = (pcm ~= 255 and stream ~= 255) and (pcm .. "/" .. stream) or "-"
  local dom = (domid ~= 65535) and ("d" .. domid) or "-"
  local ends = {[0]={"frontend " .. dom, "backend"}, [1]={"backend", "frontend " .. dom},
                [2]={dom, "xenstored"}, [3]={"xenstored", dom}}
  local e = ends[direction] or {dom, "-"}
  pinfo.cols.src = e[1]
  pinfo.cols.dst = e[2]
  local payload = buf(@HDRSIZE@, math.min(length, buf:len() - @HDRSIZE@))
  local header = HEADERS[kind]
  if header == nil or payload:len() < @MSGSIZE@ then
    local item = root:add(F_text, payload)
    if KINDS[kind] == "violation" then item:add_proto_expert_info(E_violation) end
    pinfo.cols.info = (KINDS[kind] or "?") .. " " .. payload:string()
    return buf:len()
  end
  local msg = payload:tvb()
  local _, hvalues = add_layout(root, msg, header)
  local d = DISPATCH[header]
  local body = d.bodies[msg(d.offset, 1):uint()] or d.default
  local _, bvalues = add_layout(root, msg, body)
  local info = KINDS[kind] .. " " .. where .. " " .. summary(header, hvalues)
  local extra = summary(body, bvalues)
  if extra ~= "" then info = info .. " / " .. extra end
  -- pairing: responses echo the id of their request (SND-B-09)
  local key = domid .. ":" .. where .. ":" .. tostring(hvalues["id"])
  if not pinfo.visited then
    if kind == 1 then
      pending[key] = pinfo.number
      sent_at[pinfo.number] = pinfo.abs_ts
    elseif kind == 2 and pending[key] ~= nil then
      request_of[pinfo.number] = pending[key]
      response_of[pending[key]] = pinfo.number
      pending[key] = nil
    end
  end
  if kind == 1 and response_of[pinfo.number] ~= nil then
    root:add(F_response_in, response_of[pinfo.number])
  elseif kind == 1 and pinfo.visited then
    -- only once every packet has been seen (Wireshark, or tshark -2) is this known
    root:add(F_unanswered, true):add_proto_expert_info(E_unanswered)
  elseif kind == 2 and request_of[pinfo.number] ~= nil then
    local req = request_of[pinfo.number]
    root:add(F_request_in, req)
    root:add(F_response_time, (pinfo.abs_ts - sent_at[req]) * 1000)
  end
  if kind == 2 and hvalues["status"] ~= "OK" then
    root:add_proto_expert_info(E_status, "status " .. tostring(hvalues["status"]))
  end
  pinfo.cols.info = info
  return buf:len()
end

DissectorTable.get("wtap_encap"):add(wtap_encaps and wtap_encaps.USER0 or wtap.USER0, sndif)
"""
