"""The downloader against the Twilio simulator, a real broker and a real S3 server."""

from __future__ import annotations

import hashlib
import io
import uuid
import wave
from contextlib import AsyncExitStack
from itertools import pairwise

from aiokafka.partitioner import DefaultPartitioner

from callpipe.bootstrap import downloader_handler
from callpipe.twilio_simulator.samples import sample_path
from shared.events import RecordingCompleted, derived_event_id
from shared.settings import Settings
from shared.storage import ABORT_UPLOADS_RULE
from tests.support.downloader import (
    add_recording,
    collect,
    downloaded,
    media_requests,
    publish,
    recording_event,
    running_downloader,
    terminal_failures,
)

SAMPLE = sample_path("plumber_boston").read_bytes()


async def test_media_missing_for_5_seconds_is_stored_once_with_the_right_bytes(
    settings: Settings,
) -> None:
    async with running_downloader(settings) as store:
        event = recording_event(add_recording(settings, media_delay_seconds=5))
        await publish(settings, event)
        seen = await collect(settings, {event.call_sid}, lambda s: bool(downloaded(s)))
        [result] = downloaded(seen)
        stored = await store.get(result["object_key"])
    assert stored == SAMPLE
    with wave.open(io.BytesIO(stored)) as audio:
        assert audio.getnchannels() == 2  # caller and agent stay on their own channels
    assert result["sha256"] == hashlib.sha256(SAMPLE).hexdigest()
    assert result["size_bytes"] == len(SAMPLE)
    assert result["content_type"] == "audio/wav"
    assert result["channels"] == 2
    assert result["object_key"].startswith(f"acme/{event.occurred_at.date().isoformat()}/")
    requests = media_requests(settings, event.recording_sid)
    statuses = [r["status"] for r in requests]
    assert statuses.count(200) == 1
    assert statuses[0] == 404  # it was not ready at first, and the downloader waited
    # After each 404 at least a second, though the stage's own backoff starts far below it.
    gaps = [later["started"] - earlier["started"] for earlier, later in pairwise(requests)]
    assert min(gaps) >= 1.0, f"asked again too soon after a 404: {gaps}"
    assert not terminal_failures(seen)


async def test_media_that_never_appears_fails_after_bounded_tries_and_others_flow(
    settings: Settings,
) -> None:
    settings = settings.updated(retry={"max_attempts": 3})
    missing = recording_event(add_recording(settings, media_delay_seconds=10**6))
    present = recording_event(add_recording(settings))
    while _partition(present.call_sid, settings) != _partition(missing.call_sid, settings):
        present = recording_event(add_recording(settings))  # the same partition, behind it
    async with running_downloader(settings):
        await publish(settings, missing, present)
        seen = await collect(
            settings,
            {missing.call_sid, present.call_sid},
            lambda s: bool(downloaded(s)) and bool(terminal_failures(s)),
        )
    [failure] = terminal_failures(seen)
    assert failure["call_sid"] == missing.call_sid
    assert failure["tries"] == 3
    assert "404" in failure["error"]
    missing_requests = media_requests(settings, missing.recording_sid)
    assert len(missing_requests) == 3
    [present_download] = media_requests(settings, present.recording_sid)
    assert present_download["ended"] < missing_requests[-1]["started"]  # did not wait for it
    assert [d["call_sid"] for d in downloaded(seen)] == [present.call_sid]
    dead = [s for s in seen if s.topic == "downloader.dlq"]
    assert [d.value["call_sid"] for d in dead] == [missing.call_sid]
    assert b"404" in dead[0].headers["dlq.reason"]


def _partition(call_sid: str, settings: Settings) -> int:
    partitions = list(range(settings.kafka.partitions))
    return int(DefaultPartitioner()(call_sid.encode(), partitions, partitions))


async def test_rate_limit_retry_after_is_honoured(settings: Settings) -> None:
    recording = add_recording(settings, rate_limited_tries=1, retry_after_seconds=2)
    event = recording_event(recording)
    async with running_downloader(settings):
        await publish(settings, event)
        await collect(settings, {event.call_sid}, lambda s: bool(downloaded(s)))
    first, second = media_requests(settings, event.recording_sid)
    assert (first["status"], second["status"]) == (429, 200)
    # The backoff alone would have waited ~0.2 s; the provider asked for 2 s.
    assert second["started"] - first["started"] >= 2.0


async def test_the_same_event_ten_times_stores_one_object_and_publishes_once(
    settings: Settings,
) -> None:
    """Ten copies of one event (a send the broker stored ten times): one fetch, one object,
    one recording.downloaded. A retry of it, behind the copies on the call's partition,
    marks the point where every copy was read."""
    event = recording_event(add_recording(settings))
    retry = event.model_copy(
        update={"event_id": uuid.uuid5(event.event_id, "retry.2"), "attempt": 2}
    )
    async with running_downloader(settings) as store:
        await publish(settings, *[event] * 10, retry)
        seen = await collect(
            settings, {event.call_sid}, lambda s: any(d["attempt"] == 2 for d in downloaded(s))
        )
        prefix = f"acme/{event.occurred_at.date().isoformat()}/{event.call_sid}/"
        keys = await store.keys(prefix)
    assert [d["event_id"] for d in downloaded(seen) if d["attempt"] == 1] == [
        str(derived_event_id(event.event_id, "recording.downloaded"))
    ]
    assert keys == [
        f"{prefix}{event.recording_sid}.wav",
        f"{prefix}{event.recording_sid}.wav.manifest.json",
    ]
    # The retry found the stored recording and its manifest: nothing fetched again.
    assert [r["status"] for r in media_requests(settings, event.recording_sid)] == [200]


async def test_a_job_archived_before_a_crash_is_published_again_without_fetching(
    settings: Settings,
) -> None:
    """The upload finished, then the process died before publishing and committing: the
    redelivered event finds the archive and publishes the same event id."""
    event = recording_event(add_recording(settings))
    async with running_downloader(settings) as store, AsyncExitStack() as crashed:
        handler = await downloader_handler(settings, store, crashed)
        [before_crash] = await handler(event)
        await publish(settings, event)
        seen = await collect(settings, {event.call_sid}, lambda s: bool(downloaded(s)))
    [after_restart] = downloaded(seen)
    assert after_restart["event_id"] == str(before_crash.event_id)
    assert [r["status"] for r in media_requests(settings, event.recording_sid)] == [200]


def _most_at_once(intervals: list[tuple[float, float]]) -> int:
    moments = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    running = most = 0
    for _, change in moments:  # an end sorts before a start at the same instant
        running += change
        most = max(most, running)
    return most


async def test_a_busy_business_keeps_to_its_slots_and_does_not_starve_another(
    settings: Settings,
) -> None:
    slots = 2
    settings = settings.updated(downloader={"slots_per_business": slots})
    rate = {"bytes_per_second": len(SAMPLE) / 0.5}  # each download takes about half a second
    async with running_downloader(settings):
        busy = [recording_event(add_recording(settings, **rate), "busy") for _ in range(20)]
        quiet = [recording_event(add_recording(settings, **rate), "quiet") for _ in range(2)]
        await publish(settings, *busy, *quiet)  # the quiet business queued behind the busy one
        await collect(
            settings,
            {e.call_sid for e in busy + quiet},
            lambda s: len(downloaded(s)) == 22,
            within_seconds=120,
        )

    def downloads(events: list[RecordingCompleted]) -> list[tuple[float, float]]:
        """Each media download the simulator served in full, as (started, ended)."""
        return [
            (r["started"], r["ended"])
            for e in events
            for r in media_requests(settings, e.recording_sid)
            if r["status"] == 200
        ]

    busy_downloads, quiet_downloads = downloads(busy), downloads(quiet)
    assert (len(busy_downloads), len(quiet_downloads)) == (20, 2)
    at_once = _most_at_once(busy_downloads)
    assert at_once <= slots, f"the media server served {at_once} of one business at once"
    assert at_once == slots, "the busy business never used all its slots at once"
    assert _most_at_once(quiet_downloads) <= slots
    # Not starved: the quiet business's downloads ended while the busy one had most of its
    # twenty still to go, though queued behind them.
    busy_ended_first = sum(end < max(e for _, e in quiet_downloads) for _, end in busy_downloads)
    assert busy_ended_first < 5, (
        f"the quiet business waited for {busy_ended_first} downloads of the busy one"
    )


async def test_the_downloader_starting_puts_the_rule_aborting_incomplete_uploads(
    settings: Settings,
) -> None:
    settings = settings.updated(s3={"abort_incomplete_uploads_after_days": 3})
    async with running_downloader(settings) as store:
        answer = await store._client.get_bucket_lifecycle_configuration(Bucket=store.bucket)
    [rule] = [r for r in answer["Rules"] if r["ID"] == ABORT_UPLOADS_RULE]
    assert rule["AbortIncompleteMultipartUpload"] == {"DaysAfterInitiation": 3}
