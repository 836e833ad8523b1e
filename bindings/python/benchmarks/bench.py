#!/usr/bin/env python3
"""The shmq Python binding against the transports a Python programmer would pick instead.

    python3 bindings/python/benchmarks/bench.py            # full run (a few minutes)
    python3 bindings/python/benchmarks/bench.py --quick    # < 30 s
    python3 bindings/python/benchmarks/bench.py --smoke    # does every workload run? (tests)

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
  process receives the reply; p50 of the per-round-trip times;

and for 64-byte messages, as in the Rust bench:

- one core: the throughput run with both processes pinned to the same core;
- 2P+2C: two producer and two consumer processes on one queue (one of each per core), N
  messages in all; messages/s from the start signal to the last consumer's end.

Every message is written in full by its sender (its sequence number, then a fresh slice of a
pattern that depends on it, copied into the slot for the in-place forms) and every byte is
checked by its receiver against what that sequence number must hold; loss, duplication or
reordering fails the run (with 2P+2C, where order is not defined: count, sum and sum of
squares of the sequence numbers received). Each figure is the median over R runs (5, or 3
with --quick).
"""

from __future__ import annotations

import argparse
import collections
import multiprocessing as mp
import os
import signal
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
#: ``--spin-us``: every shmq handle's ``spin_limit`` (seconds), or None for the default.
SPIN: Optional[float] = None


def expected(seq: int, size: int) -> bytes:
    """Message ``seq`` of ``size`` bytes (a fresh object: every byte written): its sequence
    number (8 bytes, little-endian), then a pattern that depends on it."""
    k = seq % 251
    return seq.to_bytes(8, "little") + PATTERN[k : k + size - 8]


def check(ok: bool, seq: int) -> None:
    if not ok:
        raise SystemExit(f"message {seq}: wrong bytes (lost, duplicated, reordered or damaged)")


def sequence_of(message: bytes, size: int) -> int:
    """The sequence number a message of any order carries, after checking every byte."""
    seq = int.from_bytes(message[:8], "little")
    check(len(message) == size and message == expected(seq, size), seq)
    return seq


# ----- transports: a pair of endpoints per direction ------------------------------------------
#
# Each transport is a class with make(size) -> shared state picklable-by-fork, and
# endpoint(state, role) -> (send(seq), recv() -> bytes) closures for "a" and "b": "a" sends to
# and receives from the queue (or pipe end) that "b" receives from and sends to. The drivers
# below check every message recv() returns. Messages go b -> a in the throughput runs (with
# two producers and two consumers: two processes of each role on the one b -> a queue);
# a -> b -> a in the round trip.


class Transport:
    name = ""
    note = ""
    #: Messages per send call. Above 1, ``send`` takes a ``range`` of sequence numbers and the
    #: transport is measured for throughput only (a round trip has one message in flight).
    batch = 1
    #: Whether several processes may send (and receive) on one endpoint at once.
    many_to_many = True

    def make(self, size: int) -> Any:
        raise NotImplementedError

    def endpoint(self, state: Any, role: str, size: int) -> tuple[Callable, Callable]:
        raise NotImplementedError

    def close(self, state: Any) -> None:
        pass


def batched(get_many: Callable[[], list]) -> Callable[[], bytes]:
    """recv() over a call that returns several messages at a time."""
    pending: collections.deque[bytes] = collections.deque()

    def recv() -> bytes:
        if not pending:
            pending.extend(get_many())
        return pending.popleft()

    return recv


def queue_prefix() -> str:
    """The start of the names of this run's shmq queues (they carry the bench's pid)."""
    return f"pybench{os.getpid()}_"


class Shmq(Transport):
    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.name = {"copy": "shmq put/get", "into": "shmq put/get_into",
                     "inplace": "shmq put_in_place/get_in_place"}[mode]

    def make(self, size: int) -> Any:
        base = f"{queue_prefix()}{self.mode}_{size}"
        for suffix in ("ab", "ba"):
            shmq.Queue.create(base + suffix, DEPTH, size, replace=True).close()
        return base

    def queues(self, state: Any, role: str) -> tuple[Any, Any]:
        out = shmq.Queue.connect(state + ("ab" if role == "a" else "ba"))
        inq = shmq.Queue.connect(state + ("ba" if role == "a" else "ab"))
        if SPIN is not None:
            out.spin_limit = inq.spin_limit = SPIN
        return out, inq

    def endpoint(self, state: Any, role: str, size: int) -> tuple[Callable, Callable]:
        out, inq = self.queues(state, role)
        if self.mode == "copy":
            def send(seq: int) -> None:
                out.put(expected(seq, size), timeout=TIMEOUT)

            def recv() -> bytes:
                return inq.get(timeout=TIMEOUT)
        elif self.mode == "into":
            buf = bytearray(size)
            view = memoryview(buf)

            def send(seq: int) -> None:
                out.put(expected(seq, size), timeout=TIMEOUT)

            def recv() -> bytes:
                n = inq.get_into(buf, timeout=TIMEOUT)
                # tobytes()+== is memcpy+memcmp: far faster in CPython than comparing views.
                return view[:n].tobytes()
        else:
            def send(seq: int) -> None:
                message = expected(seq, size)

                def fill(slot: memoryview) -> int:
                    slot[:size] = message
                    return size

                out.put_in_place(fill, timeout=TIMEOUT)

            def read(view: memoryview, info: Any) -> bytes:
                return view.tobytes()  # the check reads every byte (copy + memcmp: fastest)

            def recv() -> bytes:
                return inq.get_in_place(read, timeout=TIMEOUT)
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
        out, inq = self.queues(state, role)
        return self.sender(out, size), self.receiver(inq, size)

    def sender(self, out: Any, size: int) -> Callable:
        def send(seqs: range) -> None:
            items = [expected(seq, size) for seq in seqs]
            sent = 0
            while sent < len(items):
                sent += out.put_many(items[sent:], timeout=TIMEOUT)

        return send

    def receiver(self, inq: Any, size: int) -> Callable:
        return batched(lambda: inq.get_many(self.batch, timeout=TIMEOUT))


class ShmqBatchInPlace(ShmqBatch):
    note = "put_many of 32 messages, get_many_in_place of up to 32"

    def __init__(self) -> None:
        super().__init__()
        self.mode = "batch-inplace"
        self.name = "shmq put_many/get_many_in_place (32)"

    def receiver(self, inq: Any, size: int) -> Callable:
        # Each view read while it is lent: tobytes() is a memcpy, and the driver's == a memcmp.
        return batched(lambda: inq.get_many_in_place(
            lambda view, info: view.tobytes(), self.batch, timeout=TIMEOUT))


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


class QueuePair(Transport):
    """Two queue objects with ``put``/``get`` (a -> b, b -> a), made by :meth:`make`."""

    @staticmethod
    def ends(state: Any, role: str) -> tuple[Any, Any]:
        """The queue ``role`` sends on, and the one it receives from."""
        ab, ba = state
        return (ab, ba) if role == "a" else (ba, ab)

    def endpoint(self, state: Any, role: str, size: int) -> tuple[Callable, Callable]:
        out, inq = self.ends(state, role)

        def send(seq: int) -> None:
            out.put(expected(seq, size), timeout=TIMEOUT)

        def recv() -> bytes:
            return inq.get(timeout=TIMEOUT)

        return send, recv


class MpQueue(QueuePair):
    name = "multiprocessing.Queue"

    def make(self, size: int) -> Any:
        return mp.Queue(DEPTH), mp.Queue(DEPTH)


class MpPipe(Transport):
    name = "multiprocessing.Pipe"
    note = ("send_bytes/recv_bytes; no depth limit beyond the 64 KiB pipe buffer; one process "
            "per end (a message's bytes may interleave with another writer's)")
    many_to_many = False

    def make(self, size: int) -> Any:
        return mp.Pipe(duplex=True)

    def endpoint(self, state: Any, role: str, size: int) -> tuple[Callable, Callable]:
        conn = state[0] if role == "a" else state[1]

        def send(seq: int) -> None:
            conn.send_bytes(expected(seq, size))

        def recv() -> bytes:
            if not conn.poll(TIMEOUT):
                raise SystemExit("pipe: no message within the time limit")
            return conn.recv_bytes()

        return send, recv


class FasterFifo(QueuePair):
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


class FasterFifoBatch(FasterFifo):
    name = "faster_fifo put_many/get_many (32)"
    batch = 32

    def __init__(self) -> None:
        super().__init__()
        self.note = self.note.replace("put/get", "put_many of 32, get_many of up to 32")

    def endpoint(self, state: Any, role: str, size: int) -> tuple[Callable, Callable]:
        out, inq = self.ends(state, role)

        def send(seqs: range) -> None:
            out.put_many([expected(seq, size) for seq in seqs], timeout=TIMEOUT)

        return send, batched(
            lambda: inq.get_many(max_messages_to_get=self.batch, timeout=TIMEOUT))


# ----- the workloads -------------------------------------------------------------------------

#: Sequence number of the end marker a consumer of the 2P+2C workload stops at.
MARKER = 2**64 - 1
MARKER_BYTES = MARKER.to_bytes(8, "little")


#: The cores this program may use, read once before anything is pinned: read later, the
#: affinity of a process that pinned itself (and of the children it forks) is one core.
CORES = sorted(os.sched_getaffinity(0))


def pin(core: int) -> None:
    if len(CORES) >= 2:
        os.sched_setaffinity(0, {CORES[core % len(CORES)]})


def start_children(procs: list[Any]) -> None:
    """Starts forked children with SIGTERM held back. Landing inside `Process.start()`, the
    signal's `SystemExit` could leave a child the parent does not know of yet, waiting for a
    start signal forever; held back, it lands once every child is known, inside the caller's
    `try`, whose `finally` kills them."""
    held = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    try:
        for proc in procs:
            proc.start()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)


def enter_child(core: int) -> None:
    """A forked child's first step: takes SIGTERM again (its mask is its parent's while
    `start_children` held the signal back) and pins itself to `core`."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
    pin(core)


def send_range(transport: Transport, send: Callable, first: int, end: int) -> None:
    """Sends messages first..end-1 in order, one per call or in the transport's batches."""
    if transport.batch > 1:
        for lo in range(first, end, transport.batch):
            send(range(lo, min(lo + transport.batch, end)))
    else:
        for seq in range(first, end):
            send(seq)


def child_main(transport: Transport, state: Any, size: int, workload: str, count: int,
               core: int, ready: Any, start: Any) -> None:
    enter_child(core)
    send, recv = transport.endpoint(state, "b", size)
    ready.set()
    start.wait()
    if workload == "throughput":
        send_range(transport, send, 0, count)
    else:
        for seq in range(count):
            check(recv() == expected(seq, size), seq)
            send(seq)


def run_once(transport: Transport, size: int, workload: str, count: int,
             same_core: bool = False) -> float:
    """messages/s (throughput) or the p50 round trip in µs (round trip)."""
    state = transport.make(size)
    ctx = mp.get_context("fork")
    ready, start = ctx.Event(), ctx.Event()
    child = ctx.Process(
        target=child_main,
        args=(transport, state, size, workload, count, 0 if same_core else 1, ready, start),
    )
    try:
        start_children([child])
        pin(0)
        send, recv = transport.endpoint(state, "a", size)
        if not ready.wait(TIMEOUT):
            raise SystemExit(f"{transport.name}: child not ready")
        if workload == "throughput":
            t0 = time.perf_counter()
            start.set()
            for seq in range(count):
                check(recv() == expected(seq, size), seq)
            result = count / (time.perf_counter() - t0)
        else:
            start.set()
            times = []
            clock = time.perf_counter_ns
            for seq in range(count):
                t = clock()
                send(seq)
                reply = recv()
                times.append(clock() - t)
                check(reply == expected(seq, size), seq)
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


def producer_main(transport: Transport, state: Any, size: int, first: int, end: int, core: int,
                  ready: Any, start: Any) -> None:
    enter_child(core)
    send, _ = transport.endpoint(state, "b", size)
    ready.release()
    start.wait()
    send_range(transport, send, first, end)


def consumer_main(transport: Transport, state: Any, size: int, core: int, ready: Any,
                  start: Any, results: Any) -> None:
    enter_child(core)
    _, recv = transport.endpoint(state, "a", size)
    ready.release()
    start.wait()
    count = total = squares = 0
    while True:
        message = recv()
        if message[:8] == MARKER_BYTES:
            break
        seq = sequence_of(message, size)
        count += 1
        total += seq
        squares += seq * seq
    results.put((count, total, squares, time.perf_counter()))


def run_many_to_many(transport: Transport, size: int, count: int) -> float:
    """Two producer and two consumer processes on one queue (one of each per core): messages/s
    from the start signal to the last consumer's end. Every message is checked, and the
    count, sum and sum of squares of the sequence numbers received must equal those sent
    (each message exactly once)."""
    state = transport.make(size)
    ctx = mp.get_context("fork")
    ready, start, results = ctx.Semaphore(0), ctx.Event(), ctx.SimpleQueue()
    half = count // 2
    procs = [ctx.Process(target=producer_main,
                         args=(transport, state, size, p * half, (p + 1) * half, p, ready, start))
             for p in range(2)]
    procs += [ctx.Process(target=consumer_main,
                          args=(transport, state, size, c, ready, start, results))
              for c in range(2)]
    try:
        start_children(procs)
        for _ in procs:
            if not ready.acquire(timeout=TIMEOUT):
                raise SystemExit(f"{transport.name}: a child is not ready")
        send, _ = transport.endpoint(state, "b", size)
        t0 = time.perf_counter()
        start.set()
        for proc in procs[:2]:
            proc.join(TIMEOUT)
        # Every real message is in the queue before the markers. A consumer stops at the
        # first marker it takes, but a batch may take two (the second one then lost with the
        # rest of that batch): one marker at a time until both consumers have stopped.
        deadline = time.monotonic() + TIMEOUT
        while any(proc.is_alive() for proc in procs[2:]):
            if time.monotonic() > deadline:
                raise SystemExit(f"{transport.name}: a consumer did not stop")
            send_range(transport, send, MARKER, MARKER + 1)
            time.sleep(0.001)
        # Exit statuses first: a consumer that failed put no result to wait for.
        for proc in procs:
            proc.join(TIMEOUT)
            if proc.exitcode != 0:
                raise SystemExit(f"{transport.name}: a child exited with {proc.exitcode}")
        got = [results.get() for _ in range(2)]
        sent = range(2 * half)
        if (sum(g[0] for g in got), sum(g[1] for g in got), sum(g[2] for g in got)) != (
                len(sent), sum(sent), sum(s * s for s in sent)):
            raise SystemExit(f"{transport.name}: messages lost or received twice")
        return 2 * half / (max(g[3] for g in got) - t0)
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.kill()
                proc.join()
        transport.close(state)


# ----- the table -------------------------------------------------------------------------------


def _terminated(signum: int, _frame: Any) -> None:
    # Unlinks this run's queues wherever the signal lands (between a queue's creation and
    # the `try` whose `finally` would unlink it, too), then unwinds. Forked children have
    # another pid, so they unlink nothing: the queues' names carry the parent's.
    prefix = "shmq." + queue_prefix()  # the segment of queue `q` is /dev/shm/shmq.q
    for name in os.listdir("/dev/shm"):
        if name.startswith(prefix):
            shmq.unlink(name[len("shmq."):], missing_ok=True)
    raise SystemExit(128 + signum)


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer messages and 3 runs (< 30 s)")
    parser.add_argument("--runs", type=int, help="runs per figure (default 5, 3 with --quick)")
    parser.add_argument("--only", help="run only transports whose name contains this text")
    parser.add_argument("--spin-us", type=float, metavar="MICROSECONDS",
                        help="how long shmq's blocking calls poll before they sleep "
                             "(Queue.spin_limit; the library's default is 10)")
    parser.add_argument("--smoke", action="store_true",
                        help="a few hundred messages, one run: checks that every workload runs "
                             "(the figures mean nothing)")
    args = parser.parse_args(argv)
    # SIGTERM (`kill`, a timeout) would end the process where it stands and leave the run's
    # queues in /dev/shm.
    signal.signal(signal.SIGTERM, _terminated)
    global SPIN
    SPIN = None if args.spin_us is None else args.spin_us / 1e6
    runs = args.runs or (1 if args.smoke else 3 if args.quick else 5)
    counts = {  # (throughput messages, round trips) per size
        64: (20_000, 2_000) if args.quick else (200_000, 20_000),
        4096: (10_000, 2_000) if args.quick else (100_000, 20_000),
    }
    if args.smoke:
        counts = {64: (640, 50), 4096: (640, 50)}

    transports: list[Transport] = [Shmq("copy"), Shmq("into"), Shmq("inplace"), ShmqBatch(),
                                   ShmqBatchInPlace(), ShmqBatchBothInPlace(), MpQueue(), MpPipe()]
    notes = []
    if faster_fifo is not None:
        transports += [FasterFifo(), FasterFifoBatch()]
    else:
        notes.append("faster_fifo: not installed (pip install faster-fifo), skipped")
    if args.only:
        transports = [t for t in transports if args.only in t.name]

    print(f"# Python {sys.version.split()[0]}, shmq {shmq.library_version()} "
          f"({shmq.library_path}), {len(CORES)} cores, depth {DEPTH}, median of {runs} runs"
          + (" (quick)" if args.quick else "")
          + (f", shmq polling {args.spin_us:g} µs before sleeping" if SPIN is not None else ""),
          flush=True)
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
        # 64 B only, as in the Rust bench: both processes on one core, and 2P+2C.
        row["samecore64"] = statistics.median(
            run_once(t, 64, "throughput", counts[64][0], same_core=True) for _ in range(runs))
        if t.many_to_many:
            row["2p2c64"] = statistics.median(
                run_many_to_many(t, 64, counts[64][0]) for _ in range(runs))
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

    def rate(row: dict[str, float], key: str) -> str:
        return f"{row[key] / 1e3:,.0f} k" if key in row else "–"

    print()
    print("| transport | msgs/s, 64 B | msgs/s, 4 KiB (MB/s) | round trip p50, 64 B "
          "| round trip p50, 4 KiB | msgs/s, 64 B, one core | msgs/s, 64 B, 2P+2C |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, row in results.items():
        mbs = row["throughput4096"] * 4096 / 1e6
        print(f"| {name} | {rate(row, 'throughput64')}{ratio(name, 'throughput64', True)} "
              f"| {rate(row, 'throughput4096')} ({mbs:,.0f}){ratio(name, 'throughput4096', True)} "
              f"| {rtt(row, 'rtt64')}{ratio(name, 'rtt64', False)} "
              f"| {rtt(row, 'rtt4096')}{ratio(name, 'rtt4096', False)} "
              f"| {rate(row, 'samecore64')}{ratio(name, 'samecore64', True)} "
              f"| {rate(row, '2p2c64')}{ratio(name, '2p2c64', True)} |")
    print()
    print("(×: shmq against the best of the other transports of the same kind (batches or one "
          "message per call) in this run; higher is better. One core: both processes pinned "
          "to the same core. 2P+2C: two producer and two consumer processes on one queue, one "
          "of each per core; – where a transport cannot be shared that way.)")
    for t in transports:
        if t.note:
            notes.append(f"{t.name}: {t.note}")
    for note in notes:
        print(f"- {note}")
    print(f"total {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
