"""Object storage: the `ObjectStore` interface, its S3 and local implementations, and
the streamed batch ZIP."""

from __future__ import annotations

from typing import TYPE_CHECKING

from lumiku_bgremover.storage.archive import ArchiveEntry, ArchiveEntryMissing, build_archive
from lumiku_bgremover.storage.base import (
    MIN_PART_SIZE,
    BucketNotAllowed,
    InvalidKey,
    ObjectInfo,
    ObjectNotFound,
    ObjectStore,
    ObjectTooLarge,
    StorageError,
    validate_bucket,
    validate_key,
)
from lumiku_bgremover.storage.local import LocalObjectStore
from lumiku_bgremover.storage.s3 import S3ObjectStore
from lumiku_bgremover.storage.zipnames import zip_names

if TYPE_CHECKING:
    from lumiku_bgremover.settings import StorageSettings

__all__ = [
    "DEFAULT_LOCAL_BUCKET",
    "MIN_PART_SIZE",
    "ArchiveEntry",
    "ArchiveEntryMissing",
    "BucketNotAllowed",
    "InvalidKey",
    "LocalObjectStore",
    "ObjectInfo",
    "ObjectNotFound",
    "ObjectStore",
    "ObjectTooLarge",
    "S3ObjectStore",
    "StorageError",
    "build_archive",
    "build_object_store",
    "validate_bucket",
    "validate_key",
    "zip_names",
]

#: Bucket (sub-directory) of the local store when no S3 settings name one.
DEFAULT_LOCAL_BUCKET = "lumiku-bgremover"


def build_object_store(settings: StorageSettings) -> ObjectStore:
    """The store `settings.backend` names: "s3" (needs `settings.s3`) or "local".

    "local" needs `settings.local_dir`; it uses the bucket and allow-list of
    `settings.s3` when present, so object references keep their meaning.
    """
    if settings.backend == "s3":
        if settings.s3 is None:
            raise ValueError("storage backend 's3' needs S3 settings (endpoint and keys)")
        return S3ObjectStore.from_settings(settings.s3)
    if settings.backend == "local":
        if settings.local_dir is None:
            raise ValueError("storage backend 'local' needs a local directory")
        s3 = settings.s3
        bucket = s3.bucket if s3 is not None else DEFAULT_LOCAL_BUCKET
        allowed = s3.allowed_buckets if s3 is not None else ()
        return LocalObjectStore(settings.local_dir, bucket, allowed_buckets=allowed)
    raise ValueError(f"unknown storage backend {settings.backend!r}: expected 's3' or 'local'")
