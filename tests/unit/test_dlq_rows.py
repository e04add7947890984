"""The sink runs the last-line PII detector over a dead letter's free-text headers before the
``dlq_event`` row is written (issue 14, item 6): the headers come from any producer, and
``dlq_event`` is an analyst table."""

from __future__ import annotations

from sinks.rows import dlq_row
from streams.kafka.dlq import PREFIX

ID_NUMBER = "500112198307154238"


def _headers(message: str, field: str = "volume_m3") -> list[tuple[str, bytes]]:
    return [(PREFIX + "topic", b"dept.water.water_usage"), (PREFIX + "partition", b"0"), (PREFIX + "offset", b"7"),
            (PREFIX + "component", b"worker"), (PREFIX + "error.kind", b"validation"),
            (PREFIX + "error.class", b"ValidationError"), (PREFIX + "error.field", field.encode()),
            (PREFIX + "error.message", message.encode()), (PREFIX + "ts_ms", b"1")]


def test_a_message_carrying_a_raw_id_number_or_phone_is_withheld():
    for leak in (f"could not convert '户主身份证{ID_NUMBER}'", "call 13812345678 about it", f"field {ID_NUMBER}"):
        row = dlq_row("dlq.dept.water.water_usage", 0, 3, _headers(leak), b"raw bytes")
        text = " ".join(str(v) for v in row)
        assert ID_NUMBER not in text and "13812345678" not in text and "withheld" in text, row


def test_a_clean_message_is_kept_with_its_provenance():
    row = dlq_row("dlq.dept.water.water_usage", 0, 3, _headers("water_usage.volume_m3: the source value (text of 9 "
                                                              "characters) is not a number"), b"raw bytes")
    assert row[:6] == ["dlq.dept.water.water_usage", 0, 3, "dept.water.water_usage", 0, 7]
    assert "is not a number" in row[10] and row[11] == len(b"raw bytes")
