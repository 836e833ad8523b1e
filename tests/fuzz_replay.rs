//! The fuzz targets of `fuzz/` on stable Rust: every committed corpus input is replayed, then
//! a bounded number of random mutations of them runs (seeded, printed, replayable with
//! `SHMQ_FUZZ_SEED`; `SHMQ_FUZZ_ITERS` runs longer). Real coverage-guided fuzzing needs
//! nightly: `scripts/fuzz.sh` (cargo fuzz).

include!("../fuzz/harness.rs");

use std::path::{Path, PathBuf};

fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut inputs: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap();
            (p, bytes)
        })
        .collect();
    inputs.sort();
    assert!(!inputs.is_empty(), "empty corpus {}", dir.display());
    inputs
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// A few byte-level mutations of the kind libFuzzer makes.
fn mutate(rng: &mut Rng, input: &[u8]) -> Vec<u8> {
    let mut v = input.to_vec();
    for _ in 0..1 + rng.below(8) {
        match rng.below(6) {
            0 if !v.is_empty() => {
                let i = rng.below(v.len());
                v[i] ^= 1 << rng.below(8);
            }
            1 if !v.is_empty() => {
                let i = rng.below(v.len());
                v[i] = rng.next() as u8;
            }
            2 if v.len() >= 8 => {
                let i = rng.below(v.len() - 7);
                let interesting = [0u64, 1, u64::MAX, 1 << 63, u32::MAX as u64, 2, 3, 4096];
                let x = interesting[rng.below(interesting.len())];
                v[i..i + 8].copy_from_slice(&x.to_le_bytes());
            }
            3 => v.truncate(rng.below(v.len() + 1)),
            4 => {
                let extra = rng.below(64);
                v.extend((0..extra).map(|_| rng.next() as u8));
            }
            _ => {
                let i = rng.below(v.len() + 1);
                v.insert(i, rng.next() as u8);
            }
        }
    }
    v
}

fn run(target: &str, f: fn(&[u8])) {
    let inputs = corpus(target);
    for (path, bytes) in &inputs {
        println!("replay {}", path.display());
        f(bytes);
    }
    let seed: u64 = std::env::var("SHMQ_FUZZ_SEED").map_or_else(
        |_| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        },
        |s| s.parse().unwrap(),
    );
    let iters: usize = std::env::var("SHMQ_FUZZ_ITERS").map_or(3000, |s| s.parse().unwrap());
    println!("{target}: {iters} random mutations, SHMQ_FUZZ_SEED={seed}");
    let mut rng = Rng(seed);
    for i in 0..iters {
        let (_, base) = &inputs[rng.below(inputs.len())];
        let input = mutate(&mut rng, base);
        let r = std::panic::catch_unwind(|| f(&input));
        if r.is_err() {
            let out = std::env::temp_dir().join(format!("shmq-fuzz-{target}-crash-{i}"));
            std::fs::write(&out, &input).unwrap();
            panic!("{target}: input {i} panicked; saved to {}", out.display());
        }
    }
}

#[test]
fn fuzz_connect_corpus_and_mutations() {
    run("connect", harness::connect_segment);
}

#[test]
fn fuzz_receive_corpus_and_mutations() {
    run("receive", harness::receive_mutated);
}

/// Regenerates the seed inputs of `fuzz/corpus` (run by hand after a layout change:
/// `cargo test --test fuzz_replay -- --ignored write_seed_corpus`).
#[test]
#[ignore]
fn write_seed_corpus() {
    use shmq::{CrossProcessQueue, Message};
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    let seg = |name: &str| std::fs::read(format!("/dev/shm/shmq.{name}")).unwrap();
    let name = format!("seed_{}", std::process::id());
    for (file, cap, size, checksum, msgs) in [
        ("valid_cap2_size8", 2, 8, true, 1u8),
        ("valid_cap1_size1_nocrc", 1, 1, false, 1),
        ("valid_cap4_size32_full", 4, 32, true, 4),
    ] {
        let q = CrossProcessQueue::options()
            .checksum(checksum)
            .create(&name, cap, size)
            .unwrap();
        for i in 0..msgs {
            q.send(&Message::new(i as u64, vec![i; size.min(4)]))
                .unwrap();
        }
        let bytes = seg(&name);
        drop(q);
        CrossProcessQueue::unlink(&name).unwrap();
        std::fs::write(root.join("connect").join(file), &bytes).unwrap();
        if file == "valid_cap2_size8" {
            let mut v = bytes.clone();
            v[8] = 2; // an older layout version (2)
            std::fs::write(root.join("connect/version2"), &v).unwrap();
            v = bytes.clone();
            v.truncate(4096 + 100);
            std::fs::write(root.join("connect/truncated"), &v).unwrap();
        }
    }
    // receive: [mode] then writes [offset u16 LE][len][bytes]
    let poke = |offset: u16, bytes: &[u8]| {
        let mut v = offset.to_le_bytes().to_vec();
        v.push(bytes.len() as u8);
        v.extend_from_slice(bytes);
        v
    };
    let slot = |i: u16, field: u16| 4096 + i * 128 + field;
    let seeds: Vec<(&str, Vec<u8>)> = vec![
        ("nothing", vec![6]),
        (
            "bad_len",
            [vec![6], poke(slot(1, 32), &u32::MAX.to_le_bytes())].concat(),
        ),
        (
            "seq_ahead",
            [vec![6], poke(slot(1, 0), &1000u64.to_le_bytes())].concat(),
        ),
        (
            "seq_behind",
            [vec![8], poke(slot(2, 0), &1u64.to_le_bytes())].concat(),
        ),
        (
            "claim_junk",
            [vec![6], poke(slot(1, 8), &u64::MAX.to_le_bytes())].concat(),
        ),
        (
            "tail_huge",
            [vec![6], poke(128, &(u64::MAX >> 1).to_le_bytes())].concat(),
        ),
        (
            "head_huge",
            [vec![6], poke(256, &u64::MAX.to_le_bytes())].concat(),
        ),
        (
            "head_behind",
            [vec![10], poke(256, &0u64.to_le_bytes())].concat(),
        ),
        (
            "payload_flip",
            [vec![6], poke(slot(1, 64), &[0xff; 4])].concat(),
        ),
        (
            "nocrc_bad_len",
            [vec![7], poke(slot(1, 32), &33u32.to_le_bytes())].concat(),
        ),
        ("futex_words", [vec![2], poke(384, &[0xff; 8])].concat()),
    ];
    for (file, bytes) in seeds {
        std::fs::write(root.join("receive").join(file), bytes).unwrap();
    }
}
