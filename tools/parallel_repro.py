"""Usage: python -m tools.parallel_repro [--gpus 0,1,...] [--workers N] [--dry] [TARGET ...]

`dvc repro` runs one stage at a time, so on a host with several GPUs one cell trains while the
other GPUs idle. This runs the pending stages concurrently, one worker per GPU: each stage is its
own `CUDA_VISIBLE_DEVICES=k dvc --wait-for-lock repro -s STAGE`, started once the stages it depends
on have finished. DVC still owns the DAG, the locking and dvc.lock (it releases the repo lock while
a stage's command runs; docs/design.md); this module only decides what may start now.

First the always-changed stages (check) run, alone; if one fails nothing else starts. Pending = the
stages `dvc status` then reports as changed plus everything downstream of them (those only show as
changed once their upstream reran); TARGETs restrict it like `dvc repro TARGET`. --dry runs nothing,
so it cannot see an image folder that changed since check last ran. Run it from
the repo root. Without GPUs, `--workers N` runs N CPU workers. Profile stages run alone on
every kind of worker: they time the host's CPU, and on GPUs read a whole-GPU energy counter, that
the other stages would share. A failed stage stops the stages downstream of it, the others
carry on (like `dvc repro --keep-going`), and the exit code is 1; Ctrl-C stops every stage (130).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import threading
from concurrent.futures import ALL_COMPLETED, FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from graphlib import TopologicalSorter
from queue import SimpleQueue

from resomap.core.errors import ResoMapError
from resomap.core.gpu_claim import visible_gpu_ids
from resomap.core.stage import run_stage
from tools.dag import StageGraph, always_changed_stages, pending_graph, run_first, waves

TIMING_STAGE = "profile@"  # its timings hold only on a host nothing else uses (CPU shared: 204 ms/img, alone: 0.61)
SIGNAL_POLL_S = 0.2  # how often the main thread wakes while stages run, to handle Ctrl-C


@dataclass(frozen=True)
class Worker:
    label: str  # prefixes its output lines: "gpu 1", "cpu 0"
    cuda_visible_devices: str  # "" hides every GPU from a CPU worker


def visible_gpus() -> list[str]:
    """The CUDA_VISIBLE_DEVICES entries a worker may get, indexed like torch's devices."""
    import torch

    return visible_gpu_ids(torch.cuda.device_count())


def plan_workers(gpus: list[int] | None, workers: int | None, visible: list[str]) -> list[Worker]:
    """One worker per chosen GPU (default: every visible one); --workers N spreads N workers over
    them round-robin, or runs N CPU workers when there is no GPU."""
    if gpus is not None:
        if not visible:
            raise ResoMapError("--gpus: no GPU is visible here; leave it out to run on CPU (--workers N for several)")
        wrong = [gpu for gpu in gpus if not 0 <= gpu < len(visible)]
        if wrong:
            last = len(visible) - 1
            raise ResoMapError(f"--gpus {wrong[0]}: {len(visible)} GPU(s) visible, pick ids from 0 to {last}")
    chosen = [visible[gpu] for gpu in gpus] if gpus is not None else visible
    count = workers if workers is not None else max(len(chosen), 1)
    if count < 1:
        raise ResoMapError(f"--workers {count}: need at least 1")
    if not chosen:
        return [Worker(f"cpu {index}", "") for index in range(count)]
    return [Worker(f"gpu {gpu}", gpu) for gpu in (chosen[index % len(chosen)] for index in range(count))]


def timing_stages(graph) -> set[str]:
    """The stages that run alone, on CPU and GPU workers alike: profile times latency on the host's
    cores (on a GPU too: the Python loop, kernel launches and synchronisation run there), reads
    NVML's energy counter of the whole GPU, and shares a GPU outright when there are more workers
    than GPUs. The GPUs idle while a profile stage runs (seconds per cell)."""
    return {stage for stage in graph if stage.startswith(TIMING_STAGE)}


def may_start(ready: list[str], running: list[str], alone: set[str]) -> list[str]:
    """The ready stages to start now: a stage in `alone` waits until nothing runs, then holds the others back."""
    if any(stage in alone for stage in running):
        return []
    shared = [stage for stage in ready if stage not in alone]
    return shared or (ready[:1] if not running else [])


@dataclass
class Summary:
    outcomes: dict[str, str] = field(default_factory=dict)  # stage -> ran | unchanged | failed | interrupted | not started
    interrupted: bool = False

    def stages(self, outcome: str) -> list[str]:
        return sorted(stage for stage, got in self.outcomes.items() if got == outcome)

    def __str__(self) -> str:
        counts = []
        for outcome in ("ran", "unchanged", "failed", "interrupted", "not started"):
            named = self.stages(outcome)
            if outcome == "interrupted" and not named:
                continue  # only a stopped run has any
            listed = f" ({', '.join(named)})" if named and outcome not in ("ran", "unchanged") else ""
            counts.append(f"{len(named)} {outcome}{listed}")
        return "parallel_repro: " + ", ".join(counts) + (" - interrupted" if self.interrupted else "")


def wait_awake(futures, return_when: str) -> set[Future]:
    """`concurrent.futures.wait` that wakes the main thread every SIGNAL_POLL_S. Python runs a
    signal's handler only when the main thread executes Python code; a Ctrl-C that the kernel hands
    to a worker thread left an untimed wait blocked until a stage ended on its own (seen once: a
    120 s stage outlived the Ctrl-C meant to stop it)."""
    while True:
        done, pending = wait(futures, timeout=SIGNAL_POLL_S, return_when=return_when)
        if (done and return_when == FIRST_COMPLETED) or not pending:
            return done


class Scheduler:
    """Starts each pending stage on a free worker as soon as the stages it waits for have finished."""

    def __init__(self, graph: StageGraph, workers: list[Worker], alone: set[str]):
        self.graph = graph
        self.workers = workers
        self.alone = alone
        self.free: SimpleQueue[Worker] = SimpleQueue()
        for worker in workers:
            self.free.put(worker)
        self.lock = threading.Lock()  # guards children and stopping, and keeps output lines whole
        self.children: set[subprocess.Popen] = set()
        self.stopping = False

    def run(self) -> Summary:
        summary = Summary({stage: "not started" for stage in self.graph})
        sorter = TopologicalSorter(self.graph)
        sorter.prepare()
        ready: list[str] = []
        running = {}
        with ThreadPoolExecutor(len(self.workers)) as pool:
            try:
                while True:
                    ready += sorted(sorter.get_ready())
                    for stage in may_start(ready, list(running.values()), self.alone):
                        ready.remove(stage)
                        running[pool.submit(self._repro_on_free_worker, stage)] = stage
                    if not running:
                        break
                    finished = wait_awake(running, FIRST_COMPLETED)
                    for future in finished:
                        stage = running.pop(future)
                        summary.outcomes[stage] = future.result()
                        if summary.outcomes[stage] in ("ran", "unchanged"):
                            sorter.done(stage)  # a failed stage is never done: its downstream never gets ready
            except KeyboardInterrupt:
                summary.interrupted = True
                self._stop(running, summary)
        return summary

    def _stop(self, running: dict, summary: Summary) -> None:
        """Ctrl-C every running stage, as a terminal would a serial dvc repro, and wait for them;
        each further Ctrl-C is passed on again (train stops at once on the second)."""
        for future in running:
            future.cancel()
        while True:
            self._interrupt_children()
            try:
                wait_awake(running, ALL_COMPLETED)
                break
            except KeyboardInterrupt:
                continue
        for future, stage in running.items():
            if not future.cancelled():
                summary.outcomes[stage] = future.result()

    def _repro_on_free_worker(self, stage: str) -> str:
        worker = self.free.get()  # one is always free: the pool has one thread per worker
        try:
            return self._repro(stage, worker)
        finally:
            self.free.put(worker)

    def _repro(self, stage: str, worker: Worker) -> str:
        """Run `dvc repro -s STAGE` on the worker, echoing its output line by line."""
        env = {**os.environ, "CUDA_VISIBLE_DEVICES": worker.cuda_visible_devices, "PYTHONUNBUFFERED": "1"}
        command = [sys.executable, "-m", "dvc", "--wait-for-lock", "repro", "-s", stage]
        with self.lock:
            if self.stopping:
                return "not started"
            # its own process group, so a Ctrl-C reaches it (and its stage's command) only through _stop
            child = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, errors="replace", start_new_session=True)
            self.children.add(child)
        ran = False
        with child:
            for line in child.stdout:
                ran = ran or line.startswith(f"Running stage '{stage}'")
                with self.lock:
                    print(f"[{worker.label}] {stage} | {line.rstrip()}", flush=True)
        with self.lock:
            self.children.discard(child)
        if child.returncode:
            return "interrupted" if self.stopping else "failed"
        return "ran" if ran else "unchanged"

    def _interrupt_children(self) -> None:
        with self.lock:
            self.stopping = True
            for child in self.children:
                with contextlib.suppress(ProcessLookupError):  # exited, not yet discarded
                    os.killpg(child.pid, signal.SIGINT)


def gpu_ids(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected GPU ids like 0,1 - got {text!r}") from None


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m tools.parallel_repro", description=__doc__.split("\n\n")[1])
    parser.add_argument("--gpus", type=gpu_ids, help="GPU ids to use (default: every visible GPU)")
    parser.add_argument("--workers", type=int, help="how many stages run at once (default: one per GPU, or 1)")
    parser.add_argument("--dry", action="store_true", help="print the pending stages in the order they can start")
    parser.add_argument("targets", nargs="*", help="stages, matrix names or dvc.yaml files, with their upstream")
    args = parser.parse_args(argv)
    workers = plan_workers(args.gpus, args.workers, visible_gpus())
    if not args.dry:
        for stage in always_changed_stages(args.targets):
            run_first(stage)
    graph = pending_graph(args.targets)
    if not graph:
        print("parallel_repro: nothing to reproduce, every stage is up to date")
        return
    labels = ", ".join(worker.label for worker in workers)
    print(f"parallel_repro: {len(graph)} pending stage(s) on {len(workers)} worker(s): {labels}")
    if args.dry:
        for index, wave in enumerate(waves(graph), 1):
            print(f"  wave {index}: {' '.join(wave)}")
        return
    alone = timing_stages(graph)
    # Ctrl-C and a batch system's stop both raise KeyboardInterrupt, which stops the stages with SIGINT:
    # also when started with SIGINT ignored (a script's background job), which the stages would inherit
    for stop_signal in (signal.SIGINT, signal.SIGTERM):
        signal.signal(stop_signal, signal.default_int_handler)
    summary = Scheduler(graph, workers, alone).run()
    print(summary, flush=True)
    if summary.interrupted:
        sys.exit(130)
    if summary.stages("failed"):
        sys.exit(1)


if __name__ == "__main__":
    run_stage(main)
