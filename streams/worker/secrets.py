"""Load the pseudonymisation key and its id: from ``YURONG_MASKING_HMAC_KEY`` (tests) or else the
file named by ``YURONG_MASKING_KEY_FILE`` (what a deployment's secret store mounts). A missing or
short key stops start-up with a clear error.

The key may carry its id: ``p2:<key>``. A key alone (what ``scripts/stack.sh`` and the demo made
before key ids) has the id ``YURONG_MASKING_KEY_ID``, by default ``p1``. A key that names an id
other than ``YURONG_MASKING_KEY_ID`` is refused: one of the two is stale.
"""

from __future__ import annotations

import os
import re
import secrets
from pathlib import Path

from streams.core.masking import DEFAULT_KEY_ID, MIN_KEY_BYTES, Pseudonymizer
from streams.errors import ConfigError
from streams.settings import Settings

_WITH_ID = re.compile(rb"(p[0-9]+):(.*)", re.DOTALL)


def load_pseudonymizer(settings: Settings) -> Pseudonymizer:
    m = settings.masking
    if m.hmac_key is not None:  # first, as before: tests set it over the stack's key file
        raw = m.hmac_key.get_secret_value().encode()
    elif m.key_file is not None:
        try:
            raw = m.key_file.read_bytes()
        except OSError as exc:
            raise ConfigError(f"cannot read the pseudonymisation key file {m.key_file}: {exc.strerror}") from None
    else:
        raise ConfigError(
            "no pseudonymisation key: set YURONG_MASKING_KEY_FILE (or YURONG_MASKING_HMAC_KEY, ≥32 bytes). "
            "On the local stack, `eval \"$(yurong stack env)\"` exports the key file `yurong stack up` made."
        )
    key_id, key = split_key(raw.strip())
    if key_id and m.key_id and key_id != m.key_id:
        raise ConfigError(f"the pseudonymisation key is {key_id} but YURONG_MASKING_KEY_ID says {m.key_id}")
    return Pseudonymizer(key, key_id or m.key_id or DEFAULT_KEY_ID)


def split_key(raw: bytes) -> tuple[str | None, bytes]:
    """``(key id, key)`` of a key's text: ``p2:<key>`` names its id, a key alone does not."""
    found = _WITH_ID.fullmatch(raw)
    if found is None:
        return None, raw
    return found.group(1).decode(), found.group(2).strip()


def generate_key_file(path: Path, key_id: str = DEFAULT_KEY_ID) -> Path:
    """Create a random key file, ``<key id>:<64 hex>``, readable by its owner only (the demo's
    local key). An existing file is kept."""
    if path.exists():
        return path
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(f"{key_id}:{secrets.token_hex(MIN_KEY_BYTES)}\n")
    return path
