"""Benchmark of scale-out: one and two delivery processes on one outbox.

Run ``.venv/bin/python bench/scaleout.py``; ``--help`` lists the options. Against one
local HTTPS push service (``fanout.py``'s: 201 after 20 ms, or ``--service-delay``) and
N Web Push subscriptions in a PostgreSQL schema of its own, it times
``push.send(everyone=True)`` to the last 201 with

a. one ``flask push worker`` process (the dispatcher of the ``thread`` queue),
b. two of them,
c. one ``flask push worker`` on the ``celery`` queue (a Celery worker on Redis),
d. two of those,

the runs of the four rows interleaved, and prints the medians: the rate, the rate per
process, what the second process adds as a share of the first's rate (the goal of
issue 15: at least 70%), and where the CPU went (each worker, the push service,
PostgreSQL's processes, Redis, the whole machine from ``/proc/stat``), so a reader can
tell when the machine's cores, not the code, were the limit. It also prints the most
one process can send while each push waits the delay (its pushes in flight over the
delay) and how much of that each row reached. It checks in the database that every
delivery ended ``sent``. It asserts nothing about speed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import _scale_app
import fanout
import sqlalchemy as sa
from fanout import BODY, TITLE, fmt_rate, print_table

import flask_push

BENCH = Path(__file__).resolve().parent
DEFAULT_SCHEMA = "flask_push_bench_scale"
_SCHEMA_NAME = re.compile(r"flask_push_bench_scale[a-z0-9_]*")
DEFAULT_REDIS_URL = os.environ.get("PUSH_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
#: the issue's goal: a second process adds at least this share of the first's rate
GOAL_SECOND_SHARE = 0.70
#: above this share of the machine's CPUs busy, the machine is the limit
SATURATED = 0.90
#: every PostgreSQL connection of the benchmark's processes has a name starting so
APP_PREFIX = "flask_push_bench_scale"
MONITOR_NAME = "scaleout-monitor"
#: seconds: a transaction of another session open this long is worth a note
LONG_TRANSACTION = 5.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Row:
    label: str
    queue: str  # "thread" (flask push worker) or "celery"
    processes: int


ROWS = (
    Row("a  flask push worker x1", "thread", 1),
    Row("b  flask push worker x2", "thread", 2),
    Row("c  Celery (flask push worker) x1", "celery", 1),
    Row("d  Celery (flask push worker) x2", "celery", 2),
)


# -- CPU from /proc ---------------------------------------------------------------------


def proc_cpu(pid: int) -> float | None:
    """CPU seconds (user + system, all threads) of a live process, or None."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def proc_peak_mib(pid: int) -> float:
    """Peak resident memory (``VmHWM``) of a live process, in MiB; 0 if gone."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def pids_named(name: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/comm", encoding="ascii") as comm:
                    if comm.read().strip() == name:
                        found.append(int(entry))
            except OSError:
                pass
    return found


def machine_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs since boot, from ``/proc/stat``; iowait
    counts as idle."""
    with open("/proc/stat", encoding="ascii") as stat:
        values = [int(v) for v in stat.readline().split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    total = sum(values[:8])  # guest time is already inside user
    return total - idle, total


class ServiceCpu:
    """Sums the CPU PostgreSQL and Redis spend over a window, sampling ``/proc``.

    PostgreSQL's backends come and go with connections, so a sum of two snapshots
    would lose a backend that ended inside the window: a thread samples every
    0.2 s and keeps each process's last value. Of PostgreSQL it counts the
    benchmark's own backends (their ``application_name``) and, apart, the
    server's background processes (WAL writer, checkpointer, autovacuum, which
    may be working for others), not the backends of other work on a shared
    server; of Redis, every ``redis-server``. It also notes the oldest transaction
    another session held open: a long one keeps PostgreSQL from cleaning up the
    rows the workers' claims and outcomes leave behind.
    """

    def __init__(self, database_url: str) -> None:
        self.engine = sa.create_engine(
            database_url,
            isolation_level="AUTOCOMMIT",
            pool_size=1,
            connect_args={"application_name": MONITOR_NAME},
        )
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.first: dict[tuple[str, int], float] = {}
        self.last: dict[tuple[str, int], float] = {}
        #: seconds: the oldest open transaction of another session seen in the window
        self.oldest_other = 0.0

    def _postgres(self) -> tuple[list[int], list[int]]:
        """The pids of the benchmark's backends and of the server's background
        processes; notes the oldest transaction of any other session."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.text(
                    "SELECT pid, backend_type, application_name, "
                    "extract(epoch FROM now() - xact_start) FROM pg_stat_activity "
                    "WHERE pid IS NOT NULL"
                )
            ).all()
        ours, background = [], []
        for pid, kind, name, age in rows:
            if kind != "client backend":
                background.append(int(pid))
            elif (name or "").startswith(APP_PREFIX):
                ours.append(int(pid))
            elif name != MONITOR_NAME and age is not None:
                self.oldest_other = max(self.oldest_other, float(age))
        return ours, background

    def _sample(self, start: bool = False) -> None:
        ours, background = self._postgres()
        kinds = (("postgres", ours), ("pg-bg", background), ("redis", pids_named("redis-server")))
        for kind, pids in kinds:
            for pid in pids:
                cpu = proc_cpu(pid)
                if cpu is None:
                    continue
                key = (kind, pid)
                if key not in self.first:
                    # a process born inside the window spent all of its CPU in it
                    self.first[key] = cpu if start else 0.0
                self.last[key] = cpu

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            self._sample()

    def start(self) -> None:
        self.first.clear()
        self.last.clear()
        self.oldest_other = 0.0
        self._stop.clear()
        self._sample(start=True)
        self._thread = threading.Thread(target=self._run, name="scaleout-cpu", daemon=True)
        self._thread.start()

    def stop(self) -> dict[str, float]:
        """CPU seconds per kind since :meth:`start`."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._sample()
        totals = {"postgres": 0.0, "pg-bg": 0.0, "redis": 0.0}
        for key, first in self.first.items():
            totals[key[0]] += self.last[key] - first
        return totals

    def close(self) -> None:
        self.engine.dispose()


# -- the worker processes ---------------------------------------------------------------


@dataclass
class Worker:
    process: subprocess.Popen[bytes]
    log: Path
    name: str

    def text(self) -> str:
        return self.log.read_text(errors="replace")


def start_workers(
    row: Row, config: dict[str, Any], args: argparse.Namespace, directory: Path, run: int
) -> list[Worker]:
    """``flask push worker`` processes for ``row``, each logging to a file."""
    workers = []
    path = os.pathsep.join(p for p in (str(BENCH), os.environ.get("PYTHONPATH", "")) if p)
    for i in range(row.processes):
        name = f"{APP_PREFIX}_{row.queue}_{run}_{i}"
        env = {
            **os.environ,
            "PYTHONPATH": path,
            "PYTHONUNBUFFERED": "1",
            "FLASK_APP": "_scale_app:create_app",
            _scale_app.ENV: json.dumps(
                {**config, "application_name": name, "flask_push_file": flask_push.__file__}
            ),
        }
        command = [sys.executable, "-m", "flask", "push", "worker"]
        if row.queue == "celery":
            command += ["--concurrency", str(args.concurrency), "--loglevel", "info"]
        else:
            command += ["--interval", str(args.interval)]
        log = directory / f"{name}.log"
        with log.open("wb") as out:
            # In the run's own directory: ``python -m`` puts the working directory
            # first on sys.path, so from a checkout the workers would import its
            # flask_push whatever PYTHONPATH says, and not the code being measured.
            process = subprocess.Popen(
                command, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=directory
            )
        workers.append(Worker(process, log, name))
    return workers


def wait_ready(workers: Sequence[Worker], monitor: ServiceCpu, celery: bool) -> None:
    """Until each worker has a PostgreSQL connection (its dispatcher made its first
    claim) and, on the celery queue, its Celery worker consumes."""
    ready = re.compile(r"flask-push-\d+@\S+ ready\.")
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        for worker in workers:
            if worker.process.poll() is not None:
                raise RuntimeError(f"worker {worker.name} exited:\n{worker.text()}")
        with monitor.engine.connect() as conn:
            names = set(
                conn.execute(sa.text("SELECT application_name FROM pg_stat_activity")).scalars()
            )
        if all(w.name in names for w in workers) and (
            not celery or all(ready.search(w.text()) for w in workers)
        ):
            return
        time.sleep(0.1)
    raise RuntimeError("the workers did not get ready: " + " | ".join(w.text() for w in workers))


def stop_workers(workers: Sequence[Worker]) -> None:
    """SIGTERM (both kinds finish what is on the network), then SIGKILL."""
    for worker in workers:
        if worker.process.poll() is None:
            worker.process.send_signal(signal.SIGTERM)
    for worker in workers:
        try:
            worker.process.wait(30)
        except subprocess.TimeoutExpired:
            worker.process.kill()
            worker.process.wait()


_ROUND = re.compile(r"handled (\d+) deliveries")
_TASK = re.compile(r"Task flask_push\.deliver\[[^\]]+\] succeeded in [\d.e-]+s: (\d+)")


def handled(worker: Worker, queue: str) -> int:
    """Deliveries the worker says it claimed: its rounds (thread queue) or its Celery
    tasks (the celery queue's sweep beside them does not say)."""
    pattern = _TASK if queue == "celery" else _ROUND
    return sum(int(n) for n in pattern.findall(worker.text()))


# -- one run ------------------------------------------------------------------------------


class _LeaveToWorkers:
    """The sending app's queue in rows a and b: it hands nothing to anyone.

    ``PUSH_QUEUE`` has no value for "commit only, ``flask push worker`` processes
    deliver": the ``thread`` queue would start a worker thread in the sending process,
    which would race the workers being measured. The ``flask push worker`` processes
    find the committed rows by polling (``--interval``), as they find any others.
    """

    def enqueue(self, message_id: str, recipients: int, *, scheduled: bool = False) -> None:
        pass

    def shutdown(self) -> None:
        pass


@dataclass
class RunResult:
    elapsed: float
    send_returned: float
    delivered: int
    statuses: dict[str, int]
    cpu_workers: list[float]
    cpu_service: float
    cpu_postgres: float
    cpu_pg_background: float
    cpu_redis: float
    busy: float
    rss_workers: list[float]
    handled: list[int] = field(default_factory=list)
    #: seconds: the oldest transaction another session held open during the run
    oldest_other: float = 0.0


def pushes_in_flight(configs: dict[str, dict[str, Any]], threads: int) -> dict[str, int]:
    """Per queue, the pushes one worker process keeps in flight to one push service:
    the Web Push provider's lane, as the product builds it from the same config,
    once per process on the thread queue and once per task thread on Celery's (whose
    sweep, beside the task threads, has a lane of its own too)."""
    app = _scale_app.create_app({**configs["thread"], "application_name": APP_PREFIX})
    lane = app.extensions["push"].get_checkers()["webpush"].lane_concurrency
    return {"thread": lane, "celery": lane * threads}


@contextmanager
def sending_app(config: dict[str, Any]) -> Iterator[Any]:
    """The app that sends, in this process: the celery queue's, or one whose sends
    are left to the workers."""
    app = _scale_app.create_app({**config, "application_name": f"{APP_PREFIX}_sender"})
    state = app.extensions["push"]
    if config["queue"] != "celery":
        state.get_queue = _LeaveToWorkers  # an instance attribute: this app only
    with app.app_context():
        db = state.push.db
        db.session.execute(sa.text("SELECT 1"))  # a warm pool, as in a running app
        db.session.rollback()
        try:
            yield state.push
        finally:
            state.push.shutdown()
            db.session.remove()
            db.engine.dispose()


def one_run(
    row: Row,
    run: int,
    push: Any,
    config: dict[str, Any],
    args: argparse.Namespace,
    service: fanout.PushService,
    monitor: ServiceCpu,
    directory: Path,
) -> RunResult:
    n = args.subscribers
    workers = start_workers(row, config, args, directory, run)
    try:
        wait_ready(workers, monitor, row.queue == "celery")
        time.sleep(0.5)  # past the imports' and the first claim's CPU
        db, d = push.db, push.models.Delivery
        base = service.count.value
        service_cpu = service.cpu()
        worker_cpu = [proc_cpu(w.process.pid) or 0.0 for w in workers]
        busy0, total0 = machine_ticks()
        monitor.start()
        started = time.monotonic()
        message = push.send(everyone=True, title=TITLE, body=BODY)
        send_returned = time.monotonic() - started
        db.session.remove()  # as a request's end does: no transaction stays open
        if message.recipient_count != n:
            raise RuntimeError(f"the send had {message.recipient_count} recipients, not {n}")
        service.wait_for(base + n, args.timeout)
        worker_cpu = [
            (proc_cpu(w.process.pid) or 0.0) - c for w, c in zip(workers, worker_cpu, strict=True)
        ]
        busy1, total1 = machine_ticks()
        service_cpu = service.cpu() - service_cpu
        cpu = monitor.stop()
        elapsed = service.last.value - started
        delivered = service.count.value - base
        statuses = fanout.outcomes_of(push, message.id)
        rss = [proc_peak_mib(w.process.pid) for w in workers]
    finally:
        stop_workers(workers)
    result = RunResult(
        elapsed=elapsed,
        send_returned=send_returned,
        delivered=delivered,
        statuses=statuses,
        cpu_workers=worker_cpu,
        cpu_service=service_cpu,
        cpu_postgres=cpu["postgres"],
        cpu_pg_background=cpu["pg-bg"],
        cpu_redis=cpu["redis"],
        busy=(busy1 - busy0) / max(total1 - total0, 1),
        rss_workers=rss,
        handled=[handled(w, row.queue) for w in workers],
        oldest_other=monitor.oldest_other,
    )
    # Untimed: the next run starts from the same table (subscriptions only).
    with db.engine.connect() as conn:
        conn.execute(sa.delete(d).where(d.message_id == message.id))
        conn.commit()
    with monitor.engine.connect() as conn:
        conn.execute(sa.text(f'VACUUM (ANALYZE) "{args.schema}".push_deliveries'))
    return result


# -- the report ---------------------------------------------------------------------------


@dataclass
class Summary:
    row: Row
    runs: list[RunResult]

    def median(self, name: str) -> float:
        return statistics.median(getattr(r, name) for r in self.runs)

    @property
    def elapsed(self) -> float:
        return self.median("elapsed")

    @property
    def cpu_workers(self) -> list[float]:
        return [
            statistics.median(r.cpu_workers[i] for r in self.runs)
            for i in range(self.row.processes)
        ]

    @property
    def peak_rss(self) -> list[float]:
        return [max(r.rss_workers[i] for r in self.runs) for i in range(self.row.processes)]

    @property
    def handled(self) -> list[float]:
        return [
            statistics.median(r.handled[i] for r in self.runs) for i in range(self.row.processes)
        ]

    @property
    def busy(self) -> float:
        return self.median("busy")


def report(
    summaries: list[Summary], n: int, cores: int, in_flight: dict[str, int], delay: float
) -> None:
    """The table, then per queue the verdict and what bounded it.

    ``in_flight``: per queue, how many pushes one process keeps in flight to the one
    push service; with the service's ``delay``, that over the delay is the most one
    process can send, whatever its CPU."""
    rows = []
    rate = {s.row: n / s.elapsed for s in summaries}
    first = {s.row.queue: rate[s.row] for s in summaries if s.row.processes == 1}
    for s in summaries:
        r = rate[s.row]
        one = first.get(s.row.queue)
        added = "-" if s.row.processes == 1 or one is None else f"{(r - one) / one:.0%}"
        rows.append(
            (
                s.row.label,
                f"{s.elapsed:.2f}",
                f"{s.median('send_returned'):.2f}",
                fmt_rate(r),
                fmt_rate(r / s.row.processes),
                added,
                "+".join(f"{c:.1f}" for c in s.cpu_workers),
                f"{s.median('cpu_service'):.1f}",
                f"{s.median('cpu_postgres'):.1f}",
                f"{s.median('cpu_pg_background'):.1f}",
                f"{s.median('cpu_redis'):.1f}" if s.row.queue == "celery" else "-",
                f"{s.busy:.0%}",
                "+".join(f"{m:.0f}" for m in s.peak_rss),
                "/".join(f"{h:,.0f}" for h in s.handled),
            )
        )
    print_table(
        rows,
        (
            "row",
            "to last 201 s",
            "send() s",
            "rate",
            "per process",
            "2nd adds",
            "CPU s workers",
            "push svc",
            "PostgreSQL",
            "PG bg",
            "Redis",
            "machine busy",
            "peak MiB",
            "claimed by each",
        ),
    )
    print()
    print(
        f"Goal: a second process adds at least {GOAL_SECOND_SHARE:.0%} of the first's rate "
        "(on a machine with the cores for it)"
    )
    by_queue: dict[str, dict[int, Summary]] = {}
    for s in summaries:
        by_queue.setdefault(s.row.queue, {})[s.row.processes] = s
    for queue, pair in by_queue.items():
        if 1 not in pair or 2 not in pair:
            continue
        one, two = pair[1], pair[2]
        r1, r2 = n / one.elapsed, n / two.elapsed
        share = (r2 - r1) / r1
        name = "flask push worker" if queue == "thread" else "Celery"
        met = share >= GOAL_SECOND_SHARE
        pg1, pg2 = one.median("cpu_postgres"), two.median("cpu_postgres")
        # PostgreSQL's own work for the same N growing with the second process: the
        # code (its queries), not the cores, is what held the second process back
        database = pg2 > max(3 * pg1, pg1 + 5)
        saturated = two.busy >= SATURATED and not database
        verdict = "met" if met else ("not judged here" if saturated else "NOT met")
        print(
            f"  {name}: x1 {fmt_rate(r1)}, x2 {fmt_rate(r2)}: the second adds "
            f"{share:.0%} of the first's rate: {verdict}"
        )
        if delay > 0 and queue in in_flight:
            # Little's law: a process with L pushes in flight, each answered after
            # the delay, sends at most L / delay, however fast its CPU.
            most = in_flight[queue] / delay
            print(
                f"    the push service's wait bounds each process at {in_flight[queue]} in "
                f"flight / {delay * 1000:g} ms = {fmt_rate(most)}"
                + (
                    " (its task threads'; the sweep beside them may add more)"
                    if queue == "celery"
                    else ""
                )
                + f"; x1 reached {r1 / most:.0%} of that, x2 {r2 / (2 * most):.0%} per process"
            )
        # CPU per push of the worker processes, and of what serves them
        per_push_1 = sum(one.cpu_workers) / n
        per_push_2 = sum(two.cpu_workers) / n
        support = (
            one.median("cpu_service") + one.median("cpu_postgres") + one.median("cpu_redis")
        ) / n
        use_1 = sum(one.cpu_workers) / one.elapsed
        rise = per_push_2 / per_push_1 - 1
        print(
            f"    worker CPU per push: {per_push_1 * 1e6:.0f} us with one process, "
            f"{per_push_2 * 1e6:.0f} us with two ({rise:+.0%}"
            + (
                ": the same work per push, no contention between them"
                if abs(rise) <= 0.15
                else ": more work per push, from contention or from cores shared with more "
                "threads than they have (switches, cold caches)"
                if rise > 0
                else ": less work per push with two than with one, so no contention"
            )
            + f"); the one process used {use_1:.0%} of a core; the push service, PostgreSQL "
            f"and Redis {support * 1e6:.0f} us per push more"
        )
        if database:
            print(
                f"    PostgreSQL's backends spent {pg2:.1f} s of CPU on the benchmark's "
                f"queries with two processes and {pg1:.1f} s with one (medians; the per-run "
                f"lines show which runs): the database's work for the same N grew with the "
                f"second process, so the code, not the cores, held it back"
            )
        if saturated or not met:
            if saturated:
                print(
                    f"    the machine was {two.busy:.0%} busy during x2 ({cores} CPUs, other "
                    f"work included): the cores, not the code, were the limit, and the "
                    f"{GOAL_SECOND_SHARE:.0%} goal cannot be judged on this machine"
                )
            # A process with a core of its own spends its CPU per push on each push:
            # one core's worth is the most it can send, whatever the machine did.
            own = 1 / per_push_1
            print(
                f"    extrapolated from CPU: a process with a core of its own sends at most "
                f"1 / {per_push_1 * 1e6:.0f} us = {fmt_rate(own)}; two, each with a core, "
                f"{fmt_rate(2 * own)}, if the push service, PostgreSQL and Redis get the "
                f"{2 * own * support:.1f} CPUs they would need beside them at that rate "
                f"({2 * own * (per_push_1 + support):.1f} CPUs in all; this machine has "
                f"{cores}, shared)"
            )


# -- main -----------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Scale-out of delivery: one and two `flask push worker` processes, "
        "and the Celery queue with one and two, against a local HTTPS push service."
    )
    parser.add_argument("--database-url", default=fanout.DEFAULT_DATABASE_URL)
    parser.add_argument(
        "--schema",
        default=DEFAULT_SCHEMA,
        help="the benchmark's own schema; must start with flask_push_bench_scale",
    )
    parser.add_argument("--redis-url", default=DEFAULT_REDIS_URL, help="the Celery broker")
    parser.add_argument("--subscribers", type=int, default=20_000, help="N (default 20,000)")
    parser.add_argument("--runs", type=int, default=3, help="runs of each row (default 3)")
    parser.add_argument(
        "--rows",
        default="abcd",
        help="which rows to run, e.g. 'ab' for flask push worker only (default abcd)",
    )
    parser.add_argument(
        "--interval",
        type=float,
        default=0.1,
        help="flask push worker --interval on the thread queue: how soon an idle worker "
        "sees the send (default 0.1 s; the product's default is 1 s)",
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        default=4,
        help="flask push worker --concurrency on the celery queue (default 4, the product's)",
    )
    parser.add_argument(
        "--service-delay",
        type=float,
        default=fanout.SERVICE_DELAY,
        help="seconds the push service waits before each 201 (default %(default)s). Push services "
        "on the internet answer in tens to hundreds of ms; a longer wait makes each "
        "process's rate its requests in flight over the wait, not its CPU, so a machine "
        "with fewer cores than the processes need at the default can still show whether "
        "a second one adds its share",
    )
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per run")
    parser.add_argument(
        "--key-cache",
        type=Path,
        default=fanout.DEFAULT_KEY_CACHE,
        help="where subscriber keys are cached between runs (shared with fanout.py)",
    )
    parser.add_argument("--no-key-cache", action="store_true")
    parser.add_argument("--keep", action="store_true", help="do not drop the schema at the end")
    args = parser.parse_args(argv)
    if not _SCHEMA_NAME.fullmatch(args.schema):
        parser.error("--schema must start with flask_push_bench_scale (lower case)")
    if args.subscribers < 1 or args.runs < 1:
        parser.error("--subscribers and --runs must be at least 1")
    if not 0 <= args.service_delay <= 10:
        parser.error("--service-delay takes 0 to 10 seconds")
    if not args.rows or set(args.rows) - set("abcd"):
        parser.error("--rows takes letters of abcd")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    n = args.subscribers
    rows = [row for letter, row in zip("abcd", ROWS, strict=True) if letter in args.rows]
    cores = os.cpu_count() or 1
    print(f"flask_push {getattr(flask_push, '__version__', '?')} from {flask_push.__file__}")
    print(f"Python {sys.version.split()[0]}, {cores} CPUs, N = {n:,}")
    load_before = os.getloadavg()

    import redis

    scratch = tempfile.TemporaryDirectory(prefix="flask-push-bench-")  # removed at the end
    cert, vapid_key = fanout.local_credentials(scratch.name)
    celery_queue = f"{APP_PREFIX}_{os.getpid()}"
    broker = redis.Redis.from_url(args.redis_url, socket_connect_timeout=2)
    if any(row.queue == "celery" for row in rows):
        broker.ping()

    def clean_broker() -> None:
        keys = list(broker.scan_iter(match=f"*{celery_queue}*"))
        if keys:
            broker.delete(*keys)

    delay = args.service_delay
    service = fanout.start_push_service(cert.cert_file, cert.key_file, delay)
    print(
        f"Push service: https://127.0.0.1:{service.port}/push/<id>, 201 after {delay * 1000:g} ms"
    )
    monitor = ServiceCpu(args.database_url)
    try:
        keys, key_seconds, cached = fanout.subscriber_keys(
            n, None if args.no_key_cache else args.key_cache
        )
        print(f"Subscriber keys: {n:,} ({'cached' if cached else 'generated'})", flush=True)
        print(f"Loading {n:,} subscriptions into schema {args.schema} ...", flush=True)
        seconds = fanout.load_subscriptions(
            args.database_url, args.schema, vapid_key, service, keys
        )
        print(f"  loaded in {seconds:.1f} s (not measured)", flush=True)
        base = {"database_url": args.database_url, "schema": args.schema, "vapid_key": vapid_key}
        configs = {
            "thread": {**base, "queue": "thread"},
            "celery": {
                **base,
                "queue": "celery",
                "broker_url": args.redis_url,
                "celery_queue": celery_queue,
            },
        }
        results: dict[Row, list[RunResult]] = {row: [] for row in rows}
        with tempfile.TemporaryDirectory(prefix="scaleout-") as directory:
            for run in range(args.runs):
                for row in rows:
                    print(f"  run {run + 1}/{args.runs}: {row.label} ...", flush=True)
                    clean_broker()
                    with sending_app(configs[row.queue]) as push:
                        one = one_run(
                            row, run, push, configs[row.queue], args, service, monitor,
                            Path(directory),
                        )  # fmt: skip
                    results[row].append(one)
                    print(
                        f"    {one.delivered:,} delivered in {one.elapsed:.2f} s "
                        f"(send() returned after {one.send_returned:.2f} s), statuses "
                        f"{one.statuses}; CPU s: workers "
                        + "+".join(f"{c:.1f}" for c in one.cpu_workers)
                        + f", push service {one.cpu_service:.1f}, PostgreSQL "
                        f"{one.cpu_postgres:.1f} (background {one.cpu_pg_background:.1f}), "
                        f"Redis {one.cpu_redis:.1f}; oldest other transaction "
                        f"{one.oldest_other:.0f} s; machine "
                        f"{one.busy:.0%} busy; claimed " + "/".join(f"{h:,}" for h in one.handled),
                        flush=True,
                    )
        clean_broker()
        load_after = os.getloadavg()
        print()
        print(
            f"Scale-out, N = {n:,}, push service answers after {delay * 1000:g} ms, PostgreSQL; "
            f"medians of {args.runs} runs, interleaved. Time from push.send() to the last 201; "
            "CPU seconds over that time (PostgreSQL: the benchmark's backends; PG bg: the "
            "server's background processes, which may work for others too); machine busy = "
            "all CPUs from /proc/stat, other work included; 'claimed by each': the thread "
            "queue's rounds, or the Celery tasks (the sweep beside them does not say)"
        )
        summaries = [Summary(row, results[row]) for row in rows]
        report(summaries, n, cores, pushes_in_flight(configs, args.concurrency), delay)
        for row in rows:
            for i, one in enumerate(results[row]):
                if one.oldest_other >= LONG_TRANSACTION:
                    print(
                        f"note: {row.label}, run {i + 1} ({one.elapsed:.1f} s, PostgreSQL "
                        f"{one.cpu_postgres:.1f} s): another session held a transaction open "
                        f"for {one.oldest_other:.0f} s during it"
                    )
        for row in rows:
            for one in results[row]:
                if one.statuses.get("sent", 0) != n:
                    print(f"note: {row.label}: a run ended with statuses {one.statuses}")
                    break
            else:
                print(f"{row.label}: every delivery of every run ended sent ({n:,})")
        print(
            f"Load average: {load_before[0]:.2f} before the run, {load_after[0]:.2f} after "
            f"({cores} CPUs)."
        )
    finally:
        if service.process.is_alive():
            service.stop()
        monitor.close()
        broker.close()
        if not args.keep:
            fanout.drop_schema(args.database_url, args.schema)
    return 0


if __name__ == "__main__":
    sys.exit(main())
