"""Reading the YAML files of the search (search spaces and study files).

Limits are checked before the content is built, so a tiny file cannot take the machine: a file
is read only if it is a regular file of at most ``MAX_BYTES``, it may nest at most ``MAX_DEPTH``
levels, and with its aliases expanded (``*anchor`` repeats the whole anchored node) it may hold
at most ``MAX_NODES`` values, which stops "billion laughs" alias bombs.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from yaml.events import AliasEvent

from metasearch.errors import SpecError
from metasearch.reading import read_capped

MAX_BYTES = 1 << 20
MAX_DEPTH = 32
MAX_NODES = 100_000


class _LimitExceeded(yaml.YAMLError):
    """A limit of this module, raised while composing so nothing larger is ever built."""


class _Loader(yaml.SafeLoader):
    """Safe YAML that also reads ``1e-3`` as a float (YAML 1.1 wants ``1.0e-3``), and composes
    documents only within ``MAX_DEPTH`` and ``MAX_NODES`` (aliases counted expanded)."""

    def __init__(self, stream: bytes | str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._nodes = 0
        self._expanded: dict[int, int] = {}  # id(node) -> its values, aliases expanded

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        if self.check_event(AliasEvent):
            node = super().compose_node(parent, index)
            if id(node) not in self._expanded:  # an alias inside its own anchor
                raise _LimitExceeded("holds an alias inside its own anchor; YAML must not recurse")
            self._count(self._expanded[id(node)])
            return node
        self._depth += 1
        if self._depth > MAX_DEPTH:
            raise _LimitExceeded(f"nests deeper than the limit of {MAX_DEPTH} levels")
        before = self._nodes
        self._count(1)
        node = super().compose_node(parent, index)
        self._expanded[id(node)] = self._nodes - before
        self._depth -= 1
        return node

    def _count(self, nodes: int) -> None:
        self._nodes += nodes
        if self._nodes > MAX_NODES:
            raise _LimitExceeded(
                f"holds more than the limit of {MAX_NODES:,} values (aliases expanded); "
                "write it without deeply repeated aliases"
            )


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
    """The bytes of the regular file ``path``, at most ``MAX_BYTES``; ``what`` names the file
    in errors."""
    return read_capped(path, what, MAX_BYTES, SpecError)


def parse_yaml(text: bytes | str, origin: str) -> dict[str, Any]:
    """The mapping at the top of YAML ``text``; ``origin`` names it in errors."""
    data = parse_yaml_value(text, origin)
    if not isinstance(data, dict):
        raise SpecError(f"{origin} must hold a mapping of fields (name: ..., ...)")
    return data


def parse_yaml_value(text: bytes | str, origin: str) -> Any:
    """Any value YAML ``text`` holds, read within the limits; ``origin`` names it in errors."""
    try:
        return yaml.load(text, Loader=_Loader)
    except _LimitExceeded as error:
        raise SpecError(f"{origin} {error}") from None
    except yaml.YAMLError as error:
        raise SpecError(f"{origin} is not valid YAML: {_yaml_problem(error)}") from None


def _yaml_problem(error: yaml.YAMLError) -> str:
    """PyYAML's error in one line: what is wrong, and where (with its context, if any)."""
    problem = getattr(error, "problem", None) or str(error).splitlines()[0]
    parts = [(getattr(error, "context", None), getattr(error, "context_mark", None))]
    parts.append((problem, getattr(error, "problem_mark", None)))
    return "; ".join(text + _where(mark) for text, mark in parts if text)


def _where(mark: yaml.Mark | None) -> str:
    return f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
