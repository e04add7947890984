"""Read this bank's risk alerts (风险预警) from Yurong's Kafka topic; print one line of JSON per alert.

    pip install confluent-kafka fastavro
    python consumer_example.py librdkafka.conf alert.avsc <topic> [max_records] [timeout_seconds]

Arguments, exit codes and behaviour are those of AlertConsumer.java: ``max_records`` absent or 0
runs until Ctrl-C; exit 0 when done, 1 on an error, 2 when ``timeout_seconds`` passed first.
Standard output has only the alerts; messages go to standard error.

Each Kafka message: key = the enterprise's USCC (统一社会信用代码) as UTF-8 text; value = one Avro
"single-object encoding" message: bytes C3 01, the 8-byte CRC-64-AVRO fingerprint of the schema it
was written with, then the Avro binary record. An offset is committed only after its alert is
printed: an alert is never skipped, and after a crash the last few may be printed again
(``alert_id`` identifies an alert, also on replay).
"""

from __future__ import annotations

import io
import json
import sys
import time

import fastavro
from confluent_kafka import Consumer, KafkaException
from fastavro.schema import fingerprint, to_parsing_canonical_form

MAGIC = b"\xc3\x01"


def read_conf(path: str) -> dict[str, str]:
    """librdkafka.conf: ``key=value`` lines; blank lines and lines starting with # are skipped."""
    conf = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith("#"):
                key, _, value = line.partition("=")
                conf[key.strip()] = value.strip()
    return conf


def main(argv: list[str]) -> int:
    if not 4 <= len(argv) <= 6:
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 64
    conf_path, schema_path, topic = argv[1:4]
    max_records = int(argv[4]) if len(argv) > 4 else 0
    deadline = time.monotonic() + float(argv[5]) if len(argv) > 5 else float("inf")

    with open(schema_path, encoding="utf-8") as f:
        schema = fastavro.parse_schema(json.load(f))
    # The header every alert written with this schema starts with.
    header = MAGIC + bytes.fromhex(fingerprint(to_parsing_canonical_form(schema), "CRC-64-AVRO"))

    conf = read_conf(conf_path)
    conf["enable.auto.commit"] = "false"  # committed below, after printing
    consumer = Consumer(conf)
    consumer.subscribe([topic])
    printed, code = 0, 0
    try:
        while not max_records or printed < max_records:
            if time.monotonic() >= deadline:
                print(f"timed out: {printed} of {max_records} alerts after {argv[5]} s", file=sys.stderr)
                code = 2
                break
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            if msg.error():
                raise KafkaException(msg.error())
            value = msg.value() or b""
            where = f"{msg.topic()}-{msg.partition()}@{msg.offset()}"
            if value[:2] != MAGIC:
                print(f"cannot decode {where}: not an Avro single-object message", file=sys.stderr)
                return 1
            if value[:10] != header:
                # Not committed: with the newer alert.avsc from Yurong a rerun starts at this message.
                print(f"cannot decode {where}: written with another schema (fingerprint {value[2:10].hex()});"
                      " ask Yurong for the current alert.avsc", file=sys.stderr)
                return 1
            alert = fastavro.schemaless_reader(io.BytesIO(value[10:]), schema)
            print(json.dumps(alert, ensure_ascii=False), flush=True)
            consumer.commit(message=msg, asynchronous=False)
            printed += 1
    except KeyboardInterrupt:
        pass
    except KafkaException as exc:
        print(f"error: {exc}", file=sys.stderr)
        code = 1
    finally:
        consumer.close()
    return code


if __name__ == "__main__":
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(encoding="utf-8")  # Chinese text whatever the locale
    sys.exit(main(sys.argv))
