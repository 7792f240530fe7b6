"""The OpenAI backend through the official `openai` client, against the LOCAL OPENAI SIMULATOR
(a real HTTP server speaking the audio transcription API): the requests it sends, the answers
it reads, the uploads it splits, and how it treats 429, 5xx and refusals."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
import uvicorn
from pydantic import SecretStr

from callpipe.bootstrap import transcription_backend
from callpipe.openai_audio_simulator import OpenAISimulator, create_app
from callpipe.twilio_simulator.samples import sample_path
from services.transcriber import core
from services.transcriber.audio import SAMPLE_RATE, transcribe_file
from services.transcriber.openai_api import BYTES_PER_SAMPLE, OpenAIBackend
from shared.retry import RetryLater, TerminalError
from shared.settings import Settings
from tests.support.transcriber import sample, word_error_rate

API_KEY = "sk-test-simulator"
PLUMBER = sample("plumber_boston", 2)
# Measured against the simulator (which runs tiny.en on what it is sent): 0.17 on plumber_boston.
WER_BOUND = 0.25


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[OpenAISimulator, str]]:
    simulator = OpenAISimulator()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(create_app(simulator), host="127.0.0.1", port=port, log_config=None)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    yield simulator, f"http://127.0.0.1:{port}/v1"
    server.should_exit = True
    thread.join()


@pytest.fixture
def simulator(served: tuple[OpenAISimulator, str]) -> OpenAISimulator:
    simulator = served[0]
    simulator.received.clear()
    simulator.faults.clear()
    simulator.max_upload_bytes = 25 * 1024 * 1024
    return simulator


def backend(
    served: tuple[OpenAISimulator, str],
    max_retries: int = 2,
    max_upload_bytes: int = 25 * 1024 * 1024,
    language: str | None = "en",
) -> OpenAIBackend:
    client = openai.OpenAI(api_key=API_KEY, base_url=served[1], max_retries=max_retries)
    return OpenAIBackend(client, "whisper-1", language, max_upload_bytes)


def test_each_channel_is_uploaded_and_comes_back_as_its_speaker(
    served: tuple[OpenAISimulator, str], simulator: OpenAISimulator
) -> None:
    result = transcribe_file(backend(served), PLUMBER.path, 2)
    assert len(simulator.received) == 2
    for request in simulator.received:
        assert request.authorization == f"Bearer {API_KEY}"
        assert request.content_type == "audio/wav"
        assert request.filename == "audio.wav"
        assert request.fields["model"] == ["whisper-1"]
        assert request.fields["response_format"] == ["verbose_json"]
        assert request.fields["language"] == ["en"]
        assert sorted(request.fields["timestamp_granularities[]"]) == ["segment", "word"]
        # One channel of 16 kHz 16-bit PCM, as long as the recording.
        assert request.size == pytest.approx(13.07 * SAMPLE_RATE * BYTES_PER_SAMPLE, rel=0.01)
    segments = core.labelled_segments(result.channels, ["caller", "agent"])
    turns = core.turns(segments)
    assert [t.speaker for t in turns] == [who for who, _ in PLUMBER.turns]
    assert all(s.words and 0 < s.confidence <= 1 for s in segments)
    references = [PLUMBER.said_by("caller"), PLUMBER.said_by("agent")]
    hypotheses = [
        " ".join(t.text for t in turns if t.speaker == speaker) for speaker in ("caller", "agent")
    ]
    assert word_error_rate(references, hypotheses) <= WER_BOUND


def test_without_a_configured_language_the_detected_one_is_kept_as_a_code(
    served: tuple[OpenAISimulator, str], simulator: OpenAISimulator
) -> None:
    result = transcribe_file(backend(served, language=None), PLUMBER.path, 2)
    assert "language" not in simulator.received[0].fields
    assert core.language(None, result.channels) == "en"


def test_a_channel_over_the_upload_limit_is_split_at_pauses(
    served: tuple[OpenAISimulator, str], simulator: OpenAISimulator
) -> None:
    limit = 8 * SAMPLE_RATE * BYTES_PER_SAMPLE  # 8 s of audio per upload
    simulator.max_upload_bytes = limit  # the simulator refuses anything bigger with 413
    split = transcribe_file(backend(served, max_upload_bytes=limit), PLUMBER.path, 2)
    # 13 s per channel, at most 8 s per upload, each cut in a pause between two sentences
    assert len(simulator.received) == 2 * 2
    assert all(r.size <= limit for r in simulator.received)
    turns = core.turns(core.labelled_segments(split.channels, ["caller", "agent"]))
    assert [t.speaker for t in turns] == [who for who, _ in PLUMBER.turns]
    # Times are in the channel's time, not the chunk's: the last turn starts after 9 s.
    assert turns[-1].start > 9.0
    # No word was cut in two: the pieces read as well as the whole channel does.
    assert word_error_rate([text for _, text in PLUMBER.turns], [t.text for t in turns]) <= 0.25


def test_rate_limits_and_server_errors_are_retried_by_the_client(
    served: tuple[OpenAISimulator, str], simulator: OpenAISimulator
) -> None:
    simulator.faults.extend([429, 500])
    result = transcribe_file(backend(served, max_retries=2), PLUMBER.path, 2)
    assert len(simulator.received) == 4  # 429, 500, then both channels
    assert all(channel.segments for channel in result.channels)


def test_server_errors_beyond_the_clients_retries_are_transient_for_the_stage(
    served: tuple[OpenAISimulator, str], simulator: OpenAISimulator
) -> None:
    simulator.faults.extend([503, 503])
    with pytest.raises(RetryLater, match=r"failed for now: Error code: 503") as raised:
        transcribe_file(backend(served, max_retries=1), PLUMBER.path, 2)
    assert isinstance(raised.value.__context__, openai.InternalServerError)
    assert len(simulator.received) == 2


def test_an_api_that_does_not_answer_is_transient_for_the_stage() -> None:
    with socket.socket() as probe:  # bound, never listening: every connection is refused
        probe.bind(("127.0.0.1", 0))
        nowhere = f"http://127.0.0.1:{probe.getsockname()[1]}/v1"
        client = openai.OpenAI(api_key=API_KEY, base_url=nowhere, max_retries=0)
        unreachable = OpenAIBackend(client, "whisper-1", "en", 25 * 1024 * 1024)
        with pytest.raises(RetryLater, match="transcription API did not answer"):
            transcribe_file(unreachable, PLUMBER.path, 2)


def test_a_refused_upload_ends_the_stage_with_the_reason(
    served: tuple[OpenAISimulator, str], simulator: OpenAISimulator
) -> None:
    simulator.max_upload_bytes = 1000
    with pytest.raises(TerminalError, match=r"413 - Maximum content size"):
        transcribe_file(backend(served), PLUMBER.path, 2)
    assert len(simulator.received) == 1


def test_silence_is_never_sent(
    served: tuple[OpenAISimulator, str], simulator: OpenAISimulator
) -> None:
    result = transcribe_file(backend(served), sample_path("silence"), 2)
    assert simulator.received == []
    assert not any(channel.segments for channel in result.channels)


def test_the_simulator_refuses_an_undecodable_file(
    served: tuple[OpenAISimulator, str], simulator: OpenAISimulator, tmp_path: Path
) -> None:
    client = openai.OpenAI(api_key=API_KEY, base_url=served[1], max_retries=0)
    with pytest.raises(openai.BadRequestError, match="Invalid file format"):
        client.audio.transcriptions.create(
            file=("audio.wav", b"RIFF not audio", "audio/wav"), model="whisper-1"
        )


def test_the_settings_choose_and_configure_the_openai_backend(
    served: tuple[OpenAISimulator, str], simulator: OpenAISimulator
) -> None:
    settings = Settings(
        transcriber={"backend": "openai", "whisper_language": ""},
        openai={
            "base_url": served[1],
            "api_key": SecretStr("sk-from-settings"),
            "transcription_model": "whisper-large-v3",
        },
    )
    chosen = transcription_backend(settings)
    assert isinstance(chosen, OpenAIBackend)
    result = transcribe_file(chosen, sample_path("voicemail_austin"), 1)
    [request] = simulator.received
    assert request.authorization == "Bearer sk-from-settings"
    assert request.fields["model"] == ["whisper-large-v3"]
    assert "language" not in request.fields
    assert "austin" in " ".join(s.text for s in result.channels[0].segments).lower()
