"""Model-based tests: a real Dispatcher and tests/model.py driven side by side.

Hypothesis picks a random sequence of operations (enqueues of every buffer
type and size, gets, releases in and out of order, kept views and slices,
dropped references, flushes, stops and shutdowns, some of them waiting in a
background thread while the test consumes) and, after every step, checks that
the dispatcher and the model agree on everything a user can observe: the
outcome of each call (value or exception, with its message), the contents,
length and size of every batch, every ``stats()`` field (``buffered_bytes``
included, with the pinning rule), and that no kept view ever changes. A kept
view is an item's memoryview or a slice of one, or what pins the whole batch
the same way: ``batch.data``, ``batch.offsets``, ``batch.to_arrow()``.

``make test`` runs a modest number of examples; ``make test-long`` (the
``TEMPO_LONG`` environment variable) many more.
"""

from __future__ import annotations

import array
import dataclasses
import importlib.util
import mmap
import os
import pickle
import time
import traceback
import warnings

from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

import tempo
from conftest import STATS_FIELDS, Task, wait_until
from model import FINISHED, RUNNING, Model, Outcome
from strategies import payload

LONG = bool(os.environ.get("TEMPO_LONG"))
#: Examples (random operation sequences) per run, and steps per example.
EXAMPLES = 1500 if LONG else 150
STEPS = 80 if LONG else 40

#: Longer than any test: batches are sealed by size, flush, shutdown and stop only.
FOREVER = 10.0**6

#: Buffer types a payload is handed over as. "noncontiguous" and "str" must be
#: refused (BufferError, TypeError) whatever the dispatcher's state.
KINDS = ["bytes", "bytearray", "memoryview", "memoryview-slice", "array", "noncontiguous", "str"]

SMALL_LIMIT = 128 * tempo.KiB

# What this tempo has beyond the first contract (the second round adds them):
# the model then checks them too.
HAS_BATCH_ITEMS = "max_batch_items" in {f.name for f in dataclasses.fields(tempo.Config)}
HAS_ENQUEUE_MANY = hasattr(tempo.Dispatcher, "enqueue_many")
STATS_NAMES = {f.name for f in dataclasses.fields(tempo.Stats)}
HAS_BATCH_COUNTS = "waiting_batches" in STATS_NAMES
HAS_OLDEST_WAIT = "oldest_wait" in STATS_NAMES
HAS_WHOLE_BATCH = hasattr(tempo.Batch, "data")
HAS_ARROW = HAS_WHOLE_BATCH and importlib.util.find_spec("pyarrow") is not None

#: What a kept view may be (see keep_view).
VIEWS = ["item", "slice", "slice of slice", "list"]
if HAS_WHOLE_BATCH:
    VIEWS += ["data", "slice of data", "offsets"]
if HAS_ARROW:
    VIEWS += ["arrow"]


def contents(view):
    """What a kept view shows: bytes, the offsets as a list, or an Arrow
    array's items."""
    if isinstance(view, memoryview):
        return view.tolist() if view.format == "q" else view.tobytes()
    return view.to_pylist()


def configs():
    """(max_buffered_bytes, max_batch_bytes, max_batch_items)."""
    limits = st.one_of(
        st.integers(1, 16), st.integers(1, 64), st.integers(65, 400), st.just(4096),
    )
    batch_bytes = st.one_of(st.just(0), st.integers(1, 16), st.integers(1, 80))
    batch_items = st.one_of(st.just(0), st.integers(1, 6)) if HAS_BATCH_ITEMS else st.just(0)
    return st.tuples(limits, batch_bytes, batch_items)


def as_buffer(kind: str, data: bytes):
    """``data`` as a buffer of the given kind (and the object to mutate after)."""
    if kind == "bytes":
        return data
    if kind == "bytearray":
        return bytearray(data)
    if kind == "memoryview":
        return memoryview(bytearray(data))
    if kind == "memoryview-slice":
        return memoryview(bytearray(b"<<" + data + b">>"))[2 : 2 + len(data)]
    if kind == "array":
        buf = array.array("H" if len(data) % 2 == 0 else "B")
        buf.frombytes(data)
        return buf
    if kind == "noncontiguous":
        return memoryview(bytearray(2 * max(len(data), 2)))[::2]
    assert kind == "str"
    return data.decode("latin-1")


def scribble(buf) -> None:
    """Overwrite a mutable payload after enqueue: tempo must have copied it."""
    if isinstance(buf, bytearray) or (isinstance(buf, memoryview) and not buf.readonly):
        buf[:] = b"\xee" * len(buf)
    elif isinstance(buf, array.array) and len(buf):
        buf[0] = buf[0] ^ 0xFF


def call(fn, *args, **kwargs) -> tuple[Outcome, str]:
    """Run a call; its outcome and its exception's message. No traceback is
    kept (it would keep the batches in the caller's frames alive). An
    exception's ``accepted`` attribute (``enqueue_many``) is the value."""
    try:
        return Outcome(value=fn(*args, **kwargs)), ""
    except Exception as exc:  # noqa: BLE001 - compared with the model
        return Outcome(value=getattr(exc, "accepted", None), error=type(exc)), str(exc)


def check(real: tuple[Outcome, str], expected: Outcome, what: str, value: bool = False) -> None:
    """The call raised what the model says (and, with ``value``, returned or
    carried the model's value)."""
    outcome, message = real
    assert outcome.error is expected.error, (
        f"{what}: raised {outcome.error} ({message!r}), the model says {expected.error}"
    )
    if expected.error is not None and issubclass(expected.error, tempo.TempoError):
        assert message == (expected.message or expected.error.default_message), (
            f"{what}: message {message!r}")
    if value:
        assert outcome.value == expected.value, f"{what}: {outcome.value}, the model says {expected.value}"


class DispatcherMachine(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.d = None
        self.held = []  # [(Batch, MBatch)]: batches the consumer still references
        self.views = []  # [(memoryview, expected bytes, MBatch)]: kept views
        self.flushing = None  # (Task, number of batches it waits to be handed out)
        self.shutting = None  # Task: a shutdown() waiting for the test to consume
        self.sent = 0
        self.child = None  # a forked child waiting to check what it held (see fork)

    @initialize(config=configs(), start=st.integers(0, 3))
    def create(self, config, start):
        limit, max_batch, batch_items = config
        extra = {"max_batch_items": batch_items} if batch_items else {}
        self.d = tempo.Dispatcher(
            interval=FOREVER, max_buffered_bytes=limit, max_batch_bytes=max_batch, **extra
        )
        max_items = self.d._max_items
        # The bound README "Memory" promises: one payload per byte below 128 KiB.
        assert max_items >= limit if limit < SMALL_LIMIT else 131_071 <= max_items <= 1_048_575
        self.model = Model(max_buffered_bytes=limit, max_batch_bytes=max_batch,
                           max_items=max_items, max_batch_items=batch_items,
                           batch_counts=HAS_BATCH_COUNTS)
        if start:  # mostly: a dispatcher that never starts hands nothing out
            self.start()

    def teardown(self):
        if self.child is not None:
            self.check_child()
        if self.d is None:
            return
        self.d.stop()
        self.model.stop()
        self.settle()
        self.held.clear()
        self.views.clear()
        # Everything released and every view gone: all space is back.
        assert self.d.stats().buffered_bytes == 0

    @precondition(lambda self: self.model.state == FINISHED)
    @rule(config=configs(), start=st.integers(0, 3))
    def renew(self, config, start):
        """Once finished, go on with a fresh dispatcher (the old one torn down)."""
        self.teardown()
        self.create(config, start)

    # -- synchronisation with the background calls --------------------------------

    def waiting_calls(self) -> int:
        return (self.flushing is not None) + (self.shutting is not None)

    def wait_blocked(self) -> None:
        n = self.waiting_calls()
        wait_until(lambda: self.d._waiters()[1] >= n, what=f"{n} waiting call(s)")

    def settle(self) -> None:
        """Collect the background calls the model says have returned by now."""
        if self.shutting is not None:
            if self.model.finish_if_drained():
                check(call(self.shutting.result), Outcome(), "shutdown()")
                self.shutting = None
            elif self.model.state == FINISHED:
                check(call(self.shutting.result), Outcome(error=tempo.Stopped), "shutdown()")
                self.shutting = None
        if self.flushing is not None:
            task, target = self.flushing
            if self.model.batches >= target:
                check(call(task.result), Outcome(), "flush()")
                self.flushing = None
            elif self.model.state == FINISHED:
                check(call(task.result), Outcome(error=tempo.Stopped), "flush()")
                self.flushing = None

    # -- producers ------------------------------------------------------------------

    def enqueue_one(self, data: bytes, kind: str) -> Outcome:
        buf = as_buffer(kind, data)
        before = time.monotonic()
        real = call(self.d.enqueue, buf)
        when = (before, time.monotonic())
        if kind == "noncontiguous":
            expected = Outcome(error=BufferError)
        elif kind == "str":
            expected = Outcome(error=TypeError)
        else:
            expected = self.model.enqueue(data, when)
        check(real, expected, f"enqueue({kind} of {len(data)} bytes)")
        scribble(buf)
        return expected

    @rule(data=st.data(), kind=st.sampled_from(KINDS))
    def enqueue(self, data, kind):
        limit = self.model.max_buffered_bytes
        size = data.draw(st.one_of(st.integers(0, 8), st.integers(0, limit + 2)), label="size")
        self.sent += 1
        expected = self.enqueue_one(payload(self.sent, size), kind)
        event(f"enqueue: {expected.error.__name__ if expected.error else 'accepted'}")

    @rule(count=st.sampled_from([2, 10, "to the item bound"]), size=st.sampled_from([0, 0, 1]))
    def enqueue_burst(self, count, size):
        """Many tiny payloads: enough, with "to the item bound", to fill the
        bookkeeping (QueueFull once max_items payloads are owned)."""
        if count == "to the item bound":
            count = self.model.max_items - self.model.owned_items() + 1
        for _ in range(count):
            self.sent += 1
            expected = self.enqueue_one(payload(self.sent, size), "bytes")
        event(f"burst: last {expected.error.__name__ if expected.error else 'accepted'}")

    @precondition(lambda self: HAS_ENQUEUE_MANY)
    @rule(data=st.data(), container=st.sampled_from(["list", "tuple", "iterator"]))
    def enqueue_many(self, data, container):
        limit = self.model.max_buffered_bytes
        sizes = st.one_of(st.integers(0, 8), st.integers(0, limit + 2))
        # Mostly valid payloads: an invalid one ends the call.
        kinds = st.one_of(st.sampled_from(KINDS[:5]), st.sampled_from(KINDS))
        entries = data.draw(st.lists(st.tuples(sizes, kinds), max_size=8), label="payloads")
        bufs, expected_entries = [], []
        for size, kind in entries:
            self.sent += 1
            p = payload(self.sent, size)
            bufs.append(as_buffer(kind, p))
            invalid = {"noncontiguous": BufferError, "str": TypeError}.get(kind)
            expected_entries.append(invalid or p)
        arg = {"list": bufs, "tuple": tuple(bufs), "iterator": iter(bufs)}[container]
        before = time.monotonic()
        real = call(self.d.enqueue_many, arg)
        expected = self.model.enqueue_many(expected_entries, (before, time.monotonic()))
        check(real, expected, f"enqueue_many({len(bufs)} payloads)", value=True)
        for buf in bufs:
            scribble(buf)
        part = "all" if expected.value == len(bufs) else "some" if expected.value else "none"
        event(f"enqueue_many: {part} accepted"
              f"{', then ' + expected.error.__name__ if expected.error else ''}")

    # -- lifecycle ------------------------------------------------------------------

    @precondition(lambda self: self.model.state != RUNNING)  # start() twice: a no-op
    @rule()
    def start(self):
        check(call(self.d.start), self.model.start(), "start()")

    @rule(how=st.sampled_from(["flush(timeout=0)", "waiting flush()"]))
    def flush(self, how):
        if how == "flush(timeout=0)":
            check(call(self.d.flush, timeout=0), self.model.flush(), how)
        elif self.flushing is None:
            self.flush_waiting()

    def flush_waiting(self):
        """flush() in a thread, waiting until the test has taken the batches."""
        expected = self.model.seal_for_flush()
        target = self.model.batches + len(self.model.undelivered)
        task = Task(self.d.flush, (), {"timeout": None})
        if expected.error is not None or target == self.model.batches:
            check(call(task.result), expected, "flush()")
            return
        self.flushing = (task, target)
        self.wait_blocked()

    # One rule for the three ends, taken one time in four, so that most steps
    # happen before the end.
    @rule(how=st.sampled_from(["stop()", "shutdown(timeout=0)", "waiting shutdown()"]),
          skip=st.integers(0, 3))
    def end(self, how, skip):
        if skip:
            return
        if how == "stop()":
            check(call(self.d.stop), self.model.stop(), how)
        elif how == "shutdown(timeout=0)":
            check(call(self.d.shutdown, timeout=0), self.model.shutdown(), how)
        elif self.shutting is None:
            self.shutdown_waiting()
        self.settle()

    def shutdown_waiting(self):
        """shutdown() in a thread, draining to the test as consumer."""
        task = Task(self.d.shutdown, (), {"timeout": None})
        if not self.model.begin_shutdown():
            check(call(task.result), Outcome(), "shutdown() when finished")
            return
        self.shutting = task
        if self.model.undelivered:
            self.wait_blocked()

    # -- consumers ------------------------------------------------------------------

    @rule(flush_first=st.booleans())
    def get(self, flush_first):
        if flush_first:  # seals the open batch (and times out: nobody consumes)
            check(call(self.d.flush, timeout=0), self.model.flush(), "flush(timeout=0)")
        real = call(self.d.get_batch, timeout=0)
        expected = self.model.get_batch()
        check(real, expected, "get_batch(timeout=0)")
        if expected.error is None:
            batch, mbatch = real[0].value, expected.value
            assert batch.tolist() == mbatch.items
            self.held.append((batch, mbatch))
            event("get: a batch")
        self.settle()

    def pick(self, data, seq, label):
        return seq[data.draw(st.integers(0, len(seq) - 1), label=label)] if seq else None

    @precondition(lambda self: self.held)
    @rule(data=st.data(), how=st.sampled_from(["release", "with", "twice"]))
    def release(self, data, how):
        """Release a held batch, the oldest or any other (out of order)."""
        batch, mbatch = self.pick(data, self.held, "batch")
        if how == "with":
            with batch:
                pass
        else:
            batch.release()
            if how == "twice":
                batch.release()
        mbatch.released = True

    @precondition(lambda self: self.held)
    @rule(data=st.data())
    def drop_reference(self, data):
        """Forget a batch without releasing it: the last reference going releases it."""
        index = data.draw(st.integers(0, len(self.held) - 1), label="batch")
        _, mbatch = self.held.pop(index)
        mbatch.referenced = False

    @precondition(lambda self: any(not b.released and len(b) for b, _ in self.held))
    @rule(data=st.data(), how=st.sampled_from(VIEWS))
    def keep_view(self, data, how):
        """Keep a view of an item (or a slice of one, or of the whole batch)
        past its batch's release."""
        live = [(b, m) for b, m in self.held if not b.released and len(b)]
        batch, mbatch = self.pick(data, live, "batch")
        i = data.draw(st.integers(0, len(batch) - 1), label="item")
        expected = mbatch.items[i]
        if how in ("data", "slice of data"):
            view, expected = batch.data, b"".join(mbatch.items)
            if how == "slice of data":
                view, expected = view[1:], expected[1:]
        elif how == "offsets":
            view, expected = batch.offsets, [0]
            for item in mbatch.items:
                expected.append(expected[-1] + len(item))
        elif how == "arrow":
            view, expected = batch.to_arrow(), list(mbatch.items)
        elif how == "item":
            view = batch[i]
        elif how == "list":
            view = batch[i : i + 1][0]
        else:
            a = data.draw(st.integers(0, len(expected)), label="start")
            b = data.draw(st.integers(a, len(expected)), label="stop")
            view, expected = batch[i][a:b], expected[a:b]
            if how == "slice of slice":
                view, expected = view[1:], expected[1:]
        if isinstance(view, memoryview):
            assert view.readonly and view.format == ("q" if how == "offsets" else "B")
        self.views.append((view, expected, mbatch))
        mbatch.views += 1
        event(f"kept a view ({how})")

    @precondition(lambda self: self.views)
    @rule(data=st.data())
    def drop_view(self, data):
        index = data.draw(st.integers(0, len(self.views) - 1), label="view")
        _, _, mbatch = self.views.pop(index)
        mbatch.views -= 1
        self.settle()

    # -- fork -----------------------------------------------------------------------

    @precondition(lambda self: self.child is None and hasattr(os, "fork")
                  and any(not b.released for b, _ in self.held))
    @rule()
    def fork(self):
        """Fork a child whose after-fork work waits until a later step: the
        parent goes on (releases, enqueues, wraps around), then the child
        checks that every batch and view held at the fork shows its bytes."""
        expected = {
            "batches": [(b, None if m.released else list(m.items)) for b, m in self.held],
            "views": [(v, e) for v, e, _ in self.views],
        }
        gate_r, gate_w = os.pipe()
        result_r, result_w = os.pipe()
        original = tempo.Dispatcher._reset_after_fork

        def late_reset(dispatcher, running):
            if gate_r in open_gate:
                open_gate.remove(gate_r)
                os.read(gate_r, 1)
            return original(dispatcher, running)

        open_gate = [gate_r]
        tempo.Dispatcher._reset_after_fork = late_reset
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)  # threads (3.12+)
                pid = os.fork()
        finally:
            tempo.Dispatcher._reset_after_fork = original
        if pid == 0:
            code = 1
            try:
                try:
                    for batch, items in expected["batches"]:
                        if items is None:
                            assert batch.released
                        else:
                            assert batch.tolist() == items
                    for view, data in expected["views"]:
                        assert contents(view) == data
                    outcome = None
                except BaseException:  # noqa: BLE001 - reported to the parent
                    outcome = traceback.format_exc()
                os.write(result_w, pickle.dumps(outcome))
                code = 0
            finally:
                os._exit(code)
        os.close(gate_r)
        os.close(result_w)
        self.child = (pid, gate_w, result_r)
        event("forked with held batches")

    @precondition(lambda self: self.model.state == RUNNING and self.waiting_calls() == 0
                  and self.model.max_buffered_bytes >= 64)
    @rule()
    def wrap_around(self):
        """Take every batch, let go of every batch and view, then push twice
        the ring's size through it in payloads of the whole bound, each taken
        and released at once: every byte of the shared memory is written
        again (what a forked child's held batches must not see)."""
        check(call(self.d.flush, timeout=0), self.model.flush(), "flush(timeout=0)")
        while self.model.undelivered:
            self.get(flush_first=False)
        for batch, mbatch in self.held:
            batch.release()
            mbatch.released = True
            mbatch.referenced = False
        self.held.clear()
        for _, _, mbatch in self.views:
            mbatch.views -= 1
        self.views.clear()
        assert self.model.owned_items() == 0 == self.d.stats().buffered_items
        limit = self.model.max_buffered_bytes
        ring = -(-limit // mmap.PAGESIZE) * mmap.PAGESIZE
        for round_ in range(2 * ring // limit + 1):
            self.enqueue_one(bytes([round_ & 0xFF]) * limit, "bytes")
            check(call(self.d.flush, timeout=0), self.model.flush(), "flush(timeout=0)")
            while self.model.undelivered:
                real = call(self.d.get_batch, timeout=0)
                expected = self.model.get_batch()
                check(real, expected, "get_batch(timeout=0)")
                real[0].value.release()
                expected.value.released = True
        event("wrapped around")

    @precondition(lambda self: self.child is not None)
    @rule()
    def check_child(self):
        """Let the forked child go on and check what it held."""
        pid, gate_w, result_r = self.child
        self.child = None
        os.write(gate_w, b"g")
        os.close(gate_w)
        data = b""
        while chunk := os.read(result_r, 65536):
            data += chunk
        os.close(result_r)
        _, status = os.waitpid(pid, 0)
        assert data, f"forked child died without reporting (wait status {status})"
        outcome = pickle.loads(data)
        assert outcome is None, f"in the forked child:\n{outcome}"

    # -- what both must agree on after every step ------------------------------------

    @invariant()
    def agree(self):
        if self.d is None:
            return
        before = time.monotonic()
        real = dataclasses.asdict(self.d.stats())
        after = time.monotonic()
        assert list(real) == STATS_FIELDS
        if HAS_OLDEST_WAIT:
            # A time: it lies between what the two clock readings around the
            # oldest pending payload's enqueue and around stats() allow.
            wait, since = real.pop("oldest_wait"), self.model.oldest_since()
            if since is None:
                assert wait == 0.0
            else:
                assert before - since[1] - 1e-6 <= wait <= after - since[0] + 1e-6, (wait, since)
        assert real == self.model.stats()
        for batch, mbatch in self.held:
            assert (len(batch), batch.nbytes, bool(batch)) == (
                len(mbatch.items), mbatch.nbytes, bool(mbatch.items))
            assert batch.released == mbatch.released
            if mbatch.released:
                check(call(batch.__getitem__, 0), Outcome(error=ValueError), "released[0]")
                check(call(batch.tolist), Outcome(error=ValueError), "released.tolist()")
            else:
                assert batch.tolist() == mbatch.items
        for view, expected, mbatch in self.views:
            assert contents(view) == expected, "a kept view changed"
            if mbatch.released or not mbatch.referenced:
                event("a view outlives its batch")
        if self.model.owned_bytes() > sum(b.nbytes for b, _ in self.held if not b.released):
            event("owned bytes include released ones (pinned or behind)")


DispatcherMachine.TestCase.settings = settings(
    max_examples=EXAMPLES,
    stateful_step_count=STEPS,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
TestDispatcherModel = DispatcherMachine.TestCase
