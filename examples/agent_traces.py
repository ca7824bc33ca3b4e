"""LLM agent traces: many agent coroutines -> one tempo dispatcher -> a JSONL file.

Each simulated agent runs a few steps (a thought, an LLM call with its token
counts, a tool call and its result) and emits each as a small JSON event into
one shared dispatcher. ``enqueue`` never blocks the event loop: when tempo is
full, the agent awaits briefly and retries. One writer coroutine writes every
batch to a JSONL file with ``batch.writeall(f)`` (in a worker thread, so disk
writes never block the loop either). At the end the file is read back,
checked (every event once, in order per agent) and summarised.

    python examples/agent_traces.py --agents 200 --steps 4 [--out traces.jsonl]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import tempo

MODELS = ["gpt-4o-mini", "claude-3-5-haiku", "llama-3.1-8b"]
TOOLS = {"web_search": {"query": "tempo batching"}, "python": {"code": "sum(range(10))"},
         "read_file": {"path": "notes/plan.md"}, "sql": {"query": "SELECT count(*) FROM runs"}}
THOUGHTS = ["I should look this up first.", "The last tool result answers part of it.",
            "Let me check the numbers with code.", "I have enough to answer."]


async def emit(d: tempo.Dispatcher, event: dict[str, Any]) -> None:
    """Enqueue one event as a JSON line; if tempo is full, yield to the writer and retry."""
    payload = json.dumps(event, separators=(",", ":")).encode() + b"\n"
    backoff = 0.001
    while True:
        try:
            d.enqueue(payload)  # copies the payload; fails at once if tempo is full
            return
        except tempo.QueueFull:
            await asyncio.sleep(backoff)  # the writer is behind: let it catch up
            backoff = min(backoff * 2, 0.1)


async def agent(d: tempo.Dispatcher, agent_id: int, steps: int) -> None:
    rng = random.Random(agent_id)
    seq = 0

    async def trace(kind: str, **fields: Any) -> None:
        nonlocal seq
        await emit(d, {"agent": agent_id, "seq": seq, "kind": kind, **fields})
        seq += 1

    for step in range(steps):
        await trace("thought", step=step, text=rng.choice(THOUGHTS))
        await asyncio.sleep(rng.uniform(0, 0.01))  # waiting for the model
        await trace("llm_call", step=step, model=rng.choice(MODELS),
                    prompt_tokens=rng.randrange(200, 4000),
                    completion_tokens=rng.randrange(10, 600))
        tool = rng.choice(list(TOOLS))
        await trace("tool_call", step=step, tool=tool, args=TOOLS[tool])
        await asyncio.sleep(rng.uniform(0, 0.005))  # running the tool
        await trace("tool_result", step=step, tool=tool, ok=rng.random() > 0.1,
                    result_bytes=rng.randrange(50, 20_000))
    await trace("final", answer=f"agent {agent_id} is done")


async def write_traces(d: tempo.Dispatcher, path: Path) -> int:
    """The consumer: write each batch to the file; return the batch count."""
    batches = 0
    try:
        with open(path, "wb", buffering=0) as f:
            async for batch in d.abatches():  # ends once the dispatcher is finished
                await asyncio.to_thread(batch.writeall, f)  # no copy, off the loop
                batches += 1
    except BaseException:
        d.stop()  # the agents' enqueue raises tempo.Stopped instead of retrying forever
        raise
    return batches


async def run(agents: int, steps: int, path: Path) -> int:
    d = tempo.Dispatcher(interval=0.05, max_batch_bytes=256 * tempo.KiB,
                         max_buffered_bytes=4 * tempo.MiB)
    d.start()
    writer = asyncio.create_task(write_traces(d, path))
    await asyncio.gather(*(agent(d, i, steps) for i in range(agents)))
    await d.ashutdown(timeout=10)  # every batch handed to the writer...
    batches = await writer  # ...and written

    kinds: Counter[str] = Counter()
    tokens: Counter[str] = Counter()
    next_seq = [0] * agents
    in_order = True
    with open(path, "rb") as f:
        for line in f:
            event = json.loads(line)
            kinds[event["kind"]] += 1
            tokens.update(prompt=event.get("prompt_tokens", 0),
                          completion=event.get("completion_tokens", 0))
            in_order &= event["seq"] == next_seq[event["agent"]]
            next_seq[event["agent"]] += 1

    expected = agents * (4 * steps + 1)
    print(f"{agents:,} agents, {kinds.total():,} events, batches: {batches:,}, "
          f"{path.stat().st_size / tempo.KiB:,.1f} KiB of JSONL")
    print("  " + "  ".join(f"{kind} {n:,}" for kind, n in kinds.items()))
    print(f"  tokens: prompt {tokens['prompt']:,}, completion {tokens['completion']:,}")
    if kinds.total() != expected or not in_order:
        print(f"FAILED: {kinds.total():,} events of {expected:,}, in order: {in_order}")
        return 1
    print("OK: every event written once, in order per agent")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description="Agent traces -> tempo -> JSONL.")
    parser.add_argument("--agents", type=int, default=200)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--out", type=Path, help="JSONL file (default: a temporary one)")
    args = parser.parse_args()
    if args.out is not None:
        return asyncio.run(run(args.agents, args.steps, args.out))
    with tempfile.TemporaryDirectory() as tmp:
        return asyncio.run(run(args.agents, args.steps, Path(tmp) / "traces.jsonl"))


if __name__ == "__main__":
    sys.exit(main())
