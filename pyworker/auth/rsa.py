"""RSA public keys from PEM, and PKCS#1 v1.5 SHA-256 signature checks.

Verification follows RFC 8017 section 8.2.2: compute the encoded message
the signature must open to (00 01 FF..FF 00 DigestInfo hash), then compare
it with what the signature opens to, in constant time. The opened block is
never parsed: parsing it is how the classic PKCS#1 v1.5 forgeries work.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from dataclasses import dataclass

from . import der

# 1.2.840.113549.1.1.1
RSA_ENCRYPTION_OID = bytes.fromhex("2a864886f70d010101")
# DigestInfo prefix for SHA-256 (RFC 8017 section 9.2, note 1).
SHA256_DIGEST_INFO = bytes.fromhex("3031300d060960864801650304020105000420")
# Smaller keys are not worth trusting; larger ones cost too much to check.
MIN_KEY_BITS = 1024
MAX_KEY_BITS = 8192

_PEM = re.compile(r"-----BEGIN (?P<label>[A-Z0-9 ]+)-----\s*(?P<body>[A-Za-z0-9+/=\s]*?)\s*-----END (?P=label)-----")


class KeyFormatError(ValueError):
    """The text is not an RSA public key we can use."""


@dataclass(frozen=True, slots=True)
class RSAPublicKey:
    n: int
    e: int

    @property
    def size_bytes(self) -> int:
        return (self.n.bit_length() + 7) // 8

    @classmethod
    def from_pem(cls, text: str | bytes) -> RSAPublicKey:
        """Read a `PUBLIC KEY` (SubjectPublicKeyInfo) or `RSA PUBLIC KEY` (PKCS#1) PEM block."""
        if isinstance(text, bytes):
            text = text.decode("ascii", errors="replace")
        match = _PEM.search(text)
        if match is None:
            raise KeyFormatError("no PEM block found")
        label = match.group("label")
        try:
            body = base64.b64decode("".join(match.group("body").split()), validate=True)
        except binascii.Error as exc:
            raise KeyFormatError(f"PEM body is not base64: {exc}") from None
        try:
            if label == "PUBLIC KEY":
                return cls.from_spki_der(body)
            if label == "RSA PUBLIC KEY":
                return cls.from_pkcs1_der(body)
        except der.DERError as exc:
            raise KeyFormatError(f"malformed {label}: {exc}") from None
        raise KeyFormatError(f"PEM block is a {label!r}, not a public key")

    @classmethod
    def from_spki_der(cls, data: bytes) -> RSAPublicKey:
        """SubjectPublicKeyInfo: SEQUENCE { SEQUENCE { OID, NULL }, BIT STRING { RSAPublicKey } }."""
        parts = der.children(der.read_one(data, der.TAG_SEQUENCE))
        if len(parts) != 2:
            raise der.DERError("SubjectPublicKeyInfo must have two parts")
        algorithm = der.children(parts[0])
        if not algorithm or algorithm[0].tag != der.TAG_OID or algorithm[0].value != RSA_ENCRYPTION_OID:
            raise der.DERError("not an rsaEncryption key")
        if len(algorithm) > 2 or (len(algorithm) == 2 and (algorithm[1].tag != der.TAG_NULL or algorithm[1].value)):
            raise der.DERError("rsaEncryption parameters must be NULL")
        return cls.from_pkcs1_der(der.bit_string_bytes(parts[1]))

    @classmethod
    def from_pkcs1_der(cls, data: bytes) -> RSAPublicKey:
        """RSAPublicKey: SEQUENCE { INTEGER n, INTEGER e }."""
        parts = der.children(der.read_one(data, der.TAG_SEQUENCE))
        if len(parts) != 2:
            raise der.DERError("RSAPublicKey must have two INTEGERs")
        n = der.positive_integer(parts[0])
        e = der.positive_integer(parts[1])
        bits = n.bit_length()
        if not MIN_KEY_BITS <= bits <= MAX_KEY_BITS:
            raise der.DERError(f"{bits}-bit modulus is outside {MIN_KEY_BITS}..{MAX_KEY_BITS}")
        if e < 3 or e % 2 == 0 or e >= n:
            raise der.DERError("bad public exponent")
        return cls(n, e)

    def expected_block(self, message: bytes) -> bytes:
        """EMSA-PKCS1-v1_5 encoding of SHA-256(message) at this key's size."""
        t = SHA256_DIGEST_INFO + hashlib.sha256(message).digest()
        k = self.size_bytes
        if k < len(t) + 11:
            raise KeyFormatError("key too short for SHA-256 signatures")
        return b"\x00\x01" + b"\xff" * (k - len(t) - 3) + b"\x00" + t

    def verify(self, message: bytes, signature: bytes) -> bool:
        """True when `signature` is this key's PKCS#1 v1.5 SHA-256 signature of `message`."""
        k = self.size_bytes
        if len(signature) != k:
            return False
        s = int.from_bytes(signature, "big")
        if s >= self.n:
            return False
        opened = pow(s, self.e, self.n).to_bytes(k, "big")
        return hmac.compare_digest(opened, self.expected_block(message))
