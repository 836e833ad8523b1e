#!/usr/bin/env python3
"""Pipeline stage 3 of 3 (Python): aggregates the records of queue B and proves that every
record went through every stage exactly once.

The Rust stage (``examples/pipeline_source.rs``) sent records ``1..N`` as ``rec <i> <v>``
with ``v = (i * 2654435761) mod 1000003``; the C stage
(``examples-c/pipeline_transform.c``) forwarded each as ``rec <i> <v> <3v+7> rust>c``,
keeping the message id and the source's timestamp. This stage recomputes both numbers for
every record, checks that each id arrived exactly once, and exits non-zero if anything was
lost, duplicated or altered.

    python3 pipeline_sink.py --queue B --records N
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import Counter

import shmq


def value(i: int) -> int:
    """Record ``i``'s value as the Rust stage computes it."""
    return (i * 2654435761) % 1000003


def connect(name: str, wait_s: float = 20.0) -> shmq.Queue:
    deadline = time.monotonic() + wait_s
    while True:
        try:
            return shmq.Queue.connect(name)
        except shmq.NotFound:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.05)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queue", default="pipeline_b")
    parser.add_argument("--records", type=int, default=1000, help="records the source sent")
    args = parser.parse_args()
    n = args.records

    seen: Counter[int] = Counter()
    bad: list[str] = []
    latencies_ms: list[float] = []
    total_v = total_t = 0
    with connect(args.queue) as queue:
        print(f"[python sink] connected to {args.queue}, aggregating")
        for message in queue.messages():
            now = time.time_ns()
            text = message.text()
            fields = text.split()
            try:
                _, i_text, v_text, t_text, path = fields
                i, v, t = int(i_text), int(v_text), int(t_text)
            except ValueError:
                bad.append(f"unparsable record {message.id}: {text!r}")
                continue
            if i != message.id or v != value(i) or t != 3 * v + 7 or path != "rust>c":
                bad.append(f"record {message.id} altered: {text!r}")
                continue
            seen[i] += 1
            total_v += v
            total_t += t
            latencies_ms.append((now - message.timestamp_ns) / 1e6)

    expected_ids = set(range(1, n + 1))
    missing = sorted(expected_ids - set(seen))
    duplicated = sorted(i for i, c in seen.items() if c > 1)
    unexpected = sorted(set(seen) - expected_ids)
    expected_v = sum(value(i) for i in range(1, n + 1))

    received = sum(seen.values())
    print(f"[python sink] received {received} valid records from {args.queue}")
    print(
        f"[python sink] sum of values {total_v} (rust computed {expected_v}), "
        f"sum after the C transform {total_t} (expected 3*{expected_v}+7*{n} = {3 * expected_v + 7 * n})"
    )
    if latencies_ms:
        print(
            f"[python sink] source-to-sink latency: median {statistics.median(latencies_ms):.2f} ms, "
            f"max {max(latencies_ms):.2f} ms"
        )
    ok = not (missing or duplicated or unexpected or bad) and total_t == 3 * expected_v + 7 * n
    if ok:
        print(
            f"[python sink] OK: all {n} records went rust -> c -> python, each exactly once, "
            "values and transforms verified"
        )
        return 0

    def head(items: list) -> str:  # type: ignore[type-arg]
        return ", ".join(map(str, items[:10])) + (" ..." if len(items) > 10 else "")

    print("[python sink] FAILED:")
    if missing:
        print(f"  {len(missing)} missing: {head(missing)}")
    if duplicated:
        print(f"  {len(duplicated)} duplicated: {head(duplicated)}")
    if unexpected:
        print(f"  {len(unexpected)} unexpected ids: {head(unexpected)}")
    for line in bad[:10]:
        print(f"  {line}")
    return 1


if __name__ == "__main__":
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
    except shmq.Error as exc:
        print(f"[python sink] {exc}", file=sys.stderr)
        sys.exit(1)
