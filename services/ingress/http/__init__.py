"""The ingress's HTTP application: signed Twilio webhooks in, each occurrence once on Kafka out.

A webhook is answered 2xx once its event is durably stored in SQL (a transactional outbox,
decision 0912), or known to be stored already; if the database fails, 503 and Twilio retries.
The relay (services/ingress/relay.py) then publishes it to Kafka (acks=all), also while or
after the broker was away: the ingress starts and answers webhooks without the broker.
"""
