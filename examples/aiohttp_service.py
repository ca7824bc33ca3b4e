"""An aiohttp service that takes events over HTTP and forwards them in NDJSON bulks.

- ``POST /events`` takes one JSON event, re-encodes it as a single line and
  enqueues it: ``202 Accepted``, or ``503`` with ``Retry-After`` when tempo is
  full (back-pressure) or shutting down.
- A ``tempo.Pipeline`` with an ``async def`` sink forwards the batches, each as
  one NDJSON ``POST`` to a bulk endpoint (as log and search back ends offer),
  on the service's own event loop. Here that endpoint is a second aiohttp app
  on 127.0.0.1, which answers ``503`` to every third request (overloaded):
  the sink raises, and the pipeline retries that batch with backoff and
  jitter. A batch that keeps failing would go to ``on_failure``; the service
  keeps running either way.
- The pipeline lives in the app's ``cleanup_ctx`` (``async with``): on
  shutdown it seals the open batch and waits until every batch was posted.
- It is named (``name="events"``): its log records say ``pipeline 'events'``
  and carry ``tempo_name``, and ``GET /metrics`` serves its counters for
  Prometheus (``tempo.metrics.PrometheusCollector``) with ``name="events"``.
  A real service registers the collector once in ``prometheus_client.REGISTRY``;
  this one uses a registry of its own so that it can run twice in a process.

The example sends N events with an aiohttp client, shuts the service down and
checks that the bulk endpoint received each event exactly once.

    python examples/aiohttp_service.py --events 2000

Needs aiohttp and prometheus-client (``pip install aiohttp prometheus-client``,
or ``pip install "tempo-batcher[examples]"``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import prometheus_client
from aiohttp import web

import tempo
import tempo.metrics

PIPELINE = web.AppKey("pipeline", tempo.Pipeline)
BULK_URL = web.AppKey("bulk_url", str)
RECEIVED = web.AppKey("received", list[list[int]])  # the seqs of each bulk request
REFUSED = web.AppKey("refused", list[int])  # [answered 503, all] bulk requests
REGISTRY = web.AppKey("registry", prometheus_client.CollectorRegistry)


# -- the service -------------------------------------------------------------------


async def ingest(request: web.Request) -> web.Response:
    """``POST /events``: one JSON event per request."""
    try:
        event = await request.json()
    except json.JSONDecodeError:
        raise web.HTTPBadRequest(text="the body must be one JSON document") from None
    payload = json.dumps(event, separators=(",", ":")).encode() + b"\n"  # one NDJSON line
    try:
        request.app[PIPELINE].enqueue(payload)  # never blocks: fails at once if full
    except (tempo.QueueFull, tempo.ShuttingDown, tempo.Stopped):
        raise web.HTTPServiceUnavailable(headers={"Retry-After": "1"}) from None
    return web.Response(status=202)


async def metrics(request: web.Request) -> web.Response:
    """``GET /metrics``: every live dispatcher and pipeline, in Prometheus text format."""
    body = prometheus_client.generate_latest(request.app[REGISTRY])
    return web.Response(body=body, headers={"Content-Type": prometheus_client.CONTENT_TYPE_LATEST})


def bulk_sink(session: aiohttp.ClientSession, url: str) -> Callable[[tempo.Batch], Awaitable[None]]:
    """The pipeline's sink: post each batch as one NDJSON body; raise if refused."""

    async def post(batch: tempo.Batch) -> None:
        body = b"".join(batch)  # the request body (a copy: the batch is released after)
        headers = {"Content-Type": "application/x-ndjson"}
        async with session.post(url, data=body, headers=headers) as response:
            response.raise_for_status()  # a 503 raises: the pipeline retries the batch

    return post


async def pipeline_ctx(app: web.Application) -> AsyncIterator[None]:
    """Run the pipeline with the app; on cleanup, wait until every batch was posted."""
    async with aiohttp.ClientSession() as session:
        async with tempo.Pipeline(
            bulk_sink(session, app[BULK_URL]),
            interval=0.05, max_batch_bytes=256 * tempo.KiB, max_buffered_bytes=4 * tempo.MiB,
            retry=tempo.Retry(attempts=8, backoff=0.05, max_backoff=1.0),
            name="events",
        ) as pipeline:
            app[PIPELINE] = pipeline
            yield


def make_service(bulk_url: str) -> web.Application:
    app = web.Application()
    app[BULK_URL] = bulk_url
    app[REGISTRY] = prometheus_client.CollectorRegistry()
    app[REGISTRY].register(tempo.metrics.PrometheusCollector())
    app.cleanup_ctx.append(pipeline_ctx)
    app.router.add_post("/events", ingest)
    app.router.add_get("/metrics", metrics)
    return app


# -- the bulk receiver: a stand-in for a log or search back end ----------------------


async def bulk(request: web.Request) -> web.Response:
    lines = (await request.read()).splitlines()
    refused = request.app[REFUSED]
    refused[1] += 1
    if refused[1] % 3 == 0:  # overloaded: nothing stored, try again later
        refused[0] += 1
        raise web.HTTPServiceUnavailable(headers={"Retry-After": "1"})
    request.app[RECEIVED].append([json.loads(line)["seq"] for line in lines])
    return web.json_response({"items": len(lines)})


def make_receiver() -> web.Application:
    app = web.Application()
    app[RECEIVED] = []
    app[REFUSED] = [0, 0]
    app.router.add_post("/_bulk", bulk)
    return app


# -- running it ----------------------------------------------------------------------


async def serve(app: web.Application) -> tuple[web.AppRunner, str]:
    """Serve ``app`` on 127.0.0.1 at a free port; return the runner and base URL."""
    runner = web.AppRunner(app)
    await runner.setup()
    sock = socket.create_server(("127.0.0.1", 0))
    await web.SockSite(runner, sock).start()
    host, port = sock.getsockname()[:2]
    return runner, f"http://{host}:{port}"


async def send(client: aiohttp.ClientSession, url: str, event: dict[str, Any]) -> None:
    """Post one event; on 503, back off and retry."""
    for _ in range(100):
        async with client.post(url, json=event) as response:
            if response.status != 503:
                response.raise_for_status()
                return
        await asyncio.sleep(0.05)
    raise RuntimeError("the service stayed unavailable")


async def run(events: int) -> int:
    receiver = make_receiver()
    receiver_runner, receiver_url = await serve(receiver)
    service = make_service(f"{receiver_url}/_bulk")
    service_runner, service_url = await serve(service)
    try:
        async with aiohttp.ClientSession() as client:  # at most 100 connections at once
            await asyncio.gather(*(
                send(client, f"{service_url}/events",
                     {"seq": seq, "user": f"u{seq % 97}", "action": "click"})
                for seq in range(events)
            ))
            async with client.get(f"{service_url}/metrics") as response:
                scraped = await response.text()
    finally:
        await service_runner.cleanup()  # runs pipeline_ctx's cleanup: every batch posted
        await receiver_runner.cleanup()

    for line in scraped.splitlines():  # what a dashboard would show
        if line.startswith(('tempo_enqueued_total{name="events"}',
                            'tempo_rejected_full_total{name="events"}')):
            print("metrics:", line)
    bulks = receiver[RECEIVED]
    received = sorted(seq for seqs in bulks for seq in seqs)
    stats = service[PIPELINE].stats()
    print(f"accepted {stats.enqueued:,} events, bulk requests: {len(bulks):,}, "
          f"refused with 503 and retried: {receiver[REFUSED][0]:,} (retries: {stats.retries:,})")
    if received != list(range(events)):
        print(f"FAILED: the receiver got {len(received):,} events "
              f"({len(set(received)):,} distinct) of {events:,}")
        return 1
    print(f"OK: receiver got all {events:,} events")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description="aiohttp ingest -> tempo -> NDJSON bulks.")
    parser.add_argument("--events", type=int, default=2000)
    args = parser.parse_args()
    return asyncio.run(run(args.events))


if __name__ == "__main__":
    sys.exit(main())
