"""RSA key pairs and PKCS#1 v1.5 SHA-256 signing, for the local autoscaler stand-in and tests.

The worker itself only verifies (pyworker.auth). Keys here are made with the
standard library (`secrets` and Miller-Rabin): fine for development, not a
replacement for a real cryptography library.
"""

from __future__ import annotations

import base64
import json
import math
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from ..auth import der
from ..auth.rsa import RSA_ENCRYPTION_OID, RSAPublicKey

_SMALL_PRIMES = [p for p in range(3, 2000) if all(p % q for q in range(2, int(p**0.5) + 1))]


def _probably_prime(n: int, rounds: int = 40) -> bool:
    if n < 2:
        return False
    for p in _SMALL_PRIMES:
        if n % p == 0:
            return n == p
    d, r = n - 1, 0
    while d % 2 == 0:
        d //= 2
        r += 1
    for _ in range(rounds):
        a = secrets.randbelow(n - 3) + 2
        x = pow(a, d, n)
        if x in (1, n - 1):
            continue
        for _ in range(r - 1):
            x = pow(x, 2, n)
            if x == n - 1:
                break
        else:
            return False
    return True


def _random_prime(bits: int, e: int) -> int:
    while True:
        candidate = secrets.randbits(bits) | (1 << (bits - 1)) | (1 << (bits - 2)) | 1
        if math.gcd(candidate - 1, e) == 1 and _probably_prime(candidate):
            return candidate


@dataclass(frozen=True, slots=True)
class RSAKeyPair:
    n: int
    e: int
    d: int
    p: int
    q: int

    @classmethod
    def generate(cls, bits: int = 2048, e: int = 65537) -> RSAKeyPair:
        while True:
            p = _random_prime(bits // 2, e)
            q = _random_prime(bits - bits // 2, e)
            n = p * q
            if p != q and n.bit_length() == bits:
                d = pow(e, -1, (p - 1) * (q - 1))
                return cls(n, e, d, p, q)

    @property
    def public(self) -> RSAPublicKey:
        return RSAPublicKey(self.n, self.e)

    def sign(self, message: bytes) -> bytes:
        """PKCS#1 v1.5 SHA-256 signature of `message`."""
        m = int.from_bytes(self.public.expected_block(message), "big")
        # Chinese remainder theorem: two half-size exponentiations.
        sp = pow(m, self.d % (self.p - 1), self.p)
        sq = pow(m, self.d % (self.q - 1), self.q)
        h = (pow(self.q, -1, self.p) * (sp - sq)) % self.p
        s = sq + h * self.q
        return s.to_bytes(self.public.size_bytes, "big")

    def sign_b64(self, message: bytes) -> str:
        return base64.b64encode(self.sign(message)).decode("ascii")

    def public_pem(self) -> str:
        """The public key as a `PUBLIC KEY` (SubjectPublicKeyInfo) PEM block."""
        return public_pem(self.public)

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({k: hex(getattr(self, k)) for k in ("n", "e", "d", "p", "q")}, f)
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> RSAKeyPair:
        data = json.loads(path.read_text())
        return cls(**{k: int(data[k], 16) for k in ("n", "e", "d", "p", "q")})

    @classmethod
    def load_or_create(cls, path: Path, bits: int = 2048) -> RSAKeyPair:
        """The key pair cached at `path`, made and saved there the first time."""
        if path.exists():
            return cls.load(path)
        pair = cls.generate(bits)
        pair.save(path)
        return pair


def _der_integer(value: int) -> bytes:
    raw = value.to_bytes(value.bit_length() // 8 + 1, "big")  # a leading 0 keeps it positive
    return der.encode_tlv(der.TAG_INTEGER, raw)


def public_pem(key: RSAPublicKey, pkcs1: bool = False) -> str:
    """PEM text of `key`: SubjectPublicKeyInfo, or PKCS#1 `RSA PUBLIC KEY` if `pkcs1`."""
    rsa_key = der.encode_tlv(der.TAG_SEQUENCE, _der_integer(key.n) + _der_integer(key.e))
    if pkcs1:
        label, body = "RSA PUBLIC KEY", rsa_key
    else:
        algorithm = der.encode_tlv(
            der.TAG_SEQUENCE, der.encode_tlv(der.TAG_OID, RSA_ENCRYPTION_OID) + der.encode_tlv(der.TAG_NULL, b"")
        )
        label = "PUBLIC KEY"
        body = der.encode_tlv(der.TAG_SEQUENCE, algorithm + der.encode_tlv(der.TAG_BIT_STRING, b"\x00" + rsa_key))
    b64 = base64.b64encode(body).decode("ascii")
    lines = [b64[i : i + 64] for i in range(0, len(b64), 64)]
    return f"-----BEGIN {label}-----\n" + "\n".join(lines) + f"\n-----END {label}-----\n"
