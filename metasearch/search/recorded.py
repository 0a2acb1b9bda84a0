"""The search space as a study records it: one short user attribute per fixed field, derived
field and dimension, each a line of YAML, so that the dashboard shows what was searched.

``search_space`` holds the space's name; ``space.fixed.<field>``, ``space.derived.<field>`` and
``space.dimensions.<field>`` hold each part without its default settings, e.g.
``space.dimensions.inner.lr: {type: float, low: 0.001, high: 0.1, log: true}``. Studies made
before kept the whole space as one mapping under ``search_space``; :func:`recorded_space` reads
both.
"""

from __future__ import annotations

from typing import Any

import yaml

from metasearch.search.space import SearchSpace

NAME = "search_space"
PREFIX = "space."
SECTIONS = ("fixed", "derived", "dimensions")


def space_attrs(space: SearchSpace) -> dict[str, str]:
    """``space`` as study user attributes: its name, then one YAML line per part."""
    data = space.model_dump(mode="json", by_alias=True, exclude_defaults=True)
    attrs = {NAME: space.name}
    for section in SECTIONS:
        for field, value in data.get(section, {}).items():
            attrs[f"{PREFIX}{section}.{field}"] = _line(value)
    return attrs


def recorded_space(user_attrs: dict[str, Any]) -> dict[str, str] | None:
    """The space a study recorded, as :func:`space_attrs` writes it (None: not a metasearch
    study)."""
    recorded = user_attrs.get(NAME)
    if isinstance(recorded, dict):  # the whole space, as studies made before recorded it
        return space_attrs(SearchSpace.model_validate(recorded))
    if recorded is None:
        return None
    return {k: v for k, v in user_attrs.items() if k == NAME or k.startswith(PREFIX)}


def _line(value: Any) -> str:
    text = yaml.safe_dump(value, default_flow_style=True, sort_keys=False, width=10**6)
    return text.removesuffix("\n...\n").strip()  # a plain scalar ends its document with "..."
