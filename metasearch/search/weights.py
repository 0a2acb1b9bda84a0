"""Meta-learned weights of finished trials, kept beside the study so export needs no retraining.

Each complete trial's tensors go to ``<weights dir>/<study>/trial-<number>.safetensors``; the
trial records the file's name and SHA-256 (user attribute ``weights``), so a stale or damaged
file is never mistaken for the trial's own. The folder is ``<db stem>.weights`` beside an SQLite
storage, else ``./<study name>.weights``; on several machines, put it on a shared file system
(``METASEARCH_WEIGHTS``).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import optuna
from safetensors.torch import load, save
from sqlalchemy.engine import make_url
from torch import Tensor

from metasearch.learners import Learner

WEIGHTS_VARIABLE = "METASEARCH_WEIGHTS"


def weights_dir(storage_url: str, study_name: str) -> Path:
    """Where the weights of ``study_name``'s trials live."""
    if os.environ.get(WEIGHTS_VARIABLE):
        base = Path(os.environ[WEIGHTS_VARIABLE])
    elif storage_url.startswith("sqlite:///") and make_url(storage_url).database:
        base = Path(make_url(storage_url).database).with_suffix(".weights")  # type: ignore[arg-type]
    else:
        base = Path(f"{study_name}.weights")
    return base / study_name


def save_trial_weights(directory: Path, trial: optuna.Trial, learner: Learner) -> None:
    """Writes the learner's tensors and records them on ``trial``."""
    data = save({n: t.detach().cpu().contiguous() for n, t in learner.state_tensors().items()})
    directory.mkdir(parents=True, exist_ok=True)
    name = f"trial-{trial.number}.safetensors"
    partial = directory / f".{name}.{os.getpid()}.partial"
    partial.write_bytes(data)
    os.replace(partial, directory / name)
    trial.set_user_attr("weights", {"file": name, "sha256": hashlib.sha256(data).hexdigest()})


def load_trial_weights(
    directory: Path, trial: optuna.trial.FrozenTrial
) -> dict[str, Tensor] | None:
    """The trial's tensors, or None where they were not kept or no longer match the record."""
    record = trial.user_attrs.get("weights")
    if not record:
        return None
    path = directory / record["file"]
    if not path.is_file():
        return None
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != record["sha256"]:
        return None
    return load(data)
