"""The S3 object store adapter (any S3: SeaweedFS locally, MinIO or AWS in production)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
from collections.abc import AsyncIterator, Iterable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import date
from typing import Any

from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotoConnectionError

from shared.settings import S3Settings


def transcript_key(business_id: str, call_sid: str, recording_sid: str) -> str:
    return f"{business_id}/{call_sid}/{recording_sid}.transcript.json"


def call_prefixes(business_id: str, call_sid: str, recording_days: Iterable[date]) -> list[str]:
    """The folders every object of the call is under: its own (transcripts) and its audio
    folders (`audio_prefixes`)."""
    return [f"{business_id}/{call_sid}/", *audio_prefixes(business_id, call_sid, recording_days)]


def audio_prefixes(business_id: str, call_sid: str, recording_days: Iterable[date]) -> list[str]:
    """The folders of the call's audio and manifests: for each UTC day a recording of it
    completed on, the dated folder the downloader archives that recording under
    (`services.downloader.core.object_key`)."""
    return sorted({f"{business_id}/{day.isoformat()}/{call_sid}/" for day in recording_days})


# SeaweedFS, the local stack's S3 server, gzips an object stored as audio/wav or audio/x-wav
# as it writes it and gunzips it at every read: 14 ms of its CPU for a put and a get of a
# 13-second call (418 KB), against 6 ms for the same bytes stored as audio/vnd.wave, RFC
# 2361's name for the same format. WAV is stored under that name and read back as audio/wav,
# the name every browser plays (decision 0917).
def s3_unreachable(error: BaseException) -> bool:
    """Whether `error` says the S3 server cannot be reached or is not serving yet, which
    waiting may mend, rather than that the configuration is wrong (keys, bucket, URL)."""
    if isinstance(error, (BotoConnectionError, HTTPClientError, OSError, TimeoutError)):
        return True
    if isinstance(error, ClientError):
        return int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)) >= 500
    return False


ABORT_UPLOADS_RULE = "callpipe-abort-incomplete-uploads"
# What a server answers that takes no lifecycle rule (or not this one: MinIO refuses
# AbortIncompleteMultipartUpload as malformed, and aborts stale uploads on its own), or a
# user that may not set one.
_LIFECYCLE_REFUSED = frozenset({"NotImplemented", "MalformedXML", "AccessDenied"})

_STORED_TYPE = {"audio/wav": "audio/vnd.wave", "audio/x-wav": "audio/vnd.wave"}
_READ_TYPE = {"audio/vnd.wave": "audio/wav"}


@dataclass(frozen=True)
class ObjectInfo:
    size: int
    etag: str
    content_type: str
    metadata: dict[str, str]


class ObjectStore:
    def __init__(self, settings: S3Settings) -> None:
        self._settings = settings
        self._stack = AsyncExitStack()
        self._client: Any = None
        self._public_client: Any = None

    @property
    def bucket(self) -> str:
        return self._settings.bucket

    async def start(self) -> None:
        self._client = await self._open(self._settings.endpoint_url)
        public = self._settings.browser_endpoint_url
        self._public_client = (
            self._client if public == self._settings.endpoint_url else await self._open(public)
        )

    async def _open(self, endpoint_url: str) -> Any:
        settings = self._settings
        return await self._stack.enter_async_context(
            get_session().create_client(
                "s3",
                endpoint_url=endpoint_url,
                region_name=settings.region,
                aws_access_key_id=settings.access_key,
                aws_secret_access_key=settings.secret_key.get_secret_value(),
                config=AioConfig(
                    s3={"addressing_style": "path"},
                    signature_version="s3v4",
                    retries={"max_attempts": 3, "mode": "standard"},
                ),
            )
        )

    async def stop(self) -> None:
        await self._stack.aclose()

    async def head_bucket(self, bucket: str | None = None) -> bool:
        try:
            await self._client.head_bucket(Bucket=bucket or self.bucket)
        except ClientError:
            return False
        return True

    async def ensure_bucket(self) -> None:
        try:
            await self._client.head_bucket(Bucket=self.bucket)
        except ClientError:
            await self._client.create_bucket(Bucket=self.bucket)

    async def abort_incomplete_uploads_after(self, days: int) -> bool:
        """Puts the bucket's lifecycle rule that aborts multipart uploads left incomplete
        `days` after they began (a downloader that died mid-upload leaves its parts, which
        no listing shows), keeping the bucket's other rules. False when the server refuses
        lifecycle rules or the user may not set them: the caller says so and goes on."""
        try:
            try:
                current = await self._client.get_bucket_lifecycle_configuration(Bucket=self.bucket)
                rules = [r for r in current.get("Rules", []) if r.get("ID") != ABORT_UPLOADS_RULE]
            except ClientError as error:
                if _error_code(error) != "NoSuchLifecycleConfiguration":
                    raise
                rules = []
            rule = {
                "ID": ABORT_UPLOADS_RULE,
                "Status": "Enabled",
                "Filter": {"Prefix": ""},
                "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": days},
            }
            await self._client.put_bucket_lifecycle_configuration(
                Bucket=self.bucket, LifecycleConfiguration={"Rules": [*rules, rule]}
            )
        except ClientError as error:
            if _error_code(error) in _LIFECYCLE_REFUSED:
                return False
            raise
        return True

    async def put(
        self, key: str, data: bytes, content_type: str, metadata: dict[str, str] | None = None
    ) -> None:
        await self._client.put_object(
            Bucket=self.bucket,
            Key=key,
            Body=data,
            ContentType=_STORED_TYPE.get(content_type, content_type),
            Metadata=metadata or {},
        )

    async def delete(self, key: str) -> None:
        await self._client.delete_object(Bucket=self.bucket, Key=key)

    async def put_parts(
        self,
        key: str,
        parts: AsyncIterator[bytes],
        content_type: str,
        metadata: dict[str, str] | None = None,
    ) -> int:
        """Stores the parts as one object without holding more than one part, and returns
        its size once the stored object is known to hold exactly the parts' bytes.

        One part goes up as a single PUT carrying its MD5 (Content-MD5): the server stores
        the object only if the body it received has that MD5, and a PUT is all or nothing,
        so its success is the verification. More parts go up as a multipart upload (every
        part but the last ≥ 5 MiB), each part with its Content-MD5; the completed object is
        then checked for the expected size, since completing an upload is a separate request
        that the part checksums do not cover. An unfinished multipart upload is aborted."""
        first = await anext(parts, b"")
        second = await anext(parts, None)
        if second is None:
            await self._client.put_object(
                Bucket=self.bucket,
                Key=key,
                Body=first,
                ContentType=_STORED_TYPE.get(content_type, content_type),
                ContentMD5=await _content_md5(first),
                Metadata=metadata or {},
            )
            return len(first)
        upload_id = (
            await self._client.create_multipart_upload(
                Bucket=self.bucket,
                Key=key,
                ContentType=_STORED_TYPE.get(content_type, content_type),
                Metadata=metadata or {},
            )
        )["UploadId"]
        try:
            uploaded: list[dict[str, Any]] = []
            size = 0

            async def upload(body: bytes) -> None:
                nonlocal size
                number = len(uploaded) + 1
                response = await self._client.upload_part(
                    Bucket=self.bucket,
                    Key=key,
                    UploadId=upload_id,
                    PartNumber=number,
                    Body=body,
                    ContentMD5=await _content_md5(body),
                )
                uploaded.append({"PartNumber": number, "ETag": response["ETag"]})
                size += len(body)

            await upload(first)
            await upload(second)
            async for body in parts:
                await upload(body)
            await self._client.complete_multipart_upload(
                Bucket=self.bucket,
                Key=key,
                UploadId=upload_id,
                MultipartUpload={"Parts": uploaded},
            )
        except BaseException:
            await self._client.abort_multipart_upload(
                Bucket=self.bucket, Key=key, UploadId=upload_id
            )
            raise
        stored = await self.head(key)
        if stored is None or stored.size != size:
            raise OSError(f"stored {key} does not have the {size} bytes uploaded")
        return size

    async def delete_prefix(self, prefix: str, page_size: int = 1000) -> int:
        """Deletes every object under the folder `prefix` (ending in "/", so that `acme/CA1/`
        does not reach `acme/CA10/`), listed a page of at most `page_size` keys at a time,
        each page deleted in one request (S3 takes at most 1000 keys in one); how many
        objects were deleted."""
        if not prefix.strip("/") or not prefix.endswith("/"):
            raise ValueError(f"not a folder to delete: {prefix!r}")
        paginator = self._client.get_paginator("list_objects_v2")
        deleted = 0
        pages = paginator.paginate(
            Bucket=self.bucket, Prefix=prefix, PaginationConfig={"PageSize": page_size}
        )
        async for page in pages:
            objects = [{"Key": item["Key"]} for item in page.get("Contents", [])]
            if not objects:
                continue
            response = await self._client.delete_objects(
                Bucket=self.bucket, Delete={"Objects": objects, "Quiet": True}
            )
            if errors := response.get("Errors"):
                failed = ", ".join(f"{e.get('Key')} ({e.get('Code')})" for e in errors)
                raise OSError(f"could not delete {failed}")
            deleted += len(objects)
        return deleted

    async def keys(self, prefix: str) -> list[str]:
        paginator = self._client.get_paginator("list_objects_v2")
        found: list[str] = []
        async for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
            found.extend(item["Key"] for item in page.get("Contents", []))
        return sorted(found)

    async def get(self, key: str) -> bytes:
        response = await self._client.get_object(Bucket=self.bucket, Key=key)
        async with response["Body"] as body:
            data: bytes = await body.read()
        return data

    async def get_if_exists(self, key: str) -> bytes | None:
        """The object's bytes, or None when there is no such object: one request where a
        HEAD and then a GET would be two."""
        try:
            return await self.get(key)
        except ClientError as error:
            if _missing(error):
                return None
            raise

    async def head(self, key: str) -> ObjectInfo | None:
        try:
            response = await self._client.head_object(Bucket=self.bucket, Key=key)
        except ClientError as error:
            if _missing(error):
                return None
            raise
        stored_type = str(response.get("ContentType", "application/octet-stream"))
        return ObjectInfo(
            size=int(response["ContentLength"]),
            etag=str(response["ETag"]),
            content_type=_READ_TYPE.get(stored_type, stored_type),
            metadata=dict(response.get("Metadata", {})),
        )

    async def presigned_get(self, key: str, expires_in: int, content_type: str) -> str:
        """A URL that GETs the object (Range included) without credentials until it expires,
        on the endpoint browsers reach, answered `Cache-Control: private` (no shared cache
        keeps it) and `Content-Type: content_type`. Computed locally: no request to the
        store."""
        url: str = await self._public_client.generate_presigned_url(
            "get_object",
            Params={
                "Bucket": self.bucket,
                "Key": key,
                "ResponseCacheControl": "private",
                "ResponseContentType": content_type,
            },
            ExpiresIn=expires_in,
        )
        return url

    async def stream(
        self, key: str, byte_range: tuple[int, int] | None = None, chunk_size: int = 1024 * 1024
    ) -> AsyncIterator[bytes]:
        """Yields the object's bytes (or the inclusive `byte_range`) without holding it whole."""
        extra = {"Range": f"bytes={byte_range[0]}-{byte_range[1]}"} if byte_range else {}
        response = await self._client.get_object(Bucket=self.bucket, Key=key, **extra)
        async with response["Body"] as body:
            while chunk := await body.read(chunk_size):
                yield chunk


def _error_code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def _missing(error: ClientError) -> bool:
    return _error_code(error) in ("404", "NoSuchKey", "NotFound")


async def _content_md5(body: bytes) -> str:
    digest = await asyncio.to_thread(lambda: hashlib.md5(body, usedforsecurity=False).digest())
    return base64.b64encode(digest).decode()
