"""Ed25519 through the libsodium that PyNaCl ships, without PyNaCl's Python layer.

Why not `nacl.signing`: importing it loads all of PyNaCl's binding modules (box, secretbox, pwhash,
kx, ...), about 0.45 MB of resident memory on a node whose whole idle budget is 30 MB, for the three
operations the node needs. `nacl._sodium` is PyNaCl's compiled cffi module, the one its public API
calls; tests/unit/test_ed25519.py checks this module against `nacl.signing` byte for byte, so a
PyNaCl release that changes it fails the tests, not a device.
"""

from __future__ import annotations

from nacl._sodium import ffi, lib

SEED_BYTES = 32
PUBLIC_KEY_BYTES = 32
SECRET_KEY_BYTES = 64
SIGNATURE_BYTES = 64

if lib.sodium_init() < 0:  # 0: initialised now, 1: already initialised
    raise ImportError("libsodium failed to initialise (sodium_init returned -1)")


def keypair_from_seed(seed: bytes) -> tuple[bytes, bytes]:
    """(public key, secret key) for a 32-byte seed; the secret key is seed + public key, as libsodium keeps it."""
    if len(seed) != SEED_BYTES:
        raise ValueError(f"an Ed25519 seed is {SEED_BYTES} bytes, got {len(seed)}")
    public_key = ffi.new("unsigned char[]", PUBLIC_KEY_BYTES)
    secret_key = ffi.new("unsigned char[]", SECRET_KEY_BYTES)
    if lib.crypto_sign_seed_keypair(public_key, secret_key, seed) != 0:
        raise RuntimeError("libsodium crypto_sign_seed_keypair failed")
    return bytes(ffi.buffer(public_key)), bytes(ffi.buffer(secret_key))


def sign(message: bytes, secret_key: bytes) -> bytes:
    """The 64-byte detached signature (libsodium's combined form is signature + message)."""
    if len(secret_key) != SECRET_KEY_BYTES:
        raise ValueError(f"an Ed25519 secret key is {SECRET_KEY_BYTES} bytes, got {len(secret_key)}")
    signed = ffi.new("unsigned char[]", SIGNATURE_BYTES + len(message))
    signed_len = ffi.new("unsigned long long *")
    if lib.crypto_sign(signed, signed_len, message, len(message), secret_key) != 0:
        raise RuntimeError("libsodium crypto_sign failed")
    return bytes(ffi.buffer(signed, SIGNATURE_BYTES))


def verify(signature: bytes, message: bytes, public_key: bytes) -> bool:
    """True only for a valid signature of `message` by `public_key`; wrong lengths are simply invalid."""
    if len(signature) != SIGNATURE_BYTES or len(public_key) != PUBLIC_KEY_BYTES:
        return False
    signed = signature + message
    opened = ffi.new("unsigned char[]", len(signed))
    opened_len = ffi.new("unsigned long long *")
    return lib.crypto_sign_open(opened, opened_len, signed, len(signed), public_key) == 0
