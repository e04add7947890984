"""Schemas evolve only in BACKWARD-compatible steps, and data written with any earlier version
stays decodable (DESIGN §4).

Two sources of earlier versions are checked: the ``history/<name>.vN.avsc`` files the serde
keeps for decoding, and every version of each ``.avsc`` ever committed to git.
"""

from __future__ import annotations

import io
import itertools
import json
import subprocess
from pathlib import Path

import fastavro
import pytest
from fastavro.schema import fingerprint, to_parsing_canonical_form
from fastavro.utils import generate_many

from streams.codecs.serde import MAGIC, SchemaStore
from streams.settings import REPO_ROOT

AVRO = REPO_ROOT / "avro"
STORE = SchemaStore(AVRO)


def _fp(parsed) -> bytes:
    return bytes.fromhex(fingerprint(to_parsing_canonical_form(parsed), "CRC-64-AVRO"))


def _reads(writer: dict, reader: dict, n: int = 25) -> None:
    """Records written with ``writer`` must resolve to ``reader`` (Avro schema resolution)."""
    w = fastavro.parse_schema(writer, _write_hint=False)
    r = fastavro.parse_schema(reader, _write_hint=False)
    for record in generate_many(w, n):
        buf = io.BytesIO()
        fastavro.schemaless_writer(buf, w, record)
        buf.seek(0)
        fastavro.schemaless_reader(buf, w, r)


def _git_versions(path: Path) -> list[dict]:
    """Every committed version of ``path``, oldest first ([] outside a git checkout)."""
    rel = path.relative_to(REPO_ROOT).as_posix()
    try:
        commits = subprocess.run(["git", "log", "--format=%H", "--follow", "--", rel], cwd=REPO_ROOT,
                                 capture_output=True, text=True, check=True).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        return []
    versions = []
    for c in reversed(commits):
        shown = subprocess.run(["git", "show", f"{c}:{rel}"], cwd=REPO_ROOT, capture_output=True, text=True)
        if shown.returncode == 0:
            versions.append(json.loads(shown.stdout))
    return versions


CURRENT = sorted(p for p in AVRO.rglob("*.avsc") if p.parent.name != "history")


@pytest.mark.parametrize("path", CURRENT, ids=lambda p: p.relative_to(AVRO).as_posix())
def test_every_committed_version_is_backward_compatible_with_the_next(path):
    versions = [*_git_versions(path), json.loads(path.read_text(encoding="utf-8"))]
    for older, newer in itertools.pairwise(versions):
        _reads(older, newer)


@pytest.mark.parametrize("path", CURRENT, ids=lambda p: p.relative_to(AVRO).as_posix())
def test_every_committed_version_stays_decodable(path):
    """A committed version with another fingerprint must be kept in history/, or data on the
    topics written with it could no longer be read."""
    name = path.relative_to(AVRO).with_suffix("").as_posix()
    known = {STORE.get(name).fingerprint} | {s.fingerprint for s in STORE.history(name)}
    for version in _git_versions(path):
        fp = _fp(fastavro.parse_schema(version, _write_hint=False))
        assert fp in known, f"{name}: a committed version ({fp.hex()}) is missing from {path.parent}/history/"


@pytest.mark.parametrize("name", [n for n in STORE.names() if STORE.history(n)])
def test_history_versions_decode_into_the_current_schema(name):
    current = STORE.get(name)
    for old in STORE.history(name):
        for record in generate_many(old.parsed, 10):
            buf = io.BytesIO()
            buf.write(MAGIC + old.fingerprint)
            fastavro.schemaless_writer(buf, old.parsed, record)
            decoded_name, decoded = STORE.decode(buf.getvalue(), name)
            assert decoded_name == name
            assert set(decoded) == {f["name"] for f in current.parsed["fields"]}
