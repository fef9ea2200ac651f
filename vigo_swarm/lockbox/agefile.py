"""age v1 files to a puddle's key, padded so their size hides the plaintext's.

Encryption writes the real age v1 format (age-encryption.org/v1) with one
``ssh-ed25519`` recipient stanza — the puddle's Ed25519 key, as printed by
``vigo swarm puddle pubkey`` — and one padding stanza::

    age-encryption.org/v1
    -> ssh-ed25519 <tag> <ephemeral share>
    <wrapped file key>
    -> vigo-pad [filler]
    <base64 of zero bytes, 64 columns per line>
    --- <header MAC>
    <payload: 16-byte nonce, 64 KiB ChaCha20-Poly1305 chunks>

The age specification has every implementation skip stanzas it does not recognize
(rage, and so pyrage, adds a random "grease" stanza to every file for that reason), so
``age -d -i <exported identity>`` and pyrage decrypt these files unchanged. The padding
stanza grows the file to the next Padmé bucket (``padded_size``): the whole file's size
reveals O(log log n) bits of the plaintext's, at most ~12 % overhead — up to 4 MiB;
above, to the next multiple of 64 KiB (``bucket``, ``MAX_PAD_BYTES`` says why).

Why not pyrage for encryption: the padding must sit inside the header the MAC covers,
and pyrage neither takes extra stanzas nor exposes the file key. Decryption uses pyrage
(``decrypt``), and the tests decrypt our output with both pyrage and the Debian ``age``
CLI, so a mistake here cannot pass unnoticed. Blocking: call from a worker thread.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import struct
from typing import BinaryIO

import nacl.bindings as sodium
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .errors import DecryptFailed, SourceChanged

INTRO = b"age-encryption.org/v1\n"
SSH_LABEL = b"age-encryption.org/v1/ssh-ed25519"
PAD_TYPE = b"vigo-pad"
CHUNK = 64 * 1024
TAG = 16
NONCE = 16
FILE_KEY = 16
_COLUMNS = 64


def _b64(data: bytes) -> bytes:
    return base64.b64encode(data).rstrip(b"=")


def _hkdf(ikm: bytes, salt: bytes, info: bytes) -> bytes:
    return HKDF(hashes.SHA256(), 32, salt or None, info).derive(ikm)


def _wrapped_len(nbytes: int) -> int:
    """Length of a stanza body of ``nbytes`` bytes: base64, 64 columns, last line short."""
    chars = -(-4 * nbytes // 3)
    return chars + chars // _COLUMNS + 1


def _body(data: bytes) -> bytes:
    text = _b64(data)
    lines = [text[i : i + _COLUMNS] for i in range(0, len(text), _COLUMNS)]
    if not lines or len(lines[-1]) == _COLUMNS:
        lines.append(b"")
    return b"".join(line + b"\n" for line in lines)


def payload_size(plain_bytes: int) -> int:
    chunks = max(1, -(-plain_bytes // CHUNK))
    return NONCE + plain_bytes + chunks * TAG


# intro + "-> ssh-ed25519 TTTTTT <43>\n" + 32-byte body + "--- <43>\n"
_SSH_STANZA = len(b"-> ssh-ed25519 ") + 6 + 1 + 43 + 1 + _wrapped_len(FILE_KEY + TAG)
_FIXED_HEADER = len(INTRO) + _SSH_STANZA + len(b"--- ") + 43 + 1
_PAD_LINE = len(b"-> " + PAD_TYPE + b" ")  # then a filler argument (1+ chars), newline
_MIN_PAD = _PAD_LINE + 1 + 1 + _wrapped_len(0)


def padded_size(size: int) -> int:
    """Padmé (Nikitin et al., 2019): round ``size`` up, keeping its top
    ``floor(log2(floor(log2 size))) + 1`` bits, so a bucket gives away O(log log n) bits."""
    if size < 2:
        return size
    e = size.bit_length() - 1
    s = e.bit_length()
    mask = (1 << (e - s)) - 1
    return (size + mask) & ~mask


# rage (pyrage) parses a header in time quadratic in a stanza's size (measured: 0.05 s
# for 64 KiB, 0.4 s for 128 KiB, 2.7 s for 256 KiB), so the padding stanza stays under
# this: Padmé buckets hold up to 4 MiB files; larger ones round up to a multiple of it.
MAX_PAD_BYTES = 64 * 1024


def bucket(size: int) -> int:
    """The size a ciphertext of ``size`` unpadded bytes is padded to."""
    padme = padded_size(size)
    if padme - size <= MAX_PAD_BYTES:
        return padme
    return -(-size // MAX_PAD_BYTES) * MAX_PAD_BYTES


def encrypted_size(plain_bytes: int) -> int:
    """The exact size of ``encrypt``'s output for a plaintext of ``plain_bytes``."""
    return bucket(_FIXED_HEADER + _MIN_PAD + payload_size(plain_bytes))


def pad_stanza(length: int) -> bytes:
    """A ``vigo-pad`` stanza of exactly ``length`` bytes (``length >= _MIN_PAD``).

    The body is as many zero bytes as fit; the filler argument (at least one
    character) takes up what base64's 4-characters-per-3-bytes granularity leaves.
    """
    if length < _MIN_PAD:
        raise ValueError(f"a padding stanza is at least {_MIN_PAD} bytes")
    room = length - _PAD_LINE - 2  # header line with a 1-char filler and its newline
    n = room * 3 // 4
    while _wrapped_len(n) > room:
        n -= 1
    filler = b"A" * (1 + room - _wrapped_len(n))
    stanza = b"-> " + PAD_TYPE + b" " + filler + b"\n" + _body(bytes(n))
    assert len(stanza) == length
    return stanza


def ssh_wire(public_key: bytes) -> bytes:
    """An Ed25519 public key in SSH wire format (string "ssh-ed25519", string key)."""
    kind = b"ssh-ed25519"
    return struct.pack(">I", len(kind)) + kind + struct.pack(">I", 32) + public_key


def _ssh_stanza(public_key: bytes, file_key: bytes) -> bytes:
    """The ssh-ed25519 recipient stanza (age's agessh.Ed25519Recipient.Wrap)."""
    wire = ssh_wire(public_key)
    their = bytes(sodium.crypto_sign_ed25519_pk_to_curve25519(public_key))
    ephemeral = secrets.token_bytes(32)
    ours = bytes(sodium.crypto_scalarmult_base(ephemeral))
    shared = bytes(sodium.crypto_scalarmult(ephemeral, their))  # raises on all-zero
    tweak = _hkdf(b"", wire, SSH_LABEL)
    shared = bytes(sodium.crypto_scalarmult(tweak, shared))
    wrap_key = _hkdf(shared, ours + their, SSH_LABEL)
    body = ChaCha20Poly1305(wrap_key).encrypt(bytes(12), file_key, None)
    tag = _b64(hashlib.sha256(wire).digest()[:4])
    return b"-> ssh-ed25519 " + tag + b" " + _b64(ours) + b"\n" + _body(body)


def encrypt(src: BinaryIO, size: int, dst: BinaryIO, public_key: bytes) -> int:
    """Encrypt exactly ``size`` bytes from ``src`` to the puddle key into ``dst``.

    Returns the bytes written (``encrypted_size(size)``). Raises ``SourceChanged`` if
    ``src`` holds more or fewer bytes than ``size`` (the file changed while we read it);
    ``dst`` then holds garbage and must be discarded.
    """
    file_key = secrets.token_bytes(FILE_KEY)
    total = encrypted_size(size)
    stanza = _ssh_stanza(public_key, file_key)
    pad = pad_stanza(total - _FIXED_HEADER - payload_size(size))
    header = INTRO + stanza + pad + b"---"
    mac = hmac.new(_hkdf(file_key, b"", b"header"), header, hashlib.sha256).digest()
    dst.write(header + b" " + _b64(mac) + b"\n")
    nonce = secrets.token_bytes(NONCE)
    dst.write(nonce)
    aead = ChaCha20Poly1305(_hkdf(file_key, nonce, b"payload"))
    buf, out = bytearray(CHUNK), bytearray(CHUNK + TAG)
    view, left, counter = memoryview(buf), size, 0
    while True:
        want = min(CHUNK, left)
        got = _read_exact(src, view[:want])
        if got != want:
            raise SourceChanged(f"the file shrank while it was encrypted ({size - left + got} B)")
        left -= got
        last = left == 0
        chunk_nonce = counter.to_bytes(11, "big") + (b"\x01" if last else b"\x00")
        if got == CHUNK:
            aead.encrypt_into(chunk_nonce, view, None, out)
            dst.write(out)
        else:
            dst.write(aead.encrypt(chunk_nonce, bytes(view[:got]), None))
        counter += 1
        if last:
            break
    if src.read(1):
        raise SourceChanged("the file grew while it was encrypted")
    return total


def _read_exact(src: BinaryIO, view: memoryview) -> int:
    got = 0
    while got < len(view):
        n = src.readinto(view[got:])  # type: ignore[attr-defined]
        if not n:
            break
        got += n
    return got


def decrypt(src: BinaryIO, dst: BinaryIO, openssh_private: bytes) -> None:
    """Decrypt an age file with the puddle's identity (pyrage). ``DecryptFailed`` if the
    file is not for this key, altered, truncated or not age at all; ``dst`` then holds
    a prefix at most and must be discarded."""
    import pyrage

    try:
        identity = pyrage.ssh.Identity.from_buffer(openssh_private)
        pyrage.decrypt_io(src, dst, [identity])
    except pyrage.DecryptError as exc:
        raise DecryptFailed(f"age decryption failed: {exc}") from exc
    except (ValueError, OSError) as exc:
        raise DecryptFailed(f"age decryption failed: {exc}") from exc


def fsync_file(f: BinaryIO) -> None:
    f.flush()
    os.fsync(f.fileno())
