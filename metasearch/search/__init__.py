"""The search: spaces of learner specs, study files, and running studies with Optuna.

::

    config = load_study_file("studies/sinusoid.yaml")
    study = run_study(config)            # resumes where an earlier run stopped
    print(trials_frame(study).head())
"""

from metasearch.search.results import best_trials, objective_names, trials_frame
from metasearch.search.runner import open_study, run_study
from metasearch.search.samplers import make_pruner, make_sampler
from metasearch.search.space import SearchSpace, load_space, parse_space
from metasearch.search.storage import creating, open_for_reading, redact
from metasearch.search.study import (
    StudyConfig,
    build_source,
    load_study_file,
    resolve_device,
)
from metasearch.search.suggest import suggest

__all__ = [
    "SearchSpace",
    "StudyConfig",
    "best_trials",
    "build_source",
    "load_space",
    "load_study_file",
    "make_pruner",
    "make_sampler",
    "objective_names",
    "open_study",
    "parse_space",
    "creating",
    "open_for_reading",
    "redact",
    "resolve_device",
    "run_study",
    "suggest",
    "trials_frame",
]
