"""The instant backends stand in for the speech model and the extractor in benchmarks and chaos
runs; they must still produce what the next stage and the status page read."""

import asyncio
from pathlib import Path

from services.extractor.core import CatalogueFile
from services.extractor.instant import InstantExtractor
from services.transcriber.core import SpeakerMapping, labelled_segments
from services.transcriber.instant import INSTANT_TEXT, InstantBackend, transcribe_instantly
from shared.events import Lead
from shared.transcript import Transcript


def test_instant_transcription_gives_the_first_channel_one_utterance(tmp_path: Path) -> None:
    recording = tmp_path / "call.wav"
    recording.write_bytes(b"RIFF....WAVE")

    result = transcribe_instantly(InstantBackend(), recording, channels=2)

    assert [len(channel.segments) for channel in result.channels] == [1, 0]
    labels = SpeakerMapping(("caller", "agent"), ("callee", "agent")).labels(2, "inbound")
    segments = labelled_segments(result.channels, labels)
    assert [(s.speaker, s.text) for s in segments] == [("caller", INSTANT_TEXT)]


def test_an_empty_file_has_no_duration(tmp_path: Path) -> None:
    recording = tmp_path / "empty.wav"
    recording.write_bytes(b"")

    assert transcribe_instantly(InstantBackend(), recording, channels=1).duration_seconds == 0.0


def test_instant_extraction_names_itself() -> None:
    transcript = Transcript(
        call_sid="CA1",
        recording_sid="RE1",
        language="en",
        duration_seconds=1.0,
        model="none",
        speakers=[],
        utterances=[],
    )

    result = asyncio.run(InstantExtractor().extract(transcript, CatalogueFile().profile("demo")))

    assert result.extractor == "instant"
    assert result.lead == Lead()
