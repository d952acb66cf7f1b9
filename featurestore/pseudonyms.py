"""Customer ids as keyed pseudonyms, so that the store never holds them in clear.

A pseudonym is ``KKKKKKKK:`` (the key's id: which key made it) followed by the first 48 hex
digits (192 bits) of HMAC-SHA256(key, id). The same key gives the same pseudonym, so a repeated
load is idempotent and one customer's orders still link up; without the key nobody can tell
which customer a pseudonym is, nor test a guessed id against it (a plain hash would allow both).
The key is SALESFC_CUSTOMER_ID_KEY; rotation is described in docs/operations.md, Privacy.
"""

from __future__ import annotations

import hashlib
import hmac

import pandas as pd

from featurestore.config import Settings

KEY_ID_CHARS = 8
MAC_CHARS = 48
# What reject files show instead of a customer id.
WITHHELD = "(withheld: personal data)"


class CustomerKeyMissing(ValueError):
    """A source carries customer ids and no key is configured to pseudonymise them."""

    def __init__(self) -> None:
        super().__init__(
            "the source carries customer ids: set SALESFC_CUSTOMER_ID_KEY to store them "
            "pseudonymised (docs/operations.md, Privacy), or leave them out with --ignore"
        )

    def __reduce__(self) -> tuple[type[CustomerKeyMissing], tuple[()]]:
        return (CustomerKeyMissing, ())  # pickled by the push process (ingest.pusher)


class Pseudonymiser:
    """Keyed pseudonyms of identifiers (HMAC-SHA256)."""

    def __init__(self, key: bytes) -> None:
        self._key = key
        tag = hmac.new(key, b"salesfc customer id key", hashlib.sha256).hexdigest()
        self.key_id = tag[:KEY_ID_CHARS]

    @classmethod
    def from_settings(cls, settings: Settings) -> Pseudonymiser | None:
        """The configured key's pseudonymiser, None without a key."""
        key = settings.customer_id_key
        return None if key is None else cls(key.get_secret_value().encode())

    def pseudonym(self, value: str) -> str:
        mac = hmac.digest(self._key, value.encode(), "sha256").hex()
        return f"{self.key_id}:{mac[:MAC_CHARS]}"

    def series(self, values: pd.Series) -> pd.Series:
        """Pseudonyms of text values (missing stays missing), each distinct value hashed once."""
        present = values.notna()
        if not present.any():
            return values
        distinct = pd.unique(values[present])
        table = {v: self.pseudonym(v) for v in distinct}
        return values.map(table, na_action="ignore").astype(values.dtype)

    def __repr__(self) -> str:  # never the key
        return f"Pseudonymiser(key_id={self.key_id!r})"
