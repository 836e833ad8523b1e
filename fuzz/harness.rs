// The fuzz harness, shared by the cargo-fuzz targets (fuzz/fuzz_targets/*.rs) and by the
// stable replay test (tests/fuzz_replay.rs), which `include!` this file. It uses only the
// public API and the segment file in /dev/shm, as a hostile process would.
//
// Properties checked, for every send and receive form (copying, gather, batch, zero-copy):
// no panic, no hang (every call has a zero timeout), and every message that a receive
// returns, and every slot a zero-copy send is handed, fits the queue's message size.

#[allow(dead_code)]
mod harness {
    use shmq::{CrossProcessQueue, Error};
    use std::os::unix::fs::FileExt;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::Duration;

    const HEADER: usize = shmq::layout::HEADER_SIZE;

    /// A queue name unique to this process and call, unlinked when dropped.
    struct Name(String);

    impl Name {
        fn new(tag: &str) -> Name {
            static N: AtomicU32 = AtomicU32::new(0);
            Name(format!(
                "fuzz_{tag}_{}_{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ))
        }

        fn path(&self) -> String {
            format!("/dev/shm/shmq.{}", self.0)
        }
    }

    impl Drop for Name {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(self.path());
        }
    }

    /// Exercises a connected handle a little: nothing may panic or wait.
    fn poke_handle(q: &CrossProcessQueue) {
        let size = q.message_size();
        let zero = Some(Duration::ZERO);
        let mut buf = vec![0u8; size.min(1 << 16)];
        for _ in 0..4 {
            if let Ok(m) = q.recv_with(&mut buf, zero) {
                assert!(m.len <= size, "length beyond the slot");
            }
        }
        let _ = q.send_with(Some(1), 0, b"fuzz", zero);
        let _ = q.recv_with(&mut buf, zero);
        poke_other_forms(q, size);
        let _ = q.stats();
        let _ = q.len();
        let _ = q.info();
    }

    /// The gather, batch and zero-copy forms on the same handle: each claims, writes and
    /// reads slots through its own code.
    fn poke_other_forms(q: &CrossProcessQueue, size: usize) {
        let zero = Some(Duration::ZERO);
        let fits = |len: usize| assert!(len <= size, "length beyond the slot");
        // A gather of two parts: joined on the stack up to 128 bytes, part by part above.
        let body = [0x5Au8; 300];
        let n = size.min(body.len());
        let _ = q.send_parts_timeout(&[&body[..n / 2], &body[n / 2..n]], zero);
        let _ = q.send_batch(&[b"fu".as_slice(), b"zz"], zero);
        let mut batch = vec![0u8; size.saturating_mul(4).min(1 << 18)];
        let mut metas = Vec::new();
        if q.recv_batch(&mut batch, &mut metas, zero).is_ok() {
            metas.iter().for_each(|m| fits(m.len));
        }
        let _ = q.send_in_place(zero, |slot| {
            fits(slot.len());
            let n = slot.len().min(3);
            slot[..n].copy_from_slice(&b"abc"[..n]);
            n
        });
        let _ = q.recv_in_place(zero, |m, bytes| {
            fits(bytes.len());
            fits(m.len);
        });
        let _ = q.send_batch_in_place(3, zero, |i, slot| {
            fits(slot.len());
            let n = slot.len().min(1);
            slot[..n].fill(i as u8);
            n
        });
        let _ = q.recv_batch_in_place(4, zero, |m, bytes| {
            fits(bytes.len());
            fits(m.len);
        });
    }

    /// Target `connect`: the input is the whole segment file. Inputs shorter than a header
    /// are zero-padded, and an all-zero magic is replaced by the real one: both would only
    /// make `connect` wait a second for a creator (those paths are in tests/hostile.rs).
    pub fn connect_segment(data: &[u8]) {
        let name = Name::new("c");
        let mut bytes = data.to_vec();
        if bytes.len() < HEADER {
            bytes.resize(HEADER, 0);
        }
        if bytes[..8] == [0; 8] {
            bytes[..8].copy_from_slice(b"SHMQRING");
        }
        std::fs::write(name.path(), &bytes).expect("write segment");
        match CrossProcessQueue::connect(&name.0) {
            Ok(q) => poke_handle(&q),
            Err(Error::CorruptedData(m)) => assert!(!m.is_empty()),
            Err(Error::IncompatibleVersion { .. }) => {}
            Err(e) => panic!("connect on foreign bytes: unexpected error {e:?}"),
        }
    }

    /// Target `receive`: a live queue (a few messages in it) is mutated by the input, read
    /// as a list of writes `[offset: u16 LE][len: u8][bytes]` into the segment; then
    /// receives and sends run on it. Byte 0 picks checksums on/off and how many messages
    /// are queued first.
    pub fn receive_mutated(data: &[u8]) {
        let Some((&mode, mut rest)) = data.split_first() else {
            return;
        };
        let name = Name::new("r");
        let q = CrossProcessQueue::options()
            .checksum(mode & 1 == 0)
            .create(&name.0, 4, 32)
            .expect("create");
        for id in 0..(mode >> 1) % 6 {
            let _ = q.send_with(Some(id as u64), 0, &[id; 20], Some(Duration::ZERO));
        }
        let _ = q.recv_with(&mut [0u8; 32], Some(Duration::ZERO));
        let size = std::fs::metadata(name.path()).expect("segment").len();
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(name.path())
            .expect("open segment");
        while rest.len() >= 3 {
            let offset = u16::from_le_bytes([rest[0], rest[1]]) as u64;
            let len = (rest[2] as usize).min(rest.len() - 3);
            // Stay inside the file: writing past its end would grow it, and the identity
            // line is never read after connect (tests/hostile.rs covers it).
            let offset = (offset % size).max(128);
            let len = len.min((size - offset) as usize);
            file.write_all_at(&rest[3..3 + len], offset).expect("poke");
            rest = &rest[3 + len..];
        }
        poke_handle(&q);
        // A second handle connecting to the scribbled segment must cope too.
        if let Ok(q2) = CrossProcessQueue::connect(&name.0) {
            poke_handle(&q2);
        }
    }
}
