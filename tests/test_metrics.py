"""tempo.metrics: a real Prometheus scrape over loopback, and OpenTelemetry's SDK reader."""

from __future__ import annotations

import dataclasses
import gc
import logging
import subprocess
import sys
import threading
import time
import urllib.request

import pytest

import tempo
import tempo.metrics


def needs_prometheus():
    return pytest.importorskip(
        "prometheus_client", reason="prometheus-client is not installed for this interpreter"
    )


def text_string_to_metric_families(text):
    from prometheus_client.parser import text_string_to_metric_families as parse

    return parse(text)


@pytest.fixture
def scrape():
    """scrape() -> {sample name: {name label: value}} from a real HTTP endpoint."""
    prometheus_client = needs_prometheus()
    registry = prometheus_client.CollectorRegistry()
    registry.register(tempo.metrics.PrometheusCollector())
    server, thread = prometheus_client.start_http_server(0, addr="127.0.0.1", registry=registry)
    url = f"http://127.0.0.1:{server.server_port}/metrics"

    def get() -> dict[str, dict[str, float]]:
        with urllib.request.urlopen(url, timeout=10) as response:
            text = response.read().decode()
        samples: dict[str, dict[str, float]] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                samples.setdefault(sample.name, {})[sample.labels["name"]] = sample.value
        return samples

    get.url = url  # type: ignore[attr-defined]
    yield get
    server.shutdown()
    server.server_close()
    thread.join(10)


def test_a_scrape_shows_each_dispatchers_counters_under_its_name(scrape):
    d = tempo.Dispatcher(interval=60, max_buffered_bytes=10, max_batch_bytes=4, name="m-disp")
    d.start()
    d.enqueue(b"abcd")              # sealed at once (reaches max_batch_bytes)
    d.enqueue(b"ef")                # open
    with pytest.raises(tempo.QueueFull):
        d.enqueue(b"too much")      # 6 + 8 > 10: refused for want of space
    with pytest.raises(tempo.PayloadTooLarge):
        d.enqueue(b"x" * 11)
    held = d.get_batch(timeout=5)
    samples = scrape()
    expected = {
        "tempo_buffered_bytes": 6.0,
        "tempo_max_buffered_bytes": 10.0,
        "tempo_waiting_batches": 0.0,
        "tempo_held_batches": 1.0,
        "tempo_enqueued_total": 2.0,
        "tempo_enqueued_bytes_total": 6.0,
        "tempo_rejected_full_total": 1.0,
        "tempo_rejected_too_large_total": 1.0,
        "tempo_batches_total": 1.0,
        "tempo_items_total": 1.0,
        "tempo_dropped_total": 0.0,
    }
    assert {metric: samples[metric]["m-disp"] for metric in expected} == expected
    assert samples["tempo_oldest_wait_seconds"]["m-disp"] > 0  # "ef" is waiting
    held.release()
    d.stop()
    assert scrape()["tempo_dropped_total"]["m-disp"] == 1.0
    assert scrape()["tempo_buffered_bytes"]["m-disp"] == 0.0


def test_a_scrape_shows_pipeline_counters_under_the_pipelines_name(scrape):
    calls = []

    def sink(batch):
        calls.append(batch.tolist())
        if batch.tolist() == [b"bad"] or len(calls) == 1:
            raise ConnectionError("flaky")

    p = tempo.Pipeline(sink, interval=60, max_buffered_bytes=100, name="m-pipe",
                       retry=tempo.Retry(attempts=2, backoff=0, max_backoff=0))
    p.enqueue(b"a")
    p.enqueue(b"b")
    p.flush()                      # [a, b]: fails once, then delivered
    p.enqueue(b"bad")
    p.close()                      # [bad]: fails twice, given up
    samples = scrape()
    expected = {
        "tempo_pipeline_delivered_batches_total": 1.0,
        "tempo_pipeline_delivered_items_total": 2.0,
        "tempo_pipeline_failed_batches_total": 1.0,
        "tempo_pipeline_failed_items_total": 1.0,
        "tempo_pipeline_retries_total": 2.0,
        "tempo_enqueued_total": 3.0,    # its dispatcher, under the same name
        "tempo_batches_total": 2.0,
    }
    assert {metric: samples[metric]["m-pipe"] for metric in expected} == expected
    # A plain dispatcher has no pipeline series.
    d = tempo.Dispatcher(interval=1, max_buffered_bytes=10, name="m-plain")
    samples = scrape()
    assert "m-plain" in samples["tempo_enqueued_total"]
    assert "m-plain" not in samples["tempo_pipeline_retries_total"]
    del d


def test_the_exposition_follows_prometheus_naming_with_help_and_types(scrape):
    p = tempo.Pipeline(lambda batch: None, interval=1, max_buffered_bytes=10, name="m-help")
    with urllib.request.urlopen(scrape.url, timeout=10) as response:
        text = response.read().decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    for metric in tempo.metrics.METRICS:
        family = families[metric.name]
        assert family.type == metric.kind
        assert family.documentation == metric.help
        (sample,) = [s for s in family.samples if s.labels == {"name": "m-help"}]
        suffix = "_total" if metric.kind == "counter" else ""
        assert sample.name == metric.name + suffix
        if metric.unit == "By":
            assert metric.name.endswith("_bytes")
        if metric.unit == "s":
            assert metric.name.endswith("_seconds")
    p.close()


def test_a_dispatcher_that_is_gone_leaves_the_scrape(scrape):
    d = tempo.Dispatcher(interval=60, max_buffered_bytes=10, name="m-gone")
    p = tempo.Pipeline(lambda batch: None, interval=60, max_buffered_bytes=10,
                       name="m-gone-pipe")
    assert "m-gone" in scrape()["tempo_enqueued_total"]
    assert "m-gone-pipe" in scrape()["tempo_pipeline_retries_total"]
    p.close()
    for worker in p._threads:  # a worker thread holds its pipeline until it ends
        worker.join(10)
    del d, p
    gc.collect()
    samples = scrape()
    assert "m-gone" not in samples.get("tempo_enqueued_total", {})
    assert "m-gone-pipe" not in samples.get("tempo_enqueued_total", {})
    assert "m-gone-pipe" not in samples.get("tempo_pipeline_retries_total", {})


def test_dispatchers_sharing_a_name_are_summed_into_one_series(scrape):
    a = tempo.Dispatcher(interval=60, max_buffered_bytes=10, name="m-twin")
    b = tempo.Dispatcher(interval=60, max_buffered_bytes=20, name="m-twin")
    a.enqueue(b"1")
    b.enqueue(b"22")
    samples = scrape()
    assert samples["tempo_enqueued_total"]["m-twin"] == 2.0
    assert samples["tempo_max_buffered_bytes"]["m-twin"] == 30.0
    assert samples["tempo_buffered_bytes"]["m-twin"] == 3.0


class _Waited(tempo.Dispatcher):
    """A dispatcher whose oldest payload has waited exactly ``waited`` seconds."""

    waited = 0.0

    def stats(self):
        return dataclasses.replace(super().stats(), oldest_wait=self.waited)


def test_the_oldest_wait_under_a_shared_name_is_the_oldest_not_the_sum(scrape):
    a = _Waited(interval=60, max_buffered_bytes=10, name="m-aged")
    b = _Waited(interval=60, max_buffered_bytes=10, name="m-aged")
    a.waited, b.waited = 1.0, 3.0
    a.enqueue(b"1")
    b.enqueue(b"22")
    samples = scrape()
    assert samples["tempo_oldest_wait_seconds"]["m-aged"] == 3.0  # an age: the oldest
    assert samples["tempo_buffered_bytes"]["m-aged"] == 3.0      # bytes: the sum
    assert [m.name for m in tempo.metrics.METRICS if m.combine == "max"] == [
        "tempo_oldest_wait_seconds"
    ]


class _Broken(tempo.Dispatcher):
    def stats(self):
        raise RuntimeError("broken stats")


def test_a_dispatcher_whose_stats_raise_is_skipped_and_reported_once(scrape, caplog):
    broken = _Broken(interval=60, max_buffered_bytes=10, name="m-broken")
    fine = tempo.Dispatcher(interval=60, max_buffered_bytes=10, name="m-fine")
    fine.enqueue(b"1")
    with caplog.at_level(logging.ERROR, logger="tempo"):
        first = scrape()
        second = scrape()
    for samples in (first, second):
        assert samples["tempo_enqueued_total"]["m-fine"] == 1.0
        assert "m-broken" not in samples["tempo_enqueued_total"]
    reports = [r for r in caplog.records if "whose stats() raised" in r.getMessage()]
    assert len(reports) == 1
    assert "broken stats" in reports[0].exc_text
    del broken, fine


def test_a_collection_while_another_thread_makes_dispatchers_does_not_raise():
    # Iterating a WeakSet runs a Python generator: a dispatcher made (or
    # collected) by another thread meanwhile changed the set under it
    # ("RuntimeError: Set changed size during iteration"). _read() is what a
    # Prometheus scrape and the OpenTelemetry callbacks both call.
    keep = [tempo.Dispatcher(interval=1, max_buffered_bytes=1 << 16) for _ in range(200)]
    stop = threading.Event()
    errors: list[BaseException] = []

    def churn() -> None:
        while not stop.is_set():
            tempo.Dispatcher(interval=1, max_buffered_bytes=1 << 16)

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    thread = threading.Thread(target=churn)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        for _ in range(300):
            if time.monotonic() > deadline:
                break
            try:
                tempo.metrics._read()
            except RuntimeError as exc:
                errors.append(exc)
                break
    finally:
        stop.set()
        thread.join()
        sys.setswitchinterval(old)
        del keep
    assert errors == []


def test_registering_a_second_collector_in_one_registry_is_refused():
    prometheus_client = needs_prometheus()
    registry = prometheus_client.CollectorRegistry()
    registry.register(tempo.metrics.PrometheusCollector())
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        registry.register(tempo.metrics.PrometheusCollector())


def test_without_prometheus_client_the_error_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    monkeypatch.delitem(sys.modules, "prometheus_client.core", raising=False)
    with pytest.raises(ModuleNotFoundError, match=r'pip install "tempo-batcher\[prometheus\]"'):
        tempo.metrics.PrometheusCollector()


def test_without_opentelemetry_the_error_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "opentelemetry", None)
    monkeypatch.delitem(sys.modules, "opentelemetry.metrics", raising=False)
    with pytest.raises(ModuleNotFoundError, match=r'pip install "tempo-batcher\[otel\]"'):
        tempo.metrics.instrument_otel()


def test_opentelemetry_instruments_report_the_same_content():
    pytest.importorskip("opentelemetry.sdk", reason="opentelemetry-sdk is not installed")
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    tempo.metrics.instrument_otel(provider)

    def sink(batch):
        raise ConnectionError("down")

    d = tempo.Dispatcher(interval=60, max_buffered_bytes=10, name="o-disp")
    d.enqueue(b"abc")
    with pytest.raises(tempo.QueueFull):
        d.enqueue(b"x" * 8)
    p = tempo.Pipeline(sink, interval=60, max_buffered_bytes=10, name="o-pipe",
                       retry=tempo.Retry(attempts=2, backoff=0, max_backoff=0))
    p.enqueue(b"z")
    p.close()

    points: dict[str, dict[str, float]] = {}
    kinds: dict[str, str] = {}
    units: dict[str, str] = {}
    for resource in reader.get_metrics_data().resource_metrics:
        for scope in resource.scope_metrics:
            assert scope.scope.name == "tempo"
            for metric in scope.metrics:
                kinds[metric.name] = type(metric.data).__name__
                units[metric.name] = metric.unit
                for point in metric.data.data_points:
                    points.setdefault(metric.name, {})[point.attributes["name"]] = point.value
    assert {m.otel_name for m in tempo.metrics.METRICS} == set(points)
    for metric in tempo.metrics.METRICS:
        assert kinds[metric.otel_name] == ("Sum" if metric.kind == "counter" else "Gauge")
        assert units[metric.otel_name] == metric.unit
    assert points["tempo.enqueued"]["o-disp"] == 1
    assert points["tempo.rejected_full"]["o-disp"] == 1
    assert points["tempo.buffered_bytes"]["o-disp"] == 3
    assert points["tempo.max_buffered_bytes"]["o-disp"] == 10
    assert points["tempo.enqueued"]["o-pipe"] == 1
    assert points["tempo.pipeline.failed_items"]["o-pipe"] == 1
    assert points["tempo.pipeline.retries"]["o-pipe"] == 1
    assert points["tempo.pipeline.delivered_items"]["o-pipe"] == 0
    assert "o-disp" not in points["tempo.pipeline.retries"]
    provider.shutdown()


def test_importing_tempo_metrics_needs_neither_extra():
    code = (
        "import sys; sys.modules['prometheus_client'] = sys.modules['opentelemetry'] = None\n"
        "import tempo.metrics; print(tempo.metrics.METRICS[0].name)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout == "tempo_buffered_bytes\n"
