"""The object stores the S3 exports are read from: an S3 prefix through boto3, or a local folder in its shape."""

import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from urllib.parse import urlparse

import boto3
from botocore.config import Config as BotoConfig
from botocore.exceptions import BotoCoreError, ClientError

from loyalty_pipeline.defs.errors import SourceError


@dataclass(frozen=True)
class StoredObject:
    key: str  # relative to the store's root, e.g. "historical_purchases/2022-10-01.csv"
    version: str  # changes when the object is rewritten (ETag or mtime+size)
    modified: datetime


def safe_key(key: str) -> bool:
    """An object key with no empty, '.' or '..' part (so not absolute either) and no control character."""
    return all(part not in ("", ".", "..") for part in key.split("/")) and key.isprintable()


def file_version(path: Path) -> str:
    """Changes when a local file is rewritten: its mtime and size (the local counterpart of an ETag)."""
    stat = path.stat()
    return f"{stat.st_mtime_ns}-{stat.st_size}"


def read_version(path: Path) -> str:
    """The version a snapshot file was read at: its ctime too, which any rewrite moves, so a copy that puts back the
    old size and mtime (`cp -p`, `rsync -a`) is read again."""
    return f"{file_version(path)}-{path.stat().st_ctime_ns}"


class LocalStore:
    """An S3-shaped view of a local folder."""

    def __init__(self, root: Path):
        self.root = root

    def list_objects(self, prefix: str) -> list[StoredObject]:
        folder = self.root / prefix
        if not folder.is_dir():
            return []
        found = []
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            found.append(
                StoredObject(
                    key=path.relative_to(self.root).as_posix(),
                    version=file_version(path),
                    modified=datetime.fromtimestamp(path.stat().st_mtime, UTC),
                )
            )
        return found

    def local_copies(self, keys: list[str], workdir: Path) -> dict[str, Path]:
        return {key: self.root / key for key in keys}


class S3Store:
    """Objects under s3://bucket/prefix, fetched with boto3 (DuckDB's httpfs is not available offline)."""

    def __init__(self, url: str, endpoint_url: str | None):
        parsed = urlparse(url)
        self.bucket, self.prefix = parsed.netloc, parsed.path.strip("/")
        # few retries and short connect timeouts: an endpoint that is down is an error in seconds, not minutes
        config = BotoConfig(connect_timeout=5, retries={"max_attempts": 2, "mode": "standard"})
        try:
            self.client = boto3.client("s3", endpoint_url=endpoint_url or None, config=config)
        except ValueError as error:  # e.g. an endpoint without http:// or https://
            raise SourceError(f"LOYALTY_S3_ENDPOINT_URL={endpoint_url}: {error}") from None

    def _full(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def list_objects(self, prefix: str) -> list[StoredObject]:
        found = []
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self._full(prefix)
            ):
                for item in page.get("Contents", []):
                    key = item["Key"][len(self.prefix) + 1 :] if self.prefix else item["Key"]
                    found.append(StoredObject(key=key, version=item["ETag"].strip('"'), modified=item["LastModified"]))
        except (BotoCoreError, ClientError) as error:
            raise SourceError(f"s3://{self.bucket}/{self._full(prefix)}: {error}") from None
        return sorted(found, key=lambda obj: obj.key)

    def local_copies(self, keys: list[str], workdir: Path) -> dict[str, Path]:
        # A local name is a number and the key's extension, never the key's path: a key such as
        # "customers/../../x.csv" must not write outside the work folder.
        # Only the number: a key's last part may be longer than a file name may be.
        copies = {}
        for number, key in enumerate(keys):
            copies[key] = workdir / f"{number:06d}{''.join(PurePosixPath(key).suffixes[-1:])[:16]}"
            try:
                self.client.download_file(self.bucket, self._full(key), str(copies[key]))
            except (BotoCoreError, ClientError) as error:
                raise SourceError(f"s3://{self.bucket}/{self._full(key)}: {error}") from None
        return copies

    def mirror(self, prefix: str, folder: Path) -> Path:
        """The objects under `prefix` as files under `folder` (same relative keys), downloaded when new or rewritten
        (by ETag) and deleted when gone: Kafka Connect objects keep their names, which carry their coordinates."""
        index_path = folder / ".versions.json"
        index = json.loads(index_path.read_text()) if index_path.is_file() else {}
        objects = {obj.key: obj.version for obj in self.list_objects(prefix.rstrip("/") + "/") if safe_key(obj.key)}
        for key, version in objects.items():
            local = folder / key
            if index.get(key) != version or not local.is_file():
                local.parent.mkdir(parents=True, exist_ok=True)
                partial = local.with_name(local.name + ".part")
                try:
                    self.client.download_file(self.bucket, self._full(key), str(partial))
                except (BotoCoreError, ClientError) as error:
                    raise SourceError(f"s3://{self.bucket}/{self._full(key)}: {error}") from None
                os.replace(partial, local)  # whole, or not at all
        for key in set(index) - set(objects):
            (folder / key).unlink(missing_ok=True)
        folder.mkdir(parents=True, exist_ok=True)
        index_path.write_text(json.dumps(objects))
        return folder / prefix
