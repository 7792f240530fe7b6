"""The whole path through real processes: `callpipe up` starts the S3 server, the broker, the
Twilio simulator and the five services; calls go through exactly as Twilio would place them.

Runs on ports of its own so it does not collide with a `callpipe up` already running.
"""

from __future__ import annotations

import asyncio
import io
import json
import re
import secrets
import time
import wave
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from twilio.request_validator import RequestValidator

from callpipe.twilio_simulator.samples import sample_path
from shared.call_keys import Envelopes
from shared.events import AnyEvent, CallStarted, SummaryReady, Topic
from shared.kafka.connection import client_options
from shared.kafka.topics import all_topics, records_to_end, replay
from tests.support.stack import RunningStack, leftover_processes

pytestmark = pytest.mark.stack


@pytest.fixture(scope="module")
def plumber_call(stack: RunningStack) -> dict[str, Any]:
    return stack.wait_for_call(stack.place_call("plumber_boston"))


def test_a_call_goes_through_every_stage(plumber_call: dict[str, Any]) -> None:
    assert plumber_call["status"] == "completed", json.dumps(plumber_call, indent=2)
    assert plumber_call["recording_status"] == "completed"
    assert plumber_call["transcript_status"] == "completed"
    assert plumber_call["summary_status"] == "completed"
    assert plumber_call["lead_service"] == "plumbing"
    assert plumber_call["lead_city"] == "Boston"
    # The simulator answers 404 for the media's first moments: the downloader retried.
    assert plumber_call["recording_tries"] >= 2
    stages = [(e["event_type"], e["stage"]) for e in plumber_call["timeline"]]
    assert stages.index(("call.started", None)) < stages.index(("recording.downloaded", None))
    assert stages.index(("transcript.ready", None)) < stages.index(("summary.ready", None))


def test_the_stored_audio_is_the_recording_byte_for_byte(
    stack: RunningStack, plumber_call: dict[str, Any]
) -> None:
    url = f"/api/recordings/{plumber_call['call_sid']}/file"
    response = stack.api.get(url)
    assert response.status_code == 200
    assert response.headers["content-type"] == "audio/wav"
    assert response.content == sample_path("plumber_boston").read_bytes()
    head = stack.api.head(url)
    assert head.status_code == 200
    assert int(head.headers["content-length"]) == len(response.content)


def test_the_transcript_holds_the_words_by_speaker(plumber_call: dict[str, Any]) -> None:
    preview = plumber_call["transcript_preview"].lower()
    for word in ("kitchen", "plumber", "boston", "thank you for calling", "tomorrow morning"):
        assert word in preview, preview
    assert preview.startswith("caller:")
    assert "agent:" in preview


def test_silence_ends_as_no_speech(stack: RunningStack) -> None:
    call = stack.wait_for_call(stack.place_call("silence"))
    assert call["status"] == "completed"
    assert call["transcript_status"] == "no_speech"
    assert call["summary_status"] == "completed"
    assert call["lead_service"] is None


def test_an_absent_recording_ends_the_call_instead_of_leaving_it_pending(
    stack: RunningStack,
) -> None:
    call = stack.wait_for_call(stack.place_call("plumber_boston", recording_status="absent"))
    assert call["recording_status"] == "no_recording"
    assert call["transcript_status"] == "skipped"
    assert "absent" in call["last_error"]
    response = stack.api.get(f"/api/recordings/{call['call_sid']}/file")
    assert response.status_code == 404


def test_the_player_answers_202_while_the_recording_is_on_its_way_then_409_until_redacted(
    stack: RunningStack,
) -> None:
    call_sid = stack.place_call("plumber_boston", media_delay_seconds=8)
    url = f"/api/recordings/{call_sid}/file"
    deadline = time.monotonic() + 10
    response = stack.api.get(url)
    while response.status_code == 404 and time.monotonic() < deadline:
        time.sleep(0.2)  # until the voice webhook's event is projected
        response = stack.api.get(url)
    assert response.status_code == 202
    assert response.headers["retry-after"].isdigit()
    answers: list[tuple[int, str | None]] = []
    deadline = time.monotonic() + 120
    while response.status_code != 200 and time.monotonic() < deadline:
        time.sleep(0.1)
        response = stack.api.get(url)
        status = response.json().get("status") if response.status_code != 200 else None
        answers.append((response.status_code, status))
        if response.status_code == 409:
            assert response.headers["retry-after"].isdigit()
    assert response.status_code == 200, answers
    # Downloaded, then being transcribed: played only once redacted.
    assert (409, "redacting") in answers
    assert set(answers) <= {(202, "pending"), (202, "processing"), (409, "redacting"), (200, None)}
    assert stack.wait_for_call(call_sid)["status"] == "completed"
    assert stack.api.get(url).status_code == 200


# Three digits or more said together, whatever separates them.
DIGITS_TOGETHER = re.compile(r"\d(?:[\s,.-]*\d){2,}")


def wav_samples(wav: bytes) -> np.ndarray:
    with wave.open(io.BytesIO(wav), "rb") as recording:
        frames = recording.readframes(recording.getnframes())
        return np.frombuffer(frames, "<i2").reshape(-1, recording.getnchannels())


def test_a_card_and_a_phone_number_read_out_are_redacted_wherever_the_call_is_shown(
    stack: RunningStack,
) -> None:
    """The held-out call (never used to tune the detectors), for a business that chose to
    redact phone numbers as well as cards (and, always, every long number no check names)."""
    chosen = {"audio_retention_days": None, "call_retention_days": None}
    chosen |= {"delete_from_twilio": False}
    assert stack.api.put("/api/settings", json=chosen | {"redact": ["card", "phone"]}).is_success
    try:
        call = stack.wait_for_call(stack.place_call("locksmith_chicago_card"))
    finally:
        stack.api.put("/api/settings", json=chosen | {"redact": ["card"]})
    assert call["status"] == "completed", json.dumps(call, indent=2)
    sid = call["call_sid"]
    transcript = stack.api.get(f"/api/calls/{sid}/transcript").json()
    shown = [
        call["transcript_preview"],
        call["summary"],
        call["lead"]["callback_number"] or "",
        call["lead"]["caller_name"] or "",
        *(evidence["quote"] for evidence in call["lead"]["evidence"].values()),
        *(u["text"] for u in transcript["utterances"]),
        *(s["text"] for s in transcript["segments"]),
    ]
    for text in shown:
        assert not DIGITS_TOGETHER.search(text), text
    assert len(re.findall(r"\[(?:card|phone|number)\]", call["transcript_preview"])) >= 2

    audio = transcript["redaction"]["audio"]
    assert audio["spans"] and {span["channel"] for span in audio["spans"]} == {0}
    [ready] = [e for e in call["timeline"] if e["event_type"] == "transcript.ready"]
    assert f"audio: {len(audio['spans'])} span" in ready["detail"]
    assert "replaced by a tone (channel 1 " in ready["detail"]

    played = stack.api.get(f"/api/recordings/{sid}/file", follow_redirects=True)
    assert played.status_code == 200
    original = sample_path("locksmith_chicago_card").read_bytes()
    assert len(played.content) == len(original) and played.content != original
    before, after = wav_samples(original), wav_samples(played.content)
    inside = np.zeros(len(before), dtype=bool)
    for span in audio["spans"]:
        inside[int(span["start"] * 8000) : int(np.ceil(span["end"] * 8000))] = True
    assert np.array_equal(after[~inside], before[~inside])
    assert np.array_equal(after[:, 1], before[:, 1])
    assert not np.array_equal(after[inside, 0], before[inside, 0])


def test_unknown_call_is_404(stack: RunningStack) -> None:
    assert stack.api.get("/api/calls/CAnope").status_code == 404
    response = stack.api.get("/api/recordings/CAnope/file")
    assert response.status_code == 404


def new_call_sid() -> str:
    return f"CA{secrets.token_hex(16)}"


def post_voice_webhook(
    stack: RunningStack, call_sid: str, auth_token: str | None, from_number: str = "+15550001"
) -> httpx.Response:
    """Twilio's voice webhook for `call_sid`, signed with `auth_token` (None: unsigned)."""
    params = {
        "CallSid": call_sid,
        "AccountSid": stack.settings.twilio.account_sid,
        "From": from_number,
        "To": "+15550002",
    }
    url = f"{stack.ingress}/twilio/voice"
    headers = {}
    if auth_token is not None:
        headers["X-Twilio-Signature"] = RequestValidator(auth_token).compute_signature(url, params)
    return httpx.post(url, data=params, headers=headers, timeout=5)


def wait_until_projected(stack: RunningStack, call_sid: str) -> dict[str, Any]:
    deadline = time.monotonic() + 15
    response = stack.api.get(f"/api/calls/{call_sid}")
    while response.status_code == 404 and time.monotonic() < deadline:
        time.sleep(0.2)
        response = stack.api.get(f"/api/calls/{call_sid}")
    assert response.status_code == 200, f"{call_sid} not projected: {response.text}"
    return dict(response.json())


def call_sids_on_the_call_started_topic(stack: RunningStack) -> list[str]:
    """The call SID of every `call.started` on the broker, read to the end by a consumer of
    the test's own. The topic has one partition, as in every `callpipe up`: a webhook stored
    before another is published, and projected, before it."""

    async def read() -> list[str]:
        consumer = AIOKafkaConsumer(**client_options(stack.settings.kafka))
        await consumer.start()
        try:
            await consumer.topics()  # loads the metadata of every topic
            partitions = consumer.partitions_for_topic(Topic.CALL_STARTED.value)
        finally:
            await consumer.stop()
        assert partitions == {0}
        return [
            e.call_sid
            async for e in replay(
                stack.settings.kafka, [Topic.CALL_STARTED.value], Envelopes.of(stack.settings)
            )
        ]

    return asyncio.run(read())


def test_a_forged_webhook_is_refused_and_publishes_nothing(stack: RunningStack) -> None:
    forged_sid, genuine_sid = new_call_sid(), new_call_sid()
    assert post_voice_webhook(stack, forged_sid, None).status_code == 403
    assert post_voice_webhook(stack, forged_sid, "not-the-auth-token").status_code == 403
    # A genuine webhook after the forged ones: once its call is projected, a forged call let
    # through would be on the topic and in the status table too.
    token = stack.settings.twilio.auth_token.get_secret_value()
    assert post_voice_webhook(stack, genuine_sid, token).status_code == 200
    wait_until_projected(stack, genuine_sid)
    published = call_sids_on_the_call_started_topic(stack)
    assert genuine_sid in published
    assert forged_sid not in published
    assert stack.api.get(f"/api/calls/{forged_sid}").status_code == 404


def test_the_published_default_auth_token_signs_nothing(stack: RunningStack) -> None:
    """`callpipe up` gave this stack a Twilio auth token of its own: a webhook signed with the
    simulator's published default is refused like any forgery."""
    params = {"CallSid": "CAdefaulttoken", "AccountSid": stack.settings.twilio.account_sid}
    url = f"{stack.ingress}/twilio/voice"
    signature = RequestValidator("local-simulator-auth-token").compute_signature(url, params)
    response = httpx.post(url, data=params, headers={"X-Twilio-Signature": signature}, timeout=5)
    assert response.status_code == 403


def test_a_redelivered_webhook_changes_nothing(stack: RunningStack) -> None:
    token = stack.settings.twilio.auth_token.get_secret_value()
    call_sid, later_sid = new_call_sid(), new_call_sid()
    for _ in range(3):
        response = post_voice_webhook(stack, call_sid, token)
        assert response.status_code == 200
        assert "<Start><Recording" in response.text
    # Once a call whose webhook came after the three deliveries is projected, so is every
    # event the deliveries published.
    assert post_voice_webhook(stack, later_sid, token).status_code == 200
    wait_until_projected(stack, later_sid)
    timeline = stack.api.get(f"/api/calls/{call_sid}").json()["timeline"]
    assert [e["event_type"] for e in timeline] == ["call.started"]


def test_restart_keeps_calls_and_audio_and_leaves_no_process(
    stack: RunningStack, plumber_call: dict[str, Any]
) -> None:
    secrets = {path.name: path.read_text() for path in (stack.data_dir / "secrets").iterdir()}
    assert stack.stop() == 0
    assert leftover_processes(stack.data_dir) == []
    stack.start()
    assert {path.name: path.read_text() for path in (stack.data_dir / "secrets").iterdir()} == (
        secrets
    )
    listed = stack.api.get("/api/calls", params={"limit": 100}).json()
    assert plumber_call["call_sid"] in [c["call_sid"] for c in listed["calls"]]
    audio = stack.api.get(f"/api/recordings/{plumber_call['call_sid']}/file")
    assert audio.status_code == 200
    assert audio.content == sample_path("plumber_boston").read_bytes()
    # The broker kept its log and offsets: a call placed after the restart goes through too.
    assert stack.wait_for_call(stack.place_call("electrician_denver"))["lead_city"] == "Denver"


def test_a_recording_that_cannot_be_decoded_fails_with_the_reason(
    stack: RunningStack, tmp_path: Path
) -> None:
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x00\x10\x00\x00WAVEfmt " + bytes(range(256)) * 16)
    call = stack.wait_for_call(stack.place_call(str(corrupt)))
    assert call["status"] == "failed"
    assert call["recording_status"] == "completed"
    assert call["transcript_status"] == "failed"
    assert call["transcript_tries"] == 1  # terminal at once: no retry loop
    assert "cannot decode audio" in call["last_error"]


def test_an_outbound_call_is_labelled_by_its_direction(stack: RunningStack) -> None:
    """Twilio's recording callback does not say the direction: the callback URL callpipe gave
    carries it to the transcriber, which labels the channels for an outbound call."""
    call = stack.wait_for_call(
        stack.place_call(
            "plumber_boston",
            direction="outbound-api",
            from_number="+15005550001",
            to_number="+15005550006",
        )
    )
    assert call["status"] == "completed", call
    transcript = stack.api.get(f"/api/calls/{call['call_sid']}/transcript").json()
    assert {u["speaker"] for u in transcript["utterances"]} == {"callee", "agent"}
    assert transcript["utterances"][0]["speaker"] == "callee"


def raw_records(stack: RunningStack) -> list[ConsumerRecord[bytes, bytes]]:
    """Every message on every topic and dead-letter topic, from the beginning, as stored."""

    async def read() -> list[ConsumerRecord[bytes, bytes]]:
        consumer = AIOKafkaConsumer(**client_options(stack.settings.kafka), group_id=None)
        await consumer.start()
        try:
            await consumer.topics()
            partitions = [
                TopicPartition(topic, partition)
                for topic in all_topics()
                for partition in sorted(consumer.partitions_for_topic(topic) or ())
            ]
            consumer.assign(partitions)
            return [record async for record in records_to_end(consumer, partitions)]
        finally:
            await consumer.stop()

    return asyncio.run(read())


def opened_with_fresh_keys(stack: RunningStack, raw: list[bytes]) -> list[AnyEvent | None]:
    """The events opened as a new consumer holding the wrapping key would (nothing cached)."""

    async def open_all() -> list[AnyEvent | None]:
        envelopes = Envelopes.of(stack.settings)
        try:
            return [await envelopes.read(value) for value in raw]
        finally:
            await envelopes.close()

    return asyncio.run(open_all())


def test_no_personal_data_is_on_any_topic_and_a_deleted_calls_events_no_longer_open(
    stack: RunningStack,
) -> None:
    call_sid = stack.place_call("plumber_boston")
    call = stack.wait_for_call(call_sid)
    assert call["status"] == "completed", call
    transcript = stack.api.get(f"/api/calls/{call_sid}/transcript").json()
    said = [u["text"] for u in transcript["utterances"] if len(u["text"]) >= 12]
    personal = [call["from_number"], call["transcript_preview"], call["summary"], *said]
    lead = call["lead"] or {}
    personal += [e["quote"] for e in lead.get("evidence", {}).values() if len(e["quote"]) >= 12]
    personal += [lead[name] for name in ("caller_name", "callback_number") if lead.get(name)]
    assert call["from_number"] and len(said) >= 2 and call["summary"], call

    records = raw_records(stack)
    of_the_call = [r for r in records if r.key == call_sid.encode()]
    topics = {r.topic for r in of_the_call}
    assert {"call.started", "call.status", "transcript.ready", "summary.ready"} <= topics
    for record in records:
        stored = record.value + b"".join(value for _, value in record.headers or ())
        for value in personal:
            assert value.encode() not in stored, (record.topic, value)
            assert json.dumps(value)[1:-1].encode() not in stored, (record.topic, value)
    sealed = [r.value for r in of_the_call if b'"sealed"' in r.value]
    assert len(sealed) >= 4
    before = opened_with_fresh_keys(stack, sealed)
    started = [e for e in before if isinstance(e, CallStarted)]
    assert started and all(e.from_number == call["from_number"] for e in started)
    summaries = [e for e in before if isinstance(e, SummaryReady)]
    assert summaries and summaries[-1].summary == call["summary"]

    assert stack.api.delete(f"/api/calls/{call_sid}").status_code == 204

    # Every copy is still on the broker, sealed, and no longer opens.
    still_there = [r.value for r in raw_records(stack) if r.key == call_sid.encode()]
    assert set(sealed) <= set(still_there)
    assert opened_with_fresh_keys(stack, sealed) == [None] * len(sealed)
    assert [
        e.call_sid
        for e in asyncio.run(replayed(stack, [Topic.CALL_STARTED.value]))
        if e.call_sid == call_sid
    ] == []


async def replayed(stack: RunningStack, topics: list[str]) -> list[AnyEvent]:
    envelopes = Envelopes.of(stack.settings)
    try:
        return [e async for e in replay(stack.settings.kafka, topics, envelopes)]
    finally:
        await envelopes.close()
