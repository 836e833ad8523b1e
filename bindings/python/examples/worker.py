#!/usr/bin/env python3
"""The design note's worker, in Python: connects to ``task_queue``, processes tasks with
300 ms of simulated work each, and exits when the producer has shut the queue down and it
is drained. Wire-compatible with ``examples/worker.rs`` and the C worker.

    python3 worker.py [WORKER_NAME] [--queue NAME --work-ms MS]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import shmq


def connect(name: str) -> shmq.Queue:
    """Producers should start first; give one a few seconds to create the queue."""
    deadline = time.monotonic() + 10
    while True:
        try:
            return shmq.Queue.connect(name)
        except shmq.NotFound:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.05)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("worker", nargs="?", default="worker-1")
    parser.add_argument("--queue", default="task_queue")
    parser.add_argument("--work-ms", type=int, default=300)
    args = parser.parse_args()
    worker = args.worker

    print(f"starting worker {worker} (PID: {os.getpid()})")
    with connect(args.queue) as queue:
        print(f"[{worker}] connected to task queue {args.queue}")
        done = 0
        for message in queue.messages():
            print(f"[{worker}] processing task {message.id}: {message.text()}")
            started = time.monotonic()
            time.sleep(args.work_ms / 1000)
            took = int((time.monotonic() - started) * 1000)
            print(f"[{worker}] finished task {message.id} (took {took}ms)")
            print(f"[{worker}] queue status: {queue.qsize()}/{queue.capacity} messages left")
            done += 1
    print(f"[{worker}] queue shut down and drained; processed {done} tasks")
    return 0


if __name__ == "__main__":
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
    except shmq.Error as exc:
        print(f"worker: {exc}", file=sys.stderr)
        sys.exit(1)
