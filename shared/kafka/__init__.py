"""Everything callpipe does with Kafka, one concern a module (import from the module itself):

- `connection`: the options every client is made with, reaching the broker, configuration
  errors.
- `topics`: topic names and partitions, creating the missing ones, reading a log to its end.
- `producer`: EventProducer (acks=all, idempotent where the broker allows), starting it once
  the broker is reachable.
- `offsets`: what a stage worker may commit, and the inputs it already handled.
- `failures`: the one rule for a message whose handling fails: retries, `stage.failed`, dead
  letters, a broker that cannot take the output.
- `worker`: StageWorker, the consumer runtime every stage runs on.
- `tansu_workarounds`: what the local broker (Tansu) needs that Apache Kafka does not.
"""
