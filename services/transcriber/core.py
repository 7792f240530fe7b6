"""Transcriber core: what each channel said in, a transcript by speaker out, with the personal
data the call's policy names redacted; and every retry-or-give-up decision of the
transcriber, returned as a value (`shared.decisions`) for the handler and the backends to
carry out. No I/O."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from itertools import pairwise
from typing import Literal

from shared.decisions import Discard, GiveUp, Retry, for_deleted_call, refused
from shared.events import RecordingDownloaded, RedactionSummary, TranscriptReady
from shared.redaction.apply import Marker, redact_text, redact_words, select
from shared.redaction.detect import find_in_words
from shared.redaction.kinds import EntityKind, Span, redacted_kinds
from shared.transcript import (
    AudioRedaction,
    AudioSpan,
    RedactedSpan,
    Redaction,
    Segment,
    Transcript,
    Utterance,
    Word,
)

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
    return [_turn(group) for group in _turn_groups(segments)]


def _turn_groups(segments: Sequence[Segment]) -> list[list[Segment]]:
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
    return groups


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


def kinds_to_redact(requested: Iterable[EntityKind]) -> frozenset[EntityKind]:
    """The kinds the call's policy names (`recording.downloaded`'s `redact`), and always
    cards and long numbers."""
    return redacted_kinds(frozenset(requested))


@dataclass(frozen=True)
class RedactedSpeech:
    segments: list[Segment]
    utterances: list[Utterance]
    redaction: Redaction


def redacted(segments: Sequence[Segment], kinds: frozenset[EntityKind]) -> RedactedSpeech:
    """The segments and their turns with the personal data of `kinds` replaced by markers.

    Spans are found on each turn's words, so a number read across a pause (over two segments)
    is one run and one marker in the turn; each segment gets a marker for its own words of
    it. A text a span touched is rebuilt from its redacted words, and every segment's text is
    redacted as text too (a segment without words has only that)."""
    redacted_segments: list[Segment] = []
    utterances: list[Utterance] = []
    found: list[RedactedSpan] = []
    for group in _turn_groups(segments):
        words = [word for segment in group for word in segment.words]
        spans = select(find_in_words(words), kinds)
        firsts = list(_first_word_indices(group))
        clean_group = []
        for segment, first in zip(group, firsts, strict=True):
            pieces = [piece for span in spans if (piece := _piece(span, first, segment))]
            clean, counts = _redacted_segment(segment, pieces, kinds)
            clean_group.append(clean)
            found += [
                _where(kind, segment.start, segment.end, segment)
                for kind, count in counts.items()
                for _ in range(count)
            ]
        found += [
            _where(span.kind, span.start, span.end, _segment_of(group, firsts, span.first_word))
            for span in spans
        ]
        utterance = _turn(clean_group)
        if spans and all(segment.words for segment in group):
            marked = _marked(words, spans)
            text = "".join(word.text for word in marked).strip()
            utterance = utterance.model_copy(update={"words": marked, "text": text})
        redacted_segments += clean_group
        utterances.append(utterance)
    redaction = Redaction(
        kinds=sorted(kinds),
        counts=dict(Counter(span.kind for span in found)),
        spans=sorted(found, key=lambda span: (span.start, span.channel)),
    )
    return RedactedSpeech(redacted_segments, utterances, redaction)


def _first_word_indices(group: Sequence[Segment]) -> Iterable[int]:
    """Where each segment's words start in its turn's words."""
    first = 0
    for segment in group:
        yield first
        first += len(segment.words)


def _segment_of(group: Sequence[Segment], firsts: Sequence[int], word: int) -> Segment:
    """The segment holding word `word` of its turn's words."""
    holders = zip(reversed(group), reversed(firsts), strict=True)
    return next(segment for segment, first in holders if first <= word)


def _piece(span: Span, first: int, segment: Segment) -> Span | None:
    """The part of a span of the turn's words that lies in the segment, in its own words."""
    lo, hi = max(span.first_word, first), min(span.last_word, first + len(segment.words) - 1)
    if lo > hi:
        return None
    words = segment.words
    return Span(span.kind, lo - first, hi - first, words[lo - first].start, words[hi - first].end)


def _marked(words: Sequence[Word], spans: Sequence[Span]) -> list[Word]:
    """The words with each span replaced by its marker word, as sure as the least sure word
    it stands for."""
    probabilities = iter(
        min(w.probability for w in words[s.first_word : s.last_word + 1])
        for s in sorted(spans, key=lambda s: s.first_word)
    )
    return [
        Word(start=p.start, end=p.end, text=p.text, probability=next(probabilities))
        if isinstance(p, Marker)
        else p
        for p in redact_words(words, spans)
    ]


def _redacted_segment(
    segment: Segment, spans: Sequence[Span], kinds: frozenset[EntityKind]
) -> tuple[Segment, dict[EntityKind, int]]:
    """The segment with its spans replaced by markers, and what redacting its text as text
    found besides."""
    words = _marked(segment.words, spans) if spans else segment.words
    text = "".join(word.text for word in words).strip() if spans else segment.text
    text, counts = redact_text(text, kinds)
    return segment.model_copy(update={"words": words, "text": text}), counts


def _where(kind: EntityKind, start: float, end: float, segment: Segment) -> RedactedSpan:
    return RedactedSpan(
        kind=kind, start=start, end=end, speaker=segment.speaker, channel=segment.channel
    )


def audio_spans(spans: Iterable[RedactedSpan], padding: float, duration: float) -> list[AudioSpan]:
    """Where the recording is rewritten: each redacted span on its speaker's channel, widened
    by `padding` on both sides within [0, duration], spans of one channel that overlap or
    touch merged into one; by channel, then start."""
    padded = sorted(
        (s.channel, max(0.0, s.start - padding), min(duration, s.end + padding)) for s in spans
    )
    merged: list[AudioSpan] = []
    for channel, start, end in padded:
        if end <= start:
            continue
        last = merged[-1] if merged else None
        if last is not None and last.channel == channel and start <= last.end:
            merged[-1] = last.model_copy(update={"end": max(last.end, round(end, 3))})
        else:
            merged.append(AudioSpan(channel=channel, start=round(start, 3), end=round(end, 3)))
    return merged


def audio_redaction(
    object_key: str,
    redaction: Redaction,
    sound: Literal["tone", "silence"],
    padding: float,
    duration: float,
) -> AudioRedaction:
    """What the stored recording gets: the transcript's redacted spans, replaced by `sound`."""
    return AudioRedaction(
        object_key=object_key,
        sound=sound,
        padding_seconds=padding,
        spans=audio_spans(redaction.spans, padding, duration),
    )


def transcript_ready(
    source: RecordingDownloaded, transcript: Transcript, transcript_key: str
) -> TranscriptReady:
    """The stage's output for a stored transcript: the same whether it was just made or is
    read back on a redelivery that finds the work done."""
    redaction = transcript.redaction
    return source.caused(
        TranscriptReady,
        "transcript.ready",
        outcome="transcribed" if transcript.has_speech else "no_speech",
        transcript_key=transcript_key,
        language=transcript.language,
        duration_seconds=transcript.duration_seconds,
        speakers=transcript.speakers,
        preview=preview(transcript.utterances),
        redact=redaction.kinds if redaction else sorted(kinds_to_redact(source.redact)),
        redaction=RedactionSummary(kinds=redaction.kinds, counts=redaction.counts)
        if redaction
        else None,
        audio_redaction=redaction.audio if redaction else None,
    )


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
    if refused(status_code):
        return GiveUp(f"transcription API refused the audio: {message}")
    return Retry(f"transcription API failed for now: {message}")


def unredactable(problem: str) -> GiveUp:
    """A recording whose samples cannot be rewritten (not PCM WAV) never can: it is not
    stored back, and not played."""
    return GiveUp(f"cannot redact the audio: {problem}")


def redacted_without_transcript(transcript_key: str) -> GiveUp:
    """The recording was rewritten, so its transcript was stored before it; without the
    transcript there is nothing to announce, and the audio's redacted words cannot be heard
    again."""
    return GiveUp(f"the recording is redacted but its transcript {transcript_key} is missing")


def deleted_call(deleted: bool, *stored: str) -> Discard | None:
    """A deleted call's recording is not transcribed; what was stored while the call was
    deleted (the transcript, the recording written back) is deleted again and not
    announced."""
    return for_deleted_call(deleted, stored)
