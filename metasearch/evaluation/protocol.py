"""Meta-test protocols: how the held-out tasks behind a learner's reported score are drawn.

``unrotated`` (the default) shows held-out classes as they are, never rotated, and draws a
task's classes across its split or from one group (Omniglot: one alphabet) as the task's
``classes_from`` says, or as asked. ``vinyals`` is the Omniglot protocol of Vinyals et al. (2016,
"Matching Networks for One Shot Learning") that the MAML and Prototypical Networks papers
report: held-out characters rotated by quarter turns into four classes each, drawn across
alphabets. It scores well above what a learner achieves on new alphabets; use it only to compare
with published numbers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from metasearch.errors import SpecError
from metasearch.evaluation.scoring import DEFAULT_EVAL_SEED
from metasearch.tasks import ClassificationSource, Split, TaskSource

PROTOCOLS = ("unrotated", "vinyals")
META_TEST_TASKS = 600  # as Vinyals et al. (2016) and Finn et al. (2017) average over


@dataclass(frozen=True)
class Protocol:
    """A meta-test protocol by name, on ``tasks`` tasks seeded by ``seed``; ``classes_from``
    overrides the task source's (``any``, or its group: ``alphabet`` for Omniglot)."""

    name: str = "unrotated"
    tasks: int = META_TEST_TASKS
    seed: int = DEFAULT_EVAL_SEED
    classes_from: str | None = None

    def __post_init__(self) -> None:
        if self.name not in PROTOCOLS:
            raise SpecError(
                f"unknown meta-test protocol {self.name!r}; choose unrotated or vinyals"
            )
        if self.name == "vinyals" and self.classes_from not in (None, "any"):
            raise SpecError(
                "the vinyals protocol draws classes across alphabets; drop classes_from"
            )

    def source(self, source: TaskSource, split: Split = "test") -> TaskSource:
        """``source`` drawing its ``split`` tasks by this protocol (the same data, a view)."""
        if not isinstance(source, ClassificationSource):
            if self.name != "unrotated" or self.classes_from is not None:
                raise SpecError(f"{source.kind} tasks have no classes to rotate or group")
            return source
        if self.name == "vinyals":
            if source.name != "omniglot":
                raise SpecError(f"the vinyals protocol is Omniglot's, not {source.name}'s")
            return source.with_sampling(rotate_held_out=True, classes_from="any", splits=[split])
        classes_from = self.classes_from or source.classes_from
        if classes_from not in ("any", source.group_kind) or (
            classes_from != "any" and source.class_groups is None
        ):
            grouped = "" if source.class_groups is None else f" or {source.group_kind}"
            raise SpecError(f"classes_from takes any{grouped} for {source.name} tasks")
        return source.with_sampling(False, classes_from, splits=[split])

    def describe(self, source: TaskSource) -> dict[str, Any]:
        """What to record beside the scores; ``source`` is the protocol's view."""
        record: dict[str, Any] = {"name": self.name, "tasks": self.tasks, "seed": self.seed}
        if isinstance(source, ClassificationSource):
            record |= {
                "ways": source.ways,
                "shots": source.shots,
                "rotations": source.rotate_held_out,
                "classes_from": source.classes_from,
            }
        return record

    def summary(self, source: TaskSource) -> str:
        """One line for people: how the tasks were drawn; ``source`` is the protocol's view."""
        if not isinstance(source, ClassificationSource):
            return f"protocol {self.name}: {self.tasks} tasks"
        pool = "the whole split" if source.classes_from == "any" else f"one {source.group_kind}"
        drawn = f"{self.tasks} {source.ways}-way {source.shots}-shot tasks of classes from {pool}"
        if self.name == "vinyals":
            return (
                f"protocol vinyals (Vinyals et al., 2016, as papers report): {drawn}, each "
                "rotated into 4 classes; it overstates new alphabets, which protocol unrotated "
                "shows"
            )
        return f"protocol unrotated: {drawn}, none rotated"
