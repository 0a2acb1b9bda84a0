"""The files of an exported learner: ``learner.json`` beside ``weights.safetensors`` and a
``README.md`` made from the metadata.

``learner.json`` holds the format name and version, the provenance, the SHA-256 of the weights
file and the name and shape of every tensor, next to what the caller puts in it, and the SHA-256
of all of that (``metadata_sha256``, over the canonical JSON of the document without it), so
that the checksums cover the whole artifact. They detect corruption, not tampering: whoever can
edit the files can recompute them. The files are written under temporary names and moved into
place, the metadata last (an earlier metadata file is removed first), so a crash never leaves a
directory that looks complete; they are readable by all (mode 0644, a folder it makes 0755), so
the folder can be handed on as it is. Tensors are stored with safetensors: raw arrays, never
code. Format version 2 (scores keyed ``loss``) is still read; the caller upgrades its content.

Reading checks sizes before content: ``learner.json`` at most ``MAX_METADATA_BYTES``, nesting at
most ``MAX_JSON_DEPTH`` levels, the weights at most ``MAX_WEIGHTS_BYTES``, both regular files;
weights must be finite.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import platform
import re
import tempfile
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, ValidationError
from safetensors import SafetensorError
from safetensors.torch import load as tensors_from_bytes
from safetensors.torch import save as tensors_to_bytes
from torch import Tensor

from metasearch.errors import ArtifactError
from metasearch.reading import read_capped
from metasearch.spec import format_validation_error
from metasearch.version import __version__

FORMAT = "metasearch-learner"
FORMAT_VERSION = 3
READABLE_VERSIONS = (2, 3)
METADATA_FILE = "learner.json"
WEIGHTS_FILE = "weights.safetensors"
CARD_FILE = "README.md"
FILE_MODE, FOLDER_MODE = 0o644, 0o755
RECORDED_PROVENANCE = (
    "metasearch_version",
    "torch_version",
    "optuna_version",
    "python_version",
    "created_utc",
)
"""What every export records in ``provenance`` itself, beside the caller's part."""
CHECKSUM = "metadata_sha256"
EXPORT_AGAIN = "export the learner again"
MAX_METADATA_BYTES = 1 << 20
MAX_JSON_DEPTH = 32
MAX_WEIGHTS_BYTES = 1 << 31
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')
_JSON_BRACKET = re.compile(rb"[][{}]")


class _Weights(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    tensors: dict[str, tuple[NonNegativeInt, ...]]


class _Envelope(BaseModel):
    """What every ``learner.json`` holds besides the caller's content."""

    model_config = ConfigDict(extra="allow")

    provenance: dict[str, Any]
    weights: _Weights
    metadata_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


def write_artifact(
    out_dir: Path,
    content: dict[str, Any],
    tensors: dict[str, Tensor],
    provenance: dict[str, Any],
    card: Callable[[dict[str, Any]], str],
) -> None:
    """Writes ``tensors``, a ``learner.json`` of ``content`` plus format, version, provenance
    (versions and creation time, then ``provenance``) and the checksums, and ``README.md``,
    ``card`` of that metadata. Raises ``ValueError`` for tensors that are not finite: such a
    learner could not be loaded."""
    arrays = {name: t.detach().cpu().contiguous() for name, t in tensors.items()}
    if problem := _non_finite(arrays):
        raise ValueError(f"cannot export a learner whose {problem}")
    weights = tensors_to_bytes(arrays)
    document = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        **content,
        "provenance": _provenance(provenance),
        "weights": {
            "sha256": hashlib.sha256(weights).hexdigest(),
            "tensors": {name: list(t.shape) for name, t in arrays.items()},
        },
    }
    document = json.loads(json.dumps(document))  # as it will be read back
    document[CHECKSUM] = metadata_checksum(document)
    metadata = (json.dumps(document, indent=2) + "\n").encode()
    readme = card(document).encode()
    try:
        if not out_dir.is_dir():
            out_dir.mkdir(parents=True)
            out_dir.chmod(FOLDER_MODE)  # whatever the umask: the folder is made to be handed on
        (out_dir / METADATA_FILE).unlink(missing_ok=True)  # incomplete until the new one lands
        _write_atomically(out_dir / WEIGHTS_FILE, weights)
        _write_atomically(out_dir / CARD_FILE, readme)
        _write_atomically(out_dir / METADATA_FILE, metadata)
    except OSError as error:
        raise ArtifactError(
            f"cannot write the learner to {out_dir}: {error.strerror or error}"
        ) from None


def read_artifact(directory: Path) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """The metadata and the CPU tensors of the artifact in ``directory``, checked against each
    other; raises :class:`ArtifactError` saying what is wrong and what to do."""
    metadata = _read_metadata(directory)
    try:
        envelope = _Envelope.model_validate(metadata)
    except ValidationError as error:
        message = format_validation_error(error, f"{directory / METADATA_FILE}")
        raise ArtifactError(f"{message}; {EXPORT_AGAIN}") from None
    return metadata, _read_weights(directory, envelope.weights)


def metadata_checksum(metadata: dict[str, Any]) -> str:
    """SHA-256 of the canonical JSON of ``metadata`` without its own checksum."""
    rest = {key: value for key, value in metadata.items() if key != CHECKSUM}
    canonical = json.dumps(rest, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _provenance(extra: dict[str, Any]) -> dict[str, Any]:
    recorded = {
        "metasearch_version": __version__,
        "torch_version": str(torch.__version__),
        "optuna_version": _installed("optuna"),
        "python_version": platform.python_version(),
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    clash = sorted(recorded.keys() & extra.keys())
    if clash:
        raise ValueError(f"provenance keys {clash} are recorded by the export itself; drop them")
    return recorded | extra


def _installed(package: str) -> str | None:
    """The installed version of ``package`` (read, not imported), ``None`` where absent."""
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _write_atomically(path: Path, data: bytes) -> None:
    handle, partial = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
    try:
        os.fchmod(handle, FILE_MODE)  # mkstemp makes it private (0600)
        with os.fdopen(handle, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(partial, path)
    except BaseException:
        Path(partial).unlink(missing_ok=True)
        raise


def _read_metadata(directory: Path) -> dict[str, Any]:
    if not directory.is_dir():
        raise ArtifactError(
            f"no exported learner at {directory}: pass the directory that export_learner wrote"
        )
    path = directory / METADATA_FILE
    if not os.path.lexists(path):
        raise ArtifactError(
            f"{directory} holds no {METADATA_FILE}: it is not an exported learner or its export "
            f"did not finish; {EXPORT_AGAIN}"
        )
    data = read_capped(path, "learner metadata", MAX_METADATA_BYTES, ArtifactError)
    if _nests_deeper(data, MAX_JSON_DEPTH):
        raise ArtifactError(
            f"{path} nests deeper than the limit of {MAX_JSON_DEPTH} levels; {EXPORT_AGAIN}"
        )
    try:
        metadata = json.loads(data)
    except ValueError as error:  # invalid JSON or invalid UTF-8
        raise ArtifactError(f"{path} is not valid JSON ({error}); {EXPORT_AGAIN}") from None
    found = metadata.get("format") if isinstance(metadata, dict) else None
    if found != FORMAT:
        raise ArtifactError(
            f"{path} is not an exported metasearch learner (format {found!r}, expected "
            f"{FORMAT!r}); pass the directory that export_learner wrote"
        )
    version = metadata.get("format_version")
    if type(version) is not int or version not in READABLE_VERSIONS:
        provenance = metadata.get("provenance")
        writer = provenance.get("metasearch_version") if isinstance(provenance, dict) else None
        raise ArtifactError(
            f"{path} has format version {version!r}, exported by an incompatible metasearch "
            f"version {writer or 'unknown'}; re-export it with this version (metasearch "
            f"{__version__} reads format versions "
            f"{', '.join(map(str, READABLE_VERSIONS))})"
        )
    if metadata.get(CHECKSUM) != metadata_checksum(metadata):
        raise ArtifactError(
            f"{path} does not match its checksum ({CHECKSUM}): the file is corrupt or was "
            f"modified; {EXPORT_AGAIN}"
        )
    return metadata


def _nests_deeper(data: bytes, limit: int) -> bool:
    """Whether the JSON text ``data`` nests arrays and objects deeper than ``limit``."""
    depth = 0
    for bracket in _JSON_BRACKET.finditer(_JSON_STRING.sub(b'""', data)):
        depth += 1 if bracket.group() in b"[{" else -1
        if depth > limit:
            return True
    return False


def _read_weights(directory: Path, expected: _Weights) -> dict[str, Tensor]:
    path = directory / WEIGHTS_FILE
    if not os.path.lexists(path):
        raise ArtifactError(f"{path} is missing; {EXPORT_AGAIN}")
    data = read_capped(path, "learner weights", MAX_WEIGHTS_BYTES, ArtifactError)
    if hashlib.sha256(data).hexdigest() != expected.sha256:
        raise ArtifactError(
            f"{path} does not match its checksum in {METADATA_FILE}: the file is corrupt or was "
            f"modified; {EXPORT_AGAIN}"
        )
    try:
        tensors = tensors_from_bytes(data)
    except SafetensorError as error:
        raise ArtifactError(
            f"{path} cannot be read as safetensors ({error}); {EXPORT_AGAIN}"
        ) from None
    problem = shape_mismatch(expected.tensors, {n: tuple(t.shape) for n, t in tensors.items()})
    if problem:
        raise ArtifactError(
            f"{path} differs from the tensors {METADATA_FILE} lists: {problem}; {EXPORT_AGAIN}"
        )
    if problem := _non_finite(tensors):
        raise ArtifactError(
            f"{path} is intact but {problem}: the learner diverged; export a trial that "
            "finished with finite scores"
        )
    return tensors


def _non_finite(tensors: dict[str, Tensor]) -> str:
    """Which tensors hold NaN or infinite values, in words; empty where all are finite."""
    bad = sorted(n for n, t in tensors.items() if t.is_floating_point() and not t.isfinite().all())
    if len(bad) > 1:
        return f"{len(bad)} tensors hold NaN or infinite values (first {bad[0]})"
    return f"tensor {bad[0]} holds NaN or infinite values" if bad else ""


def shape_mismatch(expected: dict[str, tuple[int, ...]], found: dict[str, tuple[int, ...]]) -> str:
    """How ``found`` tensor shapes differ from ``expected`` ones; empty where they agree."""
    missing, extra = sorted(expected.keys() - found.keys()), sorted(found.keys() - expected.keys())
    if missing or extra:
        return ", ".join(
            f"{what} tensors {names}"
            for what, names in (("missing", missing), ("unexpected", extra))
            if names
        )
    wrong = [n for n, shape in expected.items() if tuple(found[n]) != tuple(shape)]
    shown = [f"{n} has shape {list(found[n])}, expected {list(expected[n])}" for n in wrong[:2]]
    more = f" and {len(wrong) - 2} more" if len(wrong) > 2 else ""
    return "; ".join(shown) + more
