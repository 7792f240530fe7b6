"""The transcriber's pure core: speakers by direction, the hallucination filter, splitting at
pauses, turns in spoken order, languages, previews and upload chunks."""

from __future__ import annotations

from services.transcriber import core
from services.transcriber.core import ChannelResult, RecognisedSegment, SpeechSpan
from shared.transcript import Word


def segment(start: float, end: float, text: str, **fields: float) -> RecognisedSegment:
    return RecognisedSegment(start=start, end=end, text=text, avg_logprob=-0.2, **fields)


def test_channels_are_labelled_by_call_direction() -> None:
    mapping = core.SpeakerMapping(inbound=("caller", "agent"), outbound=("callee", "agent"))
    assert mapping.labels(2, "inbound") == ["caller", "agent"]
    assert mapping.labels(2, None) == ["caller", "agent"]
    assert mapping.labels(2, "outbound-api") == ["callee", "agent"]
    assert mapping.labels(2, "outbound-dial") == ["callee", "agent"]
    assert mapping.labels(1, "inbound") == ["speaker"]
    assert core.SpeakerMapping(inbound=("customer",)).labels(2, "inbound") == [
        "customer",
        "channel 2",
    ]
    assert core.parse_labels(" agent , caller ,") == ("agent", "caller")


def test_what_whisper_itself_rates_as_silence_or_a_loop_is_dropped() -> None:
    assert core.is_speech(segment(0, 1, " Hello."))
    assert not core.is_speech(segment(0, 1, "  "))
    silent = RecognisedSegment(0, 1, " Thank you.", avg_logprob=-1.3, no_speech_prob=0.9)
    assert not core.is_speech(silent)
    assert core.is_speech(RecognisedSegment(0, 1, " Yes.", avg_logprob=-0.5, no_speech_prob=0.9))
    assert not core.is_speech(segment(0, 1, " la la la la la", compression_ratio=3.1))


def test_turns_follow_the_order_of_speech_across_channels() -> None:
    caller = ChannelResult(
        (
            RecognisedSegment(
                0.0,
                9.0,
                " I need a plumber. In Boston.",
                avg_logprob=-0.1,
                words=(
                    Word(start=0.0, end=0.5, text=" I", probability=0.9),
                    Word(start=0.5, end=2.0, text=" need a plumber.", probability=0.9),
                    Word(start=7.0, end=9.0, text=" In Boston.", probability=0.8),
                ),
            ),
        ),
        "en",
    )
    agent = ChannelResult((segment(3.0, 5.0, " Where are you?"), segment(10, 11, " Fine.")), "en")
    segments = core.labelled_segments([caller, agent], ["caller", "agent"])
    assert [(s.speaker, s.channel, s.text) for s in segments] == [
        ("caller", 0, "I need a plumber."),
        ("agent", 1, "Where are you?"),
        ("caller", 0, "In Boston."),
        ("agent", 1, "Fine."),
    ]
    turns = core.turns(segments)
    assert [t.speaker for t in turns] == ["caller", "agent", "caller", "agent"]
    assert (turns[2].start, turns[2].end) == (7.0, 9.0)
    assert [w.text for w in turns[2].words] == [" In Boston."]
    assert 0 < turns[0].confidence <= 1
    assert core.preview(turns).startswith("Caller: I need a plumber. Agent: Where are you?")


def test_one_speakers_segments_close_in_time_make_one_turn() -> None:
    agent = ChannelResult((segment(0, 2, " Hello."), segment(2.5, 4, " How can I help?")))
    turns = core.turns(core.labelled_segments([agent], ["agent"]))
    assert [t.text for t in turns] == ["Hello. How can I help?"]


def test_language_is_the_configured_one_else_the_busiest_channels() -> None:
    short = ChannelResult((segment(0, 1, " Hi."),), "en")
    long = ChannelResult((segment(0, 30, " Shalom..."),), "he")
    assert core.language("fr", [short, long]) == "fr"
    assert core.language(None, [short, long]) == "he"
    assert core.language(None, [ChannelResult(), ChannelResult()]) is None


def test_a_long_preview_is_cut() -> None:
    agent = ChannelResult((segment(0, 200, " word" * 200),))
    preview = core.preview(core.turns(core.labelled_segments([agent], ["agent"])))
    assert len(preview) == core.PREVIEW_CHARS
    assert preview.endswith("…")


def test_chunks_are_cut_in_pauses_and_never_exceed_the_limit() -> None:
    speech = [SpeechSpan(0, 300), SpeechSpan(400, 700), SpeechSpan(800, 1000)]
    assert core.plan_chunks(1000, speech, 1000) == [(0, 1000)]
    assert core.plan_chunks(1000, speech, 800) == [(0, 750), (750, 1000)]
    assert core.plan_chunks(1000, speech, 500) == [(0, 350), (350, 750), (750, 1000)]
    # The limit falls inside a pause: cut there, and start the next piece where speech resumes.
    assert core.plan_chunks(1000, speech, 330) == [(0, 330), (400, 730), (730, 1000)]
    # One stretch of speech longer than the limit: cut where the limit falls.
    assert core.plan_chunks(1000, [SpeechSpan(0, 1000)], 400) == [(0, 400), (400, 800), (800, 1000)]


def test_chunks_without_speech_are_left_out() -> None:
    speech = [SpeechSpan(100, 200), SpeechSpan(900, 950)]
    assert core.plan_chunks(1000, speech, 300) == [(0, 300), (900, 1000)]


def test_a_chunks_times_move_into_channel_time() -> None:
    word = Word(start=1.0, end=1.5, text=" Boston", probability=0.9)
    result = ChannelResult((RecognisedSegment(1.0, 2.0, " Boston", -0.1, words=(word,)),), "en")
    moved = core.shifted(result, 60.0)
    assert (moved.segments[0].start, moved.segments[0].end) == (61.0, 62.0)
    assert (moved.segments[0].words[0].start, moved.segments[0].words[0].end) == (61.0, 61.5)
    assert core.joined([ChannelResult(), moved]).language == "en"
