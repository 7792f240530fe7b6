"""The player consumes with several members of its group in one process (decision 0919): the
local broker answers a fetch over many partitions slowly, so each member fetches a share."""

from __future__ import annotations

import json
import re

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from shared.events import Topic
from shared.kafka.topics import partitions_of
from shared.settings import Settings
from tests.support.stack import PORTS, RunningStack

pytestmark = pytest.mark.stack
ASSIGNED = re.compile(r"^player assigned (.*)$")


async def test_the_players_members_share_the_projected_partitions_out(stack: RunningStack) -> None:
    members = Settings().player.consumers
    admin = AIOKafkaAdminClient(bootstrap_servers=PORTS["CALLPIPE_KAFKA_BOOTSTRAP"])
    await admin.start()
    try:
        [described] = await admin.describe_consumer_groups(["player"])
    finally:
        await admin.close()
    [(error, group_id, state, _, _, group_members)] = described.groups
    assert (error, group_id, state) == (0, "player", "Stable")
    assert len(group_members) == members
    # The latest assignment of each member, from the player's log.
    lines = (stack.data_dir / "logs" / "player.log").read_text().splitlines()
    messages = [json.loads(line).get("message", "") for line in lines if line.startswith("{")]
    latest = [m.group(1) for message in messages if (m := ASSIGNED.match(message))][-members:]
    assert len(latest) == members
    shares = [set(share.split(", ")) - {"nothing"} for share in latest]
    assert all(shares), "a member got no partition"
    projected = set().union(*shares)
    assert len(projected) == sum(len(share) for share in shares)  # each partition once
    status_partitions = partitions_of(Topic.STAGE_STATUS.value, Settings().kafka)
    assert {f"stage.status:{p}" for p in range(status_partitions)} <= projected
    assert max(len(s) for s in shares) - min(len(s) for s in shares) <= 1  # round robin
