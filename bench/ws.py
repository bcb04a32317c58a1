"""Live events at scale: C websocket clients joined to one channel.

Measures, per server mode, how many connections were reached, the server's memory
per connection, and the time from ``push.publish`` (in the server) to receipt (in
the clients), p50 and p99:

- ``gevent``: gunicorn's gevent worker, one process;
- ``threaded``: the threaded default (Werkzeug's threaded server, a thread per socket
  plus simple-websocket's reader thread);
- ``redis``: two gevent processes sharing the Redis backplane, the clients split
  between them, every event published in the first;
- ``compare``: flask-push against a bare flask-sock broadcast, both under gunicorn's
  gevent worker (one process), the same clients and events (``--compare 2000``
  clients, ``--compare-events 50`` events 100 ms apart), one after the other and
  ``--rounds`` times, alternating which goes first. Besides latency and memory it
  measures each server process's CPU time over the events (``getrusage`` through a
  ``/stats`` route) per frame delivered.

The bare broadcast (:func:`create_bare_app`) is what a hand-written flask-sock app
would do at its fastest: its route keeps a set of sockets and waits on
``ws.receive()``; its publish route builds the event's frame once (JSON, then the
websocket frame's bytes) and loops ``ws.sock.send(frame)`` over the set. That is
``ws.send(text)`` without simple-websocket's wsproto encoding per socket, the floor a
fair bare implementation reaches; ``--bare-send`` adds a row for the one with
``ws.send``. The ratio is taken against the first.

Goals: 10,000 connections in one gevent process at 40 KiB or less each, p99 under
100 ms at 10,000 clients, and at least 1,000 connections with the threaded default.
For ``compare``: CPU per frame within 1.5x of the bare broadcast's, p99 under
100 ms at 2,000 clients, every event delivered, 40 KiB or less per connection.
Prints a table; asserts nothing. Needs ``pip install 'flask-push[bench,redis]'``.

    .venv/bin/python bench/ws.py [--cases gevent,threaded,redis,compare]
        [--gevent 10000] [--threaded 1000] [--redis 2000] [--compare 2000]

The clients are raw websockets on one asyncio loop in this process (no
compression offered), so the client side stays cheap next to the server.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import resource
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
CHANNEL = "bench"


# -- the app the servers run ------------------------------------------------------------


def create_app() -> Any:
    """The benchmarked app; configured by PUSH_BENCH_* environment variables."""
    from flask import Flask, request
    from flask_sqlalchemy import SQLAlchemy

    from flask_push import Push

    db = SQLAlchemy()
    push = Push(db=db)
    push.identity_loader(lambda: request.headers.get("X-User"))
    push.channel_authorizer(lambda user_id, channel: channel == CHANNEL)
    app = Flask(__name__)
    app.config.update(
        SQLALCHEMY_DATABASE_URI=f"sqlite:///{os.environ['PUSH_BENCH_DB']}",
        PUSH_BACKPLANE_URL=os.environ.get("PUSH_BENCH_BACKPLANE", "memory://"),
        PUSH_BACKPLANE_PREFIX=os.environ.get("PUSH_BENCH_PREFIX", "flask_push_bench"),
        PUSH_WS_HEARTBEAT=0,
        # nothing is sent: no worker thread looking at the outbox beside the sockets
        PUSH_QUEUE="inline",
    )
    db.init_app(app)
    push.init_app(app)

    @app.post("/publish")
    def publish() -> dict[str, Any]:
        number = int(request.args["n"])
        return {"id": push.publish(CHANNEL, "tick", {"n": number, "t": time.time()})}

    @app.get("/stats")
    def stats() -> dict[str, Any]:
        realtime = app.extensions["push"].realtime
        return {"sockets": realtime.hub.count() if realtime else 0, **_process()}

    return app


def create_bare_app() -> Any:
    """A bare flask-sock broadcast: the baseline ``compare`` measures flask-push against.

    It speaks just enough of flask-push's protocol for the clients (a ``subscribed``
    answer to the first frame, events as flask-push frames them).
    """
    from flask import Flask, request
    from flask_sock import Sock
    from wsproto.frame_protocol import FrameProtocol

    app = Flask(__name__)
    sock = Sock(app)
    sockets: set[Any] = set()
    use_send = os.environ.get("PUSH_BENCH_BARE") == "send"

    @sock.route("/push/ws")
    def websocket(ws: Any) -> None:
        ws.receive()  # the client's subscribe
        ws.send(json.dumps({"op": "subscribed", "channel": CHANNEL}))
        sockets.add(ws)
        try:
            while True:
                ws.receive()  # raises ConnectionClosed when the client goes
        finally:
            sockets.discard(ws)

    @app.post("/publish")
    def publish() -> dict[str, Any]:
        number = int(request.args["n"])
        data = json.dumps({"n": number, "t": time.time()})
        text = f'{{"op":"event","channel":"{CHANNEL}","id":{number},"event":"tick","data":{data}}}'
        frame = bytes(FrameProtocol(client=False, extensions=[]).send_data(text, fin=True))
        for ws in list(sockets):
            try:
                if use_send:
                    ws.send(text)
                else:
                    ws.sock.send(frame)
            except Exception:
                sockets.discard(ws)
        return {"id": number}

    @app.get("/stats")
    def stats() -> dict[str, Any]:
        return {"sockets": len(sockets), **_process()}

    return app


def _process() -> dict[str, Any]:
    """This server process: its pid, RSS and CPU seconds so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {"pid": os.getpid(), "rss": _rss(), "cpu": usage.ru_utime + usage.ru_stime}


def _rss() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


# -- servers ----------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_server(
    mode: str, env: dict[str, str], app: str = "create_app()"
) -> tuple[subprocess.Popen[bytes], int]:
    port = _free_port()
    if mode == "gevent":
        command = [
            sys.executable, "-m", "gunicorn", "-k", "gevent", "-w", "1",
            "--worker-connections", "30000", "--backlog", "4096", "--timeout", "300",
            "--no-control-socket", "--log-level", "warning", "--chdir", str(HERE),
            "--bind", f"127.0.0.1:{port}", f"ws:{app}",
        ]  # fmt: skip
    else:
        command = [sys.executable, str(Path(__file__).resolve()), "--serve", str(port)]
    process = subprocess.Popen(command, env={**os.environ, **env}, cwd=HERE)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            _get(port, "/stats")
            return process, port
        except OSError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"the {mode} server did not start")


def serve_threaded(port: int) -> None:
    from werkzeug.serving import WSGIRequestHandler, make_server

    WSGIRequestHandler.log = lambda *args, **kwargs: None  # type: ignore[method-assign]
    server = make_server("127.0.0.1", port, create_app(), threaded=True)
    server.socket.listen(4096)
    server.serve_forever()


def _get(port: int, path: str, method: str = "GET") -> Any:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method)
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - loopback
        return json.loads(response.read())


# -- clients ----------------------------------------------------------------------------


def _frame(text: str) -> bytes:
    """A masked client text frame."""
    payload = text.encode()
    mask = os.urandom(4)
    head = bytes([0x81])
    size = len(payload)
    if size < 126:
        head += bytes([0x80 | size])
    elif size < 65536:
        head += bytes([0x80 | 126]) + struct.pack("!H", size)
    else:
        head += bytes([0x80 | 127]) + struct.pack("!Q", size)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


async def _read_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    first, second = await reader.readexactly(2)
    size = second & 0x7F
    if size == 126:
        (size,) = struct.unpack("!H", await reader.readexactly(2))
    elif size == 127:
        (size,) = struct.unpack("!Q", await reader.readexactly(8))
    return first & 0x0F, await reader.readexactly(size)


def _parse_frame(buffer: bytearray) -> tuple[int, bytes, int] | None:
    """(opcode, payload, bytes used) of the unmasked frame at the start of
    ``buffer``, or None while it is incomplete."""
    if len(buffer) < 2:
        return None
    size, start = buffer[1] & 0x7F, 2
    if size == 126:
        if len(buffer) < 4:
            return None
        (size,), start = struct.unpack_from("!H", buffer, 2), 4
    elif size == 127:
        if len(buffer) < 10:
            return None
        (size,), start = struct.unpack_from("!Q", buffer, 2), 10
    if len(buffer) < start + size:
        return None
    return buffer[0] & 0x0F, bytes(buffer[start : start + size]), start + size


class Clients:
    def __init__(self, ports: list[int], count: int) -> None:
        self.ports = ports
        self.count = count
        self.connected = 0
        self.failed = 0
        self.latencies: list[float] = []
        self.received: dict[int, int] = {}
        self._writers: list[asyncio.StreamWriter] = []
        self._tasks: list[asyncio.Task[None]] = []

    async def connect_all(self) -> None:
        limit = asyncio.Semaphore(200)
        ready: list[asyncio.Future[None]] = []
        for i in range(self.count):
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            ready.append(future)
            port = self.ports[i % len(self.ports)]
            self._tasks.append(asyncio.create_task(self._client(i, port, limit, future)))
        await asyncio.wait(ready, timeout=300)

    async def _client(
        self, i: int, port: int, limit: asyncio.Semaphore, ready: asyncio.Future[None]
    ) -> None:
        try:
            async with limit:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection("127.0.0.1", port, limit=2**20), 30
                )
                key = base64.b64encode(os.urandom(16)).decode()
                writer.write(
                    f"GET /push/ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                    f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                    f"Sec-WebSocket-Version: 13\r\nX-User: u{i}\r\n\r\n".encode()
                )
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 60)
                if b" 101 " not in head.split(b"\r\n")[0]:
                    raise ConnectionError(head[:40])
                writer.write(_frame(json.dumps({"op": "subscribe", "channel": CHANNEL})))
                _, payload = await asyncio.wait_for(_read_frame(reader), 60)
                assert json.loads(payload)["op"] == "subscribed"
            self._writers.append(writer)
            self.connected += 1
            ready.set_result(None)
        except (OSError, AssertionError, asyncio.TimeoutError, asyncio.IncompleteReadError):
            self.failed += 1
            ready.set_result(None)
            return
        # Whatever arrived in one read is stamped once and parsed after: one await
        # per read, not two or three per frame, keeps this one process for all the
        # clients cheap, so the latencies are mostly the server's.
        buffer = bytearray()
        try:
            while chunk := await reader.read(1 << 16):
                now = time.time()
                buffer += chunk
                while (parsed := _parse_frame(buffer)) is not None:
                    opcode, payload, used = parsed
                    del buffer[:used]
                    if opcode == 8:
                        return
                    frame = json.loads(payload)
                    if frame.get("op") == "event":
                        data = frame["data"]
                        self.latencies.append(now - data["t"])
                        self.received[data["n"]] = self.received.get(data["n"], 0) + 1
        except OSError:
            return

    async def close(self) -> None:
        for writer in self._writers:
            writer.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


async def run_case(
    name: str, ports: list[int], count: int, events: int, interval: float = 0.1
) -> dict[str, Any]:
    # warm up (imports, the realtime state, the backplane) before the baseline
    warm = Clients(ports, 20 * len(ports))
    await warm.connect_all()
    await asyncio.sleep(0.5)
    before = sum(_get(port, "/stats")["rss"] for port in ports)
    clients = Clients(ports, count)
    started = time.monotonic()
    await clients.connect_all()
    connect_seconds = time.monotonic() - started
    await asyncio.sleep(1)
    stats = [_get(port, "/stats") for port in ports]
    after = sum(s["rss"] for s in stats)
    per_connection = (after - before) / max(clients.connected, 1)
    everyone = clients.connected + warm.connected
    cpu_before = sum(s["cpu"] for s in stats)
    clients_before = _own_cpu()
    for n in range(events):
        await asyncio.to_thread(_get, ports[0], f"/publish?n={n}", "POST")
        deadline = time.monotonic() + 30
        while (
            clients.received.get(n, 0) + warm.received.get(n, 0) < everyone
            and time.monotonic() < deadline
        ):
            await asyncio.sleep(0.01)
        await asyncio.sleep(interval)
    # The servers' CPU over the events: the frames, the publish requests, two /stats.
    cpu = sum(_get(port, "/stats")["cpu"] for port in ports) - cpu_before
    clients_cpu = _own_cpu() - clients_before
    frames = sum(clients.received.values()) + sum(warm.received.values())
    latencies = sorted(clients.latencies)
    delivered = len(latencies)
    await clients.close()
    await warm.close()
    return {
        "case": name,
        "clients": count,
        "reached": clients.connected,
        "server sockets": sum(s["sockets"] for s in stats),
        "connect s": round(connect_seconds, 1),
        "KiB/conn": round(per_connection / 1024, 1),
        "CPU us/frame": round(cpu / max(frames, 1) * 1e6, 1),
        "clients us/frame": round(clients_cpu / max(frames, 1) * 1e6, 1),
        "p50 ms": round(latencies[len(latencies) // 2] * 1000, 1) if latencies else None,
        "p99 ms": round(latencies[int(len(latencies) * 0.99)] * 1000, 1) if latencies else None,
        "delivered": f"{delivered}/{clients.connected * events}",
    }


def _own_cpu() -> float:
    """This process's CPU seconds: the clients' (and the publish requests')."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def case(
    name: str,
    mode: str,
    count: int,
    events: int,
    redis_url: str | None,
    app: str = "create_app()",
    extra_env: dict[str, str] | None = None,
    on_start: Any = None,
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        env = {"PUSH_BENCH_DB": str(Path(tmp) / "bench.db"), **(extra_env or {})}
        servers = 1
        if redis_url:
            env["PUSH_BENCH_BACKPLANE"] = redis_url
            env["PUSH_BENCH_PREFIX"] = f"flask_push_bench_{uuid.uuid4().hex[:8]}"
            servers = 2
        # the app's tables are not needed: nothing here touches the inbox
        started = [start_server(mode, env, app) for _ in range(servers)]
        try:
            if on_start is not None:
                on_start(_get(started[0][1], "/stats")["pid"])
            return asyncio.run(run_case(name, [port for _, port in started], count, events))
        finally:
            for process, _ in started:
                process.terminate()
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


def _median(values: list[Any]) -> Any:
    values = sorted(v for v in values if v is not None)
    if not values:
        return None
    middle = len(values) // 2
    if len(values) % 2:
        return values[middle]
    return round((values[middle - 1] + values[middle]) / 2, 1)


def compare(
    count: int, events: int, rounds: int, profile: str | None, bare_send: bool
) -> list[dict[str, Any]]:
    """flask-push and the bare broadcast, ``rounds`` times each, alternating which
    goes first; a row of medians for each (the first two: flask-push, the bare one
    the ratio is taken against)."""
    variants = {
        "flask-push": ("create_app()", {}),
        "bare flask-sock": ("create_bare_app()", {}),
    }
    if bare_send:
        variants["bare, ws.send"] = ("create_bare_app()", {"PUSH_BENCH_BARE": "send"})
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in variants}
    for number in range(rounds):
        order = list(variants) if number % 2 == 0 else list(reversed(variants))
        for name in order:
            app, env = variants[name]
            on_start = None
            if profile and name == "flask-push" and number == 0:
                on_start = lambda pid: _profile(pid, profile)  # noqa: E731
            print(f"compare, round {number + 1}: {name}, {count} clients ...", flush=True)
            row = case(name, "gevent", count, events, None, app, env, on_start)
            print(row, flush=True)
            runs[name].append(row)
    rows = []
    for name, results in runs.items():
        row = dict(results[0])
        for column in (
            "KiB/conn",
            "CPU us/frame",
            "clients us/frame",
            "p50 ms",
            "p99 ms",
            "connect s",
        ):
            row[column] = _median([r[column] for r in results])
        row["delivered"] = " ".join(r["delivered"] for r in results)
        row["case"] = f"{name} (median of {len(results)})" if len(results) > 1 else name
        rows.append(row)
    return rows


def _profile(pid: int, path: str) -> None:
    """py-spy record the server ``pid`` in the background, from after the clients
    connected (a few seconds in) for the events."""
    command = [
        str(Path(sys.executable).with_name("py-spy")), "record", "--pid", str(pid),
        "--duration", "12", "--rate", "250", "--nonblocking", "--output", path,
        "--format", "raw" if path.endswith(".txt") else "flamegraph",
    ]  # fmt: skip
    subprocess.Popen(["sh", "-c", 'sleep "$1"; shift; exec "$@"', "sh", "4", *command])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--cases", default="gevent,threaded,redis,compare", help="comma-separated cases to run"
    )
    parser.add_argument("--gevent", type=int, default=10_000, help="clients (0 skips)")
    parser.add_argument("--threaded", type=int, default=1_000, help="clients (0 skips)")
    parser.add_argument("--redis", type=int, default=2_000, help="clients (0 skips)")
    parser.add_argument("--events", type=int, default=10, help="events published per case")
    parser.add_argument("--compare", type=int, default=2_000, help="clients (0 skips)")
    parser.add_argument("--compare-events", type=int, default=50, help="events per compare run")
    parser.add_argument("--rounds", type=int, default=3, help="compare runs of each server")
    parser.add_argument(
        "--profile", help="py-spy the flask-push server of the first compare run into this file"
    )
    parser.add_argument(
        "--bare-send",
        action="store_true",
        help="compare also a bare broadcast with ws.send (a wsproto encoding per socket)",
    )
    parser.add_argument(
        "--redis-url", default=os.environ.get("PUSH_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
    )
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve_threaded(args.serve)
        return
    cases = set(args.cases.split(","))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # children inherit it
    print(f"open files limit: {hard}", flush=True)
    rows = []
    plan = [
        ("gevent", "gevent, 1 process", "gevent", args.gevent, None),
        ("threaded", "threaded default", "threaded", args.threaded, None),
        ("redis", "gevent x2, Redis", "gevent", args.redis, args.redis_url),
    ]
    for key, name, mode, count, redis_url in plan:
        if count and key in cases:
            print(f"{name}: {count} clients ...", flush=True)
            rows.append(case(name, mode, count, args.events, redis_url))
            print(rows[-1], flush=True)
    compared = []
    if args.compare and "compare" in cases:
        compared = compare(
            args.compare, args.compare_events, args.rounds, args.profile, args.bare_send
        )
    _table(rows)
    if rows:
        print(
            "\ngoals: 10,000 connections in one gevent process at <= 40 KiB each; p99 < 100 ms "
            "at 10,000 clients; >= 1,000 connections with the threaded default"
        )
    if compared:
        _table(compared)
        ours, bare = compared[:2]
        ratio = ours["CPU us/frame"] / bare["CPU us/frame"]
        every = all(
            int(got) == int(want) > 0
            for got, want in (d.split("/") for d in ours["delivered"].split())
        )
        print(f"\nCPU per frame, flask-push / bare: {ratio:.2f}x")
        goals = [
            (f"CPU per frame within 1.5x of the bare broadcast ({ratio:.2f}x)", ratio <= 1.5),
            (f"p99 under 100 ms at {args.compare} clients ({ours['p99 ms']} ms)",
             ours["p99 ms"] is not None and ours["p99 ms"] < 100),
            ("every event delivered", every),
            (f"memory per connection at or under 40 KiB ({ours['KiB/conn']})",
             ours["KiB/conn"] <= 40),
        ]  # fmt: skip
        for goal, met in goals:
            print(f"  {'met    ' if met else 'NOT met'}  {goal}")


def _table(rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    columns = list(rows[0])
    widths = [max(len(c), *(len(str(r[c])) for r in rows)) for c in columns]
    print()
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)))
    for row in rows:
        print("  ".join(str(row[c]).ljust(w) for c, w in zip(columns, widths, strict=True)))


if __name__ == "__main__":
    main()
