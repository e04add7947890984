"""Load the pseudonymisation key: from ``YURONG_MASKING_HMAC_KEY`` or the file named by
``YURONG_MASKING_KEY_FILE``. A missing or short key stops start-up with a clear error."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from streams.core.masking import MIN_KEY_BYTES, Pseudonymizer
from streams.errors import ConfigError
from streams.settings import Settings


def load_pseudonymizer(settings: Settings) -> Pseudonymizer:
    m = settings.masking
    if m.hmac_key is not None:
        return Pseudonymizer(m.hmac_key.get_secret_value().encode())
    if m.key_file is not None:
        try:
            return Pseudonymizer(m.key_file.read_bytes().strip())
        except OSError as exc:
            raise ConfigError(f"cannot read the pseudonymisation key file {m.key_file}: {exc.strerror}") from None
    raise ConfigError(
        "no pseudonymisation key: set YURONG_MASKING_HMAC_KEY (≥32 bytes) or YURONG_MASKING_KEY_FILE. "
        "On the local stack, `eval \"$(yurong stack env)\"` exports the key file `yurong stack up` made."
    )


def generate_key_file(path: Path) -> Path:
    """Create a random key file readable by its owner only (the demo's local key)."""
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(MIN_KEY_BYTES))
    return path
