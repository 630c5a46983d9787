"""Folders to and from object storage (`s3://bucket/prefix`), through boto3's managed transfers.

Transfers are multipart with retries (boto3's TransferConfig and standard retry mode); S3 checks each request's
checksum on arrival. End to end, every object carries its file's sha256 as metadata: an upload is confirmed by
size and digest, a download is re-hashed before it is moved into place. S3-compatible stores (R2, MinIO) are
reached with `AWS_ENDPOINT_URL`, which boto3 reads itself.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path, PurePosixPath

from trainer.errors import TrainerError

CHUNK = 8 * 1024 * 1024
COMPLETE_MARKER = "SHA256SUMS"  # uploaded last: a prefix holding it is a finished upload


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


def _client():
    import boto3
    from botocore.config import Config

    return boto3.client("s3", config=Config(retries={"max_attempts": 10, "mode": "standard"}))


def _transfer_config():
    from boto3.s3.transfer import TransferConfig

    return TransferConfig(multipart_threshold=64 * 1024 * 1024, multipart_chunksize=64 * 1024 * 1024)


def _s3_error(action: str, uri: str, exc: Exception) -> TrainerError:
    return TrainerError(f"{action} {uri} failed: {exc}")


def upload_folder(folder: Path, uri: str, force: bool = False) -> list[str]:
    """Upload every file under `folder` to `uri`, `SHA256SUMS` last; refuses a finished upload unless `force`."""
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, prefix = parse_s3_uri(uri)
    client = _client()
    files = sorted((p for p in folder.rglob("*") if p.is_file()), key=lambda p: (p.name == COMPLETE_MARKER, str(p)))
    keys = []
    try:
        if not force and _exists(client, bucket, f"{prefix}/{COMPLETE_MARKER}"):
            raise TrainerError(f"{uri} already holds a finished upload; pass --force to overwrite it")
        for path in files:
            key = str(PurePosixPath(prefix) / path.relative_to(folder).as_posix())
            digest = sha256_file(path)
            extra = {"Metadata": {"sha256": digest}, "ChecksumAlgorithm": "SHA256"}
            client.upload_file(str(path), bucket, key, ExtraArgs=extra, Config=_transfer_config())
            head = client.head_object(Bucket=bucket, Key=key)
            if head["ContentLength"] != path.stat().st_size or head["Metadata"].get("sha256") != digest:
                raise TrainerError(f"s3://{bucket}/{key}: the stored object does not match {path}")
            keys.append(key)
    except (BotoCoreError, ClientError) as exc:
        raise _s3_error("upload to", uri, exc) from None
    return keys


def _exists(client, bucket: str, key: str) -> bool:
    from botocore.exceptions import ClientError

    try:
        client.head_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
            return False
        raise
    return True


def safe_destination(root: Path, relative: str) -> Path:
    """`root/relative`, refusing keys that would land outside `root` (`..`, absolute paths)."""
    target = (root / relative).resolve()
    if not relative or PurePosixPath(relative).is_absolute() or not target.is_relative_to(root.resolve()):
        raise TrainerError(f"refusing object key {relative!r}: it escapes the destination {root}")
    return target


def download_folder(uri: str, destination: Path) -> list[Path]:
    """Download every object under `uri` into `destination`, each verified against its sha256 metadata."""
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, prefix = parse_s3_uri(uri)
    client = _client()
    written = []
    try:
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{prefix}/" if prefix else "")
        for page in pages:
            for item in page.get("Contents", []):
                relative = item["Key"][len(prefix) + 1 :] if prefix else item["Key"]
                target = safe_destination(destination, relative)
                target.parent.mkdir(parents=True, exist_ok=True)
                expected = client.head_object(Bucket=bucket, Key=item["Key"])["Metadata"].get("sha256")
                fd, staging = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}-")
                os.close(fd)
                try:
                    client.download_file(bucket, item["Key"], staging, Config=_transfer_config())
                    if expected and sha256_file(Path(staging)) != expected:
                        raise TrainerError(f"s3://{bucket}/{item['Key']}: sha256 does not match its metadata")
                    os.replace(staging, target)
                finally:
                    Path(staging).unlink(missing_ok=True)
                written.append(target)
    except (BotoCoreError, ClientError) as exc:
        raise _s3_error("download of", uri, exc) from None
    if not written:
        raise TrainerError(f"{uri}: no objects found")
    return written
