"""The transcriber core's redaction: which kinds it redacts (the call's policy, always with
cards and long numbers), and the segments, turns and preview rebuilt without what the caller
read out, markers where it was, every other word where it was."""

from __future__ import annotations

import re

from services.transcriber import core
from services.transcriber.core import ChannelResult, RecognisedSegment
from shared.events import RecordingDownloaded
from shared.redaction.kinds import EntityKind
from shared.transcript import Segment, Transcript, Word

CARD_DIGITS = "4580123456789015"  # Luhn-valid
PHONE_DIGITS = "0547654321"


def said(text: str, start: float) -> RecognisedSegment:
    """A segment as Whisper writes it: each word with its leading space, half a second each."""
    words = tuple(
        Word(start=start + i * 0.5, end=start + i * 0.5 + 0.4, text=" " + piece, probability=0.9)
        for i, piece in enumerate(text.split())
    )
    return RecognisedSegment(
        start=start, end=words[-1].end, text=" " + text, avg_logprob=-0.1, words=words
    )


def call(caller: list[RecognisedSegment], agent: list[RecognisedSegment]) -> list[Segment]:
    return core.labelled_segments(
        [ChannelResult(tuple(caller), "en"), ChannelResult(tuple(agent), "en")],
        ["caller", "agent"],
    )


def digits_of(text: str) -> str:
    return re.sub(r"\D", "", text)


def every_text(speech: core.RedactedSpeech) -> list[str]:
    return [
        *(s.text for s in speech.segments),
        *(w.text for s in speech.segments for w in s.words),
        *(u.text for u in speech.utterances),
        *(w.text for u in speech.utterances for w in u.words),
        core.preview(speech.utterances),
    ]


def test_the_policy_of_the_call_is_redacted_always_with_cards_and_numbers() -> None:
    default = RecordingDownloaded(
        call_sid="CA1",
        business_id="biz",
        correlation_id="c" * 32,
        recording_sid="RE1",
        object_key="biz/CA1/RE1.wav",
        content_type="audio/wav",
        size_bytes=1,
        sha256="0" * 64,
    )
    assert core.kinds_to_redact(default.redact) == {EntityKind.CARD, EntityKind.NUMBER}
    assert core.kinds_to_redact([]) == {EntityKind.CARD, EntityKind.NUMBER}
    assert core.kinds_to_redact([EntityKind.PHONE]) == {
        EntityKind.CARD,
        EntityKind.NUMBER,
        EntityKind.PHONE,
    }


# The caller reads out a card across a pause (two segments, one turn; the first holds too few
# of its digits to be redacted alone) and a phone number in Hebrew digit words; the agent
# answers in between.
CALLER = [
    said("Hi, my card is 4580", 0.0),
    said("1234 5678 9015. Thanks.", 3.6),
    said("המספר שלי אפס חמש ארבע, שבע שש חמש, ארבע שלוש שתיים ואחת תודה", 12.0),
]
AGENT = [said("Got it, and your phone number?", 7.0)]
POLICY = core.kinds_to_redact([EntityKind.PHONE])


def test_a_card_and_a_phone_number_read_out_leave_no_digit_and_a_marker_each() -> None:
    speech = core.redacted(call(CALLER, AGENT), POLICY)

    for text in every_text(speech):
        assert not any(CARD_DIGITS[i : i + 4] in digits_of(text) for i in range(0, 16, 4))
        assert "אפס חמש" not in text and "שתיים ואחת" not in text
    first, answer, second = speech.utterances
    assert first.text == "Hi, my card is [card]. Thanks."
    assert [w.text for w in first.words] == [" Hi,", " my", " card", " is", " [card].", " Thanks."]
    assert answer.text == "Got it, and your phone number?"
    assert second.text == "המספר שלי [phone] תודה"
    # Each segment keeps its own part of the card as a marker of its own.
    assert [s.text for s in speech.segments] == [
        "Hi, my card is [card]",
        "[card]. Thanks.",
        "Got it, and your phone number?",
        "המספר שלי [phone] תודה",
    ]
    preview = core.preview(speech.utterances)
    assert preview.startswith("Caller: Hi, my card is [card]. Thanks. Agent: Got it")
    assert not re.search(r"\d{4}", preview)


def test_markers_take_the_times_of_what_they_stand_for_and_no_other_word_moves() -> None:
    segments = call(CALLER, AGENT)
    speech = core.redacted(segments, POLICY)

    first = speech.utterances[0]
    card = next(w for w in first.words if w.text == " [card].")
    assert (card.start, card.end) == (2.0, 5.0)  # from "4580" to "9015."
    phone = next(w for w in speech.utterances[2].words if "[phone]" in w.text)
    assert (phone.start, phone.end) == (13.0, 17.9)  # from "אפס" to "ואחת"
    before = {(w.start, w.end, w.text) for s in segments for w in s.words}
    after = {(w.start, w.end, w.text) for s in speech.segments for w in s.words}
    kept = {w for w in after if "[" not in w[2]}
    assert kept <= before
    assert len(before - after) == 4 + 10  # the card's four words, the phone's ten
    assert [(s.start, s.end, s.speaker) for s in speech.segments] == [
        (s.start, s.end, s.speaker) for s in segments
    ]
    assert [(u.start, u.end, u.speaker) for u in speech.utterances] == [
        (u.start, u.end, u.speaker) for u in core.turns(segments)
    ]


def test_the_redaction_says_what_when_and_who_never_the_values() -> None:
    redaction = core.redacted(call(CALLER, AGENT), POLICY).redaction

    assert redaction.kinds == [EntityKind.CARD, EntityKind.NUMBER, EntityKind.PHONE]
    assert redaction.counts == {EntityKind.CARD: 1, EntityKind.PHONE: 1}
    assert [(s.kind, s.start, s.end, s.speaker, s.channel) for s in redaction.spans] == [
        (EntityKind.CARD, 2.0, 5.0, "caller", 0),
        (EntityKind.PHONE, 13.0, 17.9, "caller", 0),
    ]
    stored = redaction.model_dump_json()
    assert not re.search(r"\d{3}", re.sub(r"\d+\.\d+", "", stored))


def test_a_kind_the_business_keeps_stays_and_cards_never_do() -> None:
    speech = core.redacted(call(CALLER, AGENT), core.kinds_to_redact([]))

    assert speech.utterances[0].text == "Hi, my card is [card]. Thanks."
    assert "אפס חמש ארבע" in speech.utterances[2].text
    assert speech.redaction.counts == {EntityKind.CARD: 1}


def test_a_segment_without_words_is_redacted_as_text() -> None:
    bare = RecognisedSegment(0.0, 4.0, " My card is 4580 1234 5678 9015.", avg_logprob=-0.1)
    speech = core.redacted(call([bare], []), POLICY)

    assert speech.segments[0].text == "My card is [card]."
    assert speech.utterances[0].text == "My card is [card]."
    assert [(s.kind, s.start, s.end) for s in speech.redaction.spans] == [
        (EntityKind.CARD, 0.0, 4.0)
    ]


def test_nothing_to_redact_leaves_the_speech_as_it_was() -> None:
    segments = call([said("I need a plumber at 15 Herzl street, 2 pm.", 0.0)], [])
    speech = core.redacted(segments, POLICY)

    assert speech.segments == segments
    assert speech.utterances == core.turns(segments)
    assert speech.redaction.counts == {} and speech.redaction.spans == []
    assert speech.redaction.kinds == [EntityKind.CARD, EntityKind.NUMBER, EntityKind.PHONE]


def test_the_transcript_stores_the_redaction() -> None:
    speech = core.redacted(call(CALLER, AGENT), POLICY)
    transcript = Transcript(
        call_sid="CA1",
        recording_sid="RE1",
        language="en",
        duration_seconds=20.0,
        speakers=["caller", "agent"],
        utterances=speech.utterances,
        model="m",
        segments=speech.segments,
        redaction=speech.redaction,
    )
    stored = transcript.model_dump_json()
    assert CARD_DIGITS[:4] not in stored and "9015" not in stored
    assert Transcript.model_validate_json(stored).redaction == speech.redaction
