"""The ``metasearch`` command: launch studies, inspect them, export and use learners."""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable
from enum import Enum
from functools import wraps
from pathlib import Path
from typing import Annotated, Any, TypeVar, get_args

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape

from metasearch.errors import MetasearchError

app = typer.Typer(
    help="Search for the best few-shot learner, inspect what was found, export it.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])
MAX_EPISODES = 10_000  # held-out tasks are sampled at once
MAX_SHOTS = 1_000
MAX_WORKERS = 256
MAX_THREADS = 1024

StudyFile = Annotated[Path, typer.Argument(help="The study file (YAML).", show_default=False)]
LearnerDir = Annotated[
    Path, typer.Argument(help="An exported learner's folder.", show_default=False)
]
StorageOption = Annotated[
    str | None,
    typer.Option(help="Storage URL; overrides the study file and $METASEARCH_STORAGE."),
]
DataRootOption = Annotated[
    Path | None, typer.Option(help="Folder holding the data sets (default $METASEARCH_DATA).")
]
DeviceOption = Annotated[str | None, typer.Option(help="auto, cpu, cuda or cuda:N.")]
ThreadsOption = Annotated[
    int | None,
    typer.Option(
        help="CPU threads for torch (default: the study file's threads, else torch's own; "
        "with --workers, the cores shared out among them)."
    ),
]
NormalizationOption = Annotated[
    str | None,
    typer.Option(
        help="Batch normalization at prediction: support (the support set's statistics; each "
        "query predicted on its own) or transductive (the query batch's own, as meta-trained). "
        "Default: as exported."
    ),
]


class OutputFormat(str, Enum):
    table = "table"
    csv = "csv"
    json = "json"


def friendly_errors(command: F) -> F:
    """Turns metasearch's own errors into one red line and exit status 2, without traceback."""

    @wraps(command)
    def run(*args: Any, **kwargs: Any) -> Any:
        _quiet_optuna()
        try:
            return command(*args, **kwargs)
        except MetasearchError as error:
            message = escape(str(error).replace("\n", " "))
            console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            console.print("[yellow]interrupted[/]: finished trials are kept; run again to resume")
            raise typer.Exit(130) from None

    return run  # type: ignore[return-value]


def in_range(option: str, value: int | None, low: int, high: int | None = None) -> None:
    """Refuses ``value`` of ``option`` outside ``low..high`` (None passes: not given)."""
    if value is None or (low <= value and (high is None or value <= high)):
        return
    allowed = f"at least {low}" if high is None else f"between {low} and {high:,}"
    raise MetasearchError(f"{option} must be {allowed}, got {value}")


def positive(option: str, value: float | None) -> None:
    """Refuses ``value`` of ``option`` that is not above zero (None passes)."""
    if value is not None and not value > 0:
        raise MetasearchError(f"{option} must be more than 0, got {value}")


def known_device(device: str | None) -> None:
    """Refuses a ``--device`` that is unknown, or asks for CUDA where there is none."""
    from metasearch.devices import resolve_device

    if device is not None:
        resolve_device(device)


def output_folder(out: Path) -> None:
    """Refuses an ``--out`` that is a file, lies under one, or cannot be written to; nothing
    is created."""
    if out.exists() and not out.is_dir():
        raise MetasearchError(f"--out {out} is an existing file; pass a folder (made if missing)")
    existing = next(p for p in (out, *out.parents) if p.exists())
    if not existing.is_dir():
        raise MetasearchError(f"--out {out} lies under {existing}, which is a file; pass a folder")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as error:
        raise MetasearchError(
            f"--out {out} is not writable ({existing}: {error.strerror or error}); pass a folder "
            "you can write to"
        ) from None


def _quiet_optuna() -> None:
    """metasearch reports trials itself; Optuna's own lines (with tracebacks of failed
    candidates) only with --verbose, and through the same handler as metasearch's, so above
    the live display. Done as a command starts, so that ``--help`` and ``--version`` need not
    import Optuna (nor torch)."""
    import optuna

    verbose = logging.getLogger().level <= logging.INFO
    optuna.logging.set_verbosity(optuna.logging.INFO if verbose else optuna.logging.ERROR)
    optuna.logging.disable_default_handler()
    optuna.logging.enable_propagation()


class LogHandler(RichHandler):
    """Log records (and Python warnings) printed through the console of the live display, so
    that rich prints them above the bars instead of onto them; their text is never read as
    markup. Where the console is not a terminal (a file, a CI log), each is one plain line."""

    def __init__(self, console: Console) -> None:
        super().__init__(console=console, show_time=False, show_path=False, markup=False)
        self.setFormatter(logging.Formatter("%(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        if self.console.is_terminal:
            super().emit(record)
            return
        try:
            line = f"{record.levelname} {self.format(record)}"
            self.console.print(line, markup=False, highlight=False, soft_wrap=True)
        except Exception:
            self.handleError(record)


_handler = LogHandler(console)


def _print_version(value: bool) -> None:
    if value:
        from metasearch.version import __version__

        typer.echo(f"metasearch {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log progress details.")] = False,
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version."
        ),
    ] = False,
) -> None:
    root = logging.getLogger()
    root.setLevel(logging.INFO if verbose else logging.WARNING)
    if _handler not in root.handlers:
        root.addHandler(_handler)
    logging.captureWarnings(True)


NTrialsOption = Annotated[
    int | None, typer.Option(help="Finished trials to reach in all (default: the study file's).")
]
TimeoutOption = Annotated[float | None, typer.Option(help="Stop after this many seconds.")]


@app.command()
@friendly_errors
def search(
    study_file: StudyFile,
    n_trials: NTrialsOption = None,
    timeout: TimeoutOption = None,
    storage: StorageOption = None,
    data_root: DataRootOption = None,
    device: DeviceOption = None,
    workers: Annotated[
        int, typer.Option(help=f"Worker processes here (one GPU each), 1 to {MAX_WORKERS}.")
    ] = 1,
    threads: ThreadsOption = None,
) -> None:
    """Run (or resume) a study until it has its number of trials."""
    from metasearch.commands.search import RunOptions, run_search

    in_range("--n-trials", n_trials, 1)
    positive("--timeout", timeout)
    known_device(device)
    in_range("--workers", workers, 1, MAX_WORKERS)
    in_range("--threads", threads, 1, MAX_THREADS)
    options = RunOptions(n_trials, timeout, storage, data_root, device, threads)
    raise typer.Exit(run_search(study_file, options, workers, console))


@app.command()
@friendly_errors
def worker(
    study_file: StudyFile,
    n_trials: NTrialsOption = None,
    timeout: TimeoutOption = None,
    storage: StorageOption = None,
    data_root: DataRootOption = None,
    device: DeviceOption = None,
    threads: ThreadsOption = None,
) -> None:
    """Join a study as one more worker (start one per GPU, on any number of machines)."""
    from metasearch.commands.search import RunOptions, run_worker

    in_range("--n-trials", n_trials, 1)
    positive("--timeout", timeout)
    known_device(device)
    in_range("--threads", threads, 1, MAX_THREADS)
    options = RunOptions(n_trials, timeout, storage, data_root, device, threads)
    raise typer.Exit(run_worker(study_file, options, console))


@app.command()
@friendly_errors
def show(
    study_file: StudyFile,
    top: Annotated[int, typer.Option(help="How many trials to show.")] = 10,
    format: Annotated[OutputFormat, typer.Option(help="table, csv or json.")] = OutputFormat.table,
    storage: StorageOption = None,
) -> None:
    """The best trials (or the Pareto front) with their configurations and scores."""
    from metasearch.commands.inspect import show_best

    in_range("--top", top, 1)
    show_best(study_file, top, format.value, storage)


@app.command()
@friendly_errors
def studies(
    study_file: Annotated[
        Path | None,
        typer.Argument(help="A study file, for the storage it uses.", show_default=False),
    ] = None,
    storage: StorageOption = None,
    delete: Annotated[
        str | None,
        typer.Option(
            help="Delete the study of this name, with its trials' weights and checkpoints.",
            show_default=False,
        ),
    ] = None,
    yes: Annotated[bool, typer.Option("--yes", help="Delete without asking.")] = False,
) -> None:
    """List a storage's studies (trials by state, best values), or delete one."""
    from metasearch.commands.common import storage_of
    from metasearch.commands.studies import delete_study, list_studies

    if yes and delete is None:
        raise MetasearchError("--yes confirms --delete NAME; pass both, or neither")
    url = storage_of(study_file, storage)
    if delete is None:
        raise typer.Exit(list_studies(url, Console(), console))
    raise typer.Exit(delete_study(url, delete, lambda question: yes or _confirm(question), console))


def _confirm(question: str) -> bool:
    """Asks on the terminal; no answer (end of input) is no."""
    try:
        return typer.confirm(question, default=False, err=True)
    except typer.Abort:
        return False


@app.command()
@friendly_errors
def report(
    study_file: StudyFile,
    out: Annotated[Path, typer.Option(help="Folder for index.html, one self-contained page.")],
    storage: StorageOption = None,
) -> None:
    """Write an interactive HTML report of the study that opens offline."""
    from metasearch.commands.inspect import write_study_report

    output_folder(out)
    try:
        path = write_study_report(study_file, out, storage)
    except OSError as error:
        raise MetasearchError(
            f"cannot write the report to {out}: {error.strerror or error}"
        ) from None
    console.print(f"report written to [bold]{escape(str(path))}[/]")


@app.command()
@friendly_errors
def export(
    study_file: StudyFile,
    out: Annotated[Path, typer.Option(help="Folder to write the learner to.")],
    trial: Annotated[str, typer.Option(help="'best' or a trial number.")] = "best",
    storage: StorageOption = None,
    data_root: DataRootOption = None,
    device: DeviceOption = None,
) -> None:
    """Export a trial's learner, scored on meta-test tasks the search never saw."""
    from metasearch.commands.exporting import export_trial

    output_folder(out)
    known_device(device)
    export_trial(study_file, trial, out, storage, data_root, device, console)


@app.command()
@friendly_errors
def train(
    study_file: StudyFile,
    out: Annotated[Path, typer.Option(help="Folder to write the retrained learner to.")],
    trial: Annotated[str, typer.Option(help="'best' or a trial number.")] = "best",
    seed: Annotated[
        str | None, typer.Option(help="Retrain one of the study file's seeds instead of a trial.")
    ] = None,
    seconds: Annotated[float | None, typer.Option(help="Budget: seconds of meta-training.")] = None,
    iterations: Annotated[int | None, typer.Option(help="Budget: meta-iterations.")] = None,
    examples: Annotated[float | None, typer.Option(help="Budget: meta-training examples.")] = None,
    lr_schedule: Annotated[
        str | None,
        typer.Option(
            help="Meta learning-rate schedule for the retraining instead of the trial's: "
            "constant, cosine (annealed to zero over this budget) or step."
        ),
    ] = None,
    storage: StorageOption = None,
    data_root: DataRootOption = None,
    device: DeviceOption = None,
    threads: ThreadsOption = None,
) -> None:
    """Meta-train a trial's configuration again with a larger budget, and export it."""
    from metasearch.commands.training import RetrainBudget, train_and_export
    from metasearch.search.study import MAX_UNTIMED_EXAMPLES, MAX_UNTIMED_ITERATIONS
    from metasearch.spec import LrSchedule

    output_folder(out)
    positive("--seconds", seconds)
    in_range("--iterations", iterations, 1)
    positive("--examples", examples)
    if seconds is None and (iterations or 0) > MAX_UNTIMED_ITERATIONS:
        raise MetasearchError(f"--iterations above {MAX_UNTIMED_ITERATIONS:,} need --seconds too")
    if seconds is None and iterations is None and (examples or 0) > MAX_UNTIMED_EXAMPLES:
        raise MetasearchError(f"--examples above {MAX_UNTIMED_EXAMPLES:,} need --seconds too")
    known_device(device)
    in_range("--threads", threads, 1, MAX_THREADS)
    schedules = get_args(LrSchedule)
    if lr_schedule is not None and lr_schedule not in schedules:
        raise MetasearchError(f"--lr-schedule must be one of {', '.join(schedules)}")
    budget = RetrainBudget(seconds, iterations, examples)
    code = train_and_export(
        study_file, trial, seed, budget, out, storage, data_root, device, console, threads,
        lr_schedule,  # type: ignore[arg-type]  # checked above
    )  # fmt: skip
    raise typer.Exit(code)


@app.command()
@friendly_errors
def enqueue(
    study_file: StudyFile,
    values: Annotated[
        list[str],
        typer.Argument(
            help="FIELD=VALUE for every dimension the space samples, e.g. inner.lr=0.1 "
            "architecture.widths=[64,64]; values are read as YAML.",
            show_default=False,
        ),
    ],
    name: Annotated[str, typer.Option(help="What to call it in the study.")] = "by hand",
    storage: StorageOption = None,
) -> None:
    """Queue one configuration to try next, like the study file's seeds (never pruned)."""
    from metasearch.commands.queueing import enqueue_configuration

    enqueue_configuration(study_file, values, name, storage, console)


@app.command()
@friendly_errors
def evaluate(
    learner_dir: LearnerDir,
    ways: Annotated[
        int | None, typer.Option(help="Classes per task (default: as trained).")
    ] = None,
    shots: Annotated[int | None, typer.Option(help="Support examples per class.")] = None,
    episodes: Annotated[
        int, typer.Option(help=f"Meta-test tasks to average over (2 to {MAX_EPISODES:,}).")
    ] = 600,
    protocol: Annotated[
        str,
        typer.Option(
            help="unrotated: test classes as they are; vinyals: rotated test classes mixed "
            "across alphabets, as papers report Omniglot."
        ),
    ] = "unrotated",
    classes_from: Annotated[
        str | None,
        typer.Option(help="any, or one group per task: alphabet (Omniglot) or group (folders)."),
    ] = None,
    normalization: NormalizationOption = None,
    data_root: DataRootOption = None,
    device: DeviceOption = None,
    threads: Annotated[
        int | None, typer.Option(help="CPU threads for torch (default: torch's own).")
    ] = None,
) -> None:
    """Score an exported learner on meta-test tasks of its task source."""
    from metasearch.commands.learners import evaluate_learner
    from metasearch.commands.threads import use_threads

    in_range("--ways", ways, 2)
    in_range("--shots", shots, 1, MAX_SHOTS)
    in_range("--episodes", episodes, 2, MAX_EPISODES)
    known_device(device)
    in_range("--threads", threads, 1, MAX_THREADS)
    use_threads(threads)
    evaluate_learner(
        learner_dir,
        ways,
        shots,
        episodes,
        protocol,
        classes_from,
        data_root,
        device,
        normalization,
    )


@app.command()
@friendly_errors
def adapt(
    learner_dir: LearnerDir,
    support: Annotated[Path, typer.Option(help="Labelled images: SUPPORT/<class>/<image>.")],
    query: Annotated[Path, typer.Option(help="Images to label: QUERY/<image> or QUERY/<class>/.")],
    normalization: NormalizationOption = None,
    device: DeviceOption = None,
) -> None:
    """Adapt an exported learner to a new task from image folders and label the query images."""
    from metasearch.commands.learners import adapt_to_folders

    known_device(device)
    adapt_to_folders(learner_dir, support, query, device, normalization)


@app.command()
@friendly_errors
def dashboard(
    study_file: StudyFile,
    storage: StorageOption = None,
    host: Annotated[str, typer.Option(help="Address to serve on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to serve on.")] = 8080,
) -> None:
    """Open optuna-dashboard on the study's storage."""
    from metasearch.commands.inspect import serve_dashboard

    in_range("--port", port, 1, 65535)
    try:
        serve_dashboard(study_file, storage, host, port, console)
    except OSError as error:
        raise MetasearchError(f"cannot serve on {host}:{port}: {error.strerror or error}") from None


@app.command("storage-proxy")
@friendly_errors
def storage_proxy(
    storage: Annotated[
        str, typer.Option(help="The database to serve: postgresql://... or sqlite:///...")
    ],
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 13000,
) -> None:
    """Serve a study database to many workers through Optuna's gRPC proxy (grpc://HOST:PORT)."""
    from metasearch.commands.proxy import serve_storage_proxy

    in_range("--port", port, 1, 65535)
    try:
        serve_storage_proxy(storage, host, port, console)
    except KeyboardInterrupt:
        console.print("storage proxy stopped")
