"""Which playback requests the player redirects to the object store: those S3 answers as the
player would (services/player/ranges.py)."""

from __future__ import annotations

import pytest

from services.player.ranges import ByteRange, resolve, store_answers_alike

LENGTH = 1000


@pytest.mark.parametrize(
    ("header", "honoured", "redirected"),
    [
        (None, True, True),  # the whole recording
        ("bytes=0-99", True, True),  # a media player's seek
        ("bytes=900-", True, True),
        ("bytes=-100", True, True),
        ("bytes=0-9,100-109", True, False),  # multipart: the player answers
        ("bytes=0-3", False, False),  # a stale If-Range: the whole object, from the player
        ("items=0-3", True, False),  # ignored by the player, maybe not by S3
        ("bytes=oops", True, False),
    ],
)
def test_only_what_s3_answers_alike_is_redirected(
    header: str | None, honoured: bool, redirected: bool
) -> None:
    wanted = resolve(header if honoured else None, LENGTH)
    assert store_answers_alike(header, wanted) is redirected


def test_one_range_is_resolved_against_the_length() -> None:
    assert resolve("bytes=990-2000", LENGTH) == [ByteRange(990, 999)]
