"""Text normalisation and hashing for the exact-duplicate pre-pass."""

from __future__ import annotations

import hashlib
import re
import unicodedata

_WHITESPACE = re.compile(r"\s+")


def normalize_text(text: str) -> str:
    """Return ``text`` in the form two exact copies share: NFKC, case-folded, whitespace collapsed and stripped.

    >>> normalize_text("  Hello\\tWORLD \\u00a0!")
    'hello world !'
    """
    return _WHITESPACE.sub(" ", unicodedata.normalize("NFKC", text).casefold()).strip()


def text_hash(text: str) -> str:
    """Return a 128-bit hex digest of the normalised text; equal for texts that are exact copies."""
    return hashlib.blake2b(normalize_text(text).encode("utf-8"), digest_size=16).hexdigest()
