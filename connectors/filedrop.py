"""File-drop connector: departments that deliver CSV/XLSX files into a folder (water, ip, science).

Protocol (one folder per department, ``$YURONG_HOME/drops/<dept>``):

- a data file ``<dataset>-<anything>.csv`` or ``.xlsx`` (``<dataset>`` as in the mapping, e.g.
  ``water_usage-202603.csv``); CSV is UTF-8 (a BOM, as Excel writes it, is fine; GB18030 is
  accepted as a fallback), XLSX is read from its first sheet (openpyxl). The first row is the
  header with the schema's field names;
- then, written LAST, ``<file>.manifest.json``: ``{"dataset": ..., "rows": <data rows>,
  "sha256": "<hex of the file>"}``. A file without its manifest is not touched (it may still be
  being copied).

Processing:

- the manifest must match (dataset = the file's prefix, the content's SHA-256, the number of data
  rows); otherwise the whole file is quarantined: one dead letter on ``dlq.dept.<dept>.<dataset>``
  with the reason, the file and manifest moved to ``rejected/`` with ``<file>.error.json`` beside
  them;
- each row becomes an ``op = 'c'`` event (files carry states, not changes; ``before`` is None) —
  except in the initial load: the files already in the folder when a source starts for the first
  time are its snapshot, as a database's rows are for the CDC connectors: ``op = 'r'`` and
  ``source.snapshot = 'true'``, so a department's history builds profiles without raising alerts.
  The load is complete once each of those files is acknowledged (or quarantined, or skipped as
  seen); its start and its end are saved on ``connect.<dept>.offsets`` (``snapshot_completed``), and a
  load interrupted by a crash goes on as a snapshot with the files in the folder at the restart.
  ``--resnapshot`` loads the folder as a snapshot again. A folder processed by a version without
  snapshots (content hashes on ``connect.<dept>.files`` but no offset record) counts as loaded.
  A row that does not convert or breaks the mapping's rules (required, USCC check, enums,
  dates) becomes a dead letter whose error names ``<file>:<line>`` and whose raw value is the row
  plus ``_file`` and ``_line``; the other rows go through;
- ``position`` is ``<sha256[:16]>:<line>``, ``seq`` the file's mtime in ms × 10⁶ + line (stable if
  the same file is read again after a crash, growing with later files); ``source.db`` is the
  folder's name and ``source.schema`` the file name.

Exactly once per content: after Kafka acknowledged every row of a file (the runner's
``acknowledge``), its SHA-256 is written to the compacted topic ``connect.<dept>.files`` (key
``<source>:<sha256>``, schema ``avro/connect/file_offset.avsc``; one small record per file, so the
set can grow without bound, unlike one JSON blob in ``connect.<dept>.offsets``) and then the file is
moved to ``done/``. The same content dropped again, under any name, is moved to ``done/``
without producing anything. A crash before the hash is written re-reads the whole file
(at-least-once; positions and seqs are the same, so downstream de-duplicates). The source name is
``<dept>@<absolute folder>``: a different drop folder starts a fresh hash set.

Retention: the originals in ``done/`` hold the department's raw data (PII included), so the source
deletes each file there once its modification time (kept by the move) is older than
``YURONG_RETENTION_DROP_DONE_DAYS`` (default 7 days, like the raw ``dept.*`` topics); it sweeps
``done/`` from its own loop, at start and then every ``PURGE_EVERY_S``, and logs what it deleted.
A purged file's content hash stays on ``connect.<dept>.files``, so the same content dropped again
is still skipped. ``rejected/`` is left to the operator, who has to look at what was refused.
"""

from __future__ import annotations

import csv
import dataclasses
import errno
import hashlib
import io
import json
import logging
import os
import stat
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from connectors.base import ChangeEvent
from connectors.offsets import OffsetStore, connect_topic
from streams.codecs.convert import row_converter
from streams.core.catalogue import Dataset, Department, _value_schema
from streams.core.ingest import validate_row
from streams.errors import ValidationError
from streams.kafka.admin import ensure_topics, watermark_offsets
from streams.settings import SourceSettings, get_settings

log = logging.getLogger(__name__)

FILE_SCHEMA = "connect/file_offset"
SUFFIXES = (".csv", ".xlsx")
MANIFEST = ".manifest.json"
CHUNK = 5000
PURGE_EVERY_S = 60.0  # how often done/ is swept for originals past their retention
DAY_S = 86_400


@dataclass
class FileJob:
    """A file whose events were handed to the runner and await Kafka's acknowledgement."""

    path: Path
    sha256: str
    dataset: str
    rows: int
    dead_lettered: int
    rejected: str | None = None  # reason, when the whole file is quarantined


class ManifestError(Exception):
    pass


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_rows(name: str, data: bytes, max_rows: int = 2_000_000, max_bytes: int = 256 * 1024 * 1024
              ) -> list[tuple[int, dict[str, Any]]]:
    """``[(line, {column: value})]`` of the data rows; empty cells are None, blank rows skipped.
    ManifestError when the file has more than ``max_rows`` data rows, or (XLSX) expands to more
    than ``max_bytes``: limits are checked before the rows are built, so a small zip bomb costs
    nothing."""
    if name.lower().endswith(".xlsx"):
        return _xlsx_rows(data, max_rows, max_bytes)
    return _csv_rows(data, max_rows)


def read_limited(path: Path, max_bytes: int) -> bytes:
    """The content of ``path``, refusing a symbolic link (O_NOFOLLOW: not even one swapped in
    after the folder was listed: a link would pull another department's file into this one's
    dead letters) and a file larger than ``max_bytes``."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ManifestError("is a symbolic link: only regular files are read") from None
        raise
    with os.fdopen(fd, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise ManifestError("is not a regular file")
        if size > max_bytes:
            raise ManifestError(f"is {size:,} bytes, more than the limit of {max_bytes:,} (YURONG_SOURCE_DROP_MAX_BYTES)")
        return f.read(max_bytes + 1)


def _clean(v: Any) -> Any:
    if isinstance(v, str):
        v = v.strip()
        return v or None
    return v


def _csv_rows(data: bytes, max_rows: int) -> list[tuple[int, dict[str, Any]]]:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        try:
            text = data.decode("gb18030")
        except UnicodeDecodeError as exc:
            raise ManifestError(f"not UTF-8 or GB18030 text (undecodable byte at offset {exc.start})") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    header = None
    out = []
    for fields in reader:
        if header is None:
            header = [h.strip().lstrip("\ufeff") for h in fields]
            continue
        if not any(f.strip() for f in fields):
            continue
        row: dict[str, Any] = {h: _clean(v) for h, v in zip(header, fields, strict=False)}  # short or long rows: see _extra
        if len(fields) > len(header):
            row["_extra"] = fields[len(header):]
        out.append((reader.line_num, row))
        if len(out) > max_rows:
            raise ManifestError(f"more than {max_rows:,} data rows (YURONG_SOURCE_DROP_MAX_ROWS)")
    if header is None:
        raise ManifestError("the file is empty (no header row)")
    return out


def _xlsx_rows(data: bytes, max_rows: int, max_bytes: int) -> list[tuple[int, dict[str, Any]]]:
    import openpyxl  # only file-drop departments with XLSX need it; it parses with defusedxml (installed)

    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            expanded = sum(i.file_size for i in z.infolist())
    except zipfile.BadZipFile:
        raise ManifestError("not a readable XLSX workbook (not a zip archive)") from None
    if expanded > max_bytes:
        raise ManifestError(f"expands to {expanded:,} bytes, more than the limit of {max_bytes:,} (YURONG_SOURCE_DROP_MAX_BYTES)")
    try:
        wb = openpyxl.load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    except Exception as exc:  # noqa: BLE001 — zipfile/xml errors of a broken workbook; their text may quote content
        raise ManifestError(f"not a readable XLSX workbook ({type(exc).__name__})") from None
    try:
        return _sheet_rows(wb, max_rows)
    except ManifestError:
        raise
    except Exception as exc:  # noqa: BLE001 — XML errors while reading the sheet (defusedxml's refusals included)
        raise ManifestError(f"not a readable XLSX workbook ({type(exc).__name__})") from None
    finally:
        wb.close()


def _sheet_rows(wb, max_rows: int) -> list[tuple[int, dict[str, Any]]]:
    """The data rows of the workbook's first sheet (the first row is the header)."""
    ws = wb.worksheets[0]
    header = None
    out = []
    for line, values in enumerate(ws.iter_rows(values_only=True), start=1):
        if header is None:
            header = [str(h).strip() if h is not None else "" for h in values]
            continue
        if all(_clean(v) is None for v in values):
            continue
        out.append((line, {h: _clean(v) for h, v in zip(header, values, strict=False) if h}))  # rows may be ragged
        if len(out) > max_rows:
            raise ManifestError(f"more than {max_rows:,} data rows (YURONG_SOURCE_DROP_MAX_ROWS)")
    if header is None:
        raise ManifestError("the workbook's first sheet is empty (no header row)")
    return out


class FileDropSource:
    """One department's drop folder; every catalogue dataset is a file-name prefix."""

    def __init__(self, dept: Department, folder: str | Path, offsets: OffsetStore, schemas, settings: SourceSettings,
                 resnapshot: bool = False, done_retention_days: int | None = None) -> None:
        self.dept = dept
        self.folder = Path(folder).resolve()
        self.name = f"{dept.dept}@{self.folder}"
        self._offsets = offsets
        self._schemas = schemas
        self._producer = offsets._producer  # the offsets' producer, already acks=all
        self._kafka = offsets.kafka
        self._files_topic = connect_topic(dept.dept, "files")
        self._ignore_history = resnapshot
        self._snapshot_done = False
        self._snapshot_files: set[Path] | None = None  # files of the initial load still to finish; None: not listed yet
        self._poll_interval = settings.poll_interval_s
        self._max_bytes, self._max_rows = settings.drop_max_bytes, settings.drop_max_rows
        self._by_prefix = {ds.table: ds for ds in dept.datasets.values()}
        self._convert = {ds.name: row_converter(_value_schema(schemas.get(ds.schema_name).parsed)) for ds in dept.datasets.values()}
        self._processed: set[str] = set()
        self._pending: dict[int, FileJob] = {}
        self._inflight_paths: set[Path] = set()
        self._chunks: Iterator[list[ChangeEvent]] | None = None
        self._token = 0
        self._next_scan = 0.0
        self._done_retention_s = DAY_S * (get_settings().retention.drop_done_days if done_retention_days is None
                                          else done_retention_days)
        self._next_purge = 0.0

    # --- Source interface ----------------------------------------------------------------------

    def start(self) -> None:
        for sub in ("", "done", "rejected"):  # raw department data: the owner's only (docs/security.md)
            (self.folder / sub).mkdir(mode=0o700, parents=True, exist_ok=True)
            # done/ and rejected/ are the connector's: 0700; the drop folder keeps the group an
            # upload account may need, never access for others
            (self.folder / sub).chmod(0o700 if sub else (self.folder.stat().st_mode & 0o770))
        ensure_topics(self._kafka, {self._files_topic: {"cleanup.policy": "compact"}}, partitions=1,
                      replication_factor=self._offsets.replication_factor)
        if self._ignore_history:
            log.warning("%s: --resnapshot: files in the folder are processed even if their content was seen, "
                        "as a snapshot", self.name)
        else:
            self._processed = self._load_processed()
            saved = self._offsets.load(self.name)
            self._snapshot_done = bool(saved.get("snapshot_completed")) if saved else bool(self._processed)
        log.info("%s: watching %s (%d files processed before%s)", self.name, self.folder, len(self._processed),
                 "" if self._snapshot_done else "; the files there now are its initial load")

    def poll(self, timeout: float) -> list[ChangeEvent]:
        if self._chunks is not None:
            chunk = next(self._chunks, None)
            if chunk is not None:
                return chunk
            self._chunks = None
        if time.monotonic() >= self._next_purge:
            self._next_purge = time.monotonic() + PURGE_EVERY_S
            self.purge_done()
        if time.monotonic() < self._next_scan:
            time.sleep(max(0.0, min(timeout, self._next_scan - time.monotonic())))
            return []
        ready = self._ready_files()
        if not self._snapshot_done and self._snapshot_files is None:
            self._snapshot_files = set(ready)
            self._save_snapshot_state(completed=False)  # a restart then knows the load was under way
            log.info("%s: initial load of %d file(s)", self.name, len(ready))
        for path in ready:
            events = self._take(path)
            if events:
                self._chunks = (events[i:i + CHUNK] for i in range(0, len(events), CHUNK))
                return next(self._chunks)
        self._next_scan = time.monotonic() + self._poll_interval
        return []

    def acknowledge(self, position: int) -> None:
        for token in sorted(t for t in self._pending if t <= position):
            self._finish(self._pending.pop(token))

    def snapshot_completed(self) -> bool:
        """True once every file of the initial load is finished (see the module docstring)."""
        return self._snapshot_done or self._snapshot_files == set()

    def mark_snapshot_completed(self) -> None:
        """The runner flushed Kafka after the load's last row: remember the load as complete."""
        self._save_snapshot_state(completed=True)
        self._snapshot_done = True

    def _save_snapshot_state(self, completed: bool) -> None:
        self._offsets.save({"source": self.name, "slot": None, "snapshot_completed": completed, "position": "", "seq": 0})

    def stop(self) -> None:
        pass

    # --- scanning -----------------------------------------------------------------------------------

    def _ready_files(self) -> list[Path]:
        files = []
        for p in self.folder.iterdir():
            if not (p.is_file() or p.is_symlink()) or p.name.startswith(".") or not p.name.lower().endswith(SUFFIXES):
                continue
            if p in self._inflight_paths or not Path(str(p) + MANIFEST).exists():
                continue
            files.append(p)
        return sorted(files, key=lambda p: (p.stat().st_mtime_ns, p.name))

    def _take(self, path: Path) -> list[ChangeEvent]:
        """Events of one file (rows, dead letters, or one quarantine notice); [] if nothing to send."""
        try:
            data = read_limited(path, self._max_bytes)
        except ManifestError as exc:  # a link or an oversized file: quarantined unread
            sha = sha256_of(f"unread:{path.name}:{path.lstat().st_mtime_ns}".encode())
            return self._reject(path, self._by_prefix.get(path.name.split("-", 1)[0]), sha,
                                path.lstat().st_mtime_ns // 1_000_000, f"the file {exc}")
        sha = sha256_of(data)
        if sha in self._processed:
            log.info("%s: %s has the content of a file processed before (sha256 %s…): skipped", self.name, path.name, sha[:16])
            self._move(path, "done", sha)
            if self._snapshot_files:
                self._snapshot_files.discard(path)
            return []
        if any(job.sha256 == sha for job in self._pending.values()):
            return []  # same content under another name is in flight: decide once it is acknowledged
        prefix = path.name.split("-", 1)[0]
        ds = self._by_prefix.get(prefix)
        mtime_ms = path.stat().st_mtime_ns // 1_000_000
        try:
            if ds is None:
                raise ManifestError(f"file name prefix {prefix!r} is not a dataset of {self.dept.dept} "
                                    f"(expected <dataset>-<anything>.csv|.xlsx with dataset in {sorted(self._by_prefix)})")
            manifest = self._manifest(path)
            if manifest.get("dataset") != ds.name:
                raise ManifestError(f"manifest dataset {manifest.get('dataset')!r} does not match the file name's {ds.name!r}")
            if str(manifest.get("sha256", "")).lower() != sha:
                raise ManifestError(f"manifest sha256 {str(manifest.get('sha256'))[:16]!r}… does not match the content's {sha[:16]}…")
            rows = read_rows(path.name, data, self._max_rows, self._max_bytes)
            if manifest.get("rows") != len(rows):
                raise ManifestError(f"manifest says {manifest.get('rows')!r} rows, the file has {len(rows)}")
        except ManifestError as exc:
            return self._reject(path, ds, sha, mtime_ms, str(exc))
        self._token += 1
        snapshot = self._snapshot_files is not None and path in self._snapshot_files
        events = [self._event(ds, path.name, sha, line, row, mtime_ms, snapshot) for line, row in rows]
        job = FileJob(path, sha, ds.name, len(rows), sum(1 for e in events if e.error is not None))
        if not events:
            self._finish(job)
            return []
        events[-1] = dataclasses.replace(events[-1], ack_position=self._token)  # the file is done when its last row is
        self._pending[self._token] = job
        self._inflight_paths.add(path)
        log.info("%s: %s: %d rows (%d dead-lettered)", self.name, path.name, job.rows, job.dead_lettered)
        return events

    @staticmethod
    def _manifest(path: Path) -> dict[str, Any]:
        mpath = Path(str(path) + MANIFEST)
        try:
            doc = json.loads(read_limited(mpath, 1024 * 1024).decode("utf-8-sig"))
        except (OSError, ValueError) as exc:
            raise ManifestError(f"manifest {mpath.name} is not readable JSON ({exc})") from None
        if not isinstance(doc, dict):
            raise ManifestError(f"manifest {mpath.name} is not a JSON object")
        return doc

    def _reject(self, path: Path, ds: Dataset | None, sha: str, mtime_ms: int, reason: str) -> list[ChangeEvent]:
        message = f"{path.name}: rejected, whole file quarantined: {reason}"
        log.error("%s: %s", self.name, message)
        job = FileJob(path, sha, ds.name if ds else "", 0, 0, rejected=message)
        if ds is None:  # no dataset, no dead-letter topic: quarantine at once
            self._finish(job)
            return []
        self._token += 1
        self._pending[self._token] = job
        self._inflight_paths.add(path)
        source = self._source(ds, path.name, f"{sha[:16]}:0", mtime_ms * 1_000_000, mtime_ms)
        raw = {"_file": path.name, "_line": 0, "_sha256": sha, "_error": message}
        return [ChangeEvent(ds, "c", None, None, source, path.name, self._token, error=ValidationError(message), raw=raw)]

    def purge_done(self, now: float | None = None) -> list[str]:
        """Delete the files in ``done/`` (originals and their manifests) whose modification time is
        older than the retention; the names deleted. A file that cannot be deleted is logged and
        tried again at the next sweep: retention never stops the source."""
        cutoff = (time.time() if now is None else now) - self._done_retention_s
        done = self.folder / "done"
        purged: list[str] = []
        try:
            entries = sorted(done.iterdir())
        except OSError as exc:
            log.error("%s: cannot list %s for the retention sweep: %s", self.name, done, exc.strerror)
            return purged
        for p in entries:
            try:
                st = p.lstat()
                if not stat.S_ISREG(st.st_mode) or st.st_mtime >= cutoff:
                    continue
                p.unlink()
            except FileNotFoundError:
                continue
            except OSError as exc:
                log.error("%s: retention: cannot delete %s: %s", self.name, p, exc.strerror)
                continue
            purged.append(p.name)
        if purged:
            data = [n for n in purged if not n.endswith(MANIFEST)]
            log.info("%s: retention: deleted %d original(s) older than %g days from %s (%d file(s) with manifests): %s",
                     self.name, len(data), self._done_retention_s / DAY_S, done, len(purged), ", ".join(data))
        return purged

    # --- rows ---------------------------------------------------------------------------------------

    def _source(self, ds: Dataset, file: str, position: str, seq: int, ts_ms: int, snapshot: bool = False) -> dict[str, Any]:
        return {"connector": "filedrop", "dept": ds.dept, "db": self.folder.name, "schema": file, "table": ds.name,
                "position": position, "seq": seq, "ts_ms": ts_ms, "snapshot": "true" if snapshot else "false",
                "tx_id": None}

    def _event(self, ds: Dataset, file: str, sha: str, line: int, raw: dict[str, Any], mtime_ms: int,
               snapshot: bool) -> ChangeEvent:
        op = "r" if snapshot else "c"
        source = self._source(ds, file, f"{sha[:16]}:{line}", mtime_ms * 1_000_000 + min(line, 999_999), mtime_ms,
                              snapshot)
        key = "|".join(str(raw.get(k)) for k in ds.key)
        try:
            if "_extra" in raw:
                raise ValidationError(f"{ds.name}: {len(raw['_extra'])} more fields than the header has")
            row = self._convert[ds.name](raw, ds.name)
            validate_row(ds, row)
        except ValidationError as exc:
            error = ValidationError(f"{file}:{line}: {exc}", field=exc.field)
            return ChangeEvent(ds, op, None, None, source, key, 0, error=error, raw={**raw, "_file": file, "_line": line})
        return ChangeEvent(ds, op, None, row, source, key, 0)

    # --- after Kafka acknowledged ------------------------------------------------------------------------

    def _finish(self, job: FileJob) -> None:
        self._inflight_paths.discard(job.path)
        if self._snapshot_files:
            self._snapshot_files.discard(job.path)
        if job.rejected:
            target = self._move(job.path, "rejected", job.sha256)
            Path(str(target) + ".error.json").write_text(
                json.dumps({"file": job.path.name, "sha256": job.sha256, "error": job.rejected}, ensure_ascii=False, indent=2),
                encoding="utf-8")
            return
        record = {"source": self.name, "sha256": job.sha256, "file": job.path.name, "dataset": job.dataset,
                  "rows": job.rows, "dead_lettered": job.dead_lettered, "ts_ms": int(time.time() * 1000)}
        self._producer.produce(self._files_topic, key=f"{self.name}:{job.sha256}".encode(),
                               value=self._schemas.encode(FILE_SCHEMA, record))
        if self._producer.flush(30) != 0:
            raise KafkaException(f"{self.name}: processed-file record of {job.path.name} not acknowledged within 30 s")
        self._processed.add(job.sha256)
        self._move(job.path, "done", job.sha256)

    def _move(self, path: Path, sub: str, sha: str) -> Path:
        target = self.folder / sub / path.name
        if target.exists():
            target = target.with_name(f"{path.stem}.{sha[:8]}{path.suffix}")
        manifest = Path(str(path) + MANIFEST)
        os.replace(path, target)
        if manifest.exists():
            os.replace(manifest, Path(str(target) + MANIFEST))
        return target

    def _load_processed(self) -> set[str]:
        """Every content hash this source recorded on ``connect.<dept>.files``."""
        prefix = f"{self.name}:".encode()
        consumer = Consumer({**self._kafka, "group.id": f"{self._offsets.group_prefix}.files",
                             "enable.auto.commit": False, "enable.partition.eof": True})
        try:
            low, high = watermark_offsets(consumer, TopicPartition(self._files_topic, 0))
            seen: set[str] = set()
            if high <= low:
                return seen
            consumer.assign([TopicPartition(self._files_topic, 0, low)])
            deadline = time.monotonic() + 30
            while True:
                if time.monotonic() > deadline:  # a partial set would process files twice
                    raise KafkaException(f"could not read {self._files_topic} to its end (offset {high}) within 30 s")
                msg = consumer.poll(1.0)
                if msg is None:
                    continue
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        break
                    raise KafkaException(err)
                key = msg.key() or b""
                if key.startswith(prefix):
                    sha = key[len(prefix):].decode()
                    if msg.value() is None:
                        seen.discard(sha)
                    else:
                        seen.add(sha)
                offset = msg.offset()  # set on every consumed record
                if offset is not None and offset >= high - 1:
                    break
            return seen
        finally:
            consumer.close()
