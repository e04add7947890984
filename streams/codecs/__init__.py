"""Bytes ↔ records: Avro single-object framing, Debezium envelopes (JSON and Avro through a
schema registry), source-row conversion and source positions."""
