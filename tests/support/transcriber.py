"""The committed espeak-ng samples with what was said in them, and word error rates."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import jiwer

from callpipe.twilio_simulator.samples import SAMPLES

_NORMALISE = jiwer.Compose(
    [
        jiwer.ToLowerCase(),
        jiwer.RemovePunctuation(),
        jiwer.RemoveMultipleSpaces(),
        jiwer.Strip(),
        jiwer.ReduceToListOfListOfWords(),
    ]
)


@dataclass(frozen=True)
class Sample:
    name: str
    path: Path
    channels: int
    turns: list[tuple[str, str]]  # (speaker, words), in the order they were said

    def said_by(self, speaker: str) -> str:
        return " ".join(words for who, words in self.turns if who == speaker)


def sample(name: str, channels: int) -> Sample:
    lines = (SAMPLES / f"{name}.txt").read_text().splitlines()
    turns = [(who, words) for who, words in (line.split("\t", 1) for line in lines)]
    return Sample(name, SAMPLES / f"{name}.wav", channels, turns)


def word_error_rate(reference: list[str], hypothesis: list[str]) -> float:
    return float(
        jiwer.wer(
            reference,
            hypothesis,
            reference_transform=_NORMALISE,
            hypothesis_transform=_NORMALISE,
        )
    )
