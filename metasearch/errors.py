"""User-facing errors: each says what is wrong and what to do about it."""

from __future__ import annotations


class MetasearchError(Exception):
    """Base class of every error metasearch raises on bad input."""


class SpecError(MetasearchError, ValueError):
    """A learner spec, search space or study file holds an unknown or inconsistent value."""


class DataError(MetasearchError):
    """A data set is missing, unreadable or too small for the requested tasks."""


class ArtifactError(MetasearchError):
    """An exported learner is missing, corrupt, modified or from another format version."""


class InputError(MetasearchError, ValueError):
    """A raw input that an exported learner's transform cannot take (a wrong type or shape)."""


class StorageError(MetasearchError):
    """A study storage cannot be opened, read or written: a bad URL, an unreachable server, a
    missing or read-only folder, a full disk."""
