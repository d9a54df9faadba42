"""The landing zone: where extracts and stream files wait to be loaded, then are archived.

Two implementations of one small interface: a local directory (the embedded default) and S3
(boto3; ``endpoint_url`` makes MinIO, LocalStack and moto work). Keys are ``/``-separated and
relative to the zone's root, e.g. ``streams/listens_2026-01-05_part-001.csv``.

Layout::

    streams/...                      producers write here (the input prefix)
    rds/<table>/<run>/part-00001.csv.gz   RDS extracts
    archive/streams/<date>/...       stream files after a green dbt build
    quarantine/streams/...           files refused whole, with <name>.reason.txt beside them
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import CopySourceTypeDef, ObjectIdentifierTypeDef

STREAMS_PREFIX = "streams/"
RDS_PREFIX = "rds/"
ARCHIVE_PREFIX = "archive/"
QUARANTINE_PREFIX = "quarantine/"
STREAM_SUFFIXES = (".csv", ".csv.gz")
_CHUNK = 1 << 20


def is_gzip(key: str) -> bool:
    """Whether the object at ``key`` is gzip-compressed: its name ends in ``.gz``, in any
    case (``x.csv.GZ``)."""
    return key.lower().endswith(".gz")


def is_stream_file_name(key: str) -> bool:
    """Whether ``key`` names a stream file: it ends in ``.csv`` or ``.csv.gz``, in any case."""
    return key.lower().endswith(STREAM_SUFFIXES)


def shown(key: str) -> str:
    """``key`` as printed in a run's output: as it is when every character is printable (and
    none is a backslash), else as a Python string literal with the rest escaped, so that a
    name holding a newline, a carriage return or a terminal escape cannot forge a line."""
    if key.isprintable() and "\\" not in key:
        return key
    return repr(key)


class VersionChanged(FileExistsError):
    """The object at a key is no longer the version a run loaded: it is left for the next run."""


@dataclass(frozen=True)
class LandedObject:
    """One object in the landing zone. ``etag`` identifies its content."""

    key: str
    size: int
    etag: str


Objects = list[LandedObject]
Entries = list[tuple[str, str]]
"""Entries of a landing zone as ``(key, what it is)``."""


class LandingStore(Protocol):
    """What the loaders need from a landing zone."""

    url: str

    def list(self, prefix: str) -> list[LandedObject]:
        """Objects under ``prefix``, sorted by key (regular files only, in a local zone)."""
        ...

    def unlisted(self, prefix: str) -> Entries:
        """Entries under ``prefix`` that :meth:`list` leaves out because they are not regular
        files (a symlink, a FIFO, a socket, a device; a directory with a file's name) or cannot
        be read, each as ``(key, what it is)``, sorted by key. Always empty on S3, where every
        key is an object."""
        ...

    def open(self, key: str) -> IO[bytes]:
        """A binary stream of the object's bytes (as stored: a .gz stays compressed)."""
        ...

    def put(self, key: str, source: Path) -> None:
        """Store the local file ``source`` under ``key``."""
        ...

    def write_text(self, key: str, text: str) -> None:
        """Store a small text object."""
        ...

    def exists(self, key: str) -> bool: ...

    def move(self, src: str, dst: str, *, etag: str | None = None) -> None:
        """Move an object, never overwriting. Idempotent: if ``src`` is gone and ``dst``
        exists, nothing to do; if both exist with the same content (a move interrupted after
        the copy), ``src`` is deleted. If ``dst`` holds other content, FileExistsError and
        nothing changes: a source is deleted only when its content is at the destination.
        With ``etag``, only that version moves: when ``src`` holds another one (a new version
        delivered meanwhile), VersionChanged and ``src`` stays where it is."""
        ...

    def same_content(self, a: str, b: str) -> bool:
        """Whether the objects ``a`` and ``b`` both exist and hold the same bytes."""
        ...

    def delete_prefix(self, prefix: str) -> None:
        """Delete every object under ``prefix`` (a folder such as ``rds/users/<run>/``)."""
        ...

    def uri(self, key: str) -> str:
        """Where a warehouse can read the object from (a path, or s3://bucket/key)."""
        ...

    def local_path(self, key: str) -> Path | None:
        """The object's path on this machine, when the zone is a local directory."""
        ...


class LocalLanding:
    """A landing zone in a local directory."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.url = str(self.root)

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if self.root not in path.parents:
            raise ValueError(f"landing key {key!r} escapes the landing zone")
        return path

    def list(self, prefix: str) -> list[LandedObject]:
        return self._scan(prefix)[0]

    def unlisted(self, prefix: str) -> Entries:
        return self._scan(prefix)[1]

    def _scan(self, prefix: str) -> tuple[Objects, Entries]:
        """The regular files under ``prefix`` and the other entries, never following a
        symlink (a link's target may be anywhere, or nowhere)."""
        base = self._path(prefix) if prefix.strip("/") else self.root
        if not base.is_dir():
            return [], []
        found: Objects = []
        others: Entries = []
        for dirpath, dirs, files in os.walk(base):  # followlinks=False: links stay entries
            for name in sorted(dirs + files):
                path = Path(dirpath, name)
                key = path.relative_to(self.root).as_posix()
                try:
                    info = path.lstat()
                except FileNotFoundError:
                    continue  # removed while listing
                if stat.S_ISREG(info.st_mode):
                    try:
                        etag = _md5(path)
                    except PermissionError:  # e.g. a producer still writing it privately
                        others.append((key, "a file this process may not read"))
                        continue
                    found.append(LandedObject(key=key, size=info.st_size, etag=etag))
                elif stat.S_ISDIR(info.st_mode):
                    if is_stream_file_name(name):  # walked into; named only if it looks like a file
                        others.append((key, "a directory, not a file"))
                else:
                    others.append((key, _what(path, info.st_mode)))
        return sorted(found, key=lambda obj: obj.key), sorted(others)

    def open(self, key: str) -> IO[bytes]:
        return self._path(key).open("rb")

    def put(self, key: str, source: Path) -> None:
        dst = self._path(key)
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = dst.with_name(f".{dst.name}.tmp")
        shutil.copyfile(source, tmp)
        os.replace(tmp, dst)

    def write_text(self, key: str, text: str) -> None:
        dst = self._path(key)
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_text(text, encoding="utf-8")

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def move(self, src: str, dst: str, *, etag: str | None = None) -> None:
        src_path, dst_path = self._path(src), self._path(dst)
        if not src_path.exists():
            if dst_path.exists():
                return
            raise FileNotFoundError(f"cannot move {src}: it is not in the landing zone")
        dst_path.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(src_path, dst_path)  # fails if dst exists: never overwrites
        except FileExistsError:
            if not self.same_content(src, dst):
                raise FileExistsError(
                    f"will not move {src} to {dst}: {dst} holds other content"
                ) from None
            linked = False
        else:
            linked = True
        # The link froze one version (an inode): check it is the one asked for.
        if etag is not None and _md5(dst_path) != etag:
            if linked:
                dst_path.unlink()
            raise VersionChanged(f"{src} now holds another version than the one loaded")
        with contextlib.suppress(FileNotFoundError):
            if os.stat(src_path).st_ino == os.stat(dst_path).st_ino or not linked:
                src_path.unlink()  # a version replaced after the link stays for the next run

    def delete_prefix(self, prefix: str) -> None:
        path = self._path(prefix)
        if path.is_dir():
            shutil.rmtree(path)

    def same_content(self, a: str, b: str) -> bool:
        path_a, path_b = self._path(a), self._path(b)
        if not (path_a.is_file() and path_b.is_file()):
            return False
        if path_a.stat().st_size != path_b.stat().st_size:
            return False
        return _md5(path_a) == _md5(path_b)

    def uri(self, key: str) -> str:
        return str(self._path(key))

    def local_path(self, key: str) -> Path | None:
        return self._path(key)


class S3Landing:
    """A landing zone under ``s3://bucket/prefix``."""

    def __init__(self, url: str, *, endpoint_url: str = "", client: S3Client | None = None) -> None:
        if not url.startswith("s3://"):
            raise ValueError(f"not an s3:// URL: {url!r}")
        bucket, _, prefix = url[len("s3://") :].partition("/")
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.url = url.rstrip("/")
        if client is None:
            import boto3

            client = boto3.client("s3", endpoint_url=endpoint_url or None)
        self.client = client

    def _key(self, key: str) -> str:
        return self.prefix + key

    def list(self, prefix: str) -> list[LandedObject]:
        found = []
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self._key(prefix)):
            for item in page.get("Contents", []):
                found.append(
                    LandedObject(
                        key=item["Key"][len(self.prefix) :],
                        size=item["Size"],
                        etag=item["ETag"].strip('"'),
                    )
                )
        return sorted(found, key=lambda obj: obj.key)

    def unlisted(self, prefix: str) -> Entries:
        return []

    def open(self, key: str) -> IO[bytes]:
        body = self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"]
        return body  # type: ignore[return-value]

    def put(self, key: str, source: Path) -> None:
        self.client.upload_file(str(source), self.bucket, self._key(key))

    def write_text(self, key: str, text: str) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=text.encode())

    def exists(self, key: str) -> bool:
        return self._head(key) is not None

    def move(self, src: str, dst: str, *, etag: str | None = None) -> None:
        # S3 has no rename: copy, then delete. A rerun after a crash between the two finds
        # both objects and only deletes the source, once the destination is shown to hold the
        # source's bytes. With an etag, the copy and the delete are conditional on it (S3's
        # If-Match): a version delivered meanwhile is neither archived nor deleted.
        from botocore.exceptions import ClientError

        head = self._head(src)
        if head is None:
            if self.exists(dst):
                return
            raise FileNotFoundError(f"cannot move {src}: it is not in {self.url}")
        if etag is not None and head["ETag"].strip('"') != etag:
            raise VersionChanged(f"{src} now holds another version than the one loaded")
        copied = not self.exists(dst)
        if copied:
            source: CopySourceTypeDef = {"Bucket": self.bucket, "Key": self._key(src)}
            match = {"CopySourceIfMatch": f'"{etag}"'} if etag is not None else {}
            try:
                self.client.copy(source, self.bucket, self._key(dst), ExtraArgs=match)
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") in ("PreconditionFailed", "412"):
                    raise VersionChanged(
                        f"{src} now holds another version than the one loaded"
                    ) from None
                raise
        if not copied and not self.same_content(src, dst):
            raise FileExistsError(
                f"will not move {src} to {dst}: {dst} holds other content (source kept)"
            )
        try:
            if etag is None:
                self.client.delete_object(Bucket=self.bucket, Key=self._key(src))
            else:
                self.client.delete_object(
                    Bucket=self.bucket, Key=self._key(src), IfMatch=f'"{etag}"'
                )
        except ClientError as exc:  # replaced between the copy and the delete: keep it
            if exc.response.get("Error", {}).get("Code") not in ("PreconditionFailed", "412"):
                raise

    def _head(self, key: str) -> dict[str, Any] | None:
        from botocore.exceptions import ClientError

        try:
            head: dict[str, Any] = dict(
                self.client.head_object(Bucket=self.bucket, Key=self._key(key))
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise
        return head

    def delete_prefix(self, prefix: str) -> None:
        keys: list[ObjectIdentifierTypeDef] = [
            {"Key": self._key(obj.key)} for obj in self.list(prefix)
        ]
        for start in range(0, len(keys), 1000):  # DeleteObjects takes 1000 keys a call
            self.client.delete_objects(
                Bucket=self.bucket, Delete={"Objects": keys[start : start + 1000], "Quiet": True}
            )

    def same_content(self, a: str, b: str) -> bool:
        head_a, head_b = self._head(a), self._head(b)
        if head_a is None or head_b is None:
            return False
        if head_a["ContentLength"] != head_b["ContentLength"]:
            return False
        if head_a["ETag"] == head_b["ETag"] and "-" not in head_a["ETag"]:
            return True  # single-part ETags are the MD5 of the bytes
        return self._md5(a) == self._md5(b)  # a multipart ETag is not: compare the bytes

    def _md5(self, key: str) -> str:
        digest = hashlib.md5(usedforsecurity=False)
        with self.open(key) as stream:
            for chunk in iter_chunks(stream):
                digest.update(chunk)
        return digest.hexdigest()

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._key(key)}"

    def local_path(self, key: str) -> Path | None:
        return None


def open_landing(url: str, *, endpoint_url: str = "") -> LandingStore:
    """The landing store for a local path or an ``s3://`` URL."""
    if url.startswith("s3://"):
        return S3Landing(url, endpoint_url=endpoint_url)
    return LocalLanding(Path(url))


def iter_chunks(stream: IO[bytes]) -> Iterator[bytes]:
    """Read a binary stream in 1 MiB chunks."""
    while chunk := stream.read(_CHUNK):
        yield chunk


def _what(path: Path, mode: int) -> str:
    """What a non-regular entry of a local landing zone is, in a few words."""
    if stat.S_ISLNK(mode):
        target = os.readlink(path)
        broken = "" if path.exists() else ", which does not exist"
        return f"a symbolic link to {shown(target)}{broken}"
    kinds = {
        stat.S_ISFIFO: "a named pipe (FIFO)",
        stat.S_ISSOCK: "a socket",
        stat.S_ISCHR: "a character device",
        stat.S_ISBLK: "a block device",
    }
    return next((kind for test, kind in kinds.items() if test(mode)), "not a regular file")


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as handle:
        for chunk in iter_chunks(handle):
            digest.update(chunk)
    return digest.hexdigest()
