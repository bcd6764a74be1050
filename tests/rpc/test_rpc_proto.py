"""The generated ``anycable.proto`` matches AnyCable's wire contract (spec §6.1).

The tests' gRPC application is built from the same ``.proto``, so a wrong field number would
pass every other test: this table, copied from AnyCable's ``rpc.proto``, is the guard.
"""

from __future__ import annotations

from google.protobuf.descriptor import FieldDescriptor as F

from pycable.rpc._pb import anycable_pb2

STR, BOOL, U32, ENUM, MSG = F.TYPE_STRING, F.TYPE_BOOL, F.TYPE_UINT32, F.TYPE_ENUM, F.TYPE_MESSAGE
MAP = "map"
REP = "repeated"

# message -> {field: (number, type, label)}; label "" = singular
MESSAGES = {
    "Env": {"url": (1, STR, ""), "headers": (2, MSG, MAP), "cstate": (3, MSG, MAP), "istate": (4, MSG, MAP)},
    "EnvResponse": {"cstate": (1, MSG, MAP), "istate": (2, MSG, MAP)},
    "PresenceResponse": {"type": (1, STR, ""), "id": (2, STR, ""), "info": (3, STR, ""), "ttl": (4, U32, "")},
    "ConnectionRequest": {"env": (3, MSG, "")},
    "ConnectionResponse": {
        "status": (1, ENUM, ""),
        "identifiers": (2, STR, ""),
        "transmissions": (3, STR, REP),
        "error_msg": (4, STR, ""),
        "env": (5, MSG, ""),
    },
    "CommandMessage": {
        "command": (1, STR, ""),
        "identifier": (2, STR, ""),
        "connection_identifiers": (3, STR, ""),
        "data": (4, STR, ""),
        "env": (5, MSG, ""),
    },
    "CommandResponse": {
        "status": (1, ENUM, ""),
        "disconnect": (2, BOOL, ""),
        "stop_streams": (3, BOOL, ""),
        "streams": (4, STR, REP),
        "transmissions": (5, STR, REP),
        "error_msg": (6, STR, ""),
        "env": (7, MSG, ""),
        "stopped_streams": (8, STR, REP),
        "presence": (9, MSG, ""),
    },
    "DisconnectRequest": {"identifiers": (1, STR, ""), "subscriptions": (2, STR, REP), "env": (5, MSG, "")},
    "DisconnectResponse": {"status": (1, ENUM, ""), "error_msg": (2, STR, "")},
}


def _shape(field) -> tuple[int, int, str]:
    if field.message_type is not None and field.message_type.GetOptions().map_entry:
        label = MAP
    elif field.is_repeated:
        label = REP
    else:
        label = ""
    return field.number, field.type, label


def test_package_service_and_methods() -> None:
    desc = anycable_pb2.DESCRIPTOR
    assert desc.package == "anycable"
    service = desc.services_by_name["RPC"]
    assert service.full_name == "anycable.RPC"
    methods = {m.name: (m.input_type.name, m.output_type.name) for m in service.methods}
    # AnyCable's three calls, unchanged; Restore is pycable's opt-in addition (docs/rpc.md).
    assert methods.pop("Restore")
    assert methods == {
        "Connect": ("ConnectionRequest", "ConnectionResponse"),
        "Command": ("CommandMessage", "CommandResponse"),
        "Disconnect": ("DisconnectRequest", "DisconnectResponse"),
    }


def test_status_enum() -> None:
    status = anycable_pb2.DESCRIPTOR.enum_types_by_name["Status"]
    assert {v.name: v.number for v in status.values} == {"ERROR": 0, "SUCCESS": 1, "FAILURE": 2}


def test_messages_fields_numbers_and_types() -> None:
    by_name = anycable_pb2.DESCRIPTOR.message_types_by_name
    for name, fields in MESSAGES.items():
        got = {f.name: _shape(f) for f in by_name[name].fields}
        assert got == fields, name


def test_map_fields_are_string_to_string() -> None:
    for name in ("Env", "EnvResponse"):
        for field in anycable_pb2.DESCRIPTOR.message_types_by_name[name].fields:
            entry = field.message_type
            if entry is None:
                continue
            assert [(f.name, f.type) for f in entry.fields] == [("key", STR), ("value", STR)], (name, field.name)
