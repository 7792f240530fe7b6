"""What a business can ask of the data held about its calls, through the player's app
(in-process, on a SQLite file and a real S3 server, with the Twilio simulator on a real
socket): a call's export, a call's and the whole business's deletion, Twilio's copy of the
recordings deleted when the business chose so, and the timeline entry a settings change
leaves on the calls on their way."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
from fastapi import FastAPI, Response
from typer.testing import CliRunner

from callpipe import cli
from callpipe.twilio_simulator import create_app as twilio_simulator_app
from callpipe.twilio_simulator.samples import sample_path
from callpipe.twilio_simulator.simulator import SimulatedRecording, TwilioSimulator
from services.player.config import PlayerConfig
from services.player.data_settings import DataSettings
from services.player.deletion import Deleter
from services.player.http.main import create_app
from services.player.http.state import PlayerResources, PlayerState
from services.player.repository import CallRepository, migrate
from shared.db import create_engine
from shared.events import CallDeleted, Event, Evidence, Lead
from shared.kafka.producer import EventProducer
from shared.settings import Settings
from shared.storage import ObjectStore, transcript_key
from shared.tombstones import tombstone_key
from shared.transcript import Redaction, Transcript, Utterance
from shared.twilio_rest import RecordingDeleter
from tests.support import events
from tests.support.ingress import serving
from tests.support.stack import module_s3_server

OWN = "http://player.example"
_OFFSET = int(os.environ.get("CALLPIPE_TEST_PORT_OFFSET", "0"))
TWILIO_PORT = 20190 + _OFFSET
DAY = events.T0.date().isoformat()
CHOSEN: dict[str, Any] = {
    "redact": ["card", "phone"],
    "audio_retention_days": 30,
    "call_retention_days": 90,
    "delete_from_twilio": False,
}


def sid(n: int) -> str:
    return f"CA{n:032x}"


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    with module_s3_server(tmp_path_factory.mktemp("data-rights-s3")) as settings:
        yield settings


@pytest.fixture
def settings(servers: Settings, tmp_path: Path) -> Settings:
    """The test's own SQLite file, the module's S3 server, Twilio at the simulator's port."""
    return servers.updated(
        data_dir=tmp_path,
        player={"public_url": OWN},
        twilio={"api_base_url": f"http://127.0.0.1:{TWILIO_PORT}"},
    )


@dataclass
class Published:
    """The player's producer, keeping what it is asked to publish; `fail_after` publications
    it raises, as a broker gone mid-way would."""

    events: list[Event] = field(default_factory=list)
    fail_after: int | None = None

    async def publish(self, event: Event) -> None:
        if self.fail_after is not None and len(self.events) >= self.fail_after:
            raise ConnectionError("broker gone")
        self.events.append(event)

    def deleted(self) -> list[str]:
        return [e.call_sid for e in self.events if isinstance(e, CallDeleted)]


@dataclass
class Player:
    app: FastAPI
    repository: CallRepository
    store: ObjectStore
    published: Published
    keys: dict[str, str]  # business → its API key
    deleter: Deleter

    def api(self, business: str | None = None) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {self.keys[business]}"} if business else {}
        return httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app), base_url=OWN, headers=headers
        )

    async def call(self, n: int, business: str = "acme", *, summarised: bool = True) -> str:
        """Call `n` of `business` through the pipeline: its recording and manifest in the
        dated folder, its transcript (a phone number redacted), its summary and lead."""
        call_sid = sid(n)
        audio = f"{business}/{DAY}/{call_sid}/RE{n}.wav"
        transcript = transcript_key(business, call_sid, f"RE{n}")
        await self.store.put(audio, b"RIFF....", "audio/wav")
        await self.store.put(f"{audio}.manifest.json", b"{}", "application/json")
        await self.store.put(transcript, transcript_of(call_sid, n), "application/json")
        pipeline: list[Any] = [
            events.call_started(call_sid, business, occurred_at=events.at(0)),
            events.recording_completed(
                call_sid, business, recording_sid=f"RE{n}", occurred_at=events.at(60)
            ),
            events.recording_downloaded(
                call_sid, business, recording_sid=f"RE{n}", object_key=audio
            ),
            events.transcript_ready(call_sid, business, transcript_key=transcript),
        ]
        if summarised:
            pipeline.append(events.summary_ready(call_sid, business, lead=LEAD))
        await self.repository.apply_batch(pipeline)
        return call_sid

    async def objects(self, business: str) -> list[str]:
        return await self.store.keys(f"{business}/")


LEAD = Lead(
    service="plumbing",
    city="Denver",
    confidence=0.8,
    evidence={"city": Evidence(confidence=0.9, quote="in Denver", start=1.0, end=2.0)},
)


def transcript_of(call_sid: str, n: int) -> bytes:
    return (
        Transcript(
            call_sid=call_sid,
            recording_sid=f"RE{n}",
            language="en",
            duration_seconds=4.0,
            speakers=["caller"],
            utterances=[
                Utterance(
                    speaker="caller",
                    start=0.0,
                    end=3.5,
                    text="my sink leaks in Denver, call me on [phone]",
                    confidence=0.9,
                    words=[],
                )
            ],
            model="hand-written",
            redaction=Redaction(kinds=["card", "number", "phone"], counts={"phone": 1}),
        )
        .model_dump_json()
        .encode()
    )


@pytest.fixture
async def player(settings: Settings, store: ObjectStore) -> AsyncIterator[Player]:
    for business in ("acme", "other"):  # the module's S3 server: what earlier tests left
        await store.delete_prefix(f"{business}/")
    await asyncio.to_thread(migrate, settings.database_url)
    engine = create_engine(settings.database_url)
    repository = CallRepository(engine)
    keys = {b: await repository.create_api_key(b, "test") for b in ("acme", "other")}
    published = Published()
    open_twilio = partial(
        RecordingDeleter,
        settings.twilio.account_sid,
        settings.twilio.auth_token.get_secret_value(),
        settings.twilio.api_base_url,
    )
    resources = PlayerResources(
        engine, repository, store, cast(EventProducer, published), [], open_twilio
    )
    app = create_app(PlayerConfig.of(settings), resources)
    state = cast(PlayerState, app.state.player)
    state.database_ready.set()  # the lifespan (broker, consumers) is not run
    try:
        yield Player(app, repository, store, published, keys, state.deleter)
    finally:
        repository.close()
        await engine.dispose()


@asynccontextmanager
async def twilio(settings: Settings) -> AsyncIterator[TwilioSimulator]:
    app = twilio_simulator_app(settings)
    async with serving(app, TWILIO_PORT):
        yield cast(TwilioSimulator, app.state.simulator)


def recorded(simulator: TwilioSimulator, call_sid: str, recording_sid: str) -> None:
    simulator.recordings[recording_sid] = SimulatedRecording(
        sample_path("plumber_boston"), time.monotonic(), call_sid=call_sid
    )


def left_at_twilio(simulator: TwilioSimulator) -> set[str]:
    return {sid for sid, recording in simulator.recordings.items() if not recording.deleted}


async def choose(player: Player, business: str, **changes: Any) -> None:
    async with player.api(business) as api:
        answer = await api.put("/api/settings", json={**CHOSEN, **changes})
    assert answer.status_code == 200, answer.text


# --- export ---------------------------------------------------------------------------------


async def test_the_export_holds_everything_about_the_call(player: Player) -> None:
    await choose(player, "acme")
    call_sid = await player.call(1)
    before = datetime.now(UTC)
    async with player.api("acme") as api:
        answer = await api.get(f"/api/calls/{call_sid}/export")
    assert answer.status_code == 200
    document = answer.json()
    assert document["schema_version"] == 1
    assert before <= datetime.fromisoformat(document["exported_at"]) <= datetime.now(UTC)
    call = document["call"]
    assert (call["call_sid"], call["business_id"]) == (call_sid, "acme")
    assert (call["from_number"], call["to_number"]) == ("+15551230000", "+15559870000")
    assert call["status"] == "completed"
    assert [e["event_type"] for e in document["timeline"]] == [
        "call.started",
        "recording.completed",
        "recording.downloaded",
        "transcript.ready",
        "summary.ready",
    ]
    assert document["transcript"]["utterances"][0]["text"].endswith("call me on [phone]")
    assert document["summary"] == "Caller asked for plumbing in Denver."
    assert document["lead"]["evidence"]["city"]["quote"] == "in Denver"
    assert document["data_settings"] == {
        "redacted": ["card", "number", "phone"],
        "current": CHOSEN,
    }
    assert document["audio"] == {
        "url": f"{OWN}/api/recordings/{call_sid}/file",
        "content_type": "audio/wav",
        "size_bytes": 123456,
        "duration_seconds": 42.5,
    }


async def test_a_call_not_yet_transcribed_exports_what_there_is(player: Player) -> None:
    call_sid = sid(2)
    await player.repository.apply(events.call_started(call_sid, "acme"))
    async with player.api("acme") as api:
        document = (await api.get(f"/api/calls/{call_sid}/export")).json()
    assert document["transcript"] is None
    assert document["audio"] is None
    assert (document["summary"], document["lead"]) == (None, None)
    assert document["data_settings"]["redacted"] is None
    assert document["data_settings"]["current"]["redact"] == ["card"]


async def test_another_business_s_call_a_deleted_one_and_no_key_are_refused(
    player: Player,
) -> None:
    call_sid = await player.call(3)
    async with player.api("other") as other, player.api() as anonymous:
        assert (await other.get(f"/api/calls/{call_sid}/export")).status_code == 404
        assert (await anonymous.get(f"/api/calls/{call_sid}/export")).status_code == 401
    async with player.api("acme") as api:
        assert (await api.delete(f"/api/calls/{call_sid}")).status_code == 204
        assert (await api.get(f"/api/calls/{call_sid}/export")).status_code == 404


# --- Twilio's copy --------------------------------------------------------------------------


async def test_a_call_deleted_by_a_business_that_chose_so_is_deleted_at_twilio(
    player: Player, settings: Settings
) -> None:
    await choose(player, "acme", delete_from_twilio=True)
    chosen, kept = await player.call(10), await player.call(11)
    async with twilio(settings) as simulator:
        recorded(simulator, chosen, "RE" + "a" * 32)
        recorded(simulator, chosen, "RE" + "b" * 32)  # an earlier recording of the call
        recorded(simulator, kept, "RE" + "c" * 32)
        async with player.api("acme") as api:
            assert (await api.delete(f"/api/calls/{chosen}")).status_code == 204
        assert left_at_twilio(simulator) == {"RE" + "c" * 32}
        deletes = [r for r in simulator.rest_requests if r.kind == "recording-delete"]
        assert [(r.call_sid, r.status) for r in deletes] == [(chosen, 204), (chosen, 204)]
    assert await player.repository.pending_twilio_deletions(10) == []
    assert not [key for key in await player.objects("acme") if chosen in key]


async def test_a_business_that_did_not_choose_so_leaves_twilio_s_copy(
    player: Player, settings: Settings
) -> None:
    await choose(player, "acme")
    call_sid = await player.call(12)
    async with twilio(settings) as simulator:
        recorded(simulator, call_sid, "RE" + "d" * 32)
        async with player.api("acme") as api:
            assert (await api.delete(f"/api/calls/{call_sid}")).status_code == 204
        assert left_at_twilio(simulator) == {"RE" + "d" * 32}
        assert simulator.rest_requests == []


async def test_twilio_out_of_reach_does_not_hold_the_deletion_back_and_a_retry_finishes_it(
    player: Player, settings: Settings
) -> None:
    await choose(player, "acme", delete_from_twilio=True)
    call_sid = await player.call(13)
    async with player.api("acme") as api:  # nothing listens on Twilio's port
        assert (await api.delete(f"/api/calls/{call_sid}")).status_code == 204
        assert (await api.get(f"/api/calls/{call_sid}")).status_code == 404
    assert await player.objects("acme") == []
    [(queued, business, error)] = await player.repository.pending_twilio_deletions(10)
    assert (queued, business) == (call_sid, "acme")
    assert error and "ClientConnectorError" in error
    async with twilio(settings) as simulator:
        recorded(simulator, call_sid, "RE" + "e" * 32)
        assert await player.deleter.retry_twilio() == 0
        assert left_at_twilio(simulator) == set()
    assert await player.repository.pending_twilio_deletions(10) == []


async def test_a_recording_twilio_no_longer_has_counts_as_deleted(settings: Settings) -> None:
    """Twilio lists a recording, then answers 404 to its deletion (deleted meanwhile)."""
    twilio_api = FastAPI()
    account = settings.twilio.account_sid
    listed = {"sid": "RE" + "f" * 32, "call_sid": sid(14), "account_sid": account}

    @twilio_api.get(f"/2010-04-01/Accounts/{account}/Recordings.json")
    async def recordings() -> dict[str, Any]:
        return {"recordings": [listed], "next_page_uri": None, "page": 0, "page_size": 50}

    @twilio_api.delete(f"/2010-04-01/Accounts/{account}/Recordings/{{recording}}")
    async def gone(recording: str) -> Response:
        body = {"code": 20404, "message": "not found", "status": 404}
        return Response(json.dumps(body), 404, media_type="application/json")

    async with serving(twilio_api, TWILIO_PORT):
        deleter = RecordingDeleter(account, "token", settings.twilio.api_base_url)
        try:
            assert await deleter.delete_of_call(sid(14)) == 0  # and no error
        finally:
            await deleter.close()


# --- the whole business ---------------------------------------------------------------------


async def test_a_business_is_deleted_whole_and_only_with_its_own_id_as_confirmation(
    player: Player, settings: Settings
) -> None:
    await choose(player, "acme", delete_from_twilio=True)
    await choose(player, "other")
    acme = [await player.call(n) for n in range(20, 25)]
    others = await player.call(25, "other")
    async with twilio(settings) as simulator:
        for n, call_sid in enumerate(acme):
            recorded(simulator, call_sid, f"RE{n:032x}")
        async with player.api("acme") as api:
            assert (await api.delete("/api/business")).status_code == 422
            refused = await api.delete("/api/business", params={"confirm": "other"})
            assert (refused.status_code, await player.objects("acme") != []) == (400, True)
            answer = await api.delete("/api/business", params={"confirm": "acme"})
            assert answer.status_code == 200
            assert answer.json() == {
                "business_id": "acme",
                "calls_deleted": 5,
                "api_keys_deleted": 1,
                "twilio_deletions_pending": 0,
            }
            assert (await api.get("/api/calls")).status_code == 401  # its key is gone
        assert left_at_twilio(simulator) == set()
    assert await player.objects("acme") == []
    for call_sid in acme:
        assert await player.store.head(tombstone_key("acme", call_sid)) is not None
        assert await player.repository.get(call_sid) is None
    assert sorted(player.published.deleted()) == acme
    assert await player.repository.api_keys("acme") == []
    assert (await player.repository.data_settings("acme")).model_dump() == {
        **CHOSEN,
        "redact": ["card"],
        "audio_retention_days": None,
        "call_retention_days": None,
    }
    async with player.api("other") as api:  # the other business keeps everything
        assert (await api.get(f"/api/calls/{others}")).status_code == 200
        assert (await api.get("/api/settings")).json() == CHOSEN
    assert await player.objects("other") != []


async def test_a_business_deletion_cut_short_is_finished_by_running_it_again(
    player: Player,
) -> None:
    calls = [await player.call(n) for n in range(30, 37)]
    player.published.fail_after = 4  # the broker goes during the fifth call
    with pytest.raises(ConnectionError):
        await player.deleter.delete_business("acme", batch=3)
    done = player.published.deleted()
    assert len(done) == 4
    left = [c for c in calls if await player.repository.get(c) is not None]
    assert left == calls[4:]  # the fifth's row stays: its deletion is not finished
    assert await player.repository.api_keys("acme") != []  # kept until the calls are gone

    player.published.fail_after = None
    deleted = await player.deleter.delete_business("acme", batch=3)
    assert deleted.calls_deleted == 3
    assert set(player.published.deleted()) == set(calls)
    assert await player.objects("acme") == []
    assert await player.repository.api_keys("acme") == []
    again = await player.deleter.delete_business("acme", batch=3)
    assert (again.calls_deleted, again.api_keys_deleted) == (0, 0)


@pytest.mark.usefixtures("restored_logging")
def test_the_command_asks_before_it_deletes_and_then_deletes(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`callpipe business delete`, on the deletion the wiring would open (here with a
    producer that keeps what it is asked to publish)."""
    published = Published()
    opened: list[str] = []

    async def business_with_a_call() -> None:
        await asyncio.to_thread(migrate, settings.database_url)
        engine = create_engine(settings.database_url)
        repository = CallRepository(engine)
        await repository.apply(events.call_started(sid(40), "acme"))
        await repository.create_api_key("acme", "test")
        repository.close()
        await engine.dispose()

    async def open_deleter(settings: Settings, stack: AsyncExitStack, *_: Any) -> Deleter:
        opened.append("deleter")
        engine = create_engine(settings.database_url)
        stack.push_async_callback(engine.dispose)
        store = ObjectStore(settings.s3)
        await store.start()
        stack.push_async_callback(store.stop)
        return Deleter(
            CallRepository(engine), store, cast(EventProducer, published), unreachable_twilio
        )

    def unreachable_twilio() -> RecordingDeleter:
        raise AssertionError("the business did not choose to delete at Twilio")

    asyncio.run(business_with_a_call())
    monkeypatch.setattr("callpipe.bootstrap.open_deleter", open_deleter)
    monkeypatch.setattr(cli, "local_settings", lambda: settings)
    runner = CliRunner()
    refused = runner.invoke(cli.app, ["business", "delete", "acme"], input="n\n")
    assert (refused.exit_code, opened) == (1, [])
    done = runner.invoke(cli.app, ["business", "delete", "acme"], input="y\n")
    assert done.exit_code == 0, done.output
    [answer] = [line for line in done.output.splitlines() if line.startswith("{")]
    assert json.loads(answer) == {
        "business_id": "acme",
        "calls_deleted": 1,
        "api_keys_deleted": 1,
        "twilio_deletions_pending": 0,
    }
    assert published.deleted() == [sid(40)]


# --- settings changes on the timeline -------------------------------------------------------


async def test_a_settings_change_is_on_the_timeline_of_the_calls_on_their_way(
    player: Player,
) -> None:
    await choose(player, "acme")
    waiting = sid(50)  # its recording not fetched yet
    await player.repository.apply(events.call_started(waiting, "acme"))
    transcribed = await player.call(51, summarised=False)
    finished = await player.call(52)
    await choose(player, "acme", redact=["card", "phone", "email"], call_retention_days=None)

    def changes(timeline: list[dict[str, Any]]) -> list[str]:
        return [e["detail"] for e in timeline if e["event_type"] == "settings.changed"]

    assert changes(await player.repository.timeline(waiting)) == [
        "data settings changed: redacting card, phone, email (was card, phone; applies to "
        "this call); call kept until deleted (was 90 days)"
    ]
    [line] = changes(await player.repository.timeline(transcribed))
    assert "not to this call, whose recording was fetched under the earlier choice" in line
    assert changes(await player.repository.timeline(finished)) == []

    await choose(player, "acme", redact=["card", "phone", "email"], call_retention_days=None)
    await choose(
        player,
        "acme",
        redact=["card", "phone", "email"],
        call_retention_days=None,
        delete_from_twilio=True,
    )
    assert len(changes(await player.repository.timeline(waiting))) == 1  # nothing else changed
    async with player.api("acme") as api:
        timeline = (await api.get(f"/api/calls/{waiting}/timeline")).json()
    assert [e["event_type"] for e in timeline] == ["call.started", "settings.changed"]


async def test_data_settings_of_one_business_leave_another_s_timeline_alone(
    player: Player,
) -> None:
    await player.repository.apply(events.call_started(sid(60), "other"))
    await choose(player, "acme", redact=["card", "iban"])
    assert [e["event_type"] for e in await player.repository.timeline(sid(60))] == ["call.started"]
    assert await player.repository.data_settings("other") == DataSettings.model_validate(
        {**CHOSEN, "redact": ["card"], "audio_retention_days": None, "call_retention_days": None}
    )
