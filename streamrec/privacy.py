"""Pseudonymous user ids: one keyed HMAC-SHA256, in one place.

A shop that sets ``privacy.user_id_key`` (``STREAMREC_PRIVACY__USER_ID_KEY``) can replace every
user id by its pseudonym before an event leaves its own systems (``EventPublisher(...,
pseudonymizer=Pseudonymizer.from_settings(settings))``, ``streamrec produce --pseudonymize``), so
the broker, the worker's tables, the lists and the reports carry only pseudonyms. The pseudonym
is the lowercase hex HMAC-SHA256 of the id's UTF-8 bytes under the key's UTF-8 bytes, so the shop
finds a user's list by computing the same (``streamrec pseudonym USER_ID``, :func:`pseudonym`, or
``printf %s USER_ID | openssl dgst -sha256 -hmac KEY``). Key rotation: docs/security.md.

The key is a secret: :class:`Pseudonymizer` never shows it (``repr``, errors, logs).

>>> pseudonym("u-42", "a key of sixteen+ chars")
'3cf49b5d7e40cf11315b1eccbb6a9b74624cccf84a89b429bd9dc5a2d76e2f74'
"""

from __future__ import annotations

import hashlib
import hmac
from msgspec.structs import replace
from typing import TYPE_CHECKING

from streamrec.contract import Event

if TYPE_CHECKING:
    from pydantic import SecretStr

    from streamrec.config import Settings

#: Shortest key accepted, in bytes (HMAC-SHA256 keys shorter than this are easy to guess).
MIN_KEY_BYTES = 16
#: Where the key is set.
KEY_SETTING = "privacy.user_id_key (STREAMREC_PRIVACY__USER_ID_KEY)"


class PseudonymKeyError(ValueError):
    """No key, or one too short; the message never contains the key."""


def _key_bytes(key: str | bytes | SecretStr) -> bytes:
    if hasattr(key, "get_secret_value"):
        key = key.get_secret_value()  # type: ignore[union-attr]
    raw = key.encode("utf-8") if isinstance(key, str) else bytes(key)  # type: ignore[arg-type]
    if len(raw) < MIN_KEY_BYTES:
        raise PseudonymKeyError(f"the pseudonym key ({KEY_SETTING}) must have at least {MIN_KEY_BYTES} bytes, "
                                f"it has {len(raw)}")
    return raw


def pseudonym(user_id: str, key: str | bytes | SecretStr) -> str:
    """The pseudonym of ``user_id``: hex HMAC-SHA256 under ``key`` (64 characters)."""
    return hmac.new(_key_bytes(key), user_id.encode("utf-8"), hashlib.sha256).hexdigest()


class Pseudonymizer:
    """Turns user ids (and events) into their pseudonyms under one key, kept out of sight."""

    __slots__ = ("_key",)

    def __init__(self, key: str | bytes | SecretStr) -> None:
        self._key = _key_bytes(key)

    @classmethod
    def from_settings(cls, settings: Settings) -> Pseudonymizer:
        """The settings' key; :class:`PseudonymKeyError` when none is set."""
        key = settings.privacy.user_id_key
        if key is None:
            raise PseudonymKeyError(f"no pseudonym key is set: set {KEY_SETTING}")
        return cls(key)

    def __call__(self, user_id: str) -> str:
        return hmac.new(self._key, user_id.encode("utf-8"), hashlib.sha256).hexdigest()

    def event(self, event: Event) -> Event:
        """``event`` with its user id replaced by the pseudonym."""
        return replace(event, user_id=self(event.user_id))

    def __repr__(self) -> str:
        return "Pseudonymizer(key='**********')"

    __str__ = __repr__

    def __reduce__(self):  # noqa: ANN204 - never pickled (a pickle would hold the key)
        raise TypeError("a Pseudonymizer is not picklable: it holds a secret key")
