"""Hypothesis strategies and the reference model of the batching rules."""

from __future__ import annotations

from hypothesis import strategies as st


def payload(index: int, size: int) -> bytes:
    """A payload of ``size`` bytes whose content depends on ``index``.

    Distinct indexes give distinct non-empty payloads, so a byte of one payload
    showing up in another is detected.
    """
    tag = index.to_bytes(4, "little")
    return (tag * (size // 4 + 1))[:size]


def payload_lists(max_size: int = 96, max_count: int = 40):
    """Lists of payloads with random sizes (empty ones included)."""
    # Mostly small sizes, so that batches fill up exactly as often as they overflow.
    sizes = st.one_of(st.integers(0, 4), st.integers(0, 24), st.integers(0, max_size))
    return st.lists(sizes, max_size=max_count).map(
        lambda sizes: [payload(i, n) for i, n in enumerate(sizes)]
    )


def configs():
    """Limits of a dispatcher: ``max_batch_bytes`` 0 (interval only) to 64;
    ``max_buffered_bytes`` mostly small (so both admission errors happen), or
    roomy (so long sequences are accepted); ``max_batch_items`` mostly 0 (no
    cap), else 1 to 5."""
    return st.fixed_dictionaries(
        {
            "max_batch_bytes": st.one_of(st.just(0), st.integers(1, 16), st.integers(1, 64)),
            "max_buffered_bytes": st.one_of(st.integers(1, 512), st.just(4096)),
            "max_batch_items": st.one_of(st.just(0), st.just(0), st.integers(1, 5)),
        }
    )


def expected_batches(
    payloads: list[bytes], max_batch_bytes: int, max_batch_items: int = 0
) -> list[list[bytes]]:
    """Batches that rules 2 and 3 (and ``max_batch_items``) produce when no
    interval fires and the open batch is sealed at the end (by ``shutdown()``)."""
    batches: list[list[bytes]] = []
    current: list[bytes] = []
    size = 0
    for p in payloads:
        if max_batch_bytes > 0 and current and size + len(p) > max_batch_bytes:
            batches.append(current)
            current, size = [], 0
        current.append(p)
        size += len(p)
        if (max_batch_bytes > 0 and size >= max_batch_bytes) or (
            max_batch_items > 0 and len(current) >= max_batch_items
        ):
            batches.append(current)
            current, size = [], 0
    if current:
        batches.append(current)
    return batches
