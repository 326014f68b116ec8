"""A small strict DER reader: just what RSA public keys need.

DER (X.690) encodes each value as tag, length, contents. We accept only the
definite, minimal length forms DER allows, so one key has one encoding.
"""

from __future__ import annotations

from dataclasses import dataclass

TAG_INTEGER = 0x02
TAG_BIT_STRING = 0x03
TAG_OCTET_STRING = 0x04
TAG_NULL = 0x05
TAG_OID = 0x06
TAG_SEQUENCE = 0x30


class DERError(ValueError):
    """The bytes are not the DER structure expected."""


@dataclass(frozen=True, slots=True)
class TLV:
    tag: int
    value: bytes


def read_tlv(data: bytes, offset: int = 0) -> tuple[TLV, int]:
    """The element at `offset` and the offset just past it."""
    if offset + 2 > len(data):
        raise DERError("truncated element")
    tag = data[offset]
    if tag & 0x1F == 0x1F:
        raise DERError("multi-byte tags are not used in keys")
    first = data[offset + 1]
    pos = offset + 2
    if first < 0x80:
        length = first
    elif first == 0x80:
        raise DERError("indefinite length is not DER")
    else:
        count = first & 0x7F
        if count > 4 or pos + count > len(data):
            raise DERError("bad length")
        raw = data[pos : pos + count]
        if raw[0] == 0:
            raise DERError("length not minimal")
        length = int.from_bytes(raw, "big")
        if length < 0x80:
            raise DERError("length not minimal")
        pos += count
    end = pos + length
    if end > len(data):
        raise DERError("element longer than its data")
    return TLV(tag, bytes(data[pos:end])), end


def read_one(data: bytes, tag: int) -> TLV:
    """The single element `data` holds, which must have `tag`."""
    element, end = read_tlv(data)
    if end != len(data):
        raise DERError("trailing bytes after the element")
    expect(element, tag)
    return element


def children(element: TLV) -> list[TLV]:
    """The elements inside a SEQUENCE."""
    expect(element, TAG_SEQUENCE)
    out: list[TLV] = []
    pos = 0
    while pos < len(element.value):
        child, pos = read_tlv(element.value, pos)
        out.append(child)
    return out


def expect(element: TLV, tag: int) -> None:
    if element.tag != tag:
        raise DERError(f"expected tag 0x{tag:02x}, found 0x{element.tag:02x}")


def positive_integer(element: TLV) -> int:
    """A DER INTEGER that must be positive and minimally encoded."""
    expect(element, TAG_INTEGER)
    raw = element.value
    if not raw:
        raise DERError("empty INTEGER")
    if raw[0] & 0x80:
        raise DERError("negative INTEGER")
    if len(raw) > 1 and raw[0] == 0 and not raw[1] & 0x80:
        raise DERError("INTEGER not minimal")
    value = int.from_bytes(raw, "big")
    if value == 0:
        raise DERError("zero INTEGER")
    return value


def bit_string_bytes(element: TLV) -> bytes:
    """The contents of a BIT STRING made of whole bytes."""
    expect(element, TAG_BIT_STRING)
    if not element.value or element.value[0] != 0:
        raise DERError("BIT STRING with unused bits")
    return element.value[1:]


def encode_tlv(tag: int, value: bytes) -> bytes:
    """DER encoding of one element (used to build the expected DigestInfo)."""
    n = len(value)
    if n < 0x80:
        length = bytes([n])
    else:
        raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
        length = bytes([0x80 | len(raw)]) + raw
    return bytes([tag]) + length + value
