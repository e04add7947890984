"""Analysts' credentials: one bearer token per named principal, stored only as a scrypt hash.

A token reads ``yra1.<name>.<secret>``: the name says whose hash to check, the 256-bit secret is
shown once, at ``yurong analyst add``, and never stored. The file (``YURONG_ANALYST_CREDENTIALS_FILE``,
0600 in a 0700 folder) holds, per principal, its role, salt, scrypt hash and when it was added or
revoked; the gateway re-reads it when it changes, so a revocation applies to the next request.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import os
import secrets
import threading
from dataclasses import dataclass
from pathlib import Path

from streams.core.sql_roles import check_principal_name, role
from streams.errors import ConfigError

PREFIX = "yra1"
SCRYPT = {"n": 2**14, "r": 8, "p": 1}


@dataclass(frozen=True)
class Principal:
    """A caller whose token was verified."""

    name: str
    role: str


class AuthError(Exception):
    """The request carries no valid credential; the message is safe to return and to audit."""

    def __init__(self, message: str, claimed: str = "") -> None:
        super().__init__(message)
        self.claimed = claimed


def _hash(secret: str, salt: bytes) -> str:
    return hashlib.scrypt(secret.encode(), salt=salt, dklen=32, **SCRYPT).hex()


class CredentialStore:
    """The credentials file: ``add``/``revoke``/``list`` for the CLI, ``verify`` for the gateway."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._loaded: tuple[float, int] | None = None
        self._entries: dict[str, dict] = {}
        self._verified: dict[str, Principal] = {}  # sha256(token) → principal, while the file is unchanged

    # --- the file ----------------------------------------------------------------------------------
    def _read(self) -> dict[str, dict]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read the analysts' credentials {self.path}: {exc}") from exc
        return dict(data.get("principals", {}))

    def _write(self, entries: dict[str, dict]) -> None:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump({"principals": entries}, f, indent=1, sort_keys=True)
        os.replace(tmp, self.path)

    def _current(self) -> dict[str, dict]:
        try:
            st = self.path.stat()
            stamp: tuple[float, int] | None = (st.st_mtime, st.st_size)
        except FileNotFoundError:
            stamp = None
        if stamp != self._loaded or stamp is None:
            self._entries = self._read()
            self._verified.clear()
            self._loaded = stamp
        return self._entries

    # --- administration (the CLI) ------------------------------------------------------------------
    def add(self, name: str, role_name: str, *, replace: bool = False) -> str:
        """Create (or with ``replace`` re-issue) ``name``'s credential; returns the token, once."""
        check_principal_name(name)
        role(role_name)
        with self._lock:
            entries = self._read()
            if name in entries and not entries[name].get("revoked") and not replace:
                raise ConfigError(f"analyst {name} exists; use --rotate to issue a new token")
            secret = secrets.token_urlsafe(32)
            salt = secrets.token_bytes(16)
            entries[name] = {"role": role_name, "salt": salt.hex(), "scrypt": _hash(secret, salt),
                             "added": _now(), "revoked": None}
            self._write(entries)
        return f"{PREFIX}.{name}.{secret}"

    def revoke(self, name: str) -> None:
        with self._lock:
            entries = self._read()
            if name not in entries or entries[name].get("revoked"):
                raise ConfigError(f"no active analyst {name}")
            entries[name]["revoked"] = _now()
            self._write(entries)

    def list(self) -> list[dict]:
        return [{"name": n, "role": e["role"], "added": e["added"], "revoked": e.get("revoked")}
                for n, e in sorted(self._read().items())]

    # --- the gateway -------------------------------------------------------------------------------
    def verify(self, token: str) -> Principal:
        """The principal ``token`` proves, or ``AuthError``."""
        parts = token.split(".")
        if len(parts) != 3 or parts[0] != PREFIX:
            raise AuthError("malformed credential")
        _, name, secret = parts
        key = hashlib.sha256(token.encode()).hexdigest()
        with self._lock:
            entries = self._current()
            if key in self._verified:
                return self._verified[key]
            entry = entries.get(name)
            if entry is None or entry.get("revoked"):
                _hash(secret, b"\0" * 16)  # the same work for an unknown name: no timing oracle on names
                raise AuthError("unknown or revoked credential", claimed=name[:32])
            if not hmac.compare_digest(_hash(secret, bytes.fromhex(entry["salt"])), entry["scrypt"]):
                raise AuthError("wrong credential", claimed=name)
            principal = Principal(name, entry["role"])
            self._verified[key] = principal
            return principal


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
