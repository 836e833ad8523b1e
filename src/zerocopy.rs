//! Zero-copy and batch forms of send and receive.
//!
//! # Zero-copy
//! [`CrossProcessQueue::send_in_place`] claims a slot and lends its payload area
//! (`message_size` bytes of shared memory) to a closure that writes the message and returns
//! its length; the message is then checksummed and published. [`CrossProcessQueue::recv_in_place`]
//! claims the next message, verifies it where it lies and lends it to a closure as `&[u8]`;
//! the slot is released when the closure returns. Neither copies the payload.
//!
//! Crash safety is the ring's: while the closure runs, the slot is claimed in this process's
//! name exactly as during a copying send or receive. If the process dies inside a `send`
//! closure, a receiver skips the position once the death is visible (the send never
//! returned, so nothing promised is lost); if it dies inside a `recv` closure, the message is
//! still intact in the slot and is delivered again to another receiver ("redelivered").
//!
//! A *panic* is not a death: this process stays alive and so keeps its claim, which nobody
//! else may repair. So the slot is settled on unwind: a panicking receive closure releases
//! the slot (the message counts as delivered), and a panicking send closure publishes the slot
//! as a *poisoned* message that the receiver which claims it drops, counting it under
//! `corrupted` and returning `CorruptedData`. A send closure returning a length larger than
//! `message_size` is treated the same way and the send fails with `InvalidArgument`.
//!
//! The bytes lent to a receive closure are shared memory: a correct peer never writes a slot
//! another process has claimed, but a buggy or hostile process mapping the segment could, so
//! the checksum (verified before the closure runs) proves nothing about what the closure reads
//! afterwards. Use the copying forms when peers are untrusted.
//!
//! # Batches
//! The ring claims each slot with its own compare-and-swap on the slot's `claim` word,
//! because that word must name the claimer for as long as the slot is in flight: it is what
//! lets another process repair the slot if the claimer dies. A single `fetch_add` on the tail
//! claiming `n` positions at once would leave positions taken but not owned by anyone a
//! repairer can identify, so a process dying right after it would wedge the queue. So
//! the batches still make one claim per message, but on a multi-producer/multi-consumer
//! queue the copying receive batch and both send batches claim *runs* of consecutive
//! positions and move the head or tail past a whole run at once (`Ring::claim_pop_run`,
//! `Ring::claim_push_run`), and every batch amortises the rest: one wait (for the first
//! message only), one wake-up check (a compiler barrier and a load of the futex word, plus a
//! `futex` call only if someone sleeps), one timestamp and one statistics update per batch.
//!
//! [`CrossProcessQueue::send_batch_in_place`] and [`CrossProcessQueue::recv_batch_in_place`]
//! are the zero-copy forms of the same: each message's slot is lent to a closure in turn
//! (both send batches share one loop, `send_batch_by`). A full queue ends a send batch
//! between two messages, never inside one. A zero-copy send batch whose `fill` refuses a
//! message (or panics) ends there: that slot is published poisoned, and the positions its
//! run had claimed after it are *given up* (`Ring::give_up`): receivers skip them at once,
//! counting them under `abandoned`. The zero-copy receive batch claims runs too, except
//! in its stoppable form (the C and Python bindings', whose reader may end the batch at
//! any message): messages claimed ahead of a stop could only be handed back (the head is
//! past them), to be delivered again later, out of order. The Rust form's reader stops
//! only by panicking, and then the messages claimed after its own are handed back
//! (`Ring::hand_back`).
//!
//! A single-producer/single-consumer side has no claim words: it keeps its role's lock from
//! the batch's first claim to the end, checks `closed` once, judges room for each further
//! message from its cached head, and moves the tail once, at the end (`tail.in_flight` names
//! the position being written, so a sender taking over after a death mid-batch moves the tail
//! past the positions published before it: see `spsc.rs`).

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use crate::ring::{Cursor, PopToken, PushToken, ReadError};
use crate::{clock, crashpoint, wait, CrossProcessQueue, Error, Received, Result, RECV_BATCH_MAX};

/// Settles a claimed push slot if the writer's closure unwinds: publishes it poisoned.
struct PushGuard<'a> {
    queue: &'a CrossProcessQueue,
    token: Option<PushToken>,
}

impl Drop for PushGuard<'_> {
    fn drop(&mut self) {
        if self.queue.inherited() {
            return; // forked inside the closure: the claim is the parent's to settle
        }
        if let Some(token) = self.token.take() {
            self.queue.commit_push_poisoned(token);
            wait::wake_receivers(self.queue.ring.header(), 1);
        }
    }
}

/// A send batch in progress: ends it when dropped, normally or on unwind. A slot still
/// claimed then (its message refused, or its writer unwinding) is published poisoned; the
/// batch is then finished (on a single-producer queue the tail moves past every slot it
/// published, and the side is unlocked), receivers are woken and the messages counted.
struct SendBatch<'a> {
    queue: &'a CrossProcessQueue,
    token: Option<PushToken>,
    /// Positions claimed ahead by a run ([`Ring::claim_push_run`]) after `token`'s, not yet
    /// handed out.
    ///
    /// [`Ring::claim_push_run`]: crate::ring::Ring::claim_push_run
    reserved: usize,
    /// The position of the last slot published.
    last: u64,
    sent: usize,
    bytes: u64,
}

impl Drop for SendBatch<'_> {
    #[inline]
    fn drop(&mut self) {
        let queue = self.queue;
        if queue.inherited() {
            return; // forked inside a closure: the batch is the parent's to end
        }
        // Slots published: the messages, and a poisoned one and given-up positions that
        // receivers drop or skip (a receiver waiting for them must wake to do so).
        let mut published = self.sent;
        if let Some(token) = self.token.take() {
            published += 1 + self.reserved;
            // The slot in hand (its message refused, or its writer unwinding) is published
            // poisoned: receivers drop it. The positions a run claimed after it (a multi-
            // producer queue's batch ended early) were never messages: given up, receivers
            // skip them (counted `abandoned`) instead of reporting each as corrupt.
            let mut at = token.cursor();
            self.last = token.position();
            queue.ring.publish_poisoned(token);
            // Only a multi-producer queue claims runs (the tail has moved past them all).
            let me = queue.me;
            for _ in 0..std::mem::take(&mut self.reserved) {
                let next = queue.ring.run_token(at);
                at = next.cursor();
                queue.ring.give_up(next, me);
            }
        }
        queue.finish_push_batch(self.last, self.sent, self.bytes);
        wait::wake_receivers(queue.ring.header(), wait::waiters(published));
        queue.count_batch(true, self.sent as u64, self.bytes);
    }
}

/// Releases a claimed pop slot when the reader is done, including on unwind.
struct PopGuard<'a> {
    queue: &'a CrossProcessQueue,
    token: Option<PopToken>,
    /// Bytes of the message, once verified (0 for a dropped one).
    len: usize,
}

impl Drop for PopGuard<'_> {
    #[inline]
    fn drop(&mut self) {
        if self.queue.inherited() {
            return; // forked inside the reader: the claim is the parent's to release
        }
        if let Some(token) = self.token.take() {
            self.queue.commit_pop(token, self.len);
            wait::wake_senders(self.queue.ring.header(), 1);
        }
    }
}

impl CrossProcessQueue {
    /// The error (and statistic) for a claimed message that failed verification, whichever
    /// receive claimed it (copying, batch or zero-copy).
    pub(crate) fn read_error(&self, e: ReadError) -> Error {
        let stats = &self.ring.header().stats;
        match e {
            ReadError::Checksum { expected, actual } => {
                stats.checksum_failures.fetch_add(1, Relaxed);
                Error::CorruptedData(format!(
                    "queue '{}': message checksum {actual:#010x} does not match {expected:#010x}; \
                     the message was dropped",
                    self.name
                ))
            }
            ReadError::BadLength(len) => {
                stats.corrupted.fetch_add(1, Relaxed);
                Error::CorruptedData(format!(
                    "queue '{}': message length {len} exceeds the message size {}; \
                     the message was dropped",
                    self.name,
                    self.message_size()
                ))
            }
        }
    }

    /// Adds a batch to this handle's pending statistics, flushing them like `count` does.
    fn count_batch(&self, sent: bool, messages: u64, bytes: u64) {
        let pending = if sent {
            &self.pending_sent
        } else {
            &self.pending_received
        };
        self.count(pending, messages, bytes);
    }

    /// Zero-copy send: claims a slot (waiting per `timeout` as in
    /// [`send_with`](Self::send_with): `Some(ZERO)` fails at once with `QueueFull`, `None`
    /// waits without limit), lends its `message_size` bytes of shared memory to `fill`, which
    /// writes the message and returns its length, then publishes it. Returns the message id
    /// (its position in the queue). The slot may hold an older message's bytes: write every
    /// byte you count in the length.
    ///
    /// If `fill` returns more than `message_size`, or panics, the slot is published poisoned
    /// (see the notes atop `src/zerocopy.rs`) and the send fails with `InvalidArgument` (or
    /// the panic resumes). No allocation and no system call on the fast path.
    ///
    /// With checksums on, the send reads back the bytes `fill` wrote, to checksum them. Bytes
    /// just written by a copy of run-time length (`copy_from_slice`, `fill`, `memcpy`, which
    /// make overlapping vector stores) or piece by piece (a serializer) cannot be read from
    /// the core's store buffer, and the read waits until they reach the cache: about 6 ns per
    /// 64-byte message on the project's VM, where with the checksum's own cost an SPSC
    /// zero-copy batch ran at half its rate without checksums (`examples/readback_stall.rs`,
    /// docs/PERFORMANCE.md). Whole aligned 8-byte stores avoid the wait. A copying send of a
    /// buffer filled just before waits the same. Large messages pay it per line: at 4 KiB
    /// between two processes, a zero-copy send with checksums whose `fill` used `memset` or
    /// `memcpy` ran at 0.4–0.55× a copying send, 0.7–0.8× with 8-byte stores, while the
    /// zero-copy receive was as fast as the copying one (`examples/large_send_forms.rs`):
    /// with checksums on, send large messages with the copying calls, and a message kept in
    /// pieces with [`send_parts`](Self::send_parts), which reads each piece once.
    #[doc(alias = "reserve")]
    pub fn send_in_place<F>(&self, timeout: Option<Duration>, fill: F) -> Result<u64>
    where
        F: FnOnce(&mut [u8]) -> usize,
    {
        let token = self.claim_for_send(timeout)?;
        crashpoint::hit("push_tail_moved");
        let size = self.message_size();
        let payload = self.ring.payload_ptr(&token);
        let mut guard = PushGuard {
            queue: self,
            token: Some(token),
        };
        // SAFETY: the slot is claimed by this process until it is published (by the guard on
        // unwind at the latest), so no correct peer reads or writes its payload area, which
        // is `size` bytes inside the mapping; the borrow ends before the publication below.
        let slot = unsafe { std::slice::from_raw_parts_mut(payload, size) };
        self.entering_callbacks(true);
        let len = fill(slot);
        if self.inherited() {
            // `fill` forked and this is the child: the claim is the parent's (the guard
            // leaves it alone), which publishes its own copy of the message.
            return Err(self.inherited_error());
        }
        let token = guard.token.take().expect("the guard still holds the claim");
        if len > size {
            self.commit_push_poisoned(token);
            wait::wake_receivers(self.ring.header(), 1);
            return Err(Error::InvalidArgument(format!(
                "send_in_place: the closure returned length {len}, beyond the message size {size}; \
                 the slot was published as a poisoned message"
            )));
        }
        let id = token.position();
        self.ring
            .finish_in_place(&token, id, clock::realtime_ns(), len);
        crashpoint::hit("push_written");
        self.commit_push(token, len);
        wait::wake_receivers(self.ring.header(), 1);
        self.count(&self.pending_sent, 1, len as u64);
        Ok(id)
    }

    /// Zero-copy receive: claims the next message (waiting per `timeout` as in
    /// [`recv_with`](Self::recv_with): `QueueEmpty`, `Timeout`, or `Closed` once shut down
    /// and drained), verifies its checksum where it lies, and lends its bytes to `read`; the
    /// slot is released when `read` returns (or unwinds: the message then counts as
    /// delivered). Returns what `read` returns. No allocation and no system call on the fast
    /// path.
    #[doc(alias = "peek")]
    pub fn recv_in_place<R, F>(&self, timeout: Option<Duration>, read: F) -> Result<R>
    where
        F: FnOnce(Received, &[u8]) -> R,
    {
        let token = self.claim_for_recv(self.message_size(), timeout)?;
        let result = self.read_claimed_in_place(token, read);
        result.map(|(r, len)| {
            self.count(&self.pending_received, 1, len as u64);
            r
        })
    }

    /// Verifies a claimed message in place, lends it to `read`, releases the slot (with a
    /// wake-up check). Returns `read`'s value and the message length.
    fn read_claimed_in_place<R, F>(&self, token: PopToken, read: F) -> Result<(R, usize)>
    where
        F: FnOnce(Received, &[u8]) -> R,
    {
        crashpoint::hit("pop_head_moved");
        let mut guard = PopGuard {
            queue: self,
            token: Some(token),
            len: 0,
        };
        let claimed = guard.token.as_ref().expect("just set");
        let (meta, payload) = self.ring.read_in_place(claimed).map_err(|e| {
            // The guard releases the slot; the message is dropped, as by `receive_into`.
            self.read_error(e)
        })?;
        // SAFETY: `read_in_place` checked meta.len <= message_size, so the bytes lie inside
        // the payload area of the slot, which stays claimed by this process (no correct peer
        // writes it) until the guard releases it after the borrow below has ended.
        let bytes = unsafe { std::slice::from_raw_parts(payload, meta.len) };
        guard.len = meta.len;
        self.entering_callbacks(false);
        let r = read(meta, bytes);
        if self.inherited() {
            // `read` forked and this is the child: the parent releases the slot.
            return Err(self.inherited_error());
        }
        crashpoint::hit("pop_read");
        drop(guard);
        Ok((r, meta.len))
    }

    /// Sends several messages in order with one wait and one wake-up check (see the
    /// notes atop `src/zerocopy.rs` for why each still takes its own claim). Waits per
    /// `timeout` (as in [`send_with`](Self::send_with)) only for room for the first message,
    /// then sends as many as fit without waiting, and returns how many were sent (at least
    /// one, unless `messages` is empty). Ids are the messages' positions. Fails with
    /// `MessageTooLarge` before sending anything if any message exceeds the message size.
    pub fn send_batch<T: AsRef<[u8]>>(
        &self,
        messages: &[T],
        timeout: Option<Duration>,
    ) -> Result<usize> {
        self.send_batch_with(messages.len(), |i| messages[i].as_ref(), timeout)
    }

    /// [`send_batch`](Self::send_batch) of `count` messages that `message(i)` yields (the C
    /// ABI's arrays of pointers and lengths).
    pub(crate) fn send_batch_with<'a>(
        &self,
        count: usize,
        message: impl Fn(usize) -> &'a [u8],
        timeout: Option<Duration>,
    ) -> Result<usize> {
        let size = self.message_size();
        if let Some(m) = (0..count).map(&message).find(|m| m.len() > size) {
            return Err(Error::MessageTooLarge {
                len: m.len(),
                max: size,
            });
        }
        // Lengths checked above: every message claimed is written.
        self.send_batch_by(count, timeout, |i, token, id, timestamp| {
            let data = message(i);
            self.ring.write(token, id, timestamp, data);
            Some(data.len())
        })
    }

    /// Zero-copy batch send: claims a slot for message `i` (from 0, in order), lends its
    /// `message_size` bytes of shared memory to `fill(i, slot)`, which writes the message
    /// and returns its length, publishes it, and goes on with message `i + 1` while `i <
    /// count` and a slot is free, with one wait (for room for the first message, per
    /// `timeout` as in [`send_with`](Self::send_with)), one timestamp and one wake-up check.
    /// Returns how many were sent (at least one, unless `count` is 0): `fill` is called
    /// exactly that many times, never for a message that finds no free slot, so the caller
    /// resends messages `sent..count` later. Ids are the messages' positions. A slot may
    /// hold an older message's bytes: write every byte you count in the length.
    ///
    /// With checksums on, each message's bytes are read back after `fill` (see
    /// [`send_in_place`](Self::send_in_place) for what that costs bytes written by a copy).
    ///
    /// If `fill` returns more than `message_size`, or panics, that slot is published
    /// poisoned (as in [`send_in_place`](Self::send_in_place)), the messages before it stay
    /// sent, and the call fails with `InvalidArgument` (or the panic resumes). On a
    /// multi-producer queue the batch may have claimed positions after that one (it claims
    /// runs of free slots, moving the tail once per run): they are given up, and receivers
    /// skip them, counting them under `abandoned` in [`stats`](Self::stats). A process that
    /// dies inside `fill` leaves the messages before it sent; the slot it was writing, and
    /// any claimed after it, are skipped (on a single-producer queue, the slot is written
    /// again by the sender that takes over).
    ///
    /// ```no_run
    /// # fn main() -> shmq::Result<()> {
    /// let queue = shmq::CrossProcessQueue::connect("readings")?; // message size >= 12
    /// let readings: Vec<(u32, f64)> = vec![(1, 0.5), (2, 1.5), (3, 2.5)];
    /// let mut done = 0;
    /// while done < readings.len() {
    ///     let rest = &readings[done..];
    ///     // Each reading is encoded straight into its slot: no buffer, no copy.
    ///     done += queue.send_batch_in_place(rest.len(), None, |i, slot| {
    ///         let (sensor, value) = rest[i];
    ///         slot[..4].copy_from_slice(&sensor.to_le_bytes());
    ///         slot[4..12].copy_from_slice(&value.to_le_bytes());
    ///         12
    ///     })?;
    /// }
    /// # Ok(()) }
    /// ```
    pub fn send_batch_in_place<F>(
        &self,
        count: usize,
        timeout: Option<Duration>,
        mut fill: F,
    ) -> Result<usize>
    where
        F: FnMut(usize, &mut [u8]) -> usize,
    {
        let size = self.message_size();
        let mut refused = None;
        let mut forked = false;
        let sent = self.send_batch_by(count, timeout, |i, token, id, timestamp| {
            let payload = self.ring.payload_ptr(token);
            // SAFETY: the slot is claimed by this process until the batch publishes it (its
            // guard on unwind at the latest), so no correct peer reads or writes its payload
            // area, which is `size` bytes inside the mapping; the borrow ends before that.
            let slot = unsafe { std::slice::from_raw_parts_mut(payload, size) };
            if i == 0 {
                self.entering_callbacks(true);
            }
            let len = fill(i, slot);
            if self.inherited() {
                // `fill` forked and this is the child: the batch is the parent's (its guard
                // leaves the slot alone).
                forked = true;
                return None;
            }
            if len > size {
                refused = Some((i, len));
                return None;
            }
            self.ring.finish_in_place(token, id, timestamp, len);
            Some(len)
        })?;
        if forked {
            return Err(self.inherited_error());
        }
        match refused {
            None => Ok(sent),
            Some((i, len)) => Err(Error::InvalidArgument(format!(
                "send_batch_in_place: the closure returned length {len} for message {i}, beyond \
                 the message size {size}; messages 0..{i} were sent and that slot was published \
                 as a poisoned message"
            ))),
        }
    }

    /// The loop of both send batches: claims slot after slot, has `write(i, token, id,
    /// timestamp)` write message `i` into the claimed slot and return its length (`None`
    /// refuses the message: its slot is published poisoned, unless this is a child forked
    /// inside `write`, and the batch ends there), publishes it, and returns how many were
    /// sent. A multi-producer queue claims the slots after the first in runs
    /// ([`Ring::claim_push_run`]: one tail move per run); the positions of a run that a
    /// refusal leaves unwritten are given up (see `SendBatch`).
    ///
    /// [`Ring::claim_push_run`]: crate::ring::Ring::claim_push_run
    #[inline(always)]
    fn send_batch_by(
        &self,
        count: usize,
        timeout: Option<Duration>,
        mut write: impl FnMut(usize, &PushToken, u64, u64) -> Option<usize>,
    ) -> Result<usize> {
        if count == 0 {
            return Ok(0);
        }
        let token = self.claim_for_send(timeout)?;
        let mut batch = SendBatch {
            queue: self,
            token: Some(token),
            reserved: 0,
            last: 0,
            sent: 0,
            bytes: 0,
        };
        let timestamp = clock::realtime_ns();
        while let Some(token) = &batch.token {
            crashpoint::hit("push_tail_moved");
            let at = token.cursor();
            let pos = at.position();
            let Some(len) = write(batch.sent, token, pos, timestamp) else {
                break; // the guard publishes the slot poisoned
            };
            crashpoint::hit("push_written");
            let token = batch.token.take().expect("held by the loop");
            self.commit_push_in_batch(token, len);
            batch.last = pos;
            batch.sent += 1;
            batch.bytes += len as u64;
            if batch.sent == count {
                break;
            }
            batch.token = if batch.reserved > 0 {
                batch.reserved -= 1;
                Some(self.ring.run_token(at))
            } else {
                self.claim_next_push(at, count - batch.sent)
                    .map(|(token, n)| {
                        batch.reserved = n - 1;
                        token
                    })
            };
            if batch.token.is_some() {
                crashpoint::hit("push_batch_next");
            }
        }
        Ok(batch.sent)
    }

    /// Receives up to `buf.len() / message_size` messages, at most [`RECV_BATCH_MAX`], with
    /// one wait and one wake-up check. Message `i` is copied to `buf[i * message_size..]` and
    /// its metadata pushed as `metas[i]` (`metas` is cleared first; reserve its capacity to
    /// avoid allocating). Waits per `timeout` (as in [`recv_with`](Self::recv_with)) only for
    /// the first message and returns how many were received (at least one). A message that
    /// fails verification is dropped and ends the batch with `CorruptedData`: the messages
    /// received before it, and those the batch had already claimed after it (a
    /// multi-consumer queue claims several at a time), are in `buf` and `metas`.
    ///
    /// The slots stay claimed until every message of the batch is copied, so a process that
    /// dies inside the call leaves them all to be delivered again (flagged `redelivered`), as
    /// a single receive does with its one message.
    pub fn recv_batch(
        &self,
        buf: &mut [u8],
        metas: &mut Vec<Received>,
        timeout: Option<Duration>,
    ) -> Result<usize> {
        metas.clear();
        self.recv_batch_with(buf, timeout, |meta| metas.push(meta))
    }

    /// [`recv_batch`](Self::recv_batch) handing message `i`'s metadata to `on_message` (in
    /// order, `i` from 0) instead of a vector: the messages it handed out before an error are
    /// in `buf` too. `on_message` runs while the batch's slots are held, so it must not panic
    /// (the two callers push to a vector and write to the C caller's array).
    pub(crate) fn recv_batch_with(
        &self,
        buf: &mut [u8],
        timeout: Option<Duration>,
        mut on_message: impl FnMut(Received),
    ) -> Result<usize> {
        let size = self.message_size();
        let max = (buf.len() / size).min(RECV_BATCH_MAX);
        if max == 0 {
            return Err(Error::BufferTooSmall {
                needed: size,
                got: buf.len(),
            });
        }
        let mut token = self.claim_for_recv(size, timeout)?;
        // Claimed slots, released together once the whole batch is copied.
        let mut held: [Option<PopToken>; RECV_BATCH_MAX] = [const { None }; RECV_BATCH_MAX];
        let mut claimed = 0;
        let mut received = 0;
        let mut bytes = 0u64;
        let mut failure = None;
        // Messages claimed after `token` by the same run (`claim_next_pop`), not read yet.
        let mut reserved = 0;
        loop {
            crashpoint::hit("pop_head_moved");
            let at = token.cursor();
            let chunk = &mut buf[received * size..][..size];
            let result = self.ring.read(&token, chunk);
            crashpoint::hit("pop_read");
            held[claimed] = Some(token);
            claimed += 1;
            match result {
                Ok(meta) => {
                    bytes += meta.len as u64;
                    received += 1;
                    on_message(meta);
                }
                Err(e) => {
                    // Counted and dropped. The first is what the call reports; the batch
                    // ends once the messages it already claimed are read (the head is past
                    // them: nobody else would deliver them).
                    let e = self.read_error(e);
                    failure.get_or_insert(e);
                }
            }
            if reserved > 0 {
                reserved -= 1;
                token = self.ring.pop_run_token(at);
            } else if claimed == max || failure.is_some() {
                break;
            } else {
                match self.claim_next_pop(at, size, max - claimed) {
                    Some((t, n)) => {
                        token = t;
                        reserved = n - 1;
                    }
                    None => break,
                }
            }
            crashpoint::hit("pop_batch_next");
        }
        self.release_batch(&mut held[..claimed], bytes);
        wait::wake_senders(self.ring.header(), wait::waiters(claimed));
        self.count_batch(false, received as u64, bytes);
        match failure {
            Some(e) => Err(e),
            None => Ok(received),
        }
    }

    /// Zero-copy batch receive: lends up to `max` messages in turn to `read` (as in
    /// [`recv_in_place`](Self::recv_in_place)), releasing each slot after its call, with one
    /// wait (for the first message) and one wake-up check. Returns how many were read.
    ///
    /// On a multi-consumer queue the messages after the first are claimed in *runs*, as
    /// [`recv_batch`](Self::recv_batch) claims them: those already published, up to `max` in
    /// all, with one move of the head. So:
    /// - A message that fails verification is dropped and ends the batch with
    ///   `CorruptedData`, once `read` has had the messages the batch claimed with it.
    /// - A process that dies inside `read` leaves that message, and those its run claimed
    ///   after it, to be delivered again (flagged `redelivered`); the ones before were
    ///   released. A `read` that panics: its message counts as received, and those claimed
    ///   after it are handed back to the queue, to be delivered again in the same way, out
    ///   of order.
    ///
    /// A single-consumer queue claims one message at a time (without an atomic operation):
    /// a death or a panic in `read` leaves nothing behind but that message.
    pub fn recv_batch_in_place<F>(
        &self,
        max: usize,
        timeout: Option<Duration>,
        mut read: F,
    ) -> Result<usize>
    where
        F: FnMut(Received, &[u8]),
    {
        self.recv_batch_in_place_while(max, timeout, false, |meta, bytes| {
            read(meta, bytes);
            true
        })
    }

    /// [`recv_batch_in_place`](Self::recv_batch_in_place) whose `read` returns whether to go
    /// on, when `stoppable`: `false` ends the batch after that message (which counts as
    /// received). For the C and Python bindings, whose callbacks cannot unwind to stop a
    /// batch. A stoppable batch claims one message at a time: messages claimed ahead of a
    /// stop could only be handed back (delivered again later, out of order, flagged
    /// `redelivered`), and stopping is not an accident there.
    pub(crate) fn recv_batch_in_place_while<F>(
        &self,
        max: usize,
        timeout: Option<Duration>,
        stoppable: bool,
        mut read: F,
    ) -> Result<usize>
    where
        F: FnMut(Received, &[u8]) -> bool,
    {
        if max == 0 {
            return Ok(0);
        }
        let size = self.message_size();
        let token = self.claim_for_recv(size, timeout)?;
        let mut batch = ReadBatch {
            queue: self,
            held: Some(token),
            reserved: 0,
            held_len: 0,
            last: 0,
            count: 0,
            freed: 0,
            bytes: 0,
        };
        self.entering_callbacks(false);
        let mut failure = None;
        while let Some(token) = &batch.held {
            crashpoint::hit("pop_head_moved");
            let at = token.cursor();
            let go_on = match self.ring.read_in_place(token) {
                Ok((meta, payload)) => {
                    // SAFETY: as in `read_claimed_in_place`: len <= message_size, inside the
                    // slot, which stays claimed until `release_held` (or the batch's drop,
                    // on unwind) after the borrow has ended.
                    let bytes_in_slot = unsafe { std::slice::from_raw_parts(payload, meta.len) };
                    batch.held_len = meta.len;
                    let go_on = read(meta, bytes_in_slot);
                    if self.inherited() {
                        // `read` forked and this is the child: the batch is the parent's.
                        return Err(self.inherited_error());
                    }
                    crashpoint::hit("pop_read");
                    batch.release_held(true);
                    go_on && batch.count < max
                }
                Err(e) => {
                    // Dropped. The messages its run claimed after it are still read (the
                    // head is past them: nobody else would deliver them), then the batch
                    // ends; the first failure is what it reports.
                    batch.release_held(false);
                    failure.get_or_insert(self.read_error(e));
                    false
                }
            };
            // Messages claimed ahead are read whatever happened: a run never goes past
            // `max`, and a stoppable batch claims none ahead.
            if batch.reserved > 0 {
                batch.reserved -= 1;
                batch.held = Some(self.ring.pop_run_token(at));
            } else if !go_on || failure.is_some() {
                break;
            } else {
                let ahead = if stoppable { 1 } else { max - batch.count };
                batch.held = self.claim_next_pop(at, size, ahead).map(|(token, n)| {
                    batch.reserved = n - 1;
                    token
                });
            }
        }
        let count = batch.count;
        drop(batch);
        match failure {
            Some(e) => Err(e),
            None => Ok(count),
        }
    }
}

/// A zero-copy receive batch in progress, whose slots are released one by one, each as its
/// reader returns (so a receiver that dies inside a reader leaves only the messages it has
/// not finished to be delivered again). Dropped, normally or on unwind, it ends the batch:
/// a message still held (its reader unwinding) is released and counts as received, and
/// messages claimed after it are handed back; on a single-consumer queue the side is
/// unlocked; senders are woken and the messages counted.
struct ReadBatch<'a> {
    queue: &'a CrossProcessQueue,
    held: Option<PopToken>,
    /// Messages claimed after the held one by the same run, not read yet (multi-consumer
    /// only). While a reader runs, they follow the message it was lent.
    reserved: usize,
    /// Bytes of the held message, once verified.
    held_len: usize,
    /// The position of the last slot released.
    last: u64,
    count: usize,
    /// Slots released: the messages read and any dropped.
    freed: usize,
    bytes: u64,
}

impl ReadBatch<'_> {
    /// Releases the held message's slot, counting the message if it was `read` (not
    /// dropped).
    #[inline(always)]
    fn release_held(&mut self, read: bool) {
        if let Some(token) = self.held.take() {
            self.last = token.position();
            self.queue.release_in_batch(token);
            self.freed += 1;
            if read {
                self.count += 1;
                self.bytes += self.held_len as u64;
            }
        }
    }

    /// Hands the messages claimed after `at` back to the queue (a reader panicked before
    /// reaching them), and wakes as many receivers to take them.
    #[cold]
    fn hand_back_reserved(&self, mut at: Cursor) {
        let queue = self.queue;
        let me = queue.participant_id();
        for _ in 0..self.reserved {
            let token = queue.ring.pop_run_token(at);
            at = token.cursor();
            queue.ring.hand_back(token, me);
        }
        wait::wake_receivers(queue.ring.header(), wait::waiters(self.reserved));
    }
}

impl Drop for ReadBatch<'_> {
    fn drop(&mut self) {
        if self.queue.inherited() {
            return; // forked inside a reader: the batch is the parent's to end
        }
        let held_at = self.held.as_ref().map(PopToken::cursor);
        self.release_held(true);
        if let Some(at) = held_at.filter(|_| self.reserved > 0) {
            self.hand_back_reserved(at);
        }
        let queue = self.queue;
        queue.finish_pop_batch(self.last, self.count as u64, self.bytes);
        wait::wake_senders(queue.ring.header(), wait::waiters(self.freed));
        queue.count_batch(false, self.count as u64, self.bytes);
    }
}
