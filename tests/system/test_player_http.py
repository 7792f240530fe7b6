"""The player's HTTP contract against the running stack: playback with Range (redirected to
presigned object-store URLs, or served by the player), the tenant rule, retry, prepare,
delete, filters, the page's login and its sessions' end, and cross-site requests refused."""

from __future__ import annotations

import asyncio
import secrets
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from sqlalchemy import Executable, func, select, update

from callpipe.twilio_simulator.samples import sample_path
from services.player.repository import CallRepository
from services.player.tables import player_sessions
from shared.call_state import CallState
from shared.db import create_engine
from shared.events import (
    AnyEvent,
    CallDeleted,
    CallStarted,
    RecordingDownloaded,
    Topic,
    TranscriptReady,
    call_correlation_id,
    decode,
)
from shared.kafka.connection import client_options
from shared.kafka.topics import records_to_end
from shared.storage import ObjectStore
from shared.tombstones import tombstone_key
from tests.support.postgres import fresh_database
from tests.support.stack import RunningStack

pytestmark = pytest.mark.stack

SAMPLE = sample_path("electrician_denver").read_bytes()


@pytest.fixture(scope="module")
def call(stack: RunningStack) -> dict[str, Any]:
    finished = stack.wait_for_call(stack.place_call("electrician_denver"))
    assert finished["status"] == "completed", finished
    return finished


@pytest.fixture(scope="module")
def other_business(stack: RunningStack) -> httpx.Client:
    """A client holding the API key of a second business, made with `callpipe api-key`."""
    created = subprocess.run(
        [sys.executable, "-m", "callpipe", "api-key", "--business", "other-business"],
        env=stack.env,
        capture_output=True,
        text=True,
        check=True,
    )
    key = created.stdout.strip().splitlines()[-1]
    assert key.startswith("cp_")
    return httpx.Client(
        base_url=stack.player, headers={"Authorization": f"Bearer {key}"}, timeout=10
    )


def file_url(call: dict[str, Any]) -> str:
    return f"/api/recordings/{call['call_sid']}/file"


@pytest.mark.parametrize(
    ("header", "start", "end"),
    [
        ("bytes=0-99", 0, 99),
        ("bytes=1000-", 1000, len(SAMPLE) - 1),
        ("bytes=-500", len(SAMPLE) - 500, len(SAMPLE) - 1),
        (f"bytes=10-{len(SAMPLE) + 1000}", 10, len(SAMPLE) - 1),
    ],
)
def test_a_single_range_is_served_as_206(
    stack: RunningStack, call: dict[str, Any], header: str, start: int, end: int
) -> None:
    response = stack.api.get(file_url(call), headers={"Range": header})
    assert response.status_code == 206
    assert response.headers["content-range"] == f"bytes {start}-{end}/{len(SAMPLE)}"
    assert response.content == SAMPLE[start : end + 1]
    assert response.headers["accept-ranges"] == "bytes"


def test_a_get_is_redirected_to_a_presigned_url_that_serves_the_bytes_and_ranges(
    stack: RunningStack, call: dict[str, Any]
) -> None:
    redirect = stack.api.get(file_url(call), follow_redirects=False)
    assert redirect.status_code == 307
    assert redirect.headers["cache-control"] == "no-store"
    target = redirect.headers["location"]
    assert target.startswith(f"{stack.env['CALLPIPE_S3_ENDPOINT_URL']}/recordings/")
    assert "X-Amz-Signature=" in target
    whole = httpx.get(target)  # no credentials: the URL carries its own
    assert whole.status_code == 200
    assert whole.content == SAMPLE
    assert whole.headers["cache-control"] == "private"
    assert whole.headers["content-type"] == "audio/wav"  # stored as audio/vnd.wave (0917)
    part = httpx.get(target, headers={"Range": "bytes=100-199"})
    assert part.status_code == 206
    assert part.headers["content-range"] == f"bytes 100-199/{len(SAMPLE)}"
    assert part.content == SAMPLE[100:200]
    ranged = stack.api.get(file_url(call), headers={"Range": "bytes=0-9"}, follow_redirects=False)
    assert ranged.status_code == 307
    head = stack.api.head(file_url(call))  # answered by the player: no bytes move
    assert head.status_code == 200
    assert head.headers["content-type"] == "audio/wav"
    assert not head.history


def test_a_presigned_url_opens_only_its_object_and_only_until_it_expires(
    stack: RunningStack, call: dict[str, Any]
) -> None:
    target = stack.api.get(file_url(call), follow_redirects=False).headers["location"]
    another_object = target.replace(call["call_sid"], "CAsomeoneelse", 1)
    assert another_object != target
    assert httpx.get(another_object).status_code == 403

    expired = stack.expired_recording_url(call["recording_key"])
    refused = httpx.get(expired)
    assert refused.status_code == 403
    assert b"expired" in refused.content


def test_several_ranges_come_back_as_multipart_byteranges(
    stack: RunningStack, call: dict[str, Any]
) -> None:
    response = stack.api.get(file_url(call), headers={"Range": "bytes=0-9,100-109"})
    assert not response.history  # the player's own answer: S3 servers send the whole object
    assert response.status_code == 206
    media, _, boundary = response.headers["content-type"].partition("; boundary=")
    assert media == "multipart/byteranges"
    assert int(response.headers["content-length"]) == len(response.content)
    parts = response.content.split(f"--{boundary}".encode())
    bodies = [p.split(b"\r\n\r\n", 1)[1].removesuffix(b"\r\n") for p in parts[1:-1]]
    assert bodies == [SAMPLE[0:10], SAMPLE[100:110]]


def test_unsatisfiable_and_too_many_ranges_get_416(
    stack: RunningStack, call: dict[str, Any]
) -> None:
    beyond = stack.api.get(file_url(call), headers={"Range": f"bytes={len(SAMPLE) + 5}-"})
    assert beyond.status_code == 416
    assert beyond.headers["content-range"] == f"bytes */{len(SAMPLE)}"
    many = ",".join(f"{i * 10}-{i * 10 + 1}" for i in range(20))
    assert stack.api.get(file_url(call), headers={"Range": f"bytes={many}"}).status_code == 416


def test_etag_and_if_range(stack: RunningStack, call: dict[str, Any]) -> None:
    head = stack.api.head(file_url(call))
    etag = head.headers["etag"]
    assert int(head.headers["content-length"]) == len(SAMPLE)
    same = stack.api.get(file_url(call), headers={"Range": "bytes=0-3", "If-Range": etag})
    assert same.status_code == 206
    stale = stack.api.get(file_url(call), headers={"Range": "bytes=0-3", "If-Range": '"old"'})
    assert not stale.history  # the player's own answer: SeaweedFS does not check If-Range
    assert stale.status_code == 200
    assert stale.content == SAMPLE


def test_another_business_sees_nothing_of_the_call(
    stack: RunningStack, call: dict[str, Any], other_business: httpx.Client
) -> None:
    sid = call["call_sid"]
    assert other_business.get(f"/api/calls/{sid}").status_code == 404
    assert other_business.get(f"/api/calls/{sid}/transcript").status_code == 404
    refused = other_business.get(file_url(call))
    assert refused.status_code == 404
    assert "location" not in refused.headers
    assert "X-Amz" not in refused.text
    assert other_business.post(f"/api/recordings/{sid}/prepare").status_code == 404
    assert other_business.post(f"/api/calls/{sid}/retry/recording").status_code == 404
    assert other_business.delete(f"/api/calls/{sid}").status_code == 404
    assert other_business.get("/api/calls").json()["calls"] == []
    assert stack.api.get(f"/api/calls/{sid}").status_code == 200  # still there for its owner


def test_without_a_valid_key_the_api_answers_401(stack: RunningStack, call: dict[str, Any]) -> None:
    assert httpx.get(f"{stack.player}/api/calls").status_code == 401
    assert httpx.get(f"{stack.player}{file_url(call)}").status_code == 401
    wrong = {"Authorization": "Bearer cp_not-a-key"}
    assert httpx.get(f"{stack.player}/api/calls", headers=wrong).status_code == 401


def test_the_transcript_by_speaker(stack: RunningStack, call: dict[str, Any]) -> None:
    transcript = stack.api.get(f"/api/calls/{call['call_sid']}/transcript").json()
    speakers = [u["speaker"] for u in transcript["utterances"]]
    assert speakers[:2] == ["caller", "agent"]
    assert "electrician" in transcript["utterances"][0]["text"].lower()
    starts = [u["start"] for u in transcript["utterances"]]
    assert starts == sorted(starts)


def test_filters_and_search(stack: RunningStack, call: dict[str, Any]) -> None:
    def sids(**params: str) -> list[str]:
        listed = stack.api.get("/api/calls", params={"limit": "500", **params}).json()
        return [c["call_sid"] for c in listed["calls"]]

    sid = call["call_sid"]
    assert sid in sids(status="completed")
    assert sid not in sids(status="failed")
    assert sid in sids(q="ELECTRICIAN")
    assert sid not in sids(q="zebra crossing")
    assert sid in sids(phone=call["from_number"][-4:])
    assert sid in sids(stage="summary", stage_status="completed")
    assert sid not in sids(since="2999-01-01T00:00:00Z")
    assert stack.api.get("/api/calls", params={"status": "bogus"}).status_code == 422


def test_prepare_is_idempotent(stack: RunningStack, call: dict[str, Any]) -> None:
    sid = call["call_sid"]
    assert stack.api.post(f"/api/recordings/{sid}/prepare").status_code == 200
    assert stack.api.post("/api/recordings/CAnothing/prepare").status_code == 404


def test_prepare_redrives_a_failed_download_once_and_the_recording_arrives(
    stack: RunningStack,
) -> None:
    sid = stack.place_call("plumber_boston", media_error_status=403, media_error_count=1)
    assert stack.wait_for_call(sid)["recording_status"] == "failed"
    prepare = f"/api/recordings/{sid}/prepare"
    first = stack.api.post(prepare)
    on_its_way = stack.api.post(prepare)
    assert first.status_code == 202
    assert first.json()["recording_status"] == "pending"
    assert on_its_way.status_code == 202
    assert on_its_way.json()["recording_status"] in ("pending", "processing")
    deadline = time.monotonic() + 60
    while (answer := stack.api.post(prepare)).status_code == 202 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert answer.status_code == 200, answer.text
    assert answer.json()["recording_status"] == "completed"
    # Stored, and played once the transcriber has redacted it (here: nothing to replace).
    playback = stack.api.get(f"/api/recordings/{sid}/file")
    while playback.status_code == 409 and time.monotonic() < deadline:
        assert playback.json()["status"] == "redacting", playback.text
        assert playback.headers["retry-after"].isdigit()
        time.sleep(0.5)
        playback = stack.api.get(f"/api/recordings/{sid}/file")
    assert playback.content == sample_path("plumber_boston").read_bytes()
    redriven = stack.api.get(f"/api/calls/{sid}").json()
    assert redriven["recording_attempt"] == 2
    # The download's input went out again once, however often prepare was asked meanwhile.
    inputs = [e for e in redriven["timeline"] if e["event_type"] == "recording.completed"]
    assert sorted(e["attempt"] for e in inputs) == [1, 2]  # a retry keeps its input's time


def test_a_failed_download_shows_its_reason_and_one_retry_completes_it(
    stack: RunningStack,
) -> None:
    sid = stack.place_call("plumber_boston", media_error_status=403, media_error_count=1)
    failed = stack.wait_for_call(sid)
    assert failed["status"] == "failed"
    assert failed["recording_status"] == "failed"
    assert failed["transcript_status"] == "skipped"
    assert "403" in failed["last_error"]
    gone = stack.api.get(f"/api/recordings/{sid}/file")
    assert gone.status_code == 410
    assert "403" in gone.json()["detail"]

    first = stack.api.post(f"/api/calls/{sid}/retry/recording")
    second = stack.api.post(f"/api/calls/{sid}/retry/recording")  # the double click
    assert first.status_code == 202
    assert first.json()["attempt"] == 2
    assert second.status_code == 409
    deadline = time.monotonic() + 60
    retried = stack.api.get(f"/api/calls/{sid}").json()
    while retried["status"] != "completed" and time.monotonic() < deadline:
        time.sleep(0.5)
        retried = stack.api.get(f"/api/calls/{sid}").json()
    assert retried["status"] == "completed", retried
    assert retried["recording_attempt"] == 2
    downloads = [e for e in retried["timeline"] if e["event_type"] == "recording.downloaded"]
    assert len(downloads) == 1
    assert stack.api.get(f"/api/recordings/{sid}/file").content == (
        sample_path("plumber_boston").read_bytes()
    )
    assert stack.api.post(f"/api/calls/{sid}/retry/summary").status_code == 409


def objects_naming(stack: RunningStack, call: dict[str, Any]) -> list[str]:
    """The keys of every object in the bucket, under the call's business, that name the call."""

    async def keys() -> list[str]:
        store = ObjectStore(stack.settings.s3)
        await store.start()
        try:
            return await store.keys(f"{call['business_id']}/")
        finally:
            await store.stop()

    return [key for key in asyncio.run(keys()) if f"/{call['call_sid']}/" in key]


def last_event_of_the_call(
    stack: RunningStack,
    topic: Topic,
    call_sid: str,
    matches: Callable[[AnyEvent], bool] = lambda event: True,
) -> tuple[TopicPartition, int, AnyEvent] | None:
    """Where the call's last event on `topic` that `matches` is, and the event; None before
    there is one."""

    async def read() -> tuple[TopicPartition, int, AnyEvent] | None:
        consumer = AIOKafkaConsumer(**client_options(stack.settings.kafka), group_id=None)
        await consumer.start()
        try:
            await consumer.topics()  # loads the metadata of every topic
            partitions = [
                TopicPartition(topic.value, p)
                for p in sorted(consumer.partitions_for_topic(topic.value) or ())
            ]
            consumer.assign(partitions)
            found = None
            async for record in records_to_end(consumer, partitions):
                event = decode(record.value)
                if event.call_sid == call_sid and matches(event):
                    found = (TopicPartition(record.topic, record.partition), record.offset, event)
            return found
        finally:
            await consumer.stop()

    return asyncio.run(read())


def wait_until_read(
    stack: RunningStack,
    group: str,
    topic: Topic,
    call_sid: str,
    matches: Callable[[AnyEvent], bool] = lambda event: True,
) -> AnyEvent:
    """The call's last event on `topic` (that `matches`), once consumer group `group` has
    committed past it: the service has handled it (or ignored it)."""

    async def committed_by_the_group(partition: TopicPartition) -> int:
        consumer = AIOKafkaConsumer(**client_options(stack.settings.kafka), group_id=group)
        await consumer.start()
        try:
            return int(await consumer.committed(partition) or 0)
        finally:
            await consumer.stop()

    deadline = time.monotonic() + 90
    while (found := last_event_of_the_call(stack, topic, call_sid, matches)) is None:
        assert time.monotonic() < deadline, f"no {topic} of {call_sid}"
        time.sleep(0.5)
    partition, offset, event = found
    while asyncio.run(committed_by_the_group(partition)) <= offset:
        assert time.monotonic() < deadline, f"{group} did not read {topic} of {call_sid}"
        time.sleep(0.5)
    return event


def wait_until_the_player_read(
    stack: RunningStack,
    topic: Topic,
    call_sid: str,
    matches: Callable[[AnyEvent], bool] = lambda event: True,
) -> AnyEvent:
    return wait_until_read(stack, "player", topic, call_sid, matches)


def stored_objects(stack: RunningStack, *keys: str) -> list[str]:
    """Those of `keys` that are in the bucket."""

    async def heads() -> list[str]:
        store = ObjectStore(stack.settings.s3)
        await store.start()
        try:
            return [key for key in keys if await store.head(key) is not None]
        finally:
            await store.stop()

    return asyncio.run(heads())


def put_objects(stack: RunningStack, *keys: str) -> None:
    async def put() -> None:
        store = ObjectStore(stack.settings.s3)
        await store.start()
        try:
            for key in keys:
                await store.put(key, b"{}", "application/json")
        finally:
            await store.stop()

    asyncio.run(put())


def test_deleting_a_call_removes_its_objects_and_row_and_publishes_a_tombstone(
    stack: RunningStack, other_business: httpx.Client
) -> None:
    sid = stack.place_call("plumber_boston")
    call = stack.wait_for_call(sid)
    assert call["status"] == "completed"
    recording = call["recording_key"]
    stored = [recording, f"{recording}.manifest.json", call["transcript_key"]]
    assert sorted(objects_naming(stack, call)) == sorted(stored)
    # What earlier recordings or attempts of the call left in its folders, which the row no
    # longer names; and a neighbour whose SID begins with this one's, which is not the call's.
    business, folder = call["business_id"], recording.rpartition("/")[0]
    earlier = [f"{folder}/REearlier.wav", f"{business}/{sid}/REearlier.transcript.json"]
    neighbour = f"{business}/{sid}0/RE1.transcript.json"
    put_objects(stack, *earlier, neighbour)

    assert other_business.delete(f"/api/calls/{sid}").status_code == 404
    assert sorted(objects_naming(stack, call)) == sorted(stored + earlier)

    assert stack.api.delete(f"/api/calls/{sid}").status_code == 204
    assert objects_naming(stack, call) == []
    assert stored_objects(stack, neighbour, tombstone_key(business, sid)) == [
        neighbour,
        tombstone_key(business, sid),
    ]
    assert stack.api.get(f"/api/calls/{sid}").status_code == 404
    assert stack.api.delete(f"/api/calls/{sid}").status_code == 404  # once deleted, unknown
    tombstone = wait_until_the_player_read(stack, Topic.CALL_DELETED, sid)
    assert isinstance(tombstone, CallDeleted)
    assert tombstone.business_id == call["business_id"]
    # The player projected its own tombstone: the call stays deleted.
    assert stack.api.get(f"/api/calls/{sid}").status_code == 404
    assert stack.api.get(f"/api/recordings/{sid}/file").status_code == 404
    assert stack.api.get(f"/api/calls/{sid}/transcript").status_code == 404
    listed = stack.api.get("/api/calls", params={"limit": 500}).json()["calls"]
    assert sid not in [c["call_sid"] for c in listed]


def test_a_call_deleted_on_its_way_stays_deleted_and_leaves_no_object(
    stack: RunningStack,
) -> None:
    """A call deleted while its recording is not ready yet at Twilio: the downloader's next
    try finds the call's tombstone and stops, storing and announcing nothing, and the stage
    events it published meanwhile bring the call back in no way."""
    sid = stack.place_call("plumber_boston", media_delay_seconds=6)
    deadline = time.monotonic() + 15
    while (found := stack.api.get(f"/api/calls/{sid}")).status_code == 404:
        assert time.monotonic() < deadline, "the call was never projected"
        time.sleep(0.2)
    call = found.json()
    assert call["recording_status"] in ("pending", "processing")
    assert stack.api.delete(f"/api/calls/{sid}").status_code == 204

    wait_until_read(stack, "downloader", Topic.RECORDING_COMPLETED, sid)
    assert last_event_of_the_call(stack, Topic.RECORDING_DOWNLOADED, sid) is None
    if last_event_of_the_call(stack, Topic.STAGE_STATUS, sid) is not None:
        wait_until_the_player_read(stack, Topic.STAGE_STATUS, sid)
    assert stack.api.get(f"/api/calls/{sid}").status_code == 404
    listed = stack.api.get("/api/calls", params={"limit": 500}).json()["calls"]
    assert sid not in [c["call_sid"] for c in listed]
    assert objects_naming(stack, call) == []


def test_the_page_needs_a_login(stack: RunningStack, call: dict[str, Any]) -> None:
    browser = httpx.Client(base_url=stack.player, timeout=10, headers={"Origin": stack.player})
    assert browser.get("/").headers["location"] == "/login"
    refused = browser.post("/login", data={"api_key": "cp_wrong"})
    assert refused.headers["location"] == "/login?failed=1"
    key = stack.api.headers["Authorization"].removeprefix("Bearer ")
    assert browser.post("/login", data={"api_key": key}).headers["location"] == "/"
    page = browser.get("/")
    assert page.status_code == 200
    assert "callpipe" in page.text
    assert call["call_sid"] in [c["call_sid"] for c in browser.get("/api/calls").json()["calls"]]


EVIL = "https://evil.example"
COOKIE = "callpipe_session"


def callpipe(stack: RunningStack, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "callpipe", *args],
        env=stack.env,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout


def own_key(stack: RunningStack) -> str:
    return str(stack.api.headers["Authorization"]).removeprefix("Bearer ")


def signed_in(stack: RunningStack, key: str) -> httpx.Client:
    """A browser on the player's page, signed in with `key`: its requests carry the page's
    own Origin, as Chromium's do."""
    browser = httpx.Client(base_url=stack.player, timeout=10, headers={"Origin": stack.player})
    assert browser.post("/login", data={"api_key": key}).headers["location"] == "/"
    return browser


def with_cookie(stack: RunningStack, cookie: str, **headers: str) -> httpx.Client:
    """Someone else's client holding a copy of a session cookie."""
    return httpx.Client(
        base_url=stack.player, timeout=10, cookies={COOKIE: cookie}, headers=headers
    )


def in_database(stack: RunningStack, statement: Executable) -> Any:
    """Runs `statement` in the stack's database, committed; its first column's first value."""

    async def execute() -> Any:
        engine = create_engine(stack.database_url)
        try:
            async with engine.begin() as connection:
                result = await connection.execute(statement)
                return result.scalar() if result.returns_rows else None
        finally:
            await engine.dispose()

    return asyncio.run(execute())


def sessions_of(stack: RunningStack, business: str) -> int:
    query = select(func.count()).where(player_sessions.c.business_id == business)
    return int(in_database(stack, query))


def test_a_cookie_copied_before_logout_is_refused_after_it(stack: RunningStack) -> None:
    browser = signed_in(stack, own_key(stack))
    stolen = browser.cookies[COOKIE]
    assert with_cookie(stack, stolen).get("/api/calls").status_code == 200
    assert browser.post("/logout").headers["location"] == "/login"
    thief = with_cookie(stack, stolen)
    assert thief.get("/api/calls").status_code == 401
    assert thief.get("/").headers["location"] == "/login"


def test_a_cookie_of_a_revoked_key_is_refused_at_once(stack: RunningStack) -> None:
    label = f"laptop-{secrets.token_hex(4)}"
    key = callpipe(stack, "api-key", "--business", "revoked-co", "--label", label).strip()
    browser = signed_in(stack, key)
    stolen = browser.cookies[COOKIE]
    assert with_cookie(stack, stolen).get("/api/calls").status_code == 200
    listed = callpipe(stack, "api-key", "list", "--business", "revoked-co")
    assert label in listed
    assert key not in listed

    assert "1 status page session(s) ended" in callpipe(stack, "api-key", "revoke", label)
    assert with_cookie(stack, stolen).get("/api/calls").status_code == 401
    assert browser.get("/api/calls").status_code == 401
    again = browser.post("/login", data={"api_key": key})
    assert again.headers["location"] == "/login?failed=1"
    revoked_row = callpipe(stack, "api-key", "list", "--business", "revoked-co").splitlines()[-1]
    assert label in revoked_row
    assert revoked_row.split()[3] != "-"  # the revocation's time


def test_an_expired_session_is_refused_and_removed(stack: RunningStack) -> None:
    key = callpipe(stack, "api-key", "--business", "expiring-co").strip()
    browser = signed_in(stack, key)
    assert browser.get("/api/calls").status_code == 200
    in_database(
        stack,
        update(player_sessions)
        .where(player_sessions.c.business_id == "expiring-co")
        .values(expires_at=datetime(2000, 1, 1, tzinfo=UTC)),
    )
    assert browser.get("/api/calls").status_code == 401
    assert sessions_of(stack, "expiring-co") == 0  # deleted when met
    assert signed_in(stack, key).get("/api/calls").status_code == 200


def test_a_cross_site_write_with_a_valid_cookie_is_refused(stack: RunningStack) -> None:
    sid = stack.place_call("plumber_boston", media_error_status=403, media_error_count=1)
    assert stack.wait_for_call(sid)["recording_status"] == "failed"
    browser = signed_in(stack, own_key(stack))
    cookie = browser.cookies[COOKIE]
    forgeries = [
        {"Origin": EVIL},
        {"Origin": EVIL, "Referer": f"{stack.player}/"},
        {"Origin": "null", "Referer": f"{stack.player}/"},
        {"Referer": f"{EVIL}/attack.html"},
        {},  # neither Origin nor Referer
    ]
    writes = [
        ("DELETE", f"/api/calls/{sid}"),
        ("POST", f"/api/calls/{sid}/retry/recording"),
        ("POST", f"/api/recordings/{sid}/prepare"),
        ("POST", "/logout"),
    ]
    for headers in forgeries:
        attacker = with_cookie(stack, cookie, **headers)
        for method, path in writes:
            assert attacker.request(method, path).status_code == 403, (method, path, headers)

    after = browser.get(f"/api/calls/{sid}")  # the session lives on, the call is untouched
    assert after.status_code == 200
    assert after.json()["recording_status"] == "failed"
    assert after.json()["recording_attempt"] == 1
    from_the_page = with_cookie(stack, cookie, Referer=f"{stack.player}/")  # no Origin sent
    assert from_the_page.post(f"/api/calls/{sid}/retry/recording").status_code == 202
    assert browser.delete(f"/api/calls/{sid}").status_code == 204


def test_a_login_from_another_site_is_refused(stack: RunningStack) -> None:
    """Login CSRF: a foreign page must not sign the victim's browser in to its own key."""
    business = f"login-csrf-{secrets.token_hex(4)}"
    key = callpipe(stack, "api-key", "--business", business).strip()
    for headers in ({"Origin": EVIL}, {"Referer": f"{EVIL}/"}, {"Origin": "null"}, {}):
        victim = httpx.Client(base_url=stack.player, timeout=10, headers=headers)
        refused = victim.post("/login", data={"api_key": key})
        assert refused.status_code == 403, headers
        assert "set-cookie" not in refused.headers
        assert victim.get("/api/calls").status_code == 401
    assert sessions_of(stack, business) == 0


def test_openapi_is_published(stack: RunningStack) -> None:
    paths = httpx.get(f"{stack.player}/openapi.json").json()["paths"]
    for path in (
        "/api/calls",
        "/api/calls/{call_sid}",
        "/api/recordings/{call_sid}/file",
        "/api/recordings/{call_sid}/prepare",
        "/api/calls/{call_sid}/retry/{stage}",
        "/api/calls/{call_sid}/export",
        "/api/settings",
        "/api/business",
    ):
        assert path in paths


def test_schemathesis_finds_no_server_error(stack: RunningStack) -> None:
    """Generated requests from the published OpenAPI document: never a 5xx. The data
    settings it may save are put back as they were, for the tests that follow; the whole
    business's deletion is left out (a generated `confirm` could be the business's id)."""
    key = stack.api.headers["Authorization"]
    before = stack.api.get("/api/settings").json()
    try:
        run = subprocess.run(
            [
                str(Path(sys.executable).parent / "schemathesis"),
                "run",
                f"{stack.player}/openapi.json",
                "--header",
                f"Authorization: {key}",
                "--checks",
                "not_a_server_error",
                "--max-examples",
                "30",
                "--exclude-path",
                "/api/business",
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
    finally:
        stack.api.put("/api/settings", json=before)
    assert run.returncode == 0, run.stdout[-6000:]
    assert " passed" in run.stdout


@pytest.fixture
def empty_database(stack: RunningStack, tmp_path: Path) -> Iterator[str]:
    """A new database of the stack's kind: a SQLite file, or a PostgreSQL database dropped
    after the test."""
    if not stack.database_url.startswith("postgresql"):
        yield f"sqlite+aiosqlite:///{tmp_path / 'rebuilt.db'}"
        return
    with fresh_database() as url:
        yield url


def test_rebuilding_from_the_topics_reaches_the_live_state(
    stack: RunningStack, call: dict[str, Any], empty_database: str
) -> None:
    """Runs last in this module, after retries, failures and a deletion have happened."""
    rebuilt_url = empty_database
    done = subprocess.run(
        [sys.executable, "-m", "callpipe", "rebuild-status", "--database-url", rebuilt_url],
        env=stack.env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.startswith("applied ")
    live_url = stack.database_url

    async def rows(url: str) -> dict[str, CallState]:
        engine = create_engine(url)
        try:
            states, _ = await CallRepository(engine).page(10_000, 0)
        finally:
            await engine.dispose()
        return {s.call_sid: s for s in states}

    live, rebuilt = asyncio.run(rows(live_url)), asyncio.run(rows(rebuilt_url))
    final = {sid for sid, state in live.items() if state.status in ("completed", "failed")}
    assert call["call_sid"] in final
    assert len(final) >= 2  # this module made at least the call and the retried one
    for sid in final:
        assert rebuilt[sid] == live[sid]
    again = subprocess.run(
        [sys.executable, "-m", "callpipe", "rebuild-status", "--database-url", rebuilt_url],
        env=stack.env,
        capture_output=True,
        text=True,
    )
    assert again.returncode == 1
    assert "empty" in again.stderr


def test_a_poisoned_row_never_hands_out_another_business_s_objects(
    stack: RunningStack, call: dict[str, Any], other_business: httpx.Client
) -> None:
    """A status row of `other-business` whose keys point at the first business's recording
    and transcript (as a forged event applied before decoding checked it would leave)."""
    sid = "CA" + "5" * 32
    envelope = {
        "call_sid": sid,
        "business_id": "other-business",
        "correlation_id": call_correlation_id(sid),
    }
    poison = [
        CallStarted(**envelope, account_sid="AC" + "0" * 32),
        RecordingDownloaded(
            **envelope,
            recording_sid="RE" + "5" * 32,
            object_key=call["recording_key"],
            content_type="audio/wav",
            size_bytes=len(SAMPLE),
            sha256="0" * 64,
        ),
        TranscriptReady(**envelope, outcome="transcribed", transcript_key=call["transcript_key"]),
    ]

    async def apply() -> None:
        engine = create_engine(stack.database_url)
        repository = CallRepository(engine)
        for event in poison:
            await repository.apply(event)
        repository.close()
        await engine.dispose()

    asyncio.run(apply())
    assert other_business.get(f"/api/calls/{sid}").json()["recording_key"] == call["recording_key"]
    for method in ("GET", "HEAD"):
        refused = other_business.request(method, f"/api/recordings/{sid}/file")
        assert refused.status_code == 404
        assert "location" not in refused.headers
    assert "X-Amz" not in other_business.get(f"/api/recordings/{sid}/file").text
    assert other_business.get(f"/api/calls/{sid}/transcript").status_code == 404
    assert other_business.delete(f"/api/calls/{sid}").status_code == 204
    assert stack.api.get(file_url(call), follow_redirects=False).status_code == 307
    assert stack.api.get(f"/api/calls/{call['call_sid']}/transcript").status_code == 200
