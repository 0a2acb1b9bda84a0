"""Reading the YAML files of the search (search spaces and study files)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from metasearch.errors import SpecError


class _Loader(yaml.SafeLoader):
    """Safe YAML that also reads ``1e-3`` as a float (YAML 1.1 wants ``1.0e-3``)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def read_yaml(path: str | Path, what: str) -> dict[str, Any]:
    """The mapping at the top of the YAML file ``path``; ``what`` names the file in errors."""
    return parse_yaml(read_bytes(path, what), f"{what} {path}")


def read_bytes(path: str | Path, what: str) -> bytes:
    """The bytes of the file ``path``; ``what`` names the file in errors."""
    try:
        return Path(path).read_bytes()
    except OSError as error:
        raise SpecError(f"cannot read {what} {path}: {error.strerror or error}") from None


def parse_yaml(text: bytes | str, origin: str) -> dict[str, Any]:
    """The mapping at the top of YAML ``text``; ``origin`` names it in errors."""
    try:
        data = yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as error:
        raise SpecError(f"{origin} is not valid YAML: {_yaml_problem(error)}") from None
    if not isinstance(data, dict):
        raise SpecError(f"{origin} must hold a mapping of fields (name: ..., ...)")
    return data


def _yaml_problem(error: yaml.YAMLError) -> str:
    """PyYAML's error in one line: what is wrong, and where."""
    problem = getattr(error, "problem", None) or str(error).splitlines()[0]
    mark = getattr(error, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return f"{problem}{where}"
