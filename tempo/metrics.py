"""Metrics for every live dispatcher and pipeline: Prometheus and OpenTelemetry.

Both read ``stats()`` when they are collected (a scrape, an export), so
collecting costs nothing on the enqueue path: no counter is kept for them, no
hook runs per payload. Each dispatcher and pipeline is one series per metric,
labelled (Prometheus) or attributed (OpenTelemetry) with its ``name``; a
dispatcher or pipeline that was collected by the garbage collector is gone
from the next collection (tempo holds them only weakly). Several alive under
one name make one series: their sum, except for an age
(``tempo_oldest_wait_seconds``), which is the oldest of them
(``Metric.combine``).

- ``PrometheusCollector()``: ``prometheus_client.REGISTRY.register(
  tempo.metrics.PrometheusCollector())``; needs ``pip install
  "tempo-batcher[prometheus]"``.
- ``instrument_otel(meter_provider=None)``: observable instruments on an
  OpenTelemetry meter; needs ``pip install "tempo-batcher[otel]"``.

docs/operating.md lists the metrics and what to alert on.
"""

from __future__ import annotations

import importlib
import logging
import weakref
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any, NamedTuple, Optional, cast

if TYPE_CHECKING:
    from ._dispatcher import Dispatcher
    from ._pipeline import Pipeline

__all__ = ["METRICS", "Metric", "PrometheusCollector", "instrument_otel"]

_log = logging.getLogger("tempo")


class Metric(NamedTuple):
    """One metric, as both exporters name it.

    ``name`` is the Prometheus name without the ``_total`` a counter gets
    (``tempo_enqueued`` is exposed as ``tempo_enqueued_total``);
    ``otel_name`` the OpenTelemetry instrument's; ``kind`` is ``"counter"`` or
    ``"gauge"``; ``field`` the ``stats()`` field it reads; ``pipeline`` is
    true for the metrics only pipelines have; ``combine`` is how the values
    of several alive under one name make their series: ``"sum"`` (counts,
    bytes) or ``"max"`` (an age: the oldest, not a sum of ages).
    """

    name: str
    otel_name: str
    kind: str
    unit: str
    field: str
    pipeline: bool
    help: str
    combine: str = "sum"


def _m(field: str, kind: str, unit: str, help: str, *, pipeline: bool = False,
       name: Optional[str] = None, combine: str = "sum") -> Metric:
    base = name or field
    prefix = "pipeline_" if pipeline else ""
    otel = "pipeline." if pipeline else ""
    return Metric(f"tempo_{prefix}{base}", f"tempo.{otel}{base}", kind, unit, field, pipeline,
                  help, combine)


#: Every metric tempo exports, in exposition order.
METRICS: tuple[Metric, ...] = (
    _m("buffered_bytes", "gauge", "By",
       "Payload bytes tempo owns now: buffered, or handed out and not yet released."),
    _m("max_buffered_bytes", "gauge", "By",
       "The configured bound on buffered bytes (max_buffered_bytes)."),
    _m("waiting_batches", "gauge", "{batch}",
       "Batches sealed and not yet handed to a consumer."),
    _m("held_batches", "gauge", "{batch}",
       "Batches handed out whose bytes are not back yet."),
    _m("oldest_wait", "gauge", "s",
       "Seconds the oldest payload not yet handed to a consumer has waited (0 if none).",
       name="oldest_wait_seconds", combine="max"),
    _m("enqueued", "counter", "{payload}", "Payloads accepted."),
    _m("enqueued_bytes", "counter", "By", "Payload bytes accepted."),
    _m("rejected_full", "counter", "{payload}",
       "Payloads refused for want of space (QueueFull)."),
    _m("rejected_too_large", "counter", "{payload}",
       "Payloads refused as larger than max_buffered_bytes (PayloadTooLarge)."),
    _m("batches", "counter", "{batch}", "Batches handed to consumers."),
    _m("items", "counter", "{payload}", "Payloads handed to consumers, in batches."),
    _m("dropped", "counter", "{payload}",
       "Accepted payloads dropped unprocessed: by stop(), a shutdown that timed out, or the exit."),
    _m("delivered_batches", "counter", "{batch}",
       "Batches the sink returned from (at the first attempt or after retries).",
       pipeline=True),
    _m("delivered_items", "counter", "{payload}",
       "Payloads in batches the sink returned from.", pipeline=True),
    _m("failed_batches", "counter", "{batch}",
       "Batches that exhausted their attempts and went to on_failure.", pipeline=True),
    _m("failed_items", "counter", "{payload}",
       "Payloads in batches that exhausted their attempts.", pipeline=True),
    _m("retries", "counter", "{call}",
       "Sink calls after a first attempt raised.", pipeline=True),
)


def _live() -> "tuple[list[Dispatcher], list[Pipeline]]":
    """The dispatchers and pipelines alive now: the one place metrics learn of them.

    A pipeline's own dispatcher is among the dispatchers (under the
    pipeline's name); the pipelines give only their pipeline counters.
    """
    from . import _lifecycle

    # The lifecycle module knows them by the few methods it calls (it imports
    # neither class); every one of them is a Dispatcher or a Pipeline.
    return (cast("list[Dispatcher]", _lifecycle.live()),
            cast("list[Pipeline]", _lifecycle.live_pipelines()))


#: The objects whose stats() raised, reported once each (then skipped quietly).
_failed: "weakref.WeakSet[Any]" = weakref.WeakSet()


def _read(wanted: "tuple[Metric, ...]" = METRICS) -> "dict[str, dict[str, float]]":
    """One reading of the ``wanted`` metrics: metric name -> {tempo name -> value}."""
    dispatchers, pipelines = _live()
    readings: dict[str, dict[str, float]] = {metric.name: {} for metric in wanted}
    for objects, pipeline in ((dispatchers, False), (pipelines, True)):
        metrics = [metric for metric in wanted if metric.pipeline is pipeline]
        if not metrics:
            continue
        for obj in objects:
            try:
                name, stats = obj.name, obj.stats()
            except Exception:  # noqa: BLE001 - see below
                # One broken object (a subclass's stats(), one whose __init__
                # failed half-way) costs its own series, not the whole scrape.
                if obj not in _failed:
                    _failed.add(obj)
                    _log.exception("metrics: skipping %r, whose stats() raised", obj)
                continue
            for metric in metrics:
                series = readings[metric.name]
                value = getattr(stats, metric.field)
                if name in series:
                    value = max(series[name], value) if metric.combine == "max" \
                        else series[name] + value
                series[name] = value
    return readings


def _require(module: str, extra: str, what: str) -> Any:
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name is None or not module.startswith(exc.name):
            raise  # something else is missing, inside the package
        raise ModuleNotFoundError(
            f"tempo.metrics.{what} needs {module.split('.')[0]}: "
            f'pip install "tempo-batcher[{extra}]"',
            name=exc.name,
        ) from exc


class PrometheusCollector:
    """A ``prometheus_client`` collector of every live dispatcher and pipeline.

    Register it once::

        prometheus_client.REGISTRY.register(tempo.metrics.PrometheusCollector())

    Each scrape reads ``stats()`` of every dispatcher and pipeline alive then;
    series carry a ``name`` label (``Dispatcher(name=...)``). The metrics are
    ``tempo.metrics.METRICS``: gauges ``tempo_buffered_bytes``,
    ``tempo_max_buffered_bytes``, ``tempo_waiting_batches``,
    ``tempo_held_batches``, ``tempo_oldest_wait_seconds``; counters
    ``tempo_enqueued_total``, ``tempo_enqueued_bytes_total``,
    ``tempo_rejected_full_total``, ``tempo_rejected_too_large_total``,
    ``tempo_batches_total``, ``tempo_items_total``, ``tempo_dropped_total``;
    for pipelines ``tempo_pipeline_delivered_batches_total``,
    ``tempo_pipeline_delivered_items_total``,
    ``tempo_pipeline_failed_batches_total``,
    ``tempo_pipeline_failed_items_total``, ``tempo_pipeline_retries_total``.

    Raises ``ModuleNotFoundError`` naming the extra if ``prometheus_client``
    is not installed (``pip install "tempo-batcher[prometheus]"``).
    """

    def __init__(self) -> None:
        self._core = _require("prometheus_client.core", "prometheus", "PrometheusCollector")

    def _families(self, readings: "Optional[dict[str, dict[str, float]]]") -> Iterator[Any]:
        core = self._core
        for metric in METRICS:
            kind = core.CounterMetricFamily if metric.kind == "counter" else core.GaugeMetricFamily
            family = kind(metric.name, metric.help, labels=["name"])
            if readings is not None:
                for name, value in readings[metric.name].items():
                    family.add_metric([name], value)
            yield family

    def collect(self) -> Iterator[Any]:
        """The metric families now (``prometheus_client`` calls it at each scrape)."""
        return self._families(_read())

    def describe(self) -> Iterator[Any]:
        """The metric families without samples: registering a second collector
        of tempo's metrics in one registry is refused (duplicated timeseries)."""
        return self._families(None)


def instrument_otel(meter_provider: Optional[Any] = None) -> None:
    """Register OpenTelemetry observable instruments for every live dispatcher and pipeline.

    The instruments are those of ``tempo.metrics.METRICS`` under OpenTelemetry
    names (``tempo.buffered_bytes``, ``tempo.enqueued``,
    ``tempo.pipeline.delivered_items``, ...): observable counters for the
    counters, observable gauges for the gauges, with UCUM units (``By``,
    ``s``), each observation carrying the attribute ``name``. They are read
    when the SDK's reader collects, from ``stats()``, so they cost nothing in
    between. ``meter_provider`` is the ``MeterProvider`` to use; ``None`` (the
    default) is the global one (``opentelemetry.metrics.get_meter_provider()``).
    Call it once per meter provider.

    Raises ``ModuleNotFoundError`` naming the extra if ``opentelemetry-api``
    is not installed (``pip install "tempo-batcher[otel]"``).
    """
    otel = _require("opentelemetry.metrics", "otel", "instrument_otel")
    from . import __version__

    meter = otel.get_meter("tempo", __version__, meter_provider=meter_provider)
    for metric in METRICS:
        make = meter.create_observable_counter if metric.kind == "counter" \
            else meter.create_observable_gauge
        make(metric.otel_name, callbacks=[_observer(otel, metric)], unit=metric.unit,
             description=metric.help)


def _observer(otel: Any, metric: Metric) -> Any:
    def observe(options: Any) -> Iterable[Any]:
        series = _read((metric,))[metric.name]
        return [otel.Observation(value, {"name": name}) for name, value in series.items()]

    return observe
