"""Meta-training throughput, peak memory and FLOP/s of the evaluator's step, against peers.

Each implementation runs the step that :mod:`metasearch.evaluation.evaluator` runs: sample a
meta-batch, compute the meta-gradient of every meta-learned tensor, set ``.grad`` and take an
Adam step. ``metasearch`` is the package's path on the engine it picks (the grouped engine:
the tasks as one hand-batched network), ``metasearch-vmap`` its vmap engine (the reference
engine, per-task code under ``torch.func.vmap``); ``loop`` is a reference written here with plain
``torch.autograd``, one task after another; ``learn2learn`` and ``higher`` are those libraries'
MAML, the standard way (:mod:`peers`). All start from the same initialization and draw the same
batches, so their meta-gradients on the first batch must agree; the ``grad_max_abs_diff`` column
reports by how much each differs from the loop's. A peer that cannot be imported gets a row
saying why.

Tasks are Omniglot-shaped (1x28x28 images, 1-shot, 15 query images per class, 5- and 20-way)
but drawn from random images, so no data set is needed. Throughput is tasks per second over the
timed steps after warm-up, the best of ``--repeat`` interleaved runs. Peak memory is
``torch.cuda.max_memory_allocated`` on CUDA; on the CPU each measurement runs in a fresh
subprocess and reports how far the process's peak RSS rose above its RSS before the first step.
FLOPs per task are counted with ``FlopCounterMode`` on the loop. ``--population P`` times P
candidates meta-trained together against one at a time instead.

Usage::

    python benchmarks/evaluator_throughput.py                  # the default grid
    python benchmarks/evaluator_throughput.py --quick          # a smoke run, about half a minute
    python benchmarks/evaluator_throughput.py --device cuda --meta-batch 4 32 128
    python benchmarks/evaluator_throughput.py --device cpu --threads 1 --repeat 3   # busy CPU
    python benchmarks/evaluator_throughput.py --population 8 --algorithms maml --meta-batch 32
"""

from __future__ import annotations

import argparse
import csv
import gc
import importlib.metadata
import json
import math
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NamedTuple

import peers
import torch
from rich.console import Console
from rich.table import Table
from torch import Tensor
from torch.func import functional_call
from torch.utils.flop_counter import FlopCounterMode

from metasearch.algorithms import get_algorithm
from metasearch.algorithms.base import query_precision
from metasearch.engines import GROUPED, EngineChoice, choose_engine
from metasearch.evaluation.allocator import retain_freed_memory
from metasearch.learners import Learner, build_learner
from metasearch.spec import LearnerSpec
from metasearch.tasks import ClassificationSource, TaskBatch

RESULTS = Path(__file__).resolve().parent / "results"
COLUMNS = (
    "device",
    "device_name",
    "torch_version",
    "implementation",
    "library_version",
    "status",
    "algorithm",
    "ways",
    "shots",
    "inner_steps",
    "meta_batch",
    "precision",
    "tasks_per_s",
    "tasks_per_s_median",
    "peak_mem_mb",
    "speedup_vs_loop",
    "speedup_vs_learn2learn",
    "gflop_per_task",
    "achieved_gflops",
    "grad_max_abs_diff",
)


@dataclass(frozen=True)
class Config:
    """One benchmarked setting: the algorithm, the task shape and the meta-batch size."""

    algorithm: str
    inner_steps: int
    meta_batch: int
    ways: int = 5
    shots: int = 1
    query: int = 15
    precision: str = "float32"

    def spec(self) -> LearnerSpec:
        """The four-block conv learner (64 channels, batch norm, max pooling), the package's
        defaults otherwise (scalar inner rate 0.4, Adam at 1e-3), in ``precision``."""
        return LearnerSpec.from_dict(
            {
                "architecture": {
                    "family": "conv",
                    "widths": [64, 64, 64, 64],
                    "normalization": "batch",
                    "pooling": "max",
                },
                "inner": {"steps": self.inner_steps},
                "outer": {
                    "algorithm": self.algorithm,
                    "meta_batch_size": self.meta_batch,
                    "precision": self.precision,
                },
            }
        )


# --- implementations ------------------------------------------------------------------------

MetaStep = Callable[[TaskBatch], None]
"""Leaves the meta-gradient of one batch in ``.grad`` of every ``learner.meta_tensors()``."""


def engine_step(engine: EngineChoice) -> Callable[[Learner, Config], MetaStep]:
    """The package's path on ``engine``, exactly as the evaluator calls it."""

    def factory(learner: Learner, config: Config) -> MetaStep:
        algorithm = get_algorithm(config.algorithm)
        chosen = choose_engine(learner, engine)
        meta_tensors = learner.meta_tensors()

        def step(batch: TaskBatch) -> None:
            result = chosen.meta_gradients(algorithm, [learner], batch, 0.0)[0]
            for tensor, grad in zip(meta_tensors, result.grads, strict=True):
                tensor.grad = grad

        return step

    return factory


def loop_step(learner: Learner, config: Config) -> MetaStep:
    """Reference: one task at a time with plain autograd, accumulating ``.backward()``."""
    first_order = get_algorithm(config.algorithm).first_order(learner.spec, 0.0)
    adapted = learner.adapted_names

    def step(batch: TaskBatch) -> None:
        for support_x, support_y, query_x, query_y in zip(*batch, strict=True):
            fast = dict(learner.params)
            for inner_step in range(config.inner_steps):
                outputs = functional_call(learner.network, fast, (support_x,))
                grads = torch.autograd.grad(
                    learner.loss(outputs, support_y),
                    [fast[n] for n in adapted],
                    create_graph=not first_order,
                )
                for name, grad in zip(adapted, grads, strict=True):
                    fast[name] = fast[name] - _rate(learner, name, inner_step) * grad
            with query_precision(learner.spec, query_x.device):
                outputs = functional_call(learner.network, fast, (query_x,))
            (learner.loss(outputs, query_y) / batch.n_tasks).backward()

    return step


def _rate(learner: Learner, name: str, step: int) -> Tensor:
    """The inner rate of ``name`` at ``step``, read from the stored meta-state."""
    state = learner.meta_state
    rates = state["inner_lr.*"] if "inner_lr.*" in state else state[f"inner_lr.{name}"]
    return rates[step if rates.shape[0] > 1 else 0]


def learn2learn_step(learner: Learner, config: Config) -> MetaStep:
    return peers.learn2learn_step(learner, config.algorithm == "fomaml")


def higher_step(learner: Learner, config: Config) -> MetaStep:
    return peers.higher_step(learner, config.algorithm == "fomaml")


IMPLEMENTATIONS: dict[str, Callable[[Learner, Config], MetaStep]] = {
    "loop": loop_step,
    "metasearch": engine_step("auto"),
    "metasearch-vmap": engine_step("vmap"),
    "learn2learn": learn2learn_step,
    "higher": higher_step,
}
"""Name -> factory of a :data:`MetaStep` for a freshly built learner; add new ones here."""
REFERENCE = "loop"
PEER = "learn2learn"
LIBRARIES = {
    "metasearch": "metasearch",
    "metasearch-vmap": "metasearch",
    "learn2learn": "learn2learn",
    "higher": "higher",
}
"""The library each implementation is, for its version and availability."""


# --- one measurement ------------------------------------------------------------------------


class Timing(NamedTuple):
    """How long to measure: untimed warm-up steps, then at least ``steps`` timed steps and at
    least ``min_time`` seconds of them; ``seed`` fixes the initialization and the batches."""

    warmup: int
    steps: int
    min_time: float
    seed: int


@dataclass
class Measurement:
    tasks_per_s: float
    peak_mem_mb: float
    grads: list[Tensor]  # the meta-gradient of the first batch, on the CPU
    flop_per_task: float  # REFERENCE only: FlopCounterMode on one more step after the timed ones


def synthetic_omniglot(config: Config, device: torch.device, seed: int) -> ClassificationSource:
    """Random images in Omniglot's layout: 1623 classes of 20 images, 1x28x28, rotations on."""
    classes, per_class = 1623, 20
    generator = torch.Generator().manual_seed(seed)
    shape = (classes * per_class, 1, 28, 28)
    images = torch.randint(0, 256, shape, generator=generator, dtype=torch.uint8)
    return ClassificationSource(
        images.to(device),
        (torch.arange(classes) * per_class).to(device),
        torch.full((classes,), per_class).to(device),
        {"train": range(1100), "val": range(1100, 1200), "test": range(1200, classes)},
        ways=config.ways,
        shots=config.shots,
        query_shots=config.query,
        rotations=True,
        name="synthetic-omniglot",
    )


def measure(
    implementation: str, config: Config, device: torch.device, timing: Timing
) -> Measurement:
    """Meta-trains ``timing.warmup`` untimed evaluator steps, then times at least
    ``timing.steps`` steps and at least ``timing.min_time`` seconds of them, with the
    evaluator's CPU allocator setting for every implementation."""
    warmup, steps, min_time, seed = timing
    retain_freed_memory(device)
    source = synthetic_omniglot(config, device, seed)
    spec = config.spec()
    learner = build_learner(spec, source.input_shape, source.n_outputs, source.kind, seed, device)
    meta_step = IMPLEMENTATIONS[implementation](learner, config)  # a peer swaps the tensors
    meta_tensors = learner.meta_tensors()
    optimizer = torch.optim.Adam(meta_tensors, lr=spec.outer.meta_lr)
    generator = torch.Generator(device=device).manual_seed(seed)

    def evaluator_step() -> None:
        batch = source.sample("train", config.meta_batch, generator)
        optimizer.zero_grad(set_to_none=True)
        meta_step(batch)
        optimizer.step()

    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    rss_before = _current_rss()
    evaluator_step()
    grads = [_grad_of(t) for t in meta_tensors]  # the first batch's, for the gradient check
    for _ in range(warmup - 1):
        evaluator_step()
    _synchronize(device)
    start, timed = time.perf_counter(), 0
    while timed < steps or time.perf_counter() - start < min_time:
        evaluator_step()
        timed += 1
    _synchronize(device)
    seconds = time.perf_counter() - start
    if cuda:
        peak = torch.cuda.max_memory_allocated(device)
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - rss_before
    flop_per_task = math.nan
    if implementation == REFERENCE:  # the count is the configuration's: see flop_count
        with FlopCounterMode(display=False) as counter:
            evaluator_step()
        flop_per_task = counter.get_total_flops() / config.meta_batch
    return Measurement(timed * config.meta_batch / seconds, peak / 2**20, grads, flop_per_task)


def _grad_of(tensor: Tensor) -> Tensor:
    grad = tensor.grad if tensor.grad is not None else torch.zeros_like(tensor)
    return grad.detach().to("cpu", copy=True)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _current_rss() -> int:
    """This process's resident set size in bytes (Linux); its peak so far elsewhere."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def measure_in_subprocess(
    implementation: str, config: Config, device: torch.device, timing: Timing
) -> Measurement:
    """:func:`measure` in a fresh Python process, so that its peak RSS is its own."""
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "measurement.pt"
        job = {
            "implementation": implementation,
            "config": asdict(config),
            "device": str(device),
            "timing": timing._asdict(),
            "out": str(out),
        }
        command = [sys.executable, __file__, "--worker", json.dumps(job)]
        command += ["--threads", str(torch.get_num_threads())]
        subprocess.run(command, check=True)
        return Measurement(**torch.load(out))


def run_worker(job: dict) -> None:
    """The subprocess side of :func:`measure_in_subprocess`."""
    config, timing = Config(**job["config"]), Timing(**job["timing"])
    result = measure(job["implementation"], config, torch.device(job["device"]), timing)
    torch.save(asdict(result), job["out"])


# --- the grid and its report -----------------------------------------------------------------


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            model = next(line.split(":", 1)[1].strip() for line in cpuinfo if "model name" in line)
    except (OSError, StopIteration):
        model = platform.processor() or platform.machine()
    return f"{model} ({os.cpu_count()} cores, {torch.get_num_threads()} torch threads)"


def max_abs_diff(grads: list[Tensor], reference: list[Tensor]) -> float:
    return max((g - r).abs().max().item() for g, r in zip(grads, reference, strict=True))


def availability(implementation: str) -> str:
    """``ok``, or why the implementation cannot run here (its library fails to import)."""
    library = LIBRARIES.get(implementation)
    if library is None or library == "metasearch":
        return "ok"
    try:
        peers.import_peer(library)
    except peers.Unavailable as error:
        return str(error)
    return "ok"


def library_version(implementation: str) -> str:
    library = LIBRARIES.get(implementation)
    if library == "metasearch":
        return importlib.metadata.version("metasearch")
    return peers.peer_version(library) if library else f"torch {torch.__version__}"


def grid(args: argparse.Namespace) -> list[Config]:
    return [
        Config(algorithm, inner_steps, meta_batch, ways, args.shots, args.query, precision)
        for precision in args.precision
        for ways in args.ways
        for algorithm in args.algorithms
        for inner_steps in args.inner_steps
        for meta_batch in args.meta_batch
    ]


def run_grid(args: argparse.Namespace, device: torch.device) -> list[dict]:
    measure_one = measure_in_subprocess if args.isolate else measure
    timing = Timing(args.warmup, args.steps, args.min_time, args.seed)
    name, rows = device_name(device), []
    status = {i: availability(i) for i in args.implementations}
    runnable = [i for i in args.implementations if status[i] == "ok"]
    for config in grid(args):
        runs: dict[str, list[Measurement]] = {i: [] for i in runnable}
        for round_ in range(args.repeat):  # interleaved, so that load changes hit all alike
            for implementation in runnable:
                print(f"  {implementation:<12} {config} #{round_ + 1}", file=sys.stderr, flush=True)
                runs[implementation].append(measure_one(implementation, config, device, timing))
                if device.type == "cuda":
                    gc.collect()
                    torch.cuda.empty_cache()
        best = {i: max(r, key=lambda m: m.tasks_per_s) for i, r in runs.items()}
        reference, peer = best.get(REFERENCE), best.get(PEER)
        if reference is not None:
            scale = max(g.abs().max().item() for g in reference.grads)
            print(f"  (largest |{REFERENCE} meta-gradient| entry: {scale:.3g})", file=sys.stderr)
        for implementation in args.implementations:
            row = {
                "device": device.type,
                "device_name": name,
                "torch_version": torch.__version__,
                "implementation": implementation,
                "library_version": library_version(implementation),
                "status": status[implementation],
                "algorithm": config.algorithm,
                "ways": config.ways,
                "shots": config.shots,
                "inner_steps": config.inner_steps,
                "meta_batch": config.meta_batch,
                "precision": config.precision,
            }
            result = best.get(implementation)
            if result is not None:
                row |= _figures(result, runs[implementation], reference, peer, args.peak_tflops)
                if reference is not None and implementation != REFERENCE:
                    row["grad_max_abs_diff"] = f"{max_abs_diff(result.grads, reference.grads):.2e}"
            rows.append({c: row.get(c, "") for c in COLUMNS})
    return rows


def _figures(
    result: Measurement,
    runs: list[Measurement],
    reference: Measurement | None,
    peer: Measurement | None,
    peak_tflops: float | None,
) -> dict:
    """The measured columns of one row: the best run's throughput, the median, ratios, FLOPs."""
    speeds = sorted(r.tasks_per_s for r in runs)
    # FLOPs are counted on the per-task loop: the same arithmetic for every implementation, and
    # FlopCounterMode over-counts the backward of grouped convolutions (metasearch's path).
    figures: dict = {
        "tasks_per_s": round(result.tasks_per_s, 3),
        "tasks_per_s_median": round(speeds[len(speeds) // 2], 3),
        "peak_mem_mb": round(max(r.peak_mem_mb for r in runs), 1),
    }
    if reference is not None:
        achieved = reference.flop_per_task * result.tasks_per_s / 1e9
        figures["gflop_per_task"] = round(reference.flop_per_task / 1e9, 3)
        figures["achieved_gflops"] = round(achieved, 1)
        if peak_tflops:
            figures["achieved_gflops"] = f"{achieved:.1f} ({achieved / peak_tflops / 10:.1f}%)"
    for column, base in (("speedup_vs_loop", reference), ("speedup_vs_learn2learn", peer)):
        if base is not None:
            figures[column] = round(result.tasks_per_s / base.tasks_per_s, 2)
    return figures


def population_learners(config: Config, source: ClassificationSource, n: int) -> list[Learner]:
    """``n`` candidates of the benchmark's shape: inner rates from 0.1 to 0.5, four init schemes."""
    schemes = ("kaiming", "xavier", "orthogonal", "normal")
    data = config.spec().model_dump()
    return [
        build_learner(
            LearnerSpec.from_dict(
                data
                | {
                    "inner": data["inner"] | {"lr": 0.1 + 0.4 * i / max(n - 1, 1)},
                    "init": data["init"] | {"scheme": schemes[i % len(schemes)]},
                }
            ),
            source.input_shape,
            source.n_outputs,
            source.kind,
            i,
            source.device,
        )
        for i in range(n)
    ]


def time_population(
    config: Config, device: torch.device, n: int, together: bool, timing: Timing
) -> float:
    """Candidate-tasks per second of ``n`` candidates meta-trained together (one
    meta-gradient computation per step) or one after another (one each)."""
    retain_freed_memory(device)
    source = synthetic_omniglot(config, device, timing.seed)
    learners = population_learners(config, source, n)
    algorithm = get_algorithm(config.algorithm)
    optimizers = [torch.optim.Adam(x.meta_tensors(), lr=1e-3) for x in learners]
    generator = torch.Generator(device=device).manual_seed(timing.seed)

    def evaluator_step() -> None:
        batch = source.sample("train", config.meta_batch, generator)
        if together:
            steps = GROUPED.meta_gradients(algorithm, learners, batch, 0.0)
        else:
            steps = [GROUPED.meta_gradients(algorithm, [x], batch, 0.0)[0] for x in learners]
        for learner, step, optimizer in zip(learners, steps, optimizers, strict=True):
            for tensor, grad in zip(learner.meta_tensors(), step.grads, strict=True):
                tensor.grad = grad
            optimizer.step()

    for _ in range(timing.warmup):
        evaluator_step()
    _synchronize(device)
    start, timed = time.perf_counter(), 0
    while timed < timing.steps or time.perf_counter() - start < timing.min_time:
        evaluator_step()
        timed += 1
    _synchronize(device)
    return timed * n * config.meta_batch / (time.perf_counter() - start)


def run_population(args: argparse.Namespace, device: torch.device) -> list[dict]:
    """Population of ``args.population`` candidates against one candidate at a time."""
    timing = Timing(args.warmup, args.steps, args.min_time, args.seed)
    rows = []
    for config in grid(args):
        print(f"  population of {args.population}: {config}", file=sys.stderr, flush=True)
        speeds = {
            mode: max(
                time_population(config, device, args.population, together, timing)
                for _ in range(args.repeat)
            )
            for mode, together in (("one at a time", False), ("population", True))
        }
        for mode, speed in speeds.items():
            rows.append(
                {
                    "device": device.type,
                    "device_name": device_name(device),
                    "torch_version": torch.__version__,
                    "algorithm": config.algorithm,
                    "ways": config.ways,
                    "shots": config.shots,
                    "inner_steps": config.inner_steps,
                    "meta_batch": config.meta_batch,
                    "precision": config.precision,
                    "candidates": args.population,
                    "mode": mode,
                    "candidate_tasks_per_s": round(speed, 3),
                    "speedup": round(speed / speeds["one at a time"], 2),
                }
            )
    return rows


def print_table(rows: list[dict], memory_note: str) -> None:
    hidden = ("device", "device_name", "torch_version", "library_version", "tasks_per_s_median")
    shown = [c for c in rows[0] if c not in hidden]
    table = Table(caption=memory_note)
    for column in shown:
        left = column in ("implementation", "algorithm")
        table.add_column(column, justify="left" if left else "right", no_wrap=True)
    for row in rows:
        table.add_row(*(str(row[c]) if row[c] != "" else "-" for c in shown))
    if "status" in shown:
        table.columns[shown.index("status")].max_width = 40
    console = Console()
    console.width = max(console.width, 220)  # a pipe reports 80 columns: keep the table whole
    console.print(table)


def write_csv(rows: list[dict], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    default_device = "cuda" if torch.cuda.is_available() else "cpu"
    parser.add_argument("--device", choices=("cpu", "cuda"), default=default_device)
    parser.add_argument("--meta-batch", type=int, nargs="+", default=[4, 32])
    parser.add_argument("--algorithms", nargs="+", default=["maml", "fomaml"])
    parser.add_argument("--inner-steps", type=int, nargs="+", default=[1, 5])
    parser.add_argument("--ways", type=int, nargs="+", default=[5, 20])
    parser.add_argument("--shots", type=int, default=1)
    parser.add_argument("--query", type=int, default=15, help="query images per class")
    parser.add_argument(
        "--precision",
        nargs="+",
        choices=("float32", "bfloat16"),
        default=["float32"],
        help="bfloat16: every implementation's query pass under torch.autocast (metasearch's by "
        "its spec), the inner loop in float32",
    )
    parser.add_argument(
        "--implementations", nargs="+", choices=list(IMPLEMENTATIONS), default=list(IMPLEMENTATIONS)
    )
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first (>= 1)")
    parser.add_argument(
        "--steps", type=int, default=None, help="least timed steps (default 1 on CPU, 10 on CUDA)"
    )
    parser.add_argument(
        "--min-time",
        type=float,
        default=None,
        help="least timed seconds per measurement (default 5 on the CPU, 2 on CUDA)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="measure every implementation this many times, interleaved; report the best",
    )
    parser.add_argument(
        "--peak-tflops", type=float, default=None, help="the device's peak, for a %% of peak"
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)"
    )
    parser.add_argument(
        "--isolate",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="one fresh subprocess per measurement (default: on the CPU only, for peak RSS)",
    )
    parser.add_argument(
        "--csv",
        type=Path,
        default=None,
        help="where to write the CSV (default benchmarks/results/evaluator_throughput_<device>.csv;"
        " none with --quick)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: meta-batch 2, one inner step, one step"
    )
    parser.add_argument(
        "--population",
        type=int,
        default=None,
        help="instead: time this many candidates meta-trained together against one at a time",
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.warmup < 1:
        parser.error("--warmup must be >= 1: the first step gives the gradient check")
    cpu = args.device == "cpu"
    if args.quick:
        args.meta_batch, args.inner_steps, args.ways = [2], [1], [5]
        args.steps = args.steps or 1
        args.min_time = args.min_time or 0.0
    if args.steps is None:
        args.steps = 1 if cpu else 10
    if args.min_time is None:
        args.min_time = 5.0 if cpu else 2.0
    if args.isolate is None:
        args.isolate = cpu
    if args.csv is None and not args.quick:
        kind = "population" if args.population else "throughput"
        args.csv = RESULTS / f"evaluator_{kind}_{args.device}.csv"
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.worker:
        run_worker(json.loads(args.worker))
        return
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda, but torch sees no CUDA device")
    print(
        f"{device_name(device)}, torch {torch.__version__}; load average before: "
        f"{_load_average()}; warmup {args.warmup} step(s), then at least {args.steps} step(s) "
        f"and {args.min_time:g} s timed",
        file=sys.stderr,
    )
    started = time.perf_counter()
    rows = run_population(args, device) if args.population else run_grid(args, device)
    if args.population:
        memory_note = f"candidate-tasks per second, best of {args.repeat}"
    elif device.type == "cuda":
        memory_note = "peak_mem_mb: torch.cuda.max_memory_allocated after reset"
    elif args.isolate:
        memory_note = (
            "peak_mem_mb: process RSS, peak (ru_maxrss) minus RSS before the first step, "
            "one fresh process per measurement"
        )
    else:
        memory_note = "peak_mem_mb: process RSS peak growth, NOT isolated (--no-isolate)"
    print_table(rows, memory_note)
    print(
        f"{time.perf_counter() - started:.0f} s in all; load average after: {_load_average()}",
        file=sys.stderr,
    )
    if args.csv is not None:
        write_csv(rows, args.csv)
        print(f"wrote {args.csv}", file=sys.stderr)


def _load_average() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


if __name__ == "__main__":
    main()
