"""A Beam filesystem with an object store's semantics, for code that must also work on ``gs://``: a flat namespace of
objects (``objects://bucket/a/b``), no folders (a prefix neither exists nor renames), listing by prefix, renames and
deletes object by object. Its objects live in memory, in :data:`ObjectStore.objects`."""

from __future__ import annotations

import io
import posixpath

from apache_beam.io.filesystem import CompressionTypes, FileMetadata, FileSystem


class _Upload(io.BytesIO):
    """An object being written: it appears, whole, when closed (as an upload does)."""

    def __init__(self, path: str):
        super().__init__()
        self._path = path

    def close(self) -> None:
        if not self.closed:
            ObjectStore.objects[self._path] = self.getvalue()
        super().close()


class ObjectStore(FileSystem):
    objects: dict[str, bytes] = {}

    @classmethod
    def scheme(cls) -> str:
        return "objects"

    def join(self, basepath: str, *paths: str) -> str:
        return posixpath.join(basepath, *paths)

    def split(self, path: str) -> tuple[str, str]:
        head, _, tail = path.rstrip("/").rpartition("/")
        return head, tail

    def mkdirs(self, path: str) -> None:
        pass

    def has_dirs(self) -> bool:
        return False

    def _list(self, prefix: str):
        for path, data in sorted(self.objects.items()):
            if path.startswith(prefix):
                yield FileMetadata(path, len(data))

    def create(self, path, mime_type="application/octet-stream", compression_type=CompressionTypes.AUTO):
        return _Upload(path)

    def open(self, path, mime_type="application/octet-stream", compression_type=CompressionTypes.AUTO):
        if path not in self.objects:
            raise FileNotFoundError(path)
        return io.BytesIO(self.objects[path])

    def copy(self, source_file_names, destination_file_names) -> None:
        for source, target in zip(source_file_names, destination_file_names, strict=True):
            if source not in self.objects:
                raise FileNotFoundError(source)
            self.objects[target] = self.objects[source]

    def rename(self, source_file_names, destination_file_names) -> None:
        for source, target in zip(source_file_names, destination_file_names, strict=True):
            self.copy([source], [target])
            del self.objects[source]

    def exists(self, path: str) -> bool:
        return path in self.objects

    def size(self, path: str) -> int:
        return len(self.objects[path])

    def last_updated(self, path: str) -> float:
        return 0.0

    def checksum(self, path: str) -> str:
        return str(hash(self.objects[path]))

    def metadata(self, path: str) -> FileMetadata:
        return FileMetadata(path, self.size(path))

    def delete(self, paths) -> None:
        for path in paths:  # a missing object is no error, as on GCS
            self.objects.pop(path, None)
