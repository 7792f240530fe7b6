"""Real servers for the downloader's tests: the S3 server, the Kafka-protocol broker and the
local Twilio simulator run as processes, started as `callpipe up` starts them."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from callpipe.stack import Stack
from shared.settings import Settings
from tests.support.downloader import base_settings
from tests.support.stack import start_child


@pytest.fixture(scope="session")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    data_dir = tmp_path_factory.mktemp("downloader-servers")
    stack = Stack(base_settings(data_dir))
    processes: list[subprocess.Popen[bytes]] = []
    try:
        for child in stack.children:
            if child.name in ("s3", "broker", "twilio-simulator"):
                processes.append(start_child(child, data_dir, data_dir))
        yield stack.settings  # with the S3 keys and Twilio auth token it made
    finally:
        for process in reversed(processes):
            os.killpg(process.pid, 15)
            process.wait(30)


@pytest.fixture
def settings(servers: Settings, tmp_path: Path) -> Settings:
    """Each test its own SQL database (slots), on the servers of the test run."""
    return servers.updated(data_dir=tmp_path)
