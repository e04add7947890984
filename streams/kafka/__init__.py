"""Kafka I/O shared by the worker, the connectors, the sink and the CLI: topic administration,
the librdkafka output producer, dead letters and the consent log (``consent.grants``)."""
