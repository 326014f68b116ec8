"""Checking the autoscaler's RSA signatures with the standard library alone."""

from .rsa import KeyFormatError, RSAPublicKey
from .signatures import Scheme, SignatureChecker, signed_message

__all__ = ["KeyFormatError", "RSAPublicKey", "Scheme", "SignatureChecker", "signed_message"]
