"""Feast's online-store bytes, read without Feast: entity keys, ValueProto values, timestamps.

The encodings are Feast 0.67's (`feast.infra.key_encoding_utils.serialize_entity_key` at
`entity_key_serialization_version` 3, `feast.types.Value` and `google.protobuf.Timestamp`
protobuf messages, and the Redis hash fields' murmur3 names); tests hold them byte for byte
against Feast's own code.
"""

from __future__ import annotations

import functools
import struct
from datetime import UTC, datetime
from typing import Any

from churn_mlops.serving.online.errors import FeatureStoreError

STRING_TYPE = 2  # feast.types.ValueType.STRING
_VARINT, _FIXED64, _LENGTH, _FIXED32 = 0, 1, 2, 5
_SIGN64 = 1 << 63
_DOUBLE_TAG, _BOOL_TAG, _STRING_TAG = 5 << 3 | _FIXED64, 7 << 3 | _VARINT, 2 << 3 | _LENGTH
_DOUBLE = struct.Struct("<d")


def entity_key(join_key: str, value: str) -> bytes:
    """A one-entity key with a string value, serialized as Feast does (version 3)."""
    name, text = join_key.encode(), value.encode()
    return (
        struct.pack("<III", 1, STRING_TYPE, len(name))
        + name
        + struct.pack("<II", STRING_TYPE, len(text))
        + text
    )


@functools.lru_cache(maxsize=16_384)  # a pure function of a few bytes; categories and flags repeat
def decode_value(data: bytes) -> Any:
    """The scalar a serialized feast ValueProto holds: None for an empty or null Value."""
    size = len(data)
    if not size:
        return None
    tag = data[0]  # the usual single field, read at once: a double, a bool, a short string
    if tag == _DOUBLE_TAG and size == 9:
        return _DOUBLE.unpack_from(data, 1)[0]
    if tag == _BOOL_TAG and size == 2 and data[1] < 2:
        return data[1] == 1
    if tag == _STRING_TAG and size > 1 and data[1] < 0x80 and data[1] == size - 2:
        return data[2:].decode()
    found: Any = None
    for number, wire, raw in _fields(data):
        found = _scalar(number, wire, raw)
    return found


def decode_timestamp(data: bytes) -> datetime:
    """A serialized google.protobuf.Timestamp as an aware UTC datetime (Feast's Redis `_ts:`)."""
    seconds = nanos = 0
    for number, wire, raw in _fields(data):
        if wire == _VARINT and number == 1:
            seconds = _signed(raw)
        elif wire == _VARINT and number == 2:
            nanos = _signed(raw)
    return datetime.fromtimestamp(seconds + nanos / 1_000_000_000, tz=UTC)


def feature_field(view: str, feature: str) -> bytes:
    """The Redis hash field Feast stores a feature under: murmur3 of "view:feature", 4 bytes LE."""
    return murmur3_32(f"{view}:{feature}".encode()).to_bytes(4, "little")


def murmur3_32(data: bytes, seed: int = 0) -> int:
    """MurmurHash3 x86 32-bit, unsigned (what `mmh3.hash(key, signed=False)` returns)."""
    c1, c2, mask = 0xCC9E2D51, 0x1B873593, 0xFFFFFFFF
    h = seed
    whole = len(data) - len(data) % 4
    for (k,) in struct.iter_unpack("<I", data[:whole]):
        k = _rotl((k * c1) & mask, 15) * c2 & mask
        h = (_rotl(h ^ k, 13) * 5 + 0xE6546B64) & mask
    tail = int.from_bytes(data[whole:], "little")
    if len(data) % 4:
        h ^= _rotl((tail * c1) & mask, 15) * c2 & mask
    h ^= len(data)
    h = ((h ^ (h >> 16)) * 0x85EBCA6B) & mask
    h = ((h ^ (h >> 13)) * 0xC2B2AE35) & mask
    return h ^ (h >> 16)


def _rotl(value: int, bits: int) -> int:
    return ((value << bits) | (value >> (32 - bits))) & 0xFFFFFFFF


def _fields(data: bytes) -> list[tuple[int, int, Any]]:
    """(field number, wire type, raw value) of each field of a protobuf message."""
    found: list[tuple[int, int, Any]] = []
    at, end = 0, len(data)
    raw: Any
    try:
        while at < end:
            tag, at = _varint(data, at)
            number, wire = tag >> 3, tag & 7
            if wire == _VARINT:
                raw, at = _varint(data, at)
            elif wire == _FIXED64:
                raw, at = data[at : at + 8], at + 8
            elif wire == _FIXED32:
                raw, at = data[at : at + 4], at + 4
            elif wire == _LENGTH:
                size, at = _varint(data, at)
                raw, at = data[at : at + size], at + size
            else:
                raise FeatureStoreError(f"online store value: unsupported protobuf wire type {wire}")
            found.append((number, wire, raw))
    except IndexError:
        raise FeatureStoreError("online store value: truncated protobuf") from None
    if at != end:
        raise FeatureStoreError("online store value: truncated protobuf")
    return found


def _varint(data: bytes, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, at
        shift += 7


def _signed(raw: int) -> int:
    """A varint as the signed 64-bit integer (int32 and int64 fields) it encodes."""
    raw &= (1 << 64) - 1
    return raw - (1 << 64) if raw & _SIGN64 else raw


def _scalar(number: int, wire: int, raw: Any) -> Any:
    """The value of one ValueProto field (the `val` oneof's scalar members)."""
    if number == 5 and wire == _FIXED64:  # double_val
        return struct.unpack("<d", raw)[0]
    if number == 6 and wire == _FIXED32:  # float_val
        return struct.unpack("<f", raw)[0]
    if number in (3, 4) and wire == _VARINT:  # int32_val, int64_val
        return _signed(raw)
    if number == 7 and wire == _VARINT:  # bool_val
        return raw != 0
    if number == 2 and wire == _LENGTH:  # string_val
        return bytes(raw).decode()
    if number == 1 and wire == _LENGTH:  # bytes_val
        return bytes(raw)
    if number == 19 and wire == _VARINT:  # null_val
        return None
    raise FeatureStoreError(f"online store value: unsupported feast Value field {number}")
