"""Transcriber core: what each channel said in, a transcript by speaker out; and every
retry-or-give-up decision of the transcriber, returned as a value (`shared.decisions`) for
the handler and the backends to carry out. No I/O."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from itertools import pairwise

from shared.decisions import Discard, GiveUp, Retry, for_deleted_call
from shared.transcript import Segment, Utterance, Word

# A pause longer than this between one speaker's segments starts a new turn.
TURN_GAP_SECONDS = 2.0
# A pause between two words longer than this splits a segment.
PAUSE_SECONDS = 1.0
PREVIEW_CHARS = 280
# Whisper's own thresholds (openai/whisper transcribe.py): a segment that the model itself
# rates as probably silence, with low confidence, or that repeats itself, is not speech.
NO_SPEECH_THRESHOLD = 0.6
LOGPROB_THRESHOLD = -1.0
COMPRESSION_RATIO_THRESHOLD = 2.4
# The transcription API's refusals that another try can change; any other 4xx cannot.
RETRYABLE_API_STATUSES = frozenset({408, 409, 429})


@dataclass(frozen=True)
class RecognisedSegment:
    """A segment as a backend returns it, times relative to the start of its channel."""

    start: float
    end: float
    text: str
    avg_logprob: float
    no_speech_prob: float = 0.0
    compression_ratio: float = 1.0
    words: tuple[Word, ...] = ()


@dataclass(frozen=True)
class ChannelResult:
    segments: tuple[RecognisedSegment, ...] = ()
    language: str | None = None


@dataclass(frozen=True)
class SpeechSpan:
    """Where the voice-activity detector heard speech, in samples."""

    start: int
    end: int


@dataclass(frozen=True)
class SpeakerMapping:
    """Labels of the recording's channels (first, second) by call direction."""

    inbound: tuple[str, ...] = ("caller", "agent")
    outbound: tuple[str, ...] = ("callee", "agent")
    mono: str = "speaker"

    def labels(self, channels: int, direction: str | None) -> list[str]:
        """A mono recording is one speaker: nothing is guessed."""
        if channels == 1:
            return [self.mono]
        outbound = (direction or "inbound").startswith("outbound")
        labels = self.outbound if outbound else self.inbound
        if len(labels) < channels:
            return [*labels, *(f"channel {i + 1}" for i in range(len(labels), channels))]
        return list(labels[:channels])


def parse_labels(text: str) -> tuple[str, ...]:
    return tuple(label.strip() for label in text.split(",") if label.strip())


def confidence(avg_logprob: float) -> float:
    return round(min(1.0, max(0.0, math.exp(avg_logprob))), 3)


def is_speech(segment: RecognisedSegment) -> bool:
    if not segment.text.strip():
        return False
    if segment.no_speech_prob > NO_SPEECH_THRESHOLD and segment.avg_logprob < LOGPROB_THRESHOLD:
        return False
    return segment.compression_ratio <= COMPRESSION_RATIO_THRESHOLD


def shifted(result: ChannelResult, seconds: float) -> ChannelResult:
    """The result of a chunk that starts `seconds` into its channel, in channel time."""

    def shift(segment: RecognisedSegment) -> RecognisedSegment:
        return replace(
            segment,
            start=segment.start + seconds,
            end=segment.end + seconds,
            words=tuple(
                w.model_copy(update={"start": w.start + seconds, "end": w.end + seconds})
                for w in segment.words
            ),
        )

    return replace(result, segments=tuple(shift(s) for s in result.segments))


def joined(results: Sequence[ChannelResult]) -> ChannelResult:
    language = next((r.language for r in results if r.language), None)
    return ChannelResult(tuple(s for r in results for s in r.segments), language)


def split_at_pauses(segment: RecognisedSegment) -> list[RecognisedSegment]:
    """Whisper may return one segment across a long pause, in which the other party spoke:
    with word times, such a segment is split at its pauses so the turns interleave right."""
    pieces: list[list[Word]] = []
    for word in segment.words:
        if pieces and word.start - pieces[-1][-1].end <= PAUSE_SECONDS:
            pieces[-1].append(word)
        else:
            pieces.append([word])
    if len(pieces) < 2:
        return [segment]
    return [
        replace(
            segment,
            start=piece[0].start,
            end=piece[-1].end,
            text="".join(w.text for w in piece),
            words=tuple(piece),
        )
        for piece in pieces
    ]


def labelled_segments(results: Sequence[ChannelResult], labels: Sequence[str]) -> list[Segment]:
    """Every channel's speech, labelled by speaker, in the order it was spoken."""
    segments = [
        Segment(
            speaker=label,
            channel=channel,
            start=round(s.start, 3),
            end=round(s.end, 3),
            text=s.text.strip(),
            confidence=confidence(s.avg_logprob),
            no_speech_probability=round(min(1.0, max(0.0, s.no_speech_prob)), 3),
            words=list(s.words),
        )
        for channel, (label, result) in enumerate(zip(labels, results, strict=True))
        for recognised in result.segments
        if is_speech(recognised)
        for s in split_at_pauses(recognised)
    ]
    return sorted(segments, key=lambda s: (s.start, s.end, s.channel))


def turns(segments: Sequence[Segment]) -> list[Utterance]:
    """Consecutive segments of one speaker, close in time, make one turn."""
    groups: list[list[Segment]] = []
    for segment in segments:
        previous = groups[-1][-1] if groups else None
        if (
            previous is not None
            and previous.speaker == segment.speaker
            and segment.start - previous.end <= TURN_GAP_SECONDS
        ):
            groups[-1].append(segment)
        else:
            groups.append([segment])
    return [_turn(group) for group in groups]


def _turn(group: Sequence[Segment]) -> Utterance:
    weights = [max(s.end - s.start, 0.01) for s in group]
    mean = sum(s.confidence * w for s, w in zip(group, weights, strict=True)) / sum(weights)
    return Utterance(
        speaker=group[0].speaker,
        start=group[0].start,
        end=max(s.end for s in group),
        text=" ".join(s.text for s in group),
        confidence=round(mean, 3),
        words=[w for s in group for w in s.words],
    )


def language(configured: str | None, results: Sequence[ChannelResult]) -> str | None:
    """The configured language, else what was detected on the channel that spoke the most."""
    if configured:
        return configured
    spoken = [r for r in results if r.language and r.segments]
    if not spoken:
        return None
    busiest = max(spoken, key=lambda r: sum(s.end - s.start for s in r.segments))
    return busiest.language


def preview(utterances: Sequence[Utterance]) -> str:
    text = " ".join(f"{u.speaker.capitalize()}: {u.text}" for u in utterances)
    return text if len(text) <= PREVIEW_CHARS else text[: PREVIEW_CHARS - 1] + "…"


def plan_chunks(total: int, speech: Sequence[SpeechSpan], limit: int) -> list[tuple[int, int]]:
    """Cuts [0, total) into pieces of at most `limit` samples, each cut inside the latest pause
    that fits (in its middle, or at its end when the piece starts inside it), so no word is
    split unless one stretch of speech is longer than the limit. Pieces without speech are
    left out: nothing to hear, nothing sent."""
    if limit <= 0:
        raise ValueError("chunk limit must be positive")
    pauses = [(a.end, b.start) for a, b in pairwise(speech) if b.start > a.end]
    chunks: list[tuple[int, int]] = []
    start = 0
    while total - start > limit:
        end = start + limit
        fitting = [
            min(b if a <= start else (a + b) // 2, end) for a, b in pauses if a < end and b > start
        ]
        cut = max(fitting, default=end)
        chunks.append((start, cut))
        start = cut
    chunks.append((start, total))
    return [(a, b) for a, b in chunks if any(s.start < b and s.end > a for s in speech)]


def unhandled_event(event_type: str) -> GiveUp:
    return GiveUp(f"transcriber cannot handle {event_type}")


def undecodable(problem: str) -> GiveUp:
    """A recording that does not decode (not audio, corrupt, no samples) never will."""
    return GiveUp(f"cannot decode audio: {problem}")


def api_failure(status_code: int | None, message: str) -> Retry | GiveUp:
    """What to do when the transcription API did not transcribe, its client's own retries
    spent: `status_code` is its answer's, None when no answer came (a timeout, a lost
    connection)."""
    if status_code is None:
        return Retry(f"transcription API did not answer: {message}")
    if status_code < 500 and status_code not in RETRYABLE_API_STATUSES:
        return GiveUp(f"transcription API refused the audio: {message}")
    return Retry(f"transcription API failed for now: {message}")


def deleted_call(deleted: bool, stored_transcript: str | None = None) -> Discard | None:
    """A deleted call's recording is not transcribed; a transcript stored while the call was
    deleted is deleted again and not announced."""
    return for_deleted_call(deleted, (stored_transcript,) if stored_transcript else ())
