"""The transcriber's retry-or-give-up decisions: what the transcription API's failures, an
undecodable recording and an event of another stage lead to."""

from __future__ import annotations

import pytest

from services.transcriber import core
from shared.decisions import GiveUp, Retry
from shared.storage import call_prefixes, transcript_key


@pytest.mark.parametrize(
    ("status_code", "expected"),
    [
        (400, GiveUp),  # malformed or undecodable upload
        (401, GiveUp),  # the key is rejected
        (403, GiveUp),
        (404, GiveUp),  # no such model
        (413, GiveUp),  # over the upload limit
        (415, GiveUp),
        (422, GiveUp),
        (408, Retry),  # the server timed out waiting for the upload
        (409, Retry),
        (429, Retry),  # rate limited past the client's own retries
        (500, Retry),
        (502, Retry),
        (503, Retry),
        (None, Retry),  # a timeout or a lost connection: no answer at all
    ],
)
def test_a_failure_of_the_transcription_api_is_retried_unless_another_try_cannot_help(
    status_code: int | None, expected: type[Retry | GiveUp]
) -> None:
    decision = core.api_failure(status_code, "Error code: n - the API's words")
    assert type(decision) is expected
    assert decision.reason.endswith("the API's words")


def test_the_reasons_say_what_the_api_did() -> None:
    refused = "Error code: 413 - {'error': {'message': 'Maximum content size limit exceeded'}}"
    assert core.api_failure(413, refused) == GiveUp(
        f"transcription API refused the audio: {refused}"
    )
    assert core.api_failure(None, "APITimeoutError: Request timed out.") == Retry(
        "transcription API did not answer: APITimeoutError: Request timed out."
    )
    # No lower bound of its own: the client already waited what Retry-After asked.
    assert core.api_failure(503, "Error code: 503") == Retry(
        "transcription API failed for now: Error code: 503", after_seconds=0.0
    )


def test_an_undecodable_recording_is_given_up_with_the_reason() -> None:
    assert core.undecodable("no samples") == GiveUp("cannot decode audio: no samples")


def test_an_event_of_another_stage_is_given_up() -> None:
    assert core.unhandled_event("transcript.ready") == GiveUp(
        "transcriber cannot handle transcript.ready"
    )


def test_a_deleted_calls_audio_is_not_transcribed_and_a_transcript_stored_meanwhile_goes() -> None:
    key = transcript_key("biz-1", "CA1", "RE1")
    assert core.deleted_call(False) is None
    assert core.deleted_call(False, key) is None
    skipped = core.deleted_call(True)
    assert skipped is not None and skipped.objects == ()
    meanwhile = core.deleted_call(True, key)
    assert meanwhile is not None and meanwhile.objects == (key,)
    assert key.startswith(call_prefixes("biz-1", "CA1", [])[0])


def test_a_recording_written_back_while_its_call_was_deleted_goes_too() -> None:
    transcript, audio = transcript_key("biz-1", "CA1", "RE1"), "biz-1/2026-12-08/CA1/RE1.wav"
    assert core.deleted_call(False, transcript, audio) is None
    meanwhile = core.deleted_call(True, transcript, audio)
    assert meanwhile is not None and meanwhile.objects == (transcript, audio)


def test_audio_that_cannot_be_rewritten_and_a_redacted_one_without_transcript_fail_for_good() -> (
    None
):
    unredactable = core.unredactable("not a RIFF WAVE file")
    assert isinstance(unredactable, GiveUp)
    assert unredactable.reason == "cannot redact the audio: not a RIFF WAVE file"
    missing = core.redacted_without_transcript("biz-1/CA1/RE1.transcript.json")
    assert isinstance(missing, GiveUp) and "biz-1/CA1/RE1.transcript.json" in missing.reason
