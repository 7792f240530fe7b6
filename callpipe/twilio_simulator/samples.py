"""The bundled sample calls (`callpipe/samples`) and what the simulator reads of audio."""

import wave
from pathlib import Path

SAMPLES = Path(__file__).parent.parent / "samples"


def sample_path(name_or_path: str) -> Path:
    """A bundled sample by name (`plumber_boston`) or any audio file by path."""
    candidate = Path(name_or_path)
    if candidate.is_file():
        return candidate.resolve()
    bundled = SAMPLES / f"{name_or_path.removesuffix('.wav')}.wav"
    if bundled.is_file():
        return bundled
    names = ", ".join(sorted(p.stem for p in SAMPLES.glob("*.wav")))
    raise FileNotFoundError(f"no audio file or sample {name_or_path!r} (samples: {names})")


def audio_facts(path: Path) -> tuple[int, float]:
    """Channels and duration of a WAV file; other formats count as dual-channel, 0 s."""
    try:
        with wave.open(str(path)) as audio:
            return audio.getnchannels(), audio.getnframes() / audio.getframerate()
    except (wave.Error, EOFError):
        return 2, 0.0
