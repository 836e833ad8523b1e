#!/usr/bin/env python3
"""The design note's producer, in Python: creates ``task_queue`` (100 x 1024), sends 20
tasks, then shuts the queue down so workers exit once it is drained.

Same messages as ``examples/producer.rs`` (id = task number, text ``Task N - Process this
data``, timestamp = now), so any mix of Rust, C and Python workers can take them.

    python3 producer.py [--queue NAME --tasks N --interval-ms MS]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import shmq


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queue", default="task_queue")
    parser.add_argument("--tasks", type=int, default=20)
    parser.add_argument("--interval-ms", type=int, default=50)
    args = parser.parse_args()

    print(f"=== shmq producer (PID: {os.getpid()}) ===")
    # The producer owns the queue: a stale one left by an earlier (or crashed) run is
    # replaced, never reused.
    with shmq.Queue.create(args.queue, capacity=100, message_size=1024, replace=True) as queue:
        print(f"created queue {args.queue} ({queue.capacity} slots x {queue.message_size} bytes)")
        print("sending tasks")
        for i in range(1, args.tasks + 1):
            text = f"Task {i} - Process this data"
            queue.put_message(i, text.encode())
            print(f"[python producer] sent task {i}: {text}")
            print(f"queue status: {queue.qsize()}/{queue.capacity} messages")
            time.sleep(args.interval_ms / 1000)
        queue.shutdown()
    print(f"producer done, sent {args.tasks} tasks (queue shut down; workers drain it)")
    return 0


if __name__ == "__main__":
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
    except shmq.Error as exc:
        print(f"producer: {exc}", file=sys.stderr)
        sys.exit(1)
