"""``metasearch enqueue``: queue a configuration by hand, as the study file's seeds are."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from metasearch.commands.common import load_config, study_storage
from metasearch.errors import SpecError
from metasearch.search.files import parse_yaml_value
from metasearch.search.runner import open_study
from metasearch.search.suggest import seed_params


def enqueue_configuration(
    study_file: Path, assignments: list[str], name: str, storage: str | None, console: Console
) -> int:
    """Queues the configuration that ``assignments`` (``FIELD=VALUE``) give as the study's next
    trial, creating the study where it does not exist yet; returns the trial's number."""
    config = load_config(study_file)
    try:
        params = seed_params(config.space, parse_assignments(assignments))
    except ValueError as error:
        raise SpecError(f"cannot queue this configuration: {error}") from None
    study = open_study(config, study_storage(config, storage))
    study.enqueue_trial(params, user_attrs={"seed": name})
    number = max(t.number for t in study.get_trials(deepcopy=False))
    console.print(
        f"queued as trial {number} of study {escape(config.name)}; "
        f"'metasearch search {escape(str(study_file))}' runs it first"
    )
    return number


def parse_assignments(assignments: list[str]) -> dict[str, Any]:
    """``["inner.lr=0.1", "architecture.widths=[64, 64]"]`` -> their values, read as YAML."""
    values: dict[str, Any] = {}
    for assignment in assignments:
        field, equals, text = assignment.partition("=")
        if not equals or not field.strip():
            raise ValueError(f"{assignment!r} is not FIELD=VALUE")
        try:
            value = parse_yaml_value(text, f"the value of {field.strip()}")
        except SpecError as error:
            raise ValueError(str(error)) from None
        values[field.strip()] = _number(value)
    return values


def _number(value: Any) -> Any:
    """YAML 1.1 reads ``3e-3`` as a string; on a command line it is a number."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value
