"""Whether a ``gs://`` path can be reached from here: without Google Cloud credentials Beam and pyarrow reach GCS
anonymously and retry for minutes before failing, so the commands say so in one line first. Imports no Beam."""

from __future__ import annotations

import logging

NO_GCS_CREDENTIALS = (
    "no Google Cloud credentials were found: run `gcloud auth application-default login`, or set "
    "GOOGLE_APPLICATION_CREDENTIALS to a service account's key file"
)


def no_gcs_credentials() -> bool:
    """Whether this process finds no Google Cloud credentials (Beam then reaches ``gs://`` anonymously: enough to read
    a public bucket, and a two-minute retry before failing otherwise)."""
    import google.auth
    from google.auth.exceptions import DefaultCredentialsError

    quiet = logging.getLogger("google.auth._default")  # it warns of each place it looked: the error says it all
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        google.auth.default()
    except DefaultCredentialsError:
        return True
    finally:
        quiet.setLevel(level)
    return False


def gcs_credentials_error(flag: str, path: str) -> str | None:
    """Why ``path`` (of ``flag``) cannot be reached: it is on Google Cloud Storage and this process finds no
    credentials (pyarrow's GCS filesystem would retry for minutes without a word); None otherwise."""
    if path.startswith("gs://") and no_gcs_credentials():
        return f"{flag} {path!r} is on Google Cloud Storage, and {NO_GCS_CREDENTIALS}"
    return None
