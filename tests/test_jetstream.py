"""Every accepted event reaches a replicated JetStream stream exactly once, while its leader dies.

The recipe under test is examples/jetstream.py (docs/scaling-out.md): a
``Pipeline`` whose async sink publishes each batch as one framed message with a
``Nats-Msg-Id`` kept for every retry of the batch. The cluster is 3 nodes on
127.0.0.1 made by ``.ci/nats.sh``: the one in ``$TEMPO_NATS_CLUSTER`` (CI
starts it), else one this module starts (and stops) when ``nats-server`` is on
PATH; otherwise the tests skip, saying why.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import random
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import tempo

nats = pytest.importorskip("nats", reason="nats-py is not installed (pip install -e '.[test]')")

ROOT = Path(__file__).resolve().parent.parent
STREAM = "TEMPO_TEST"
PRODUCERS = 4
PAD = b"x" * 100


def _load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("jetstream_example", ROOT / "examples" / "jetstream.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


example = _load_example()


@pytest.fixture(scope="module")
def cluster() -> Iterator[Path]:
    given = os.environ.get("TEMPO_NATS_CLUSTER")
    if given:
        yield Path(given)
        return
    if os.environ.get("TEMPO_NATS_URLS"):
        pytest.skip("TEMPO_NATS_URLS names servers this test cannot kill and restart: "
                    "set TEMPO_NATS_CLUSTER instead (bash .ci/nats.sh prints one)")
    if shutil.which("nats-server") is None:
        pytest.skip("nats-server is not on PATH (apt-get install nats-server; or set "
                    "TEMPO_NATS_CLUSTER to a cluster made by bash .ci/nats.sh)")
    started = subprocess.run(["bash", str(ROOT / ".ci" / "nats.sh")], capture_output=True,
                             text=True, timeout=60, env=_server_env())
    assert started.returncode == 0, started.stderr
    path = Path(started.stdout.strip())
    try:
        yield path
    finally:
        subprocess.run(["bash", str(ROOT / ".ci" / "nats.sh"), "stop", str(path)], timeout=60)
        for process in _restarted:  # stopped by their pid files: reap them
            process.wait(10)


#: Nodes this module restarted (children of the test process).
_restarted: list[subprocess.Popen[bytes]] = []


class Node:
    """One node of a .ci/nats.sh cluster, by name (n1, n2, n3)."""

    def __init__(self, cluster: Path, name: str) -> None:
        self.cluster = cluster
        self.name = name

    def kill(self) -> None:
        """SIGKILL, and wait (bounded) until the process is gone."""
        pid = int((self.cluster / f"{self.name}.pid").read_text())
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while not _dead(pid):
            assert time.monotonic() < deadline, f"{self.name} (pid {pid}) survived SIGKILL"
            time.sleep(0.01)

    def start(self) -> None:
        server = (self.cluster / "server").read_text().strip()
        # Its own session, like the nodes .ci/nats.sh starts: `nats.sh stop`
        # finds it by the pid file it writes.
        process = subprocess.Popen(
            [server, "-c", str(self.cluster / f"{self.name}.conf")], start_new_session=True,
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            env=_server_env())
        _restarted.append(process)
        # Its ports were free when .ci/nats.sh chose them, not held since:
        # another process may have taken one, and the node then exits.
        conf = (self.cluster / f"{self.name}.conf").read_text()
        port = int(conf.split("listen: 127.0.0.1:", 1)[1].split()[0])
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return
            except OSError:
                pass
            log = (self.cluster / f"{self.name}.log").read_text(errors="replace")[-2000:]
            assert process.poll() is None, (
                f"{self.name} did not restart (exit status {process.returncode}); a port "
                f"taken since .ci/nats.sh chose it says 'address already in use':\n{log}")
            assert time.monotonic() < deadline, f"{self.name} does not listen on {port}:\n{log}"
            time.sleep(0.05)


def _server_env() -> dict[str, str]:
    """The environment for the servers: without the sanitizer build's preload
    (make test-sanitize), which is for tempo, not for nats-server."""
    return {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}


def _dead(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state in ("Z", "X")  # a zombie holds no port and no file


async def _bounded(what: str, seconds: float, call: Any) -> Any:
    """``await call()`` until it succeeds, for at most ``seconds`` (the cluster is electing)."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            return await call()
        except Exception as exc:
            if time.monotonic() > deadline:
                raise AssertionError(f"{what}: still failing after {seconds} s: {exc!r}") from exc
            await asyncio.sleep(0.2)


async def _scenario(cluster: Path, rng: random.Random) -> dict[str, Any]:
    urls = (cluster / "urls").read_text().strip().split(",")
    nc = await nats.connect(urls, connect_timeout=2, reconnect_time_wait=0.1,
                            max_reconnect_attempts=-1)
    js = nc.jetstream()
    await _bounded("creating the stream", 30,
                   lambda: example.recreate_stream(js, STREAM, replicas=3, duplicate_window=120))
    # One attempt waits 1 s for its ack; 60 attempts with waits of 0.05-0.5 s
    # ride out an election of several seconds, and even the slowest schedule
    # (60 x 1.5 s = 90 s) stays inside the 120 s duplicate window.
    sink = example.JetStreamSink(js, f"{STREAM}.events", stream=STREAM, timeout=1.0,
                                 max_payload=nc.max_payload)
    accepted: list[list[int]] = [[] for _ in range(PRODUCERS)]
    crashed: dict[int, BaseException] = {}
    done = threading.Event()
    node_restarted = None
    try:
        async with tempo.Pipeline(sink, interval=0.02, max_batch_bytes=64 * tempo.KiB,
                                  max_batch_items=1000, max_buffered_bytes=4 * tempo.MiB,
                                  retry=tempo.Retry(attempts=60, backoff=0.05,
                                                    max_backoff=0.5)) as p:

            def produce(k: int) -> None:
                mine = accepted[k]
                i = 0
                try:
                    while not done.is_set():
                        try:
                            p.enqueue(b"%d %d " % (k, i) + PAD, timeout=0.05)
                            mine.append(i)
                        except tempo.QueueFull:
                            pass  # back-pressure while the stream has no leader: not accepted
                        i += 1
                        if i % 50 == 0:
                            time.sleep(0.002)  # paced: the event loop needs the GIL too
                except BaseException as exc:  # noqa: BLE001 - a dead producer fails the test
                    crashed[k] = exc

            threads = [threading.Thread(target=produce, args=(k,)) for k in range(PRODUCERS)]
            for thread in threads:
                thread.start()
            try:
                await asyncio.sleep(rng.uniform(0.3, 2.0))
                info = await _bounded("stream info", 10, lambda: js.stream_info(STREAM))
                leader = Node(cluster, info.cluster.leader)
                leader.kill()
                await asyncio.sleep(rng.uniform(0.5, 3.0))
                await asyncio.to_thread(leader.start)
                node_restarted = leader
                await asyncio.sleep(rng.uniform(0.5, 1.5))
            finally:
                done.set()
                await asyncio.to_thread(lambda: [t.join() for t in threads])
        stats = p.stats()
        messages = await _bounded("reading the stream", 30, lambda: example.read_stream(js, STREAM))
    finally:
        await nc.close()
    return {"accepted": accepted, "crashed": crashed, "stats": stats, "messages": messages, "leader": leader.name,
            "duplicates": sink.duplicates, "restarted": node_restarted}


def test_every_accepted_event_is_stored_exactly_once_in_order_while_the_stream_leader_is_killed(
        cluster: Path) -> None:
    seed = random.randrange(2**32)
    started = time.monotonic()
    result = asyncio.run(asyncio.wait_for(_scenario(cluster, random.Random(seed)), 100))
    accepted, stats = result["accepted"], result["stats"]
    got: list[list[int]] = [[] for _ in range(PRODUCERS)]
    for message in result["messages"]:
        for item in example.unframe(message):
            k, i, pad = bytes(item).split(b" ")
            assert pad == PAD
            got[int(k)].append(int(i))
    context = (f"seed {seed}, {sum(map(len, accepted))} events in {len(result['messages'])} "
               f"messages, leader {result['leader']} killed, {stats.retries} retries, "
               f"{result['duplicates']} duplicate acks, {time.monotonic() - started:.1f} s")
    print(context)
    assert result["crashed"] == {}, context
    total = sum(map(len, accepted))
    assert total > 0 and result["restarted"] is not None, context
    for k in range(PRODUCERS):
        assert got[k] == accepted[k], f"producer {k}: {context}"
    assert stats.failed_batches == 0, context
    assert stats.enqueued == total, context
    assert stats.delivered_items + stats.failed_items == stats.enqueued, context
    assert stats.delivered_batches == len(result["messages"]), context
    # The kill was felt: at least one publish failed and was retried.
    assert stats.retries > 0, context


class LosesTheFirstAcks:
    """A JetStream context whose first ``lost`` publishes are stored but their
    acks never arrive (the sink sees a timeout), as when a leader dies after
    committing."""

    def __init__(self, js: Any, lost: int) -> None:
        self.js = js
        self.lost = lost

    async def publish(self, *args: Any, **kwargs: Any) -> Any:
        ack = await self.js.publish(*args, **kwargs)
        if self.lost:
            self.lost -= 1
            raise nats.errors.TimeoutError
        return ack


async def _lost_acks(cluster: Path) -> tuple[list[bytes], Any, int]:
    nc = await nats.connect((cluster / "urls").read_text().strip().split(","), connect_timeout=2)
    try:
        js = nc.jetstream()
        await _bounded("creating the stream", 30,
                       lambda: example.recreate_stream(js, STREAM, replicas=3))
        sink = example.JetStreamSink(LosesTheFirstAcks(js, 2), f"{STREAM}.events",
                                     stream=STREAM)
        async with tempo.Pipeline(sink, interval=0.01, max_buffered_bytes=tempo.MiB,
                                  retry=tempo.Retry(attempts=3, backoff=0.01)) as p:
            await p.aenqueue(b"0 0 " + PAD)
        return await example.read_stream(js, STREAM), p.stats(), sink.duplicates
    finally:
        await nc.close()


def test_a_batch_whose_acks_were_lost_is_stored_once(cluster: Path) -> None:
    messages, stats, duplicates = asyncio.run(asyncio.wait_for(_lost_acks(cluster), 60))
    assert [[bytes(i) for i in example.unframe(m)] for m in messages] == [[b"0 0 " + PAD]]
    # The third attempt is the one whose ack arrives: "duplicate", not stored again.
    assert (stats.delivered_batches, stats.retries, duplicates) == (1, 2, 1)


def test_a_retried_batch_keeps_its_message_id_and_a_new_batch_gets_a_new_one() -> None:
    d = tempo.Dispatcher(interval=0.01, max_buffered_bytes=tempo.KiB)
    d.start()
    sink = example.JetStreamSink(None, "s")  # type: ignore[arg-type]
    try:
        d.enqueue(b"a")
        first = d.get_batch(10)
        d.enqueue(b"a")  # the same bytes: still another batch, another id
        second = d.get_batch(10)
        ids = [sink.msg_id(first), sink.msg_id(first), sink.msg_id(second), sink.msg_id(second)]
    finally:
        d.stop()
    assert ids[0] == ids[1] and ids[2] == ids[3] and ids[0] != ids[2]
    assert ids[2].rsplit("-", 1) == [ids[0].rsplit("-", 1)[0], "2"]


def test_frame_and_unframe_round_trip_any_items() -> None:
    payloads = [b"", b"x", b"\x00" * 300, bytes(range(256)) * 4]
    d = tempo.Dispatcher(interval=60, max_buffered_bytes=tempo.KiB * 4,
                         max_batch_items=len(payloads))
    d.start()
    try:
        for payload in payloads:
            d.enqueue(payload)
        with d.get_batch(10) as batch:
            message = example.frame(batch)
    finally:
        d.stop()
    assert len(message) == 4 + 4 * len(payloads) + sum(map(len, payloads))
    assert message[:8] == b"\x00\x00\x00\x04\x00\x00\x00\x00"
    assert [bytes(item) for item in example.unframe(message)] == payloads
    for broken in (b"", b"\x00\x00\x00\x02\x00\x00\x00\x01", message[:-1], message + b"!"):
        with pytest.raises(ValueError, match="not a tempo frame"):
            example.unframe(broken)


class Stream:
    """A stand-in for a JetStream context: stores each message once per
    ``Nats-Msg-Id`` (answering a repeat "duplicate"), in publish order."""

    def __init__(self) -> None:
        self.stored: list[bytes] = []
        self.ids: set[str] = set()
        #: Awaited after the first publish is stored; then its ack is lost.
        self.first_ack: Any = None

    async def publish(self, subject: str, payload: bytes, *, timeout: float,
                      headers: dict[str, str], stream: Any = None) -> Any:
        msg_id = headers["Nats-Msg-Id"]
        duplicate = msg_id in self.ids
        if not duplicate:
            self.ids.add(msg_id)
            self.stored.append(payload)
        if self.first_ack is not None:
            wait, self.first_ack = self.first_ack, None
            await wait()
            raise nats.errors.TimeoutError
        return type("Ack", (), {"duplicate": duplicate})()


def _events(stream: Stream) -> list[list[bytes]]:
    return [[bytes(i) for i in example.unframe(m)] for m in stream.stored]


def test_a_second_worker_is_refused_instead_of_storing_a_batch_twice_out_of_order() -> None:
    stream = Stream()
    sink = example.JetStreamSink(stream, "s")  # type: ignore[arg-type]
    failed: list[tuple[list[bytes], BaseException]] = []
    gone = asyncio.Event()

    def dead_letter(batch: tempo.Batch, exc: BaseException) -> None:
        failed.append((batch.tolist(), exc))
        gone.set()

    async def main() -> tempo.PipelineStats:
        # A's publish is stored, and its ack is lost only once B was handed to
        # the other worker (the first worker is busy with A): B is the batch
        # that would have overtaken A's retry, which stored A a second time.
        stream.first_ack = lambda: asyncio.wait_for(gone.wait(), 1.0)
        async with tempo.Pipeline(sink, interval=60, max_buffered_bytes=tempo.KiB,
                                  max_batch_items=1, workers=2, on_failure=dead_letter,
                                  retry=tempo.Retry(attempts=3, backoff=0.01)) as p:
            await p.aenqueue(b"A")
            await p.aenqueue(b"B")
        return p.stats()

    stats = asyncio.run(asyncio.wait_for(main(), 30))
    assert _events(stream) == [[b"A"]]
    assert [(items, type(exc)) for items, exc in failed] == [([b"B"], tempo.Unretryable)]
    assert "workers=1" in str(failed[0][1])
    assert (stats.delivered_batches, stats.failed_batches, stats.retries) == (1, 1, 1)
    assert sink.duplicates == 1


def test_a_sink_shared_by_two_pipelines_is_refused_instead_of_reusing_an_id() -> None:
    stream = Stream()
    sink = example.JetStreamSink(stream, "s")  # type: ignore[arg-type]
    failed: list[tuple[list[bytes], BaseException]] = []

    async def main() -> None:
        for event in (b"first pipeline", b"second pipeline"):
            # Each dispatcher numbers its batches from 1: the second batch 1
            # would carry the first one's id and be dropped as a duplicate.
            async with tempo.Pipeline(sink, interval=60, max_buffered_bytes=tempo.KiB,
                                      on_failure=lambda b, e: failed.append((b.tolist(), e))
                                      ) as p:
                await p.aenqueue(event)

    asyncio.run(asyncio.wait_for(main(), 30))
    assert _events(stream) == [[b"first pipeline"]]
    assert [(items, type(exc)) for items, exc in failed] == [([b"second pipeline"],
                                                             tempo.Unretryable)]
    assert "a pipeline of its own" in str(failed[0][1])


def test_a_batch_over_max_payload_goes_to_on_failure_at_once_naming_the_batch_settings() -> None:
    stream = Stream()
    sink = example.JetStreamSink(stream, "s", stream="S", max_payload=200)  # type: ignore[arg-type]
    failed: list[BaseException] = []

    async def main() -> tempo.PipelineStats:
        async with tempo.Pipeline(sink, interval=60, max_buffered_bytes=tempo.KiB,
                                  max_batch_items=3, on_failure=lambda b, e: failed.append(e),
                                  retry=tempo.Retry(attempts=5, backoff=60, max_backoff=60)) as p:
            for _ in range(3):
                await p.aenqueue(b"x" * 40)
        return p.stats()

    stats = asyncio.run(asyncio.wait_for(main(), 30))
    assert stream.stored == [] and stats.retries == 0
    assert [type(e) for e in failed] == [tempo.Unretryable]
    assert "a batch of 3 events" in str(failed[0]) and "lower max_batch_bytes" in str(failed[0])


async def _at_max_payload(cluster: Path) -> dict[str, Any]:
    nc = await nats.connect((cluster / "urls").read_text().strip().split(","), connect_timeout=2)
    try:
        js = nc.jetstream()
        await _bounded("creating the stream", 30,
                       lambda: example.recreate_stream(js, STREAM, replicas=3))
        sink = example.JetStreamSink(js, f"{STREAM}.events", stream=STREAM,
                                     max_payload=nc.max_payload)
        # The headers of batches 1 to 9: the id is a 32-digit token, "-", seq.
        headers = example.header_bytes({"Nats-Msg-Id": "0" * 34, "Nats-Expected-Stream": STREAM})
        fits = nc.max_payload - headers - 8  # 8: the count and one length
        failed: list[tuple[int, BaseException]] = []
        # A single event over max_batch_bytes is a batch of its own; a retry
        # (a minute away) would outlast the bound on this test.
        async with tempo.Pipeline(sink, interval=60, max_batch_bytes=64 * tempo.KiB,
                                  max_buffered_bytes=4 * nc.max_payload,
                                  on_failure=lambda b, e: failed.append((b.nbytes, e)),
                                  retry=tempo.Retry(attempts=5, backoff=60, max_backoff=60)) as p:
            await p.aenqueue(b"f" * fits)
            await p.aenqueue(b"o" * (fits + 1))
            await p.aenqueue(b"after")
        messages = await example.read_stream(js, STREAM)
        return {"fits": fits, "failed": failed, "stats": p.stats(), "messages": messages,
                "connected": nc.is_connected, "reconnects": nc.stats["reconnects"]}
    finally:
        await nc.close()


def test_an_event_too_large_for_max_payload_with_its_headers_fails_at_once_and_the_connection_stays(
        cluster: Path) -> None:
    result = asyncio.run(asyncio.wait_for(_at_max_payload(cluster), 40))
    fits = result["fits"]
    assert [[len(i) for i in example.unframe(m)] for m in result["messages"]] == [[fits], [5]]
    ((nbytes, exc),) = result["failed"]
    assert nbytes == fits + 1 and isinstance(exc, tempo.Unretryable)
    assert "one event of" in str(exc) and f"refuse events over {fits} bytes" in str(exc)
    assert "max_batch_bytes" not in str(exc)
    stats = result["stats"]
    assert (stats.delivered_batches, stats.failed_batches, stats.retries) == (2, 1, 0)
    assert result["connected"] and result["reconnects"] == 0


def test_nats_sh_stop_does_not_wait_for_a_node_that_is_a_zombie(tmp_path: Path) -> None:
    # A node the test restarted is its child: once stopped it is a zombie
    # until reaped, and `kill -0` still succeeds on a zombie.
    (tmp_path / "urls").write_text("nats://127.0.0.1:1\n")
    child = subprocess.Popen(["sleep", "60"])
    try:
        (tmp_path / "n1.pid").write_text(f"{child.pid}\n")
        started = time.monotonic()
        subprocess.run(["bash", str(ROOT / ".ci" / "nats.sh"), "stop", str(tmp_path)],
                       check=True, timeout=30)
        took = time.monotonic() - started
        assert _dead(child.pid) and not tmp_path.exists()
    finally:
        child.kill()
        child.wait()
    assert took < 2.5  # the 5 s grace is for a node that ignores SIGTERM
