"""Source connectors: department databases and drops → ``dept.<dept>.<dataset>`` Avro change events."""
