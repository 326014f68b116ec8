"""Signature checks: the DER reader, the RSA verifier, both schemes, the replay window."""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import subprocess
import tempfile
import unittest
from pathlib import Path
from typing import Any

from pyworker.auth import KeyFormatError, RSAPublicKey, Scheme, SignatureChecker, der, signed_message
from pyworker.dev.rsa_keys import RSAKeyPair, public_pem

SHA1_DIGEST_INFO = bytes.fromhex("3021300906052b0e03021a05000414")


@functools.cache
def key_pair(name: str, bits: int = 2048, e: int = 65537) -> RSAKeyPair:
    """One generated pair per name for the whole module: generating costs about half a second."""
    return RSAKeyPair.generate(bits, e)


def openssl(*args: str, stdin: bytes | None = None) -> bytes:
    return subprocess.run(["openssl", *args], input=stdin, capture_output=True, check=True).stdout


class OpenSSLKeys(unittest.TestCase):
    """Keys and signatures made by the openssl command, read and checked by us."""

    tmp: tempfile.TemporaryDirectory[str]
    key_path: str

    @classmethod
    def setUpClass(cls) -> None:
        cls.tmp = tempfile.TemporaryDirectory()
        cls.key_path = str(Path(cls.tmp.name) / "key.pem")
        openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", cls.key_path)

    @classmethod
    def tearDownClass(cls) -> None:
        cls.tmp.cleanup()

    def sign(self, message: bytes) -> bytes:
        return openssl("dgst", "-sha256", "-sign", self.key_path, stdin=message)

    def test_subject_public_key_info_pem_is_read(self) -> None:
        key = RSAPublicKey.from_pem(openssl("pkey", "-in", self.key_path, "-pubout"))
        self.assertEqual(key.n.bit_length(), 2048)
        self.assertEqual(key.e, 65537)

    def test_pkcs1_rsa_public_key_pem_is_read(self) -> None:
        spki = RSAPublicKey.from_pem(openssl("pkey", "-in", self.key_path, "-pubout"))
        pkcs1 = RSAPublicKey.from_pem(openssl("rsa", "-in", self.key_path, "-RSAPublicKey_out"))
        self.assertEqual(spki, pkcs1)

    def test_openssl_signature_verifies_and_a_tampered_one_does_not(self) -> None:
        key = RSAPublicKey.from_pem(openssl("pkey", "-in", self.key_path, "-pubout"))
        message = signed_message({"url": "http://1.2.3.4:5678"}, Scheme.URL)
        signature = self.sign(message)
        self.assertTrue(key.verify(message, signature))
        self.assertFalse(key.verify(message + b" ", signature))
        flipped = bytes([signature[0] ^ 1]) + signature[1:]
        self.assertFalse(key.verify(message, flipped))
        self.assertFalse(key.verify(message, signature[:-1]))

    def test_our_pem_is_read_by_openssl(self) -> None:
        ours = key_pair("small", 1024)
        text = openssl("pkey", "-pubin", "-noout", "-text", stdin=ours.public_pem().encode())
        self.assertIn(b"1024 bit", text)


class Verifier(unittest.TestCase):
    pair: RSAKeyPair
    other: RSAKeyPair

    @classmethod
    def setUpClass(cls) -> None:
        cls.pair = key_pair("main")
        cls.other = key_pair("other")

    def raw_sign(self, block: bytes, pair: RSAKeyPair | None = None) -> bytes:
        """The private-key operation on an arbitrary block (to forge bad paddings)."""
        pair = pair or self.pair
        m = int.from_bytes(block, "big")
        return pow(m, pair.d, pair.n).to_bytes(pair.public.size_bytes, "big")

    def test_signature_from_another_key_fails(self) -> None:
        self.assertFalse(self.pair.public.verify(b"m", self.other.sign(b"m")))

    def test_wrong_hash_algorithm_in_the_padding_fails(self) -> None:
        k = self.pair.public.size_bytes
        t = SHA1_DIGEST_INFO + hashlib.sha1(b"m").digest()
        block = b"\x00\x01" + b"\xff" * (k - len(t) - 3) + b"\x00" + t
        self.assertFalse(self.pair.public.verify(b"m", self.raw_sign(block)))

    def test_block_type_other_than_01_fails(self) -> None:
        good = self.pair.public.expected_block(b"m")
        self.assertFalse(self.pair.public.verify(b"m", self.raw_sign(b"\x00\x02" + good[2:])))

    def test_garbage_after_the_hash_fails_even_with_exponent_3(self) -> None:
        # Bleichenbacher's 2006 forgery relies on a verifier that parses the
        # opened block and ignores bytes after the hash. Ours compares it whole.
        weak = key_pair("weak", 2048, 3)
        k = weak.public.size_bytes
        t = bytes.fromhex("3031300d060960864801650304020105000420") + hashlib.sha256(b"m").digest()
        short_padding = b"\x00\x01" + b"\xff" * 8 + b"\x00" + t
        block = short_padding + b"\x42" * (k - len(short_padding))
        self.assertFalse(weak.public.verify(b"m", self.raw_sign(block, weak)))
        self.assertTrue(weak.public.verify(b"m", weak.sign(b"m")))

    def test_signature_not_below_the_modulus_fails(self) -> None:
        n = self.pair.n
        self.assertFalse(self.pair.public.verify(b"m", n.to_bytes(self.pair.public.size_bytes, "big")))


class PemAndDer(unittest.TestCase):
    def test_malformed_pem_is_refused_with_a_reason(self) -> None:
        pair = key_pair("small", 1024)
        good = pair.public_pem()
        cases = {
            "no block": "hello",
            "bad base64": good.replace(good.splitlines()[1][:8], "!!!!!!!!"),
            "private label": good.replace("PUBLIC KEY", "PRIVATE KEY"),
            "truncated body": "\n".join(good.splitlines()[:2] + good.splitlines()[-1:]),
        }
        for name, text in cases.items():
            with self.subTest(name), self.assertRaises(KeyFormatError):
                RSAPublicKey.from_pem(text)

    def test_pkcs1_and_spki_encodings_agree(self) -> None:
        pair = key_pair("small", 1024)
        self.assertEqual(RSAPublicKey.from_pem(public_pem(pair.public, pkcs1=True)), pair.public)

    def test_der_reader_refuses_non_der_forms(self) -> None:
        bad = {
            "truncated": b"\x30\x05\x02\x01",
            "indefinite length": b"\x30\x80\x02\x01\x01\x00\x00",
            "non-minimal length": b"\x04\x81\x01\x00",
            "length past the end": b"\x04\x84\x7f\xff\xff\xff",
        }
        for name, data in bad.items():
            with self.subTest(name), self.assertRaises(der.DERError):
                der.read_tlv(data)
        with self.assertRaises(der.DERError):
            der.read_one(b"\x05\x00\x05\x00", der.TAG_NULL)  # trailing bytes
        with self.assertRaises(der.DERError):
            der.positive_integer(der.TLV(der.TAG_INTEGER, b"\x80"))  # negative
        with self.assertRaises(der.DERError):
            der.positive_integer(der.TLV(der.TAG_INTEGER, b"\x00\x01"))  # not minimal

    def test_tiny_and_even_exponent_keys_are_refused(self) -> None:
        def pkcs1(n: int, e: int) -> bytes:
            def integer(v: int) -> bytes:
                return der.encode_tlv(der.TAG_INTEGER, v.to_bytes(v.bit_length() // 8 + 1, "big"))

            return der.encode_tlv(der.TAG_SEQUENCE, integer(n) + integer(e))

        with self.assertRaises(der.DERError):
            RSAPublicKey.from_pkcs1_der(pkcs1((1 << 511) + 1, 65537))  # 512 bits
        with self.assertRaises(der.DERError):
            RSAPublicKey.from_pkcs1_der(pkcs1((1 << 2047) + 1, 65536))  # even exponent


class Schemes(unittest.TestCase):
    pair: RSAKeyPair

    @classmethod
    def setUpClass(cls) -> None:
        cls.pair = key_pair("main")

    def checker(self, *schemes: Scheme, own_url: str | None = None) -> SignatureChecker:
        checker = SignatureChecker(schemes or (Scheme.URL,), own_url=own_url)
        checker.key = self.pair.public
        return checker

    def url_auth(self, url: str = "http://10.0.0.1:4000", reqnum: int = 1) -> dict[str, Any]:
        auth: dict[str, Any] = {"cost": "256", "endpoint": "ep", "reqnum": reqnum, "request_idx": reqnum, "url": url}
        auth["signature"] = self.pair.sign_b64(signed_message(auth, Scheme.URL))
        return auth

    def all_fields_auth(self, reqnum: int) -> dict[str, Any]:
        auth: dict[str, Any] = {"cost": "256", "endpoint": "ep", "reqnum": reqnum, "request_idx": reqnum, "url": "u"}
        auth["signature"] = self.pair.sign_b64(signed_message(auth, Scheme.ALL_FIELDS))
        return auth

    def test_url_scheme_message_is_the_indented_sorted_json(self) -> None:
        self.assertEqual(signed_message({"url": "http://x:1", "cost": 3}, Scheme.URL), b'{\n    "url": "http://x:1"\n}')

    def test_url_scheme_accepts_the_same_signature_on_every_request(self) -> None:
        checker = self.checker()
        for reqnum in range(300):
            auth = self.url_auth(reqnum=reqnum)  # the same URL: the same signature each time
            self.assertIsNone(checker.check(auth))

    def test_remembered_success_does_not_outlive_the_key(self) -> None:
        checker = self.checker()
        auth = self.url_auth()
        self.assertIsNone(checker.check(auth))
        self.assertIsNone(checker.check(auth))  # remembered
        checker.key = key_pair("other").public  # the autoscaler's key changed
        self.assertIn("does not verify", checker.check(auth) or "")

    def test_remembered_success_covers_only_that_exact_signature(self) -> None:
        checker = self.checker()
        auth = self.url_auth()
        self.assertIsNone(checker.check(auth))
        sig = base64.b64decode(auth["signature"])
        tampered = dict(auth, signature=base64.b64encode(bytes([sig[0] ^ 1]) + sig[1:]).decode())
        self.assertIsNotNone(checker.check(tampered))
        self.assertIsNotNone(checker.check(dict(auth, url="http://10.0.0.1:4001")))

    def test_unsigned_fields_may_change_under_the_url_scheme(self) -> None:
        auth = self.url_auth()
        auth["cost"] = "999999"
        self.assertIsNone(self.checker().check(auth))

    def test_no_key_yet_is_refused_with_a_reason(self) -> None:
        checker = SignatureChecker()
        self.assertIn("not loaded", checker.check(self.url_auth()) or "")

    def test_bad_signatures_are_refused_with_reasons(self) -> None:
        checker = self.checker()
        good = self.url_auth()
        cases = {
            "missing": dict(good, signature=""),
            "not base64": dict(good, signature="%%%not base64%%%"),
            "truncated base64": dict(good, signature=good["signature"][:-8]),
            "garbage": dict(good, signature=base64.b64encode(b"\x01" * 256).decode()),
            "huge": dict(good, signature="A" * 100_000),
            "other url": dict(good, url="http://10.0.0.2:4000"),
        }
        for name, auth in cases.items():
            with self.subTest(name):
                self.assertIsNotNone(checker.check(auth))
        self.assertIsNotNone(checker.check("not an object"))

    def test_own_url_refuses_a_route_signed_for_another_worker(self) -> None:
        checker = self.checker(own_url="http://10.0.0.1:4000/")
        self.assertIsNone(checker.check(self.url_auth("http://10.0.0.1:4000")))
        self.assertIn("another worker", checker.check(self.url_auth("http://10.0.0.9:4000")) or "")

    def test_all_fields_scheme_signs_reqnum_and_refuses_replays(self) -> None:
        checker = self.checker(Scheme.ALL_FIELDS)
        auth = self.all_fields_auth(5)
        self.assertIsNone(checker.check(auth))
        self.assertIn("already used", checker.check(auth) or "")
        tampered = dict(auth, reqnum=6)
        self.assertIn("does not verify", checker.check(tampered) or "")

    def test_all_fields_refuses_a_reqnum_far_older_than_the_newest(self) -> None:
        checker = self.checker(Scheme.ALL_FIELDS)
        self.assertIsNone(checker.check(self.all_fields_auth(1000)))
        self.assertIsNone(checker.check(self.all_fields_auth(950)))  # late but within the window
        self.assertIn("older", checker.check(self.all_fields_auth(899)) or "")

    def test_replay_memory_is_bounded(self) -> None:
        checker = self.checker(Scheme.ALL_FIELDS)
        for reqnum in range(1, 400):
            self.assertIsNone(checker.check(self.all_fields_auth(reqnum)))
        self.assertLessEqual(len(checker.replays._seen), 100)

    def test_both_schemes_accepted_when_configured(self) -> None:
        checker = self.checker(Scheme.URL, Scheme.ALL_FIELDS)
        self.assertIsNone(checker.check(self.url_auth()))
        self.assertIsNone(checker.check(self.all_fields_auth(7)))

    def test_all_fields_message_keeps_the_order_received(self) -> None:
        auth = json.loads('{"url": "u", "cost": 1, "signature": "x"}')
        self.assertEqual(signed_message(auth, Scheme.ALL_FIELDS), b'{\n    "url": "u",\n    "cost": 1\n}')


if __name__ == "__main__":
    unittest.main()
