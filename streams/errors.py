"""One exception tree. Every error carries the context a reader needs to find the record."""

from __future__ import annotations


class YurongError(Exception):
    """Root of all yurong errors."""


class ConfigError(YurongError):
    """Settings or mapping configuration is wrong; raised at start-up, never mid-stream."""


class RecordError(YurongError):
    """A single record cannot be processed: it goes to the dead-letter topic, the stream goes on.

    ``field`` names the offending field when there is one; the message says what was wrong and
    what was expected, e.g. ``enterprise_registration.uscc '9150...' fails the GB 32100 check digit``.
    """

    kind = "record"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class DecodeError(RecordError):
    """Bytes are not a valid Avro single-object encoding of a known schema."""

    kind = "decode"


class SchemaMismatchError(DecodeError):
    """The bytes carry a schema fingerprint other than the one the topic expects."""

    kind = "schema_mismatch"


class ValidationError(RecordError):
    """The record decodes but breaks a domain rule (check digit, enum, required field)."""

    kind = "validation"


class PIILeakError(RecordError):
    """The last-line detector found a raw ID, phone or bank-card number in an outgoing record."""

    kind = "pii_leak"


class SinkError(YurongError):
    """A batch could not be written to the analytics store; the offsets are not committed."""


class SourceError(YurongError):
    """A source database cannot be read as configured (slot lost, publication missing...)."""
