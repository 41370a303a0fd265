"""Ed25519 straight through libsodium must agree with PyNaCl's public API and with RFC 8032."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nacl.signing import SigningKey, VerifyKey

from edgeclaw.protocol import ed25519
from edgeclaw.protocol.identity import DeviceIdentity, b64url, verify_signature

# RFC 8032 section 7.1, TEST 2 (one-byte message)
RFC_SEED = bytes.fromhex("4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb")
RFC_PUBLIC = bytes.fromhex("3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c")
RFC_MESSAGE = bytes.fromhex("72")
RFC_SIGNATURE = bytes.fromhex(
    "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da"
    "085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00"
)


def test_rfc8032_vector() -> None:
    public_key, secret_key = ed25519.keypair_from_seed(RFC_SEED)
    assert public_key == RFC_PUBLIC
    assert ed25519.sign(RFC_MESSAGE, secret_key) == RFC_SIGNATURE
    assert ed25519.verify(RFC_SIGNATURE, RFC_MESSAGE, RFC_PUBLIC)


@settings(max_examples=200, deadline=None)
@given(seed=st.binary(min_size=32, max_size=32), message=st.binary(max_size=2048))
def test_agrees_with_pynacl(seed: bytes, message: bytes) -> None:
    theirs = SigningKey(seed)
    public_key, secret_key = ed25519.keypair_from_seed(seed)
    assert public_key == bytes(theirs.verify_key)
    signature = ed25519.sign(message, secret_key)
    assert signature == theirs.sign(message).signature
    assert ed25519.verify(signature, message, public_key)
    VerifyKey(public_key).verify(message, signature)  # raises if PyNaCl disagrees


def test_a_tampered_message_signature_or_key_does_not_verify() -> None:
    public_key, secret_key = ed25519.keypair_from_seed(RFC_SEED)
    signature = ed25519.sign(b"hello", secret_key)
    assert not ed25519.verify(signature, b"hellp", public_key)
    assert not ed25519.verify(bytes([signature[0] ^ 1]) + signature[1:], b"hello", public_key)
    assert not ed25519.verify(signature, b"hello", ed25519.keypair_from_seed(bytes(32))[0])
    assert not ed25519.verify(signature[:63], b"hello", public_key)
    assert not ed25519.verify(signature, b"hello", public_key[:31])


@pytest.mark.parametrize("length", [0, 31, 33, 64])
def test_a_seed_of_the_wrong_length_is_refused(length: int) -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        DeviceIdentity.from_seed(bytes(length))


def test_identity_signs_what_verify_signature_accepts() -> None:
    identity = DeviceIdentity.generate()
    assert len(identity.seed) == 32 and identity.generate().seed != identity.seed
    signature = identity.sign("v3|payload")
    assert verify_signature(identity.public_key_b64url, "v3|payload", signature)
    assert not verify_signature(identity.public_key_b64url, "v3|payloaD", signature)
    assert not verify_signature("not base64!", "v3|payload", signature)
    assert DeviceIdentity.from_seed(identity.seed) == identity
    assert identity.seed.hex() not in repr(identity) and b64url(identity.seed) not in repr(identity)
