"""Where a folder lives: a local path or a URI, as a ``pyarrow.fs`` filesystem and the path on it."""

from __future__ import annotations

import os

import pyarrow.fs as pafs


def resolve(location: str) -> tuple[pafs.FileSystem, str]:
    """``location`` as ``(filesystem, path)``: a URI (``gs://``, ``s3://``, ``file://``, ``mock://``) through
    :meth:`pyarrow.fs.FileSystem.from_uri`, anything else a local path made absolute. A URI pyarrow cannot open
    raises its error (``pyarrow.ArrowException``, ``OSError`` or ``ValueError``)."""
    if "://" in location:
        return pafs.FileSystem.from_uri(location)
    return pafs.LocalFileSystem(), os.path.abspath(location)
