"""Build and run the bank bundle's Java consumer (streams/cli/bank_bundle/AlertConsumer.java) in tests.

``build_java_consumer`` fetches the jars the bundle's pom.xml names (Maven, once per pom.xml: the
jars are kept in ``<cache>/lib`` with the pom's hash beside them) and compiles the consumer;
``run_java_consumer`` runs it and parses its output.

The consumer prints ``GenericRecord.toString()``: Avro's own JSON rendering, which ``json.loads``
reads but which is not Avro's JSON encoding:
- a union value is printed bare (``"x"``, ``5`` or ``null``), not wrapped as ``{"string": "x"}``;
- an enum prints as its symbol string; a fixed as an array of *signed* byte numbers (``[1, -56]``);
- bytes print as a string with one character per byte (code points 0-255, control characters as
  ``\\uXXXX``), so ``value.encode("latin-1")`` gives the bytes back;
- logical types are not applied (``GenericData.get()`` has no conversions): a timestamp-millis
  prints as its long, a decimal as its unscaled bytes as above;
- float/double NaN and infinities print as the strings ``"NaN"``, ``"Infinity"``, ``"-Infinity"``;
- record fields come in schema order, map entries in no particular order (Avro reads maps into a
  HashMap); non-ASCII text is printed as is, in UTF-8 (the consumer sets it, whatever the locale).
The alert schema's only union is the maps' nullable strings, and it has none of the other types:
an alert comes out as the same dict that the Python codec decodes.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

_STAMP = ".pom.sha256"


def build_java_consumer(bundle: Path, cache: Path) -> str:
    """Fetch the bundle's dependencies into ``<cache>/lib`` (only when the jars for this pom.xml
    are not there yet) and compile ``<bundle>/AlertConsumer.java`` into ``<cache>/classes``.
    Return the class path to run it with."""
    pom = bundle / "pom.xml"
    lib, classes = cache / "lib", cache / "classes"
    pom_hash = hashlib.sha256(pom.read_bytes()).hexdigest()
    stamp = lib / _STAMP
    if not (stamp.is_file() and stamp.read_text().strip() == pom_hash and any(lib.glob("*.jar"))):
        shutil.rmtree(lib, ignore_errors=True)
        _run(["mvn", "-q", "-B", "-f", str(pom), "dependency:copy-dependencies", f"-DoutputDirectory={lib}"],
             "fetching the bundle's jars with Maven", timeout=900)
        stamp.write_text(pom_hash + "\n")
    shutil.rmtree(classes, ignore_errors=True)
    classes.mkdir(parents=True)
    _run(["javac", "-encoding", "UTF-8", "-d", str(classes), "-cp", f"{lib}/*", str(bundle / "AlertConsumer.java")],
         "compiling AlertConsumer.java", timeout=300)
    return f"{lib}/*:{classes}"


def run_java_consumer(classpath: str, bundle: Path, topic: str, count: int, timeout_s: float) -> list[dict]:
    """Run the consumer on ``topic`` until it has printed ``count`` alerts (or ``timeout_s`` passed)
    and return them, parsed from its JSON lines. AssertionError with its stderr unless it exits 0."""
    cmd = ["java", "-cp", classpath, "AlertConsumer", str(bundle / "client.properties"), str(bundle / "alert.avsc"),
           topic, str(count), str(int(timeout_s))]
    proc = subprocess.run(cmd, capture_output=True, timeout=timeout_s + 120)
    stdout, stderr = proc.stdout.decode("utf-8"), proc.stderr.decode("utf-8", "replace")
    if proc.returncode != 0:
        raise AssertionError(f"AlertConsumer exited {proc.returncode}\nstderr:\n{stderr}\nstdout:\n{stdout}")
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


def _run(cmd: list[str], what: str, timeout: float) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(f"{what} failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stdout}\n{proc.stderr}")
