"""Files and folders to and from object storage (`s3://bucket/prefix`), through boto3's managed transfers.

Transfers are multipart with retries (boto3's TransferConfig and its standard retry mode; `AWS_MAX_ATTEMPTS`
sets the attempts); S3 checks each request's checksum on arrival. End to end, every object carries its file's
sha256 as metadata: an upload is confirmed by size and digest, a download is re-hashed before it is moved into
place. S3-compatible stores (R2, MinIO) are reached with `AWS_ENDPOINT_URL`, which boto3 reads itself, or an
explicit endpoint.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from rich.progress import DownloadColumn, Progress, TransferSpeedColumn

from trainer.errors import TrainerError
from trainer.progress import on_terminal

CHUNK = 8 * 1024 * 1024
COMPLETE_MARKER = "SHA256SUMS"  # uploaded last by upload_folder: a prefix holding it is a finished upload


def is_s3_uri(uri: str) -> bool:
    return uri.startswith("s3://")


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """`s3://bucket/some/prefix` → ("bucket", "some/prefix")."""
    if not is_s3_uri(uri):
        raise TrainerError(f"{uri}: not an s3:// URI")
    bucket, _, prefix = uri[len("s3://") :].partition("/")
    if not bucket:
        raise TrainerError(f"{uri}: no bucket name")
    return bucket, prefix.strip("/")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def safe_destination(root: Path, relative: str) -> Path:
    """`root/relative`, refusing keys that would land outside `root` (`..`, absolute paths)."""
    target = (root / relative).resolve()
    if not relative or PurePosixPath(relative).is_absolute() or not target.is_relative_to(root.resolve()):
        raise TrainerError(f"refusing object key {relative!r}: it escapes the destination {root}")
    return target


class ObjectStore:
    """One bucket prefix. Methods take keys relative to it; errors from S3 surface as botocore exceptions."""

    def __init__(self, uri: str, endpoint_url: str | None = None):
        import boto3
        from boto3.s3.transfer import TransferConfig
        from botocore.config import Config

        self.uri = uri.rstrip("/")
        self.bucket, self.prefix = parse_s3_uri(uri)
        # A session of its own: it reads the environment now, and boto3's shared default session is not thread-safe.
        session = boto3.session.Session()
        self.client = session.client("s3", endpoint_url=endpoint_url, config=Config(retries={"mode": "standard"}))
        self.transfer = TransferConfig(multipart_threshold=64 * 2**20, multipart_chunksize=64 * 2**20)

    def key(self, relative: str) -> str:
        return str(PurePosixPath(self.prefix) / relative) if self.prefix else relative

    def upload(self, path: Path, relative: str, sha256: str | None = None) -> None:
        """Upload one file with its sha256 as metadata (computed unless given).

        Every request carries a SHA-256 checksum that S3 verifies before it stores the object (a mismatch fails the
        upload), so a stored object is the file that was sent; downloads re-check the whole-file digest.
        """
        extra = {"Metadata": {"sha256": sha256 or sha256_file(path)}, "ChecksumAlgorithm": "SHA256"}
        self.client.upload_file(str(path), self.bucket, self.key(relative), ExtraArgs=extra, Config=self.transfer)

    def put_json(self, relative: str, value: Any) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self.key(relative), Body=json.dumps(value).encode())

    def get_json(self, relative: str) -> Any | None:
        """The object parsed as JSON, or None if it does not exist."""
        from botocore.exceptions import ClientError

        try:
            body = self.client.get_object(Bucket=self.bucket, Key=self.key(relative))["Body"].read()
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise
        return json.loads(body)

    def download(self, relative: str, target: Path, expected_sha256: str | None = None) -> None:
        """Download to a temporary file beside `target`, check its sha256, then move it into place."""
        target.parent.mkdir(parents=True, exist_ok=True)
        if expected_sha256 is None:
            head = self.client.head_object(Bucket=self.bucket, Key=self.key(relative))
            expected_sha256 = head["Metadata"].get("sha256")
        fd, staging = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}-")
        os.close(fd)
        try:
            self.client.download_file(self.bucket, self.key(relative), staging, Config=self.transfer)
            if expected_sha256 and sha256_file(Path(staging)) != expected_sha256:
                raise TrainerError(f"{self.uri}/{relative}: sha256 does not match")
            os.replace(staging, target)
        finally:
            Path(staging).unlink(missing_ok=True)

    def objects(self, relative: str = "") -> list[tuple[str, int]]:
        """(key, size) of every object under `relative/`, keys relative to this store's prefix."""
        start = self.key(relative).rstrip("/") + "/" if (self.prefix or relative) else ""
        cut = len(self.prefix) + 1 if self.prefix else 0
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=start)
        return [(item["Key"][cut:], item["Size"]) for page in pages for item in page.get("Contents", [])]

    def list(self, relative: str = "") -> list[str]:
        """Keys under `relative/`, relative to this store's prefix."""
        return [key for key, _ in self.objects(relative)]

    def folders(self) -> list[str]:
        """Names of the immediate sub-prefixes ("folders")."""
        start = f"{self.prefix}/" if self.prefix else ""
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=start, Delimiter="/")
        return [p["Prefix"][len(start) :].rstrip("/") for page in pages for p in page.get("CommonPrefixes", [])]

    def delete(self, keys: list[str]) -> None:
        for start in range(0, len(keys), 1000):
            batch = [{"Key": self.key(k)} for k in keys[start : start + 1000]]
            self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})


def s3_errors():
    from botocore.exceptions import BotoCoreError, ClientError

    return (BotoCoreError, ClientError)


def upload_folder(folder: Path, uri: str, force: bool = False) -> list[str]:
    """Upload every file under `folder` to `uri`, `SHA256SUMS` last; refuses a finished upload unless `force`."""
    store = ObjectStore(uri)
    files = sorted((p for p in folder.rglob("*") if p.is_file()), key=lambda p: (p.name == COMPLETE_MARKER, str(p)))
    keys = []
    try:
        if not force and COMPLETE_MARKER in store.list():
            raise TrainerError(f"{uri} already holds a finished upload; pass --force to overwrite it")
        for path in files:
            relative = path.relative_to(folder).as_posix()
            store.upload(path, relative)
            keys.append(store.key(relative))
    except s3_errors() as exc:
        raise TrainerError(f"upload to {uri} failed: {exc}") from None
    return keys


@dataclass
class Downloaded:
    downloaded: list[Path] = field(default_factory=list)
    present: list[Path] = field(default_factory=list)  # already there with the object's sha256: not fetched again


def download_folder(uri: str, destination: Path) -> Downloaded:
    """Download every object under `uri` into `destination`, each verified against its sha256 metadata.

    Every key is checked before anything is written: one key escaping `destination` refuses the whole download.
    An interrupted download resumes: files whose sha256 already matches the object's are kept as they are.
    """
    store = ObjectStore(uri)
    result = Downloaded()
    try:
        objects = store.objects()
        if not objects:
            raise TrainerError(f"{uri}: no objects found")
        targets = [(key, size, safe_destination(destination, key)) for key, size in objects]
        columns = (*Progress.get_default_columns(), DownloadColumn(), TransferSpeedColumn())
        with Progress(*columns, transient=True, disable=not on_terminal()) as progress:
            task = progress.add_task(f"download {uri}", total=sum(size for _, size, _ in targets))
            for key, size, target in targets:
                expected = store.client.head_object(Bucket=store.bucket, Key=store.key(key))["Metadata"].get("sha256")
                if expected and target.is_file() and sha256_file(target) == expected:
                    result.present.append(target)
                else:
                    store.download(key, target, expected)
                    result.downloaded.append(target)
                progress.advance(task, size)
    except s3_errors() as exc:
        raise TrainerError(f"download of {uri} failed: {exc}") from None
    return result
