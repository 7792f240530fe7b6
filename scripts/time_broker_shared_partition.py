"""Times the bench stack's broker acknowledging records when several producers write one
partition together, against each writing a partition of its own: three producers (the three
stages) at 25 records/s each, acks=all. Tansu 0.6 on S3 holds a writer whose conditional PUT
of the partition's watermark lost to another's up to a second (decision 0918).

    .venv/bin/python scripts/time_broker_shared_partition.py [--port-offset N] [--seconds 8]
"""

from __future__ import annotations

import argparse
import asyncio
import time

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from callpipe.bench.stack import bench_stack
from callpipe.bench.stats import percentile

WRITERS = 3
RATE_PER_WRITER = 25.0
RECORD = b"x" * 400  # about one callpipe event


async def ack_times_ms(bootstrap: str, topics: list[str], seconds: float) -> list[float]:
    """Each producer sends to its topic at RATE_PER_WRITER for `seconds`, without waiting
    for earlier acknowledgements; the time each record took to be acknowledged."""
    times: list[float] = []

    async def timed(producer: AIOKafkaProducer, topic: str) -> None:
        started = time.perf_counter()
        await producer.send_and_wait(topic, RECORD)
        times.append((time.perf_counter() - started) * 1000)

    async def write(topic: str) -> None:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=2)
        await producer.start()
        try:
            sends = []
            for _ in range(round(RATE_PER_WRITER * seconds)):
                sends.append(asyncio.create_task(timed(producer, topic)))
                await asyncio.sleep(1 / RATE_PER_WRITER)
            await asyncio.gather(*sends)
        finally:
            await producer.stop()

    await asyncio.gather(*(write(topic) for topic in topics))
    return times


async def main(port_offset: int, seconds: float) -> None:
    async with bench_stack(port_offset) as stack:
        bootstrap = stack.settings.kafka_bootstrap
        own = [f"own.{n}" for n in range(WRITERS)]
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        await admin.create_topics([NewTopic(t, 1, 1) for t in ["shared", *own]])
        await admin.close()
        for label, topics in (
            (f"{WRITERS} writers, one partition", ["shared"] * WRITERS),
            (f"{WRITERS} writers, a partition each", own),
        ):
            times = await ack_times_ms(bootstrap, topics, seconds)
            print(
                f"{label:34} p50 {percentile(times, 0.5):6.1f} ms   p95 "
                f"{percentile(times, 0.95):6.1f} ms   max {max(times):6.1f} ms"
                f"   ({len(times)} records)"
            )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port-offset", type=int, default=0)
    parser.add_argument("--seconds", type=float, default=8.0)
    arguments = parser.parse_args()
    asyncio.run(main(arguments.port_offset, arguments.seconds))
