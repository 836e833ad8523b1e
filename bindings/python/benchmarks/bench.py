#!/usr/bin/env python3
"""The shmq Python binding against the transports a Python programmer would pick instead.

    python3 bindings/python/benchmarks/bench.py            # full run (a few minutes)
    python3 bindings/python/benchmarks/bench.py --quick    # < 30 s

Transports: shmq (``put``/``get``; ``put``/``get_into`` a reused buffer; ``put_in_place``/
``get_in_place`` memoryviews; ``put_many``/``get_many`` of 32; ``put_many``/
``get_many_in_place`` of 32), ``multiprocessing.Queue``,
``multiprocessing.Pipe`` (``send_bytes``/``recv_bytes``) and ``faster_fifo.Queue`` (``put``/
``get``, and ``put_many``/``get_many`` of 32; skipped, with a note, when the package is not
installed: ``pip install faster-fifo``). All of them block (no busy polling). The batch forms
are measured for throughput only.

Workloads, each between two processes (this one and a forked child, pinned to different
cores when there are two or more), for 64-byte and 4 KiB messages:

- throughput: the child sends N messages one by one, this process receives them; messages/s
  from the start signal to the last message received;
- round trip: this process sends a message, the child receives it and sends a reply, this
  process receives the reply; p50 of the per-round-trip times.

Every message is written in full by its sender (a fresh slice of a pattern, or the pattern
copied into the slot in place) and every byte is checked by its receiver against what that
message must hold (so loss, duplication or reordering fails the run). Each figure is the
median over R runs (5, or 3 with --quick).
"""

from __future__ import annotations

import argparse
import collections
import itertools
import multiprocessing as mp
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional

try:
    import shmq
except ImportError:  # running from a checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import shmq

try:
    import faster_fifo  # type: ignore[import-not-found]
except ImportError:
    faster_fifo = None

SIZES = (64, 4096)
DEPTH = 256  # queue depth (slots) where a transport has one
PATTERN = bytes((i * 7 + (i >> 8)) & 0xFF for i in range(4096 + 256))
PATTERN_VIEW = memoryview(PATTERN)
TIMEOUT = 60.0  # no single operation may take longer (a hang fails the run)


def expected(seq: int, size: int) -> bytes:
    """Message ``seq`` of ``size`` bytes (a fresh object: every byte written)."""
    k = seq % 251
    return PATTERN[k : k + size]


def check(ok: bool, seq: int) -> None:
    if not ok:
        raise SystemExit(f"message {seq}: wrong bytes (lost, duplicated, reordered or damaged)")


# ----- transports: a pair of endpoints per direction ------------------------------------------
#
# Each transport is a class with make(size) -> shared state picklable-by-fork, and
# endpoint(state, role) -> (send(seq), recv(seq)) closures for "a" (this process) and "b"
# (the child). Messages go b -> a in the throughput run; a -> b -> a in the round trip.


class Transport:
    name = ""
    note = ""
    #: Messages per send call. Above 1, ``send`` takes a ``range`` of sequence numbers and the
    #: transport is measured for throughput only (a round trip has one message in flight).
    batch = 1

    def make(self, size: int) -> Any:
        raise NotImplementedError

    def endpoint(self, state: Any, role: str, size: int) -> tuple[Callable, Callable]:
        raise NotImplementedError

    def close(self, state: Any) -> None:
        pass


class Shmq(Transport):
    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.name = {"copy": "shmq put/get", "into": "shmq put/get_into",
                     "inplace": "shmq put_in_place/get_in_place"}[mode]

    def make(self, size: int) -> Any:
        base = f"pybench{os.getpid()}_{self.mode}_{size}"
        for suffix in ("ab", "ba"):
            shmq.Queue.create(base + suffix, DEPTH, size, replace=True).close()
        return base

    def endpoint(self, state: Any, role: str, size: int) -> tuple[Callable, Callable]:
        out = shmq.Queue.connect(state + ("ab" if role == "a" else "ba"))
        inq = shmq.Queue.connect(state + ("ba" if role == "a" else "ab"))
        if self.mode == "copy":
            def send(seq: int) -> None:
                out.put(expected(seq, size), timeout=TIMEOUT)

            def recv(seq: int) -> None:
                check(inq.get(timeout=TIMEOUT) == expected(seq, size), seq)
        elif self.mode == "into":
            buf = bytearray(size)
            view = memoryview(buf)

            def send(seq: int) -> None:
                out.put(expected(seq, size), timeout=TIMEOUT)

            def recv(seq: int) -> None:
                n = inq.get_into(buf, timeout=TIMEOUT)
                # tobytes()+== is memcpy+memcmp: far faster in CPython than comparing views.
                check(n == size and view.tobytes() == expected(seq, size), seq)
        else:
            def send(seq: int) -> None:
                k = seq % 251

                def fill(slot: memoryview) -> int:
                    slot[:size] = PATTERN_VIEW[k : k + size]
                    return size

                out.put_in_place(fill, timeout=TIMEOUT)

            def read(view: memoryview, info: Any) -> bytes:
                return view.tobytes()  # the check reads every byte (copy + memcmp: fastest)

            def recv(seq: int) -> None:
                check(inq.get_in_place(read, timeout=TIMEOUT) == expected(seq, size), seq)
        return send, recv

    def close(self, state: Any) -> None:
        for suffix in ("ab", "ba"):
            shmq.unlink(state + suffix, missing_ok=True)


class ShmqBatch(Shmq):
    batch = 32
    note = "put_many of 32 messages, get_many of up to 32"

    def __init__(self) -> None:
        super().__init__("copy")
        self.mode = "batch"
        self.name = "shmq put_many/get_many (32)"

    def endpoint(self, state: Any, role: str, size: int) -> tuple[Callable, Callable]:
        out = shmq.Queue.connect(state + ("ab" if role == "a" else "ba"))
        inq = shmq.Queue.connect(state + ("ba" if role == "a" else "ab"))
        return self.sender(out, size), self.receiver(inq, size)

    def sender(self, out: Any, size: int) -> Callable:
        def send(seqs: range) -> None:
            items = [expected(seq, size) for seq in seqs]
            sent = 0
            while sent < len(items):
                sent += out.put_many(items[sent:], timeout=TIMEOUT)

        return send

    def receiver(self, inq: Any, size: int) -> Callable:
        pending: collections.deque[bytes] = collections.deque()

        def recv(seq: int) -> None:
            if not pending:
                pending.extend(inq.get_many(self.batch, timeout=TIMEOUT))
            check(pending.popleft() == expected(seq, size), seq)

        return recv


class ShmqBatchInPlace(ShmqBatch):
    note = "put_many of 32 messages, get_many_in_place of up to 32"

    def __init__(self) -> None:
        super().__init__()
        self.mode = "batch-inplace"
        self.name = "shmq put_many/get_many_in_place (32)"

    def receiver(self, inq: Any, size: int) -> Callable:
        # Whether each message of the last batch held the bytes its sequence number says.
        pending: collections.deque[bool] = collections.deque()

        def recv(seq: int) -> None:
            if not pending:
                seqs = itertools.count(seq)  # messages arrive in order
                # Checked inside the callback, while the view is lent; tobytes()+== is
                # memcpy+memcmp, far faster in CPython than comparing the view itself.
                pending.extend(inq.get_many_in_place(
                    lambda view, info: view.tobytes() == expected(next(seqs), size),
                    self.batch, timeout=TIMEOUT))
            check(pending.popleft(), seq)

        return recv


class ShmqBatchBothInPlace(ShmqBatchInPlace):
    note = "put_many_in_place of 32 messages, get_many_in_place of up to 32"

    def __init__(self) -> None:
        super().__init__()
        self.mode = "batch-both-inplace"
        self.name = "shmq put_many_in_place/get_many_in_place (32)"

    def sender(self, out: Any, size: int) -> Callable:
        def send(seqs: range) -> None:
            def fill(view: memoryview, index: int) -> int:
                view[:size] = expected(seqs[index], size)
                return size

            sent = 0
            while sent < len(seqs):
                sent += out.put_many_in_place(
                    lambda view, index: fill(view, sent + index), len(seqs) - sent,
                    timeout=TIMEOUT)

        return send


class MpQueue(Transport):
    name = "multiprocessing.Queue"

    def make(self, size: int) -> Any:
        return mp.Queue(DEPTH), mp.Queue(DEPTH)

    def endpoint(self, state: Any, role: str, size: int) -> tuple[Callable, Callable]:
        ab, ba = state
        out, inq = (ab, ba) if role == "a" else (ba, ab)

        def send(seq: int) -> None:
            out.put(expected(seq, size), timeout=TIMEOUT)

        def recv(seq: int) -> None:
            check(inq.get(timeout=TIMEOUT) == expected(seq, size), seq)

        return send, recv


class MpPipe(Transport):
    name = "multiprocessing.Pipe"
    note = "send_bytes/recv_bytes; no depth limit beyond the 64 KiB pipe buffer"

    def make(self, size: int) -> Any:
        return mp.Pipe(duplex=True)

    def endpoint(self, state: Any, role: str, size: int) -> tuple[Callable, Callable]:
        conn = state[0] if role == "a" else state[1]

        def send(seq: int) -> None:
            conn.send_bytes(expected(seq, size))

        def recv(seq: int) -> None:
            if not conn.poll(TIMEOUT):
                raise SystemExit("pipe: no message within the time limit")
            check(conn.recv_bytes() == expected(seq, size), seq)

        return send, recv


class FasterFifo(Transport):
    name = "faster_fifo.Queue"
    note = "put/get (pickled bytes), 1 MB buffer"

    def __init__(self) -> None:
        version = getattr(faster_fifo, "__version__", None)
        if version is None:
            try:
                from importlib.metadata import version as dist_version

                version = dist_version("faster-fifo")
            except Exception:  # noqa: BLE001 - the version is only informative
                version = "unknown version"
        self.note = f"{version}, put/get (pickled bytes), 1 MB buffer"

    def make(self, size: int) -> Any:
        return faster_fifo.Queue(1_000_000), faster_fifo.Queue(1_000_000)

    def endpoint(self, state: Any, role: str, size: int) -> tuple[Callable, Callable]:
        ab, ba = state
        out, inq = (ab, ba) if role == "a" else (ba, ab)

        def send(seq: int) -> None:
            out.put(expected(seq, size), timeout=TIMEOUT)

        def recv(seq: int) -> None:
            check(inq.get(timeout=TIMEOUT) == expected(seq, size), seq)

        return send, recv


class FasterFifoBatch(FasterFifo):
    name = "faster_fifo put_many/get_many (32)"
    batch = 32

    def __init__(self) -> None:
        super().__init__()
        self.note = self.note.replace("put/get", "put_many of 32, get_many of up to 32")

    def endpoint(self, state: Any, role: str, size: int) -> tuple[Callable, Callable]:
        ab, ba = state
        out, inq = (ab, ba) if role == "a" else (ba, ab)
        pending: collections.deque[bytes] = collections.deque()

        def send(seqs: range) -> None:
            out.put_many([expected(seq, size) for seq in seqs], timeout=TIMEOUT)

        def recv(seq: int) -> None:
            if not pending:
                pending.extend(inq.get_many(max_messages_to_get=self.batch, timeout=TIMEOUT))
            check(pending.popleft() == expected(seq, size), seq)

        return send, recv


# ----- one run -------------------------------------------------------------------------------


def pin(core: int) -> None:
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) >= 2:
        os.sched_setaffinity(0, {cores[core % len(cores)]})


def child_main(transport: Transport, state: Any, size: int, workload: str, count: int,
               ready: Any, start: Any) -> None:
    pin(1)
    send, recv = transport.endpoint(state, "b", size)
    ready.set()
    start.wait()
    if workload == "throughput" and transport.batch > 1:
        for first in range(0, count, transport.batch):
            send(range(first, min(first + transport.batch, count)))
    elif workload == "throughput":
        for seq in range(count):
            send(seq)
    else:
        for seq in range(count):
            recv(seq)
            send(seq)


def run_once(transport: Transport, size: int, workload: str, count: int) -> float:
    """messages/s (throughput) or the p50 round trip in µs (round trip)."""
    state = transport.make(size)
    ctx = mp.get_context("fork")
    ready, start = ctx.Event(), ctx.Event()
    child = ctx.Process(
        target=child_main, args=(transport, state, size, workload, count, ready, start)
    )
    child.start()
    try:
        pin(0)
        send, recv = transport.endpoint(state, "a", size)
        if not ready.wait(TIMEOUT):
            raise SystemExit(f"{transport.name}: child not ready")
        if workload == "throughput":
            t0 = time.perf_counter()
            start.set()
            for seq in range(count):
                recv(seq)
            result = count / (time.perf_counter() - t0)
        else:
            start.set()
            times = []
            clock = time.perf_counter_ns
            for seq in range(count):
                t = clock()
                send(seq)
                recv(seq)
                times.append(clock() - t)
            result = statistics.median(times) / 1000.0
        child.join(TIMEOUT)
        if child.exitcode != 0:
            raise SystemExit(f"{transport.name}: child exited with {child.exitcode}")
        return result
    finally:
        if child.is_alive():
            child.kill()
            child.join()
        transport.close(state)


# ----- the table -------------------------------------------------------------------------------


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer messages and 3 runs (< 30 s)")
    parser.add_argument("--runs", type=int, help="runs per figure (default 5, 3 with --quick)")
    parser.add_argument("--only", help="run only transports whose name contains this text")
    args = parser.parse_args(argv)
    runs = args.runs or (3 if args.quick else 5)
    counts = {  # (throughput messages, round trips) per size
        64: (20_000, 2_000) if args.quick else (200_000, 20_000),
        4096: (10_000, 2_000) if args.quick else (100_000, 20_000),
    }

    transports: list[Transport] = [Shmq("copy"), Shmq("into"), Shmq("inplace"), ShmqBatch(),
                                   ShmqBatchInPlace(), ShmqBatchBothInPlace(), MpQueue(), MpPipe()]
    notes = []
    if faster_fifo is not None:
        transports += [FasterFifo(), FasterFifoBatch()]
    else:
        notes.append("faster_fifo: not installed (pip install faster-fifo), skipped")
    if args.only:
        transports = [t for t in transports if args.only in t.name]

    cores = len(os.sched_getaffinity(0))
    print(f"# Python {sys.version.split()[0]}, shmq {shmq.library_version()} "
          f"({shmq.library_path}), {cores} cores, depth {DEPTH}, median of {runs} runs"
          + (" (quick)" if args.quick else ""), flush=True)
    started = time.monotonic()
    results: dict[str, dict[str, float]] = {}
    for t in transports:
        row = results[t.name] = {}
        for size in SIZES:
            for workload, count in (("throughput", counts[size][0]), ("rtt", counts[size][1])):
                if workload == "rtt" and t.batch > 1:
                    continue
                samples = [run_once(t, size, workload, count) for _ in range(runs)]
                row[f"{workload}{size}"] = statistics.median(samples)
        print(f"  {t.name}: done ({time.monotonic() - started:.0f} s)", file=sys.stderr,
              flush=True)

    peers = [n for n in results if not n.startswith("shmq")]
    batched = {t.name: t.batch > 1 for t in transports}

    def ratio(name: str, key: str, higher_better: bool) -> str:
        # Batches against batches, one message per call against one message per call.
        measured = [
            results[p][key] for p in peers if key in results[p] and batched[p] == batched[name]
        ]
        if name not in peers and measured and key in results[name]:
            best = (max if higher_better else min)(measured)
            r = results[name][key] / best if higher_better else best / results[name][key]
            return f" ({r:.1f}×)"
        return ""

    def rtt(row: dict[str, float], key: str) -> str:
        return f"{row[key]:.1f} µs" if key in row else "–"

    print()
    print("| transport | msgs/s, 64 B | msgs/s, 4 KiB (MB/s) | round trip p50, 64 B "
          "| round trip p50, 4 KiB |")
    print("|---|---:|---:|---:|---:|")
    for name, row in results.items():
        mbs = row["throughput4096"] * 4096 / 1e6
        print(f"| {name} | {row['throughput64'] / 1e3:,.0f} k{ratio(name, 'throughput64', True)} "
              f"| {row['throughput4096'] / 1e3:,.0f} k ({mbs:,.0f}){ratio(name, 'throughput4096', True)} "
              f"| {rtt(row, 'rtt64')}{ratio(name, 'rtt64', False)} "
              f"| {rtt(row, 'rtt4096')}{ratio(name, 'rtt4096', False)} |")
    print()
    print("(×: shmq against the best of the other transports of the same kind (batches or one "
          "message per call) in this run; higher is better.)")
    for t in transports:
        if t.note:
            notes.append(f"{t.name}: {t.note}")
    for note in notes:
        print(f"- {note}")
    print(f"total {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
