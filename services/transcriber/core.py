"""Transcriber core: words per channel in, a transcript by speaker out. No I/O."""

from __future__ import annotations

from collections.abc import Sequence

from shared.transcript import Utterance, Word

# A pause longer than this inside one channel starts a new utterance.
UTTERANCE_GAP_SECONDS = 0.8
PREVIEW_CHARS = 280


def speaker_labels(channels: int) -> list[str]:
    """Twilio's dual-channel recording of an inbound call: the caller on the first channel,
    the agent on the second. A mono recording is one speaker: nothing is guessed."""
    return ["caller", "agent"] if channels == 2 else ["speaker"]


def utterances(speaker: str, words: Sequence[Word]) -> list[Utterance]:
    groups: list[list[Word]] = []
    for word in words:
        if groups and word.start - groups[-1][-1].end <= UTTERANCE_GAP_SECONDS:
            groups[-1].append(word)
        else:
            groups.append([word])
    return [
        Utterance(
            speaker=speaker,
            start=group[0].start,
            end=group[-1].end,
            text="".join(w.text for w in group).strip(),
            confidence=round(sum(w.probability for w in group) / len(group), 3),
            words=group,
        )
        for group in groups
        if "".join(w.text for w in group).strip()
    ]


def merge(per_speaker: Sequence[Sequence[Utterance]]) -> list[Utterance]:
    """All speakers' utterances in the order they were spoken."""
    return sorted((u for group in per_speaker for u in group), key=lambda u: (u.start, u.end))


def preview(turns: Sequence[Utterance]) -> str:
    text = " ".join(f"{u.speaker.capitalize()}: {u.text}" for u in turns)
    return text if len(text) <= PREVIEW_CHARS else text[: PREVIEW_CHARS - 1] + "…"
