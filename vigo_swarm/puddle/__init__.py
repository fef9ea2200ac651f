"""puddle: one Ed25519 identity per person, shared by that person's envoys.

Public surface (import from here). Pure parts: ``keys`` (the key, its passphrase
wrapping and file format), ``members`` (the signed member list), ``pairing`` (peer-pair
codes), ``keyring`` (unlocked keys in memory). IO: ``store`` (``~/.vigo-puddle/``) and
``service`` (the daemon side: peer-channel routes, member-list sync). See docs/puddle.md.

For lockbox: ``PuddleService.unlocked_key(uid)`` gives the person's key while unlocked,
``PuddleService.puddle_of(uid)`` the public key and members (also while locked), and
``keys.ssh_public`` / ``PuddleKey.openssh_private`` its age recipient and identity.
"""

from .errors import (
    BadMemberList,
    CorruptIdentity,
    NoPuddle,
    PairingRefused,
    PuddleError,
    PuddleStateError,
    UnsafePuddleDir,
    WrongPassphrase,
)
from .keys import (
    DEFAULT_KDF,
    KdfParams,
    PuddleKey,
    WrappedIdentity,
    decode_wrapped,
    ssh_public,
    unwrap,
    wrap,
    x25519_public,
)
from .members import MemberList, add_member, members_from_wire, sign_members
from .pairing import normalize_code
from .service import PuddleConfig, PuddleService
from .store import Person, Puddle, PuddleDir

__all__ = [
    "DEFAULT_KDF",
    "BadMemberList",
    "CorruptIdentity",
    "KdfParams",
    "MemberList",
    "NoPuddle",
    "PairingRefused",
    "Person",
    "Puddle",
    "PuddleConfig",
    "PuddleDir",
    "PuddleError",
    "PuddleKey",
    "PuddleService",
    "PuddleStateError",
    "UnsafePuddleDir",
    "WrappedIdentity",
    "WrongPassphrase",
    "add_member",
    "decode_wrapped",
    "members_from_wire",
    "normalize_code",
    "sign_members",
    "ssh_public",
    "unwrap",
    "wrap",
    "x25519_public",
]
