"""The object store's folder deletion against the real local S3 server (SeaweedFS): every
object under the folder, over several pages, and nothing beside it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from botocore.exceptions import ClientError

from shared.settings import Settings
from shared.storage import ABORT_UPLOADS_RULE, ObjectStore
from tests.support.stack import module_s3_server


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    with module_s3_server(tmp_path_factory.mktemp("storage-s3")) as settings:
        yield settings


async def test_a_folder_is_emptied_page_by_page_and_its_neighbours_stay(
    store: ObjectStore,
) -> None:
    inside = [f"acme/CA1/RE{n}.transcript.json" for n in range(7)] + ["acme/CA1/deep/er/x"]
    beside = ["acme/CA10/RE1.transcript.json", "acme/CA1", "acme/2026-11-24/CA1/RE1.wav"]
    for key in inside + beside:
        await store.put(key, b"{}", "application/json")
    deletions: list[int] = []

    def count(params: dict[str, Any], **_: Any) -> None:
        deletions.append(len(params["Delete"]["Objects"]))

    store._client.meta.events.register("provide-client-params.s3.DeleteObjects", count)
    try:
        assert await store.delete_prefix("acme/CA1/", page_size=3) == len(inside)
    finally:
        store._client.meta.events.unregister("provide-client-params.s3.DeleteObjects", count)

    assert deletions == [3, 3, 2]  # one request per page

    assert await store.keys("acme/CA1/") == []
    assert await store.keys("acme/") == sorted(beside)
    assert await store.delete_prefix("acme/CA1/") == 0  # again: nothing left, no error


@pytest.mark.parametrize("prefix", ["", "/", "acme/CA1", "acme"])
async def test_only_a_folder_is_deleted(store: ObjectStore, prefix: str) -> None:
    await store.put("acme/CA2/RE1.transcript.json", b"{}", "application/json")
    with pytest.raises(ValueError, match="not a folder"):
        await store.delete_prefix(prefix)
    assert await store.keys("acme/CA2/") == ["acme/CA2/RE1.transcript.json"]


async def test_the_bucket_gets_a_rule_aborting_incomplete_uploads_beside_its_own(
    store: ObjectStore,
) -> None:
    client = store._client
    expire = {"ID": "operator", "Status": "Enabled", "Filter": {"Prefix": "tmp/"}}
    expire["Expiration"] = {"Days": 3}
    await client.put_bucket_lifecycle_configuration(
        Bucket=store.bucket, LifecycleConfiguration={"Rules": [expire]}
    )
    assert await store.abort_incomplete_uploads_after(2)
    assert await store.abort_incomplete_uploads_after(5)  # again: replaced, not added

    rules = (await client.get_bucket_lifecycle_configuration(Bucket=store.bucket))["Rules"]
    by_id = {rule["ID"]: rule for rule in rules}
    assert set(by_id) == {"operator", ABORT_UPLOADS_RULE}
    assert by_id["operator"]["Expiration"] == {"Days": 3}
    ours = by_id[ABORT_UPLOADS_RULE]
    assert ours["AbortIncompleteMultipartUpload"] == {"DaysAfterInitiation": 5}
    assert ours["Status"] == "Enabled"
    assert ours["Filter"] == {"Prefix": ""}
    await client.delete_bucket_lifecycle(Bucket=store.bucket)


@pytest.mark.parametrize("code", ["NotImplemented", "MalformedXML", "AccessDenied"])
async def test_a_server_that_refuses_lifecycle_rules_is_said_so(
    store: ObjectStore, code: str
) -> None:
    def refuse(**_: Any) -> None:
        raise ClientError({"Error": {"Code": code}}, "PutBucketLifecycleConfiguration")

    store._client.meta.events.register("before-call.s3.PutBucketLifecycleConfiguration", refuse)
    try:
        assert not await store.abort_incomplete_uploads_after(2)
    finally:
        store._client.meta.events.unregister(
            "before-call.s3.PutBucketLifecycleConfiguration", refuse
        )
