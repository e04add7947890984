"""The pure domain core: identifiers, masking, ingest, profile, facts, indicators, scorecard,
alerts, the consent rule and the department catalogue. No network I/O, no Faust, no Kafka,
Redis or ClickHouse client: every function here is testable on plain records."""
