"""The S3 object store adapter (any S3: SeaweedFS locally, MinIO or AWS in production)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import ClientError

from shared.settings import Settings


def recording_key(business_id: str, call_sid: str, recording_sid: str, extension: str) -> str:
    """Deterministic: a redelivered download overwrites the same object with the same bytes."""
    return f"{business_id}/{call_sid}/{recording_sid}.{extension}"


def transcript_key(business_id: str, call_sid: str, recording_sid: str) -> str:
    return f"{business_id}/{call_sid}/{recording_sid}.transcript.json"


@dataclass(frozen=True)
class ObjectInfo:
    size: int
    etag: str
    content_type: str
    metadata: dict[str, str]


class ObjectStore:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._stack = AsyncExitStack()
        self._client: Any = None

    @property
    def bucket(self) -> str:
        return self._settings.s3_bucket

    async def start(self) -> None:
        settings = self._settings
        self._client = await self._stack.enter_async_context(
            get_session().create_client(
                "s3",
                endpoint_url=settings.s3_endpoint_url,
                region_name=settings.s3_region,
                aws_access_key_id=settings.s3_access_key,
                aws_secret_access_key=settings.s3_secret_key.get_secret_value(),
                config=AioConfig(
                    s3={"addressing_style": "path"},
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

    async def put(
        self, key: str, data: bytes, content_type: str, metadata: dict[str, str] | None = None
    ) -> None:
        await self._client.put_object(
            Bucket=self.bucket,
            Key=key,
            Body=data,
            ContentType=content_type,
            Metadata=metadata or {},
        )

    async def delete(self, key: str) -> None:
        await self._client.delete_object(Bucket=self.bucket, Key=key)

    async def get(self, key: str) -> bytes:
        response = await self._client.get_object(Bucket=self.bucket, Key=key)
        async with response["Body"] as body:
            data: bytes = await body.read()
        return data

    async def head(self, key: str) -> ObjectInfo | None:
        try:
            response = await self._client.head_object(Bucket=self.bucket, Key=key)
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise
        return ObjectInfo(
            size=int(response["ContentLength"]),
            etag=str(response["ETag"]),
            content_type=str(response.get("ContentType", "application/octet-stream")),
            metadata=dict(response.get("Metadata", {})),
        )

    async def stream(
        self, key: str, byte_range: tuple[int, int] | None = None, chunk_size: int = 64 * 1024
    ) -> AsyncIterator[bytes]:
        """Yields the object's bytes (or the inclusive `byte_range`) without holding it whole."""
        extra = {"Range": f"bytes={byte_range[0]}-{byte_range[1]}"} if byte_range else {}
        response = await self._client.get_object(Bucket=self.bucket, Key=key, **extra)
        async with response["Body"] as body:
            while chunk := await body.read(chunk_size):
                yield chunk
