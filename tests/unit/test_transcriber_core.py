"""Transcriber core: words per channel to utterances, merged by time, and the preview."""

from __future__ import annotations

import pytest

from services.transcriber.core import (
    PREVIEW_CHARS,
    UTTERANCE_GAP_SECONDS,
    merge,
    preview,
    speaker_labels,
    utterances,
)
from shared.transcript import Utterance, Word


def word(start: float, end: float, text: str, probability: float = 0.9) -> Word:
    return Word(start=start, end=end, text=text, probability=probability)


def test_words_within_the_gap_stay_in_one_utterance() -> None:
    gap = UTTERANCE_GAP_SECONDS / 2
    words = [
        word(0.0, 0.4, " My", 0.9),
        word(0.4 + gap, 0.9 + gap, " sink", 0.6),
        word(0.9 + 2 * gap, 1.3 + 2 * gap, " leaks.", 0.3),
    ]

    result = utterances("caller", words)

    assert len(result) == 1
    only = result[0]
    assert only.speaker == "caller"
    assert only.text == "My sink leaks."
    assert only.start == 0.0
    assert only.end == pytest.approx(1.3 + 2 * gap)
    assert only.confidence == pytest.approx(0.6, abs=1e-3)
    assert only.words == words


def test_a_gap_exactly_at_the_threshold_does_not_split() -> None:
    words = [word(0.0, 1.0, " one"), word(1.0 + UTTERANCE_GAP_SECONDS, 2.5, " two")]
    assert [u.text for u in utterances("agent", words)] == ["one two"]


def test_a_longer_gap_splits_utterances() -> None:
    gap = UTTERANCE_GAP_SECONDS + 0.2
    words = [
        word(0.0, 0.5, " Hello", 1.0),
        word(0.6, 1.0, " there.", 0.8),
        word(1.0 + gap, 1.5 + gap, " I", 0.5),
        word(1.6 + gap, 2.0 + gap, " need", 0.7),
        word(2.0 + 3 * gap, 2.5 + 3 * gap, " Boston.", 0.2),
    ]

    result = utterances("caller", words)

    assert [u.text for u in result] == ["Hello there.", "I need", "Boston."]
    assert [u.confidence for u in result] == pytest.approx([0.9, 0.6, 0.2], abs=1e-3)
    assert [(u.start, u.end) for u in result] == [
        (0.0, 1.0),
        (1.0 + gap, pytest.approx(2.0 + gap)),
        (pytest.approx(2.0 + 3 * gap), pytest.approx(2.5 + 3 * gap)),
    ]
    assert [len(u.words) for u in result] == [2, 2, 1]
    assert all(u.speaker == "caller" for u in result)


def test_empty_utterances_are_dropped() -> None:
    gap = UTTERANCE_GAP_SECONDS + 1
    words = [
        word(0.0, 0.5, " hi"),
        word(0.5 + gap, 0.7 + gap, " "),
        word(0.8 + gap, 0.9 + gap, ""),
        word(0.9 + 3 * gap, 1.2 + 3 * gap, " bye"),
    ]
    assert [u.text for u in utterances("agent", words)] == ["hi", "bye"]


def test_no_words_no_utterances() -> None:
    assert utterances("caller", []) == []


def utterance(speaker: str, start: float, end: float, text: str) -> Utterance:
    return Utterance(
        speaker=speaker,
        start=start,
        end=end,
        text=text,
        confidence=0.9,
        words=[word(start, end, f" {text}")],
    )


def test_merge_interleaves_two_speakers_by_time() -> None:
    caller = [
        utterance("caller", 0.0, 2.0, "Hi, my sink leaks."),
        utterance("caller", 5.0, 6.0, "In Denver."),
        utterance("caller", 9.0, 9.5, "Thanks."),
    ]
    agent = [
        utterance("agent", 2.5, 4.5, "Where are you?"),
        utterance("agent", 6.5, 8.5, "We will send a plumber."),
    ]

    merged = merge([caller, agent])

    assert [(u.speaker, u.text) for u in merged] == [
        ("caller", "Hi, my sink leaks."),
        ("agent", "Where are you?"),
        ("caller", "In Denver."),
        ("agent", "We will send a plumber."),
        ("caller", "Thanks."),
    ]
    assert merge([agent, caller]) == merged


def test_merge_of_nothing_is_empty() -> None:
    assert merge([[], []]) == []


def test_speaker_labels() -> None:
    assert speaker_labels(2) == ["caller", "agent"]
    assert len(speaker_labels(1)) == 1


def test_preview_labels_speakers() -> None:
    turns = [utterance("caller", 0, 1, "Hello."), utterance("agent", 1, 2, "Hi.")]
    assert preview(turns) == "Caller: Hello. Agent: Hi."


def test_short_preview_is_not_truncated() -> None:
    text = "x" * (PREVIEW_CHARS - len("Caller: "))
    result = preview([utterance("caller", 0, 1, text)])
    assert result == f"Caller: {text}"
    assert not result.endswith("…")


def test_long_preview_is_truncated_with_an_ellipsis() -> None:
    turns = [utterance("caller", i, i + 1, f"sentence number {i} " * 3) for i in range(30)]
    full = " ".join(f"{u.speaker.capitalize()}: {u.text}" for u in turns)
    assert len(full) > PREVIEW_CHARS

    result = preview(turns)

    assert len(result) == PREVIEW_CHARS
    assert result.endswith("…")
    assert full.startswith(result[:-1])
