"""The Faust worker: the app, its topics and table, the agents that wire the core to Kafka, the
pseudonymisation key and the Redis consent store. ``faust_fixes/`` holds every correction of
Faust's and aiokafka's internals."""
