"""The puddle key and its wrapping under a passphrase. Pure: no files, no sockets, no trio.

One Ed25519 keypair per person. On disk and on the wire the private half only ever
appears *wrapped*: Argon2id turns the passphrase into a 32-byte key-encryption key,
XChaCha20-Poly1305 seals the 32-byte Ed25519 seed under it, and the puddle key itself
signs the whole blob, so a member can check a newer wrapping came from someone who
held the key — without knowing the passphrase. Wrapped blob, version 1 (211 bytes)::

    off  len  field
    0    8    magic "VGPUDDLE"
    8    1    format version = 1
    9    1    kdf = 1 (Argon2id, v1.3)
    10   4    Argon2id time cost t        (u32 big-endian)
    14   4    Argon2id memory m, KiB      (u32 big-endian)
    18   1    Argon2id parallelism p      (u8)
    19   16   salt
    35   32   Ed25519 public key (the puddle's identity)
    67   8    wrap version (u64 big-endian; +1 at every passphrase rotation)
    75   24   XChaCha20 nonce
    99   48   ciphertext: the 32-byte seed + 16-byte Poly1305 tag (AD = bytes 0..98)
    147  64   Ed25519 signature by the puddle key over bytes 0..146

Parsing is strict: any other length, magic, version, kdf id, an out-of-range work
factor (a cap against a denial-of-service file) or a bad signature is ``CorruptIdentity``;
a well-formed blob the passphrase does not open is ``WrongPassphrase``.
"""

from __future__ import annotations

import secrets
import struct
import unicodedata
from dataclasses import dataclass

import nacl.bindings as sodium
from nacl.exceptions import BadSignatureError, CryptoError
from nacl.signing import SigningKey, VerifyKey

from .errors import CorruptIdentity, WrongPassphrase

MAGIC = b"VGPUDDLE"
FORMAT_VERSION = 1
KDF_ARGON2ID = 1
SEED_BYTES = 32
PUBLIC_BYTES = 32
SIGNATURE_BYTES = 64
SALT_BYTES = 16
NONCE_BYTES = 24
_HEADER = struct.Struct(">8sBBIIB16s32sQ24s")  # everything the AEAD authenticates
CIPHERTEXT_BYTES = SEED_BYTES + 16
WRAPPED_BYTES = _HEADER.size + CIPHERTEXT_BYTES + SIGNATURE_BYTES
assert WRAPPED_BYTES == 211


@dataclass(frozen=True, slots=True)
class KdfParams:
    """Argon2id work factors. The default is RFC 9106's second recommended option
    (t=3, 64 MiB, p=4): ~0.18 s on the reference machine (STACK.md), so unlock stays
    well under 1 s even on a busy host."""

    time_cost: int = 3
    memory_kib: int = 64 * 1024
    parallelism: int = 4

    def problem(self) -> str | None:
        """Why these parameters are refused, or None. Caps bound the work a planted
        file can make us do; floors keep a wrapping from being weaker than intended."""
        if not 1 <= self.time_cost <= 16:
            return f"Argon2id time cost {self.time_cost} is outside 1..16"
        if not 1 <= self.parallelism <= 16:
            return f"Argon2id parallelism {self.parallelism} is outside 1..16"
        if not 8 * 1024 <= self.memory_kib <= 1024 * 1024:
            return f"Argon2id memory {self.memory_kib} KiB is outside 8 MiB..1 GiB"
        return None


DEFAULT_KDF = KdfParams()


def verify(public_key: bytes, message: bytes, signature: bytes) -> bool:
    """Ed25519 signature check that never raises on bad input."""
    if len(public_key) != PUBLIC_BYTES or len(signature) != SIGNATURE_BYTES:
        return False
    try:
        VerifyKey(public_key).verify(message, signature)
    except (BadSignatureError, CryptoError, ValueError):
        return False
    return True


class PuddleKey:
    """An unwrapped puddle keypair. Its repr never shows the seed."""

    __slots__ = ("_signing", "public")

    def __init__(self, seed: bytes) -> None:
        if len(seed) != SEED_BYTES:
            raise ValueError("a puddle key seed is 32 bytes")
        self._signing = SigningKey(seed)
        self.public: bytes = bytes(self._signing.verify_key)

    @classmethod
    def generate(cls) -> PuddleKey:
        return cls(secrets.token_bytes(SEED_BYTES))

    @property
    def seed(self) -> bytes:
        return bytes(self._signing)

    def sign(self, message: bytes) -> bytes:
        return self._signing.sign(message).signature

    def openssh_private(self) -> bytes:
        """The private key in OpenSSH format (what `age -i` and ssh accept), unencrypted."""
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        key = Ed25519PrivateKey.from_private_bytes(self.seed)
        return key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        )

    def __repr__(self) -> str:
        return f"PuddleKey(public={self.public.hex()[:16]}…)"


def ssh_public(public_key: bytes, comment: str = "vigo-puddle") -> str:
    """``ssh-ed25519 AAAA… comment``: the puddle as an age (and ssh) recipient."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    line = (
        Ed25519PublicKey.from_public_bytes(public_key)
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode()
    )
    return f"{line} {comment}" if comment else line


def x25519_public(public_key: bytes) -> bytes:
    """The Ed25519 public key converted to X25519 (for an ``age1…`` recipient)."""
    return bytes(sodium.crypto_sign_ed25519_pk_to_curve25519(public_key))


@dataclass(frozen=True, slots=True)
class WrappedIdentity:
    """A parsed, signature-checked wrapped blob. ``raw`` is its exact bytes."""

    public_key: bytes
    wrap_version: int
    kdf: KdfParams
    salt: bytes
    nonce: bytes
    ciphertext: bytes
    signature: bytes
    raw: bytes

    @property
    def public_hex(self) -> str:
        return self.public_key.hex()


def _header(
    kdf: KdfParams, salt: bytes, public_key: bytes, wrap_version: int, nonce: bytes
) -> bytes:
    return _HEADER.pack(
        MAGIC,
        FORMAT_VERSION,
        KDF_ARGON2ID,
        kdf.time_cost,
        kdf.memory_kib,
        kdf.parallelism,
        salt,
        public_key,
        wrap_version,
        nonce,
    )


def _kek(passphrase: str, salt: bytes, kdf: KdfParams) -> bytes:
    from argon2.low_level import Type, hash_secret_raw

    # NFC: the same passphrase typed on two systems may arrive in two Unicode forms
    secret = unicodedata.normalize("NFC", passphrase).encode("utf-8")
    return hash_secret_raw(
        secret, salt, kdf.time_cost, kdf.memory_kib, kdf.parallelism, 32, Type.ID
    )


def wrap(
    key: PuddleKey,
    passphrase: str,
    *,
    wrap_version: int = 1,
    kdf: KdfParams = DEFAULT_KDF,
) -> WrappedIdentity:
    """Seal ``key`` under ``passphrase`` (fresh salt and nonce), signed by ``key``."""
    if (problem := kdf.problem()) is not None:
        raise ValueError(problem)
    if not 1 <= wrap_version < 1 << 63:
        raise ValueError("wrap version must be positive")
    salt = secrets.token_bytes(SALT_BYTES)
    nonce = secrets.token_bytes(NONCE_BYTES)
    header = _header(kdf, salt, key.public, wrap_version, nonce)
    ciphertext = bytes(
        sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(
            key.seed, header, nonce, _kek(passphrase, salt, kdf)
        )
    )
    body = header + ciphertext
    return decode_wrapped(body + key.sign(body))


def decode_wrapped(data: bytes) -> WrappedIdentity:
    """Strict parse + signature check of a wrapped blob; ``CorruptIdentity`` says why not."""
    if len(data) != WRAPPED_BYTES:
        raise CorruptIdentity(
            f"wrapped identity is {len(data)} bytes, not {WRAPPED_BYTES} (truncated or not ours)"
        )
    magic, version, kdf_id, t, m, p, salt, public, wrap_version, nonce = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise CorruptIdentity("not a Vigo puddle identity (bad magic)")
    if version != FORMAT_VERSION:
        raise CorruptIdentity(f"identity format version {version} is not supported (want 1)")
    if kdf_id != KDF_ARGON2ID:
        raise CorruptIdentity(f"unknown key-derivation function id {kdf_id}")
    kdf = KdfParams(time_cost=t, memory_kib=m, parallelism=p)
    if (problem := kdf.problem()) is not None:
        raise CorruptIdentity(problem)
    if wrap_version < 1:
        raise CorruptIdentity("wrap version 0 is invalid")
    body_end = _HEADER.size + CIPHERTEXT_BYTES
    if not verify(public, data[:body_end], data[body_end:]):
        raise CorruptIdentity("signature check failed: the identity was altered or damaged")
    return WrappedIdentity(
        public_key=public,
        wrap_version=wrap_version,
        kdf=kdf,
        salt=salt,
        nonce=nonce,
        ciphertext=data[_HEADER.size : body_end],
        signature=data[body_end:],
        raw=bytes(data),
    )


def unwrap(wrapped: WrappedIdentity, passphrase: str) -> PuddleKey:
    """The key inside, or ``WrongPassphrase``. Costs one Argon2id run."""
    header = wrapped.raw[: _HEADER.size]
    try:
        seed = sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(
            wrapped.ciphertext, header, wrapped.nonce, _kek(passphrase, wrapped.salt, wrapped.kdf)
        )
    except CryptoError as exc:
        raise WrongPassphrase("wrong passphrase") from exc
    key = PuddleKey(bytes(seed))
    if key.public != wrapped.public_key:  # only a signer holding the key could cause this
        raise CorruptIdentity("the wrapped key does not match the identity's public key")
    return key


def prefer_wrapping(ours: WrappedIdentity, theirs: WrappedIdentity) -> WrappedIdentity:
    """Pure: which wrapping of the same key to hold. The higher wrap version (the latest
    passphrase rotation) wins; two rotations to the same version pick the larger blob
    everywhere, so members converge."""
    if theirs.public_key != ours.public_key:
        raise CorruptIdentity("a wrapping of another puddle's key")
    if (theirs.wrap_version, theirs.raw) > (ours.wrap_version, ours.raw):
        return theirs
    return ours
