"""Draw docs/timeline.png: when tempo seals batches.

    .venv/bin/python docs/make_timeline.py

The picture follows tempo's batching rules (docs/rules.md) for one made-up
sequence of payloads, with ``interval=1.0`` and ``max_batch_bytes=100``:

- the interval clock starts at the first payload of each batch (never while
  the batch is empty) and seals the batch ``interval`` seconds later;
- a payload that would push the open batch over ``max_batch_bytes`` seals it
  first and starts the next batch (and its clock);
- a batch that reaches ``max_batch_bytes`` is sealed at once;
- a payload larger than ``max_batch_bytes`` travels alone.

``simulate()`` applies those rules; the script draws what it returns. It needs
matplotlib (``pip install matplotlib``; it is in tempo's ``bench`` extra).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

INTERVAL = 1.0
MAX_BATCH_BYTES = 100

#: (arrival time in seconds, payload size in bytes)
ARRIVALS = [
    (0.10, 30),
    (0.35, 40),
    (0.60, 50),  # 70 + 50 > 100: seals the first batch, starts the second
    (0.85, 50),  # 50 + 50 = 100: the second batch reaches the limit, sealed at once
    (1.40, 20),  # starts the third batch; nothing else comes within the interval
    (1.75, 15),
    (2.70, 140),  # larger than max_batch_bytes: a one-item batch
    (3.00, 25),
    (3.30, 35),
]
END = 5.6
ROW = 1.6  # vertical distance between batch rows


@dataclass
class Batch:
    payloads: list[tuple[float, int]] = field(default_factory=list)
    sealed_at: float = 0.0
    reason: str = ""

    @property
    def opened_at(self) -> float:
        return self.payloads[0][0]

    @property
    def nbytes(self) -> int:
        return sum(size for _, size in self.payloads)


def simulate(arrivals, interval: float, max_batch_bytes: int) -> list[Batch]:
    """Apply tempo's sealing rules to (time, size) arrivals."""
    batches: list[Batch] = []
    open_batch = Batch()

    def seal(at: float, reason: str) -> None:
        nonlocal open_batch
        open_batch.sealed_at = at
        open_batch.reason = reason
        batches.append(open_batch)
        open_batch = Batch()

    for t, size in arrivals:
        # The interval clock of the open batch may have run out before t.
        if open_batch.payloads and open_batch.opened_at + interval <= t:
            seal(open_batch.opened_at + interval, "interval")
        if (max_batch_bytes and open_batch.payloads
                and open_batch.nbytes + size > max_batch_bytes):
            seal(t, "size: next payload would overflow")
        open_batch.payloads.append((t, size))
        if max_batch_bytes and open_batch.nbytes >= max_batch_bytes:
            reason = ("size: one payload over max_batch_bytes" if len(open_batch.payloads) == 1
                      else "size: reached max_batch_bytes")
            seal(t, reason)
    if open_batch.payloads:
        seal(open_batch.opened_at + interval, "interval")
    return batches


def draw(batches: list[Batch], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = ["#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860"]
    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(11, 6.4), sharex=True, gridspec_kw={"height_ratios": [1.1, 1.6]}
    )

    # Top: payload arrivals, bar height = payload size, coloured by batch.
    for i, batch in enumerate(batches):
        color = colors[i % len(colors)]
        for t, size in batch.payloads:
            top.bar(t, size, width=0.06, color=color, edgecolor="black", linewidth=0.5)
            top.text(t, size + 4, f"{size} B", ha="center", va="bottom", fontsize=8)
    top.axhline(MAX_BATCH_BYTES, color="grey", linestyle=":", linewidth=1)
    top.text(END - 0.02, MAX_BATCH_BYTES + 3, f"max_batch_bytes = {MAX_BATCH_BYTES}",
             ha="right", va="bottom", fontsize=8, color="grey")
    top.set_ylabel("payload size (bytes)")
    top.set_ylim(0, 175)
    top.set_title(
        f"Payload arrivals and sealed batches (interval = {INTERVAL:g} s, "
        f"max_batch_bytes = {MAX_BATCH_BYTES})",
        fontsize=11,
    )
    top.spines[["top", "right"]].set_visible(False)

    # Bottom: one row per batch. Solid bar: the batch is open (first payload to
    # seal). Dashed line: its interval clock, from its first payload.
    n = len(batches)
    for i, batch in enumerate(batches):
        y = ROW * (n - i)
        color = colors[i % len(colors)]
        start, sealed = batch.opened_at, batch.sealed_at
        deadline = start + INTERVAL
        bottom.plot([start, deadline], [y + 0.28, y + 0.28], linestyle="--", color=color,
                    linewidth=1.2)
        bottom.plot([deadline], [y + 0.28], marker="|", color=color, markersize=10)
        bottom.text(deadline + 0.03, y + 0.28,
                    "interval ends: sealed" if batch.reason == "interval"
                    else "would have ended (already sealed)", va="center", fontsize=7, color=color)
        width = max(sealed - start, 0.02)
        bottom.barh(y, width, left=start, height=0.32, color=color, alpha=0.85,
                    edgecolor="black", linewidth=0.5)
        for t, _ in batch.payloads:
            bottom.plot([t], [y], marker="o", color="white", markeredgecolor="black",
                        markersize=4, zorder=3)
        bottom.plot([sealed], [y], marker="D", color="black", markersize=6, zorder=4)
        label = (f"batch {i + 1}: {len(batch.payloads)} item(s), {batch.nbytes} B; "
                 f"sealed at {sealed:.2f} s by {batch.reason}")
        bottom.text(sealed + 0.06, y - 0.12, label, va="center", fontsize=8)
    # Point at two things people get wrong.
    third = batches[2]
    third_y = ROW * (n - 2)
    bottom.annotate(
        f"the clock runs {INTERVAL:g} s from the batch's first payload "
        f"({third.opened_at:.2f} s), not from its last",
        xy=(third.opened_at + 0.45, third_y + 0.28), xytext=(2.45, third_y + 0.85),
        fontsize=7.5, ha="left", va="center",
        arrowprops={"arrowstyle": "->", "color": "grey"},
    )
    gap = (batches[1].sealed_at + third.opened_at) / 2
    top.text(gap, 68, "no open batch:\nno clock running", ha="center", va="bottom", fontsize=7.5,
             color="grey")
    bottom.set_yticks([])
    bottom.set_ylim(ROW - 0.7, ROW * n + 0.8)
    bottom.set_xlim(0, END)
    bottom.set_xlabel("time (s)")
    bottom.spines[["top", "right", "left"]].set_visible(False)
    handles = [
        plt.Line2D([], [], color="grey", linestyle="--", label="interval clock (starts at the batch's first payload)"),
        plt.Line2D([], [], color="grey", linewidth=6, alpha=0.7, label="batch open"),
        plt.Line2D([], [], color="black", marker="D", linestyle="", label="batch sealed"),
        plt.Line2D([], [], color="black", marker="o", markerfacecolor="white", linestyle="",
                   label="payload enqueued"),
    ]
    bottom.legend(handles=handles, loc="lower left", fontsize=7.5, frameon=False, ncol=2,
                  bbox_to_anchor=(0.0, -0.42))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    batches = simulate(ARRIVALS, INTERVAL, MAX_BATCH_BYTES)
    for i, b in enumerate(batches, 1):
        print(f"batch {i}: {[s for _, s in b.payloads]} sealed at {b.sealed_at:.2f} s ({b.reason})")
    out = Path(__file__).resolve().parent / "timeline.png"
    draw(batches, out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
