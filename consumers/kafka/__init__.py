"""The Kafka adapter of the ledger side: the only package here that imports confluent_kafka
(the producer library, ``producers/``, has its own). ``source`` reads topics (the chainer's
group member, replay's reader, the identities topic), ``admin`` creates and validates topics
and describes the chainer group, ``witness`` is the checkpoints' witness topic.
"""
