"""Shared fixtures of the unit suite: the repository's schemas and catalogue, a test key.

Session-scoped so hypothesis tests can use them (no per-example fixture reset).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from streams.codecs.serde import SchemaStore
from streams.core.catalogue import Catalogue, load_catalogue
from streams.core.masking import Pseudonymizer

REPO_ROOT = Path(__file__).resolve().parents[2]
AVRO_DIR = REPO_ROOT / "avro"
TEST_KEY = b"unit-test-key-0123456789abcdef-0123456789"  # > 32 bytes, test only


@pytest.fixture(scope="session")
def schemas() -> SchemaStore:
    return SchemaStore(AVRO_DIR)


@pytest.fixture(scope="session")
def catalogue(schemas: SchemaStore) -> Catalogue:
    return load_catalogue(schemas=schemas)


@pytest.fixture(scope="session")
def pseudonymizer() -> Pseudonymizer:
    return Pseudonymizer(TEST_KEY)
