"""Times how long the bench stack's broker takes to acknowledge one produce request, by how many
partitions the request's records are spread over. Tansu 0.6 writes a request's partitions one
after another, each a conditional PUT of the partition's watermark and a PUT of the batch to
its S3 server (decision 0915), so the time grows with the partitions.

    .venv/bin/python scripts/time_broker_produce_fanout.py [--port-offset N] [--requests 50]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from callpipe.bench.stack import bench_stack

PARTITIONS = 4
RECORD = b"x" * 400  # about one callpipe event


async def ack_times_ms(
    producer: AIOKafkaProducer, partitions: list[int], requests: int
) -> list[float]:
    times = []
    for _ in range(requests):
        started = time.perf_counter()
        # Sent together within the linger time: one produce request.
        sent = [await producer.send("fanout", RECORD, partition=p) for p in partitions]
        await asyncio.gather(*sent)
        times.append((time.perf_counter() - started) * 1000)
    return times


async def main(port_offset: int, requests: int) -> None:
    async with bench_stack(port_offset) as stack:
        bootstrap = stack.settings.kafka_bootstrap
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        await admin.create_topics([NewTopic("fanout", PARTITIONS, 1)])
        await admin.close()
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
        await producer.start()
        try:
            await ack_times_ms(producer, list(range(PARTITIONS)), 5)  # warm-up
            for label, partitions in (
                ("1 record", [0]),
                (f"{PARTITIONS} records, one partition", [0] * PARTITIONS),
                (f"{PARTITIONS} records, {PARTITIONS} partitions", list(range(PARTITIONS))),
            ):
                times = await ack_times_ms(producer, partitions, requests)
                print(
                    f"{label:32} p50 {statistics.median(times):6.1f} ms"
                    f"   mean {statistics.fmean(times):6.1f} ms   ({requests} requests)"
                )
        finally:
            await producer.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port-offset", type=int, default=0)
    parser.add_argument("--requests", type=int, default=50)
    arguments = parser.parse_args()
    asyncio.run(main(arguments.port_offset, arguments.requests))
