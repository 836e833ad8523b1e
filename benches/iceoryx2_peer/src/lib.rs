//! iceoryx2 0.10 publish-subscribe behind a C interface, for `benches/compare.rs` (which builds
//! this library at run time and loads it with `dlopen`, as it does `benches/boost_mq.cpp`).
//!
//! One bench run is one iceoryx2 domain of its own: `iox_init` (called in the bench's parent
//! before it forks) picks a root directory and a file-name prefix for the run, and every node
//! created afterwards, in the parent or in a forked child, uses that configuration. A channel
//! is one publish-subscribe service with one publisher and one subscriber, each in its own
//! node: the parent's node keeps the service alive (`iox_create` / `iox_destroy`), the sender
//! and the receiver open it in their own processes (`iox_open_tx`, `iox_open_rx`).
//!
//! A message goes either by copy (`iox_send`, `iox_try_receive`: the caller's buffer is copied
//! into or out of the sample) or in place (`iox_loan` + `iox_send_loaned`, `iox_peek` +
//! `iox_release`: the caller writes or reads the sample's bytes in shared memory itself).
//!
//! Every function catches panics (iceoryx2 panics on what it considers fatal) and returns an
//! error code instead: nothing unwinds into the caller.

use std::ffi::{c_char, c_int, c_long, c_void, CStr};
use std::mem::MaybeUninit;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use iceoryx2::port::publisher::Publisher;
use iceoryx2::port::subscriber::Subscriber;
use iceoryx2::port::update_connections::UpdateConnections;
use iceoryx2::prelude::*;
use iceoryx2::sample::Sample;
use iceoryx2::sample_mut_uninit::SampleMutUninit;
use iceoryx2::service::port_factory::publish_subscribe::PortFactory as PubSub;

type Svc = ipc::Service;

/// `iox_try_receive`: no message was there (distinct from a 0-byte message).
pub const IOX_EMPTY: c_long = -2;
/// `iox_try_receive`: the message is longer than the caller's buffer.
pub const IOX_TOO_LONG: c_long = -3;

/// The run's domain: where iceoryx2 puts its files, and the prefix of their names.
struct Domain {
    config: Config,
    root: std::path::PathBuf,
    prefix: String,
}

static DOMAIN: OnceLock<Domain> = OnceLock::new();

/// The parent's handle: keeps the service (and its files) alive while the ports come and go.
struct Owner {
    _service: PubSub<Svc, [u8], ()>,
    _node: Node<Svc>,
}

/// Fields drop in order: a sample still loaned or held, the port, then the service handle,
/// then the node (which removes its own files when it goes).
struct Tx {
    /// The sample of `iox_loan`, until `iox_send_loaned` sends it.
    loaned: Option<SampleMutUninit<Svc, [MaybeUninit<u8>], ()>>,
    publisher: Publisher<Svc, [u8], ()>,
    service: PubSub<Svc, [u8], ()>,
    _node: Node<Svc>,
}

struct Rx {
    /// The sample of `iox_peek`, until `iox_release` (or the next `iox_peek`) drops it.
    held: Option<Sample<Svc, [u8], ()>>,
    subscriber: Subscriber<Svc, [u8], ()>,
    service: PubSub<Svc, [u8], ()>,
    _node: Node<Svc>,
}

/// Runs `f`, turning a panic into `on_panic`.
fn guarded<T>(on_panic: T, f: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or(on_panic)
}

fn node() -> Option<Node<Svc>> {
    let domain = DOMAIN.get()?;
    NodeBuilder::new()
        .config(&domain.config)
        // No SIGINT/SIGTERM handlers: Ctrl-C must stop the bench as it does without iceoryx2.
        .signal_handling_mode(SignalHandlingMode::Disabled)
        .create::<Svc>()
        .ok()
}

/// # Safety
/// `name` is NULL or a NUL-terminated string.
unsafe fn service_name(name: *const c_char) -> Option<ServiceName> {
    if name.is_null() {
        return None;
    }
    // SAFETY: non-null and NUL-terminated (the caller's contract).
    let name = unsafe { CStr::from_ptr(name) }.to_str().ok()?;
    ServiceName::new(name).ok()
}

fn into_handle<T>(v: Option<T>) -> *mut c_void {
    v.map_or(std::ptr::null_mut(), |v| {
        Box::into_raw(Box::new(v)) as *mut c_void
    })
}

/// Sets up the run's iceoryx2 domain `domain` (letters, digits, `_`; unique per run, e.g. with
/// the process id): its files go under `$TMPDIR/<domain>/` and into shared-memory objects named
/// `<domain>_...`, so that `iox_cleanup` can remove exactly them. Call once, before forking:
/// the children inherit it. 0 on success, -1 on failure (or if already set up).
///
/// # Safety
/// `domain` is NULL or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn iox_init(domain: *const c_char) -> c_int {
    guarded(-1, || {
        if domain.is_null() {
            return -1;
        }
        // SAFETY: non-null and NUL-terminated (the caller's contract).
        let Ok(domain) = unsafe { CStr::from_ptr(domain) }.to_str() else {
            return -1;
        };
        if domain.is_empty()
            || !domain
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            return -1;
        }
        let root = std::env::temp_dir().join(domain);
        let prefix = format!("{domain}_");
        let mut config = Config::default();
        let (Ok(root_path), Ok(prefix_name)) = (
            Path::new(format!("{}/", root.display()).as_bytes()),
            FileName::new(prefix.as_bytes()),
        ) else {
            return -1;
        };
        config.global.set_root_path(&root_path);
        config.global.prefix = prefix_name;
        // Warnings and errors only (the default also prints informational lines).
        set_log_level(LogLevel::Warn);
        let fresh = DOMAIN
            .set(Domain {
                config,
                root,
                prefix,
            })
            .is_ok();
        if fresh {
            0
        } else {
            -1
        }
    })
}

/// Creates publish-subscribe service `name` for one publisher and one subscriber, whose
/// buffer holds `depth` messages of up to `message_size` bytes; a full buffer makes the
/// publisher wait (no overwriting, no history). Returns the handle that keeps the service
/// alive until `iox_destroy`, or NULL.
///
/// # Safety
/// `name` is NULL or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn iox_create(
    name: *const c_char,
    depth: usize,
    message_size: usize,
) -> *mut c_void {
    guarded(std::ptr::null_mut(), || {
        // The size is the publisher's (`iox_open_tx`); a service has no fixed slice length.
        let _ = message_size;
        // SAFETY: the caller's contract.
        let name = unsafe { service_name(name) };
        into_handle((|| {
            let node = node()?;
            let service = node
                .service_builder(&name?)
                .publish_subscribe::<[u8]>()
                .max_publishers(1)
                .max_subscribers(1)
                .subscriber_max_buffer_size(depth)
                .history_size(0)
                // A full subscriber buffer applies back-pressure instead of dropping the oldest.
                .enable_safe_overflow(false)
                .create()
                .ok()?;
            Some(Owner {
                _service: service,
                _node: node,
            })
        })())
    })
}

/// Destroys the handle of `iox_create` (the service goes with the last node using it).
///
/// # Safety
/// `owner` is NULL or a handle from `iox_create` of this process, not used afterwards.
#[no_mangle]
pub unsafe extern "C" fn iox_destroy(owner: *mut c_void) -> c_int {
    guarded(-1, || {
        if !owner.is_null() {
            // SAFETY: a Box<Owner> from iox_create, given back once (the caller's contract).
            drop(unsafe { Box::from_raw(owner as *mut Owner) });
        }
        0
    })
}

/// Opens service `name` in a node of its own and creates its publisher, for messages of up to
/// `message_size` bytes; a send to a full subscriber waits until there is room. NULL on failure.
///
/// # Safety
/// `name` is NULL or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn iox_open_tx(name: *const c_char, message_size: usize) -> *mut c_void {
    guarded(std::ptr::null_mut(), || {
        // SAFETY: the caller's contract.
        let name = unsafe { service_name(name) };
        into_handle((|| {
            let node = node()?;
            let service = node
                .service_builder(&name?)
                .publish_subscribe::<[u8]>()
                .open()
                .ok()?;
            let publisher = service
                .publisher_builder()
                .initial_max_slice_len(message_size)
                .backpressure_strategy(BackpressureStrategy::RetryUntilDelivered)
                .create()
                .ok()?;
            Some(Tx {
                loaned: None,
                publisher,
                service,
                _node: node,
            })
        })())
    })
}

/// Opens service `name` in a node of its own and creates its subscriber with a buffer of
/// `depth` messages. NULL on failure.
///
/// # Safety
/// `name` is NULL or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn iox_open_rx(name: *const c_char, depth: usize) -> *mut c_void {
    guarded(std::ptr::null_mut(), || {
        // SAFETY: the caller's contract.
        let name = unsafe { service_name(name) };
        into_handle((|| {
            let node = node()?;
            let service = node
                .service_builder(&name?)
                .publish_subscribe::<[u8]>()
                .open()
                .ok()?;
            let subscriber = service
                .subscriber_builder()
                .buffer_size(depth)
                .create()
                .ok()?;
            Some(Rx {
                held: None,
                subscriber,
                service,
                _node: node,
            })
        })())
    })
}

/// Polls `done` every 100 µs until it holds (true) or `timeout_ms` have passed (false).
fn wait_for(timeout_ms: u64, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_millis(timeout_ms);
    while !done() {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_micros(100));
    }
    true
}

/// Waits (up to `timeout_ms`) until the service has at least `n` subscribers and connects the
/// publisher to them: without history, a message sent before a subscriber is connected is
/// delivered to nobody. The subscriber's side must connect too (`iox_wait_publishers`) before
/// the first send. 0 when connected, -1 on timeout or failure.
///
/// # Safety
/// `tx` is a live handle from `iox_open_tx` of this process.
#[no_mangle]
pub unsafe extern "C" fn iox_wait_subscribers(tx: *mut c_void, n: usize, timeout_ms: u64) -> c_int {
    guarded(-1, || {
        // SAFETY: a live Box<Tx> (the caller's contract), used by one thread.
        let tx = unsafe { &*(tx as *const Tx) };
        let there = wait_for(timeout_ms, || {
            tx.service.dynamic_config().number_of_subscribers() >= n
        });
        if there && tx.publisher.update_connections().is_ok() {
            0
        } else {
            -1
        }
    })
}

/// Waits (up to `timeout_ms`) until the service has at least `n` publishers and connects the
/// subscriber to them. Needed beside `iox_wait_subscribers`: until the subscriber has connected
/// (which `receive` also does, but only once called), a publisher that has filled the
/// subscriber's buffer does not wait for room but drops the message (its send reaches 0
/// subscribers). 0 when connected, -1 on timeout or failure.
///
/// # Safety
/// `rx` is a live handle from `iox_open_rx` of this process.
#[no_mangle]
pub unsafe extern "C" fn iox_wait_publishers(rx: *mut c_void, n: usize, timeout_ms: u64) -> c_int {
    guarded(-1, || {
        // SAFETY: a live Box<Rx> (the caller's contract), used by one thread.
        let rx = unsafe { &*(rx as *const Rx) };
        let there = wait_for(timeout_ms, || {
            rx.service.dynamic_config().number_of_publishers() >= n
        });
        if there && rx.subscriber.update_connections().is_ok() {
            0
        } else {
            -1
        }
    })
}

/// Sends `len` bytes from `data` (copied into a loaned sample), waiting while the subscriber's
/// buffer is full. Returns the number of subscribers it reached (0: nobody was connected, the
/// message is gone), or -1 on failure.
///
/// # Safety
/// `tx` is a live handle from `iox_open_tx`; `data` points to `len` readable bytes.
#[no_mangle]
pub unsafe extern "C" fn iox_send(tx: *mut c_void, data: *const u8, len: usize) -> c_long {
    guarded(-1, || {
        // SAFETY: a live Box<Tx> (the caller's contract), used by one thread.
        let tx = unsafe { &*(tx as *const Tx) };
        let bytes = if len == 0 {
            &[][..]
        } else {
            // SAFETY: `len` readable bytes at `data` (the caller's contract).
            unsafe { std::slice::from_raw_parts(data, len) }
        };
        let Ok(sample) = tx.publisher.loan_slice_uninit(len) else {
            return -1;
        };
        match sample.write_from_slice(bytes).send() {
            Ok(n) => n as c_long,
            Err(_) => -1,
        }
    })
}

/// Takes one message, if there is one, and copies it into `buf` (capacity `cap`). Returns its
/// length, `IOX_EMPTY` (-2) if there was none, `IOX_TOO_LONG` (-3) if it does not fit (it is
/// dropped), or -1 on failure. Never waits.
///
/// # Safety
/// `rx` is a live handle from `iox_open_rx`; `buf` points to `cap` writable bytes.
#[no_mangle]
pub unsafe extern "C" fn iox_try_receive(rx: *mut c_void, buf: *mut u8, cap: usize) -> c_long {
    guarded(-1, || {
        // SAFETY: a live Box<Rx> (the caller's contract), used by one thread.
        let rx = unsafe { &*(rx as *const Rx) };
        match rx.subscriber.receive() {
            Ok(Some(sample)) => {
                let payload = sample.payload();
                if payload.len() > cap {
                    return IOX_TOO_LONG;
                }
                if !payload.is_empty() {
                    // SAFETY: `cap` >= payload.len() writable bytes at `buf` (the caller's
                    // contract), not overlapping the sample (our own mapping, read-only to us).
                    unsafe { std::ptr::copy_nonoverlapping(payload.as_ptr(), buf, payload.len()) };
                }
                payload.len() as c_long
                // The sample drops here, handing its slot back to the publisher.
            }
            Ok(None) => IOX_EMPTY,
            Err(_) => -1,
        }
    })
}

/// Loans a sample of `len` bytes for the caller to fill in place, then send with
/// `iox_send_loaned`. Returns a pointer to its `len` bytes in shared memory (writable until
/// `iox_send_loaned`, the next `iox_loan` or `iox_close_tx`; their initial contents are
/// unspecified), or NULL on failure. A sample loaned before and not sent is dropped.
///
/// # Safety
/// `tx` is a live handle from `iox_open_tx` of this process, used by one thread.
#[no_mangle]
pub unsafe extern "C" fn iox_loan(tx: *mut c_void, len: usize) -> *mut u8 {
    guarded(std::ptr::null_mut(), || {
        // SAFETY: a live Box<Tx> (the caller's contract), used by one thread, with no other
        // reference to it alive across this call.
        let tx = unsafe { &mut *(tx as *mut Tx) };
        tx.loaned = None;
        let Ok(mut sample) = tx.publisher.loan_slice_uninit(len) else {
            return std::ptr::null_mut();
        };
        // MaybeUninit<u8> has the layout of u8; the chunk stays where it is when the sample
        // (a handle to it) moves into `tx`.
        let p = sample.payload_mut().as_mut_ptr() as *mut u8;
        tx.loaned = Some(sample);
        p
    })
}

/// Sends the sample of `iox_loan`, whose bytes the caller has all written, waiting while the
/// subscriber's buffer is full. Returns the number of subscribers it reached (0: nobody was
/// connected, the message is gone), or -1 on failure (also if no sample is loaned).
///
/// # Safety
/// `tx` is a live handle from `iox_open_tx` of this process, used by one thread; every byte of
/// the loaned sample has been written since `iox_loan`.
#[no_mangle]
pub unsafe extern "C" fn iox_send_loaned(tx: *mut c_void) -> c_long {
    guarded(-1, || {
        // SAFETY: a live Box<Tx> (the caller's contract), used by one thread, with no other
        // reference to it alive across this call.
        let tx = unsafe { &mut *(tx as *mut Tx) };
        let Some(sample) = tx.loaned.take() else {
            return -1;
        };
        // SAFETY: the caller has written every byte of the payload (its contract).
        let sample = unsafe { sample.assume_init() };
        match sample.send() {
            Ok(n) => n as c_long,
            Err(_) => -1,
        }
    })
}

/// Takes one message, if there is one, and holds it for the caller to read in place: stores
/// a pointer to its bytes in `*data` and returns its length, valid until `iox_release`, the
/// next `iox_peek` or `iox_close_rx` (which hand the sample back to the publisher). Returns
/// `IOX_EMPTY` (-2) if there was none, or -1 on failure. Never waits. A sample held from
/// before is dropped first.
///
/// # Safety
/// `rx` is a live handle from `iox_open_rx` of this process, used by one thread; `data`
/// points to a writable pointer.
#[no_mangle]
pub unsafe extern "C" fn iox_peek(rx: *mut c_void, data: *mut *const u8) -> c_long {
    guarded(-1, || {
        // SAFETY: a live Box<Rx> (the caller's contract), used by one thread, with no other
        // reference to it alive across this call.
        let rx = unsafe { &mut *(rx as *mut Rx) };
        rx.held = None;
        match rx.subscriber.receive() {
            Ok(Some(sample)) => {
                let payload = sample.payload();
                let len = payload.len() as c_long;
                // SAFETY: a writable pointer (the caller's contract). The bytes stay where
                // they are, in shared memory, when the sample moves into `rx`.
                unsafe { data.write(payload.as_ptr()) };
                rx.held = Some(sample);
                len
            }
            Ok(None) => IOX_EMPTY,
            Err(_) => -1,
        }
    })
}

/// Drops the sample of `iox_peek`, handing its slot back to the publisher (nothing if none is
/// held). 0, or -1 on failure.
///
/// # Safety
/// `rx` is a live handle from `iox_open_rx` of this process, used by one thread; the caller
/// no longer reads the held sample's bytes.
#[no_mangle]
pub unsafe extern "C" fn iox_release(rx: *mut c_void) -> c_int {
    guarded(-1, || {
        // SAFETY: a live Box<Rx> (the caller's contract), used by one thread, with no other
        // reference to it alive across this call.
        let rx = unsafe { &mut *(rx as *mut Rx) };
        rx.held = None;
        0
    })
}

/// Closes a handle from `iox_open_tx`: drops the publisher and its node (removing their files).
///
/// # Safety
/// `tx` is NULL or a handle from `iox_open_tx` of this process, not used afterwards.
#[no_mangle]
pub unsafe extern "C" fn iox_close_tx(tx: *mut c_void) -> c_int {
    guarded(-1, || {
        if !tx.is_null() {
            // SAFETY: a Box<Tx> from iox_open_tx, given back once (the caller's contract).
            drop(unsafe { Box::from_raw(tx as *mut Tx) });
        }
        0
    })
}

/// Closes a handle from `iox_open_rx`: drops the subscriber and its node.
///
/// # Safety
/// `rx` is NULL or a handle from `iox_open_rx` of this process, not used afterwards.
#[no_mangle]
pub unsafe extern "C" fn iox_close_rx(rx: *mut c_void) -> c_int {
    guarded(-1, || {
        if !rx.is_null() {
            // SAFETY: a Box<Rx> from iox_open_rx, given back once (the caller's contract).
            drop(unsafe { Box::from_raw(rx as *mut Rx) });
        }
        0
    })
}

/// Ends the run's domain, once every process using it is gone: removes every file iceoryx2
/// created for it. Nodes remove their own files when dropped, but two things stay otherwise:
/// what iceoryx2 never removes (its global management segment, a node counter in shared
/// memory kept for the domain's later runs, and its directories), and the resources of a node
/// whose process exited without dropping it. iceoryx2 removes the latter itself when another
/// node of the domain is created or dropped, but only for nodes it can tell are dead, and it
/// cannot here: a process forked after its parent used iceoryx2 inherits the parent's cached
/// process identity, so the parent and its other children take its nodes for their own, alive.
/// Returns the number of nodes that were left behind (0 after a clean run), or -1 on failure.
#[no_mangle]
pub extern "C" fn iox_cleanup() -> c_long {
    guarded(-1, || {
        let Some(domain) = DOMAIN.get() else {
            return 0;
        };
        let mut left = 0;
        let _ = Node::<Svc>::list(&domain.config, |state| {
            left += 1;
            if let NodeState::Dead(dead) = state {
                let _ = dead.try_remove_stale_resources();
            }
            CallbackProgression::Continue
        });
        // Shared-memory objects are files in /dev/shm on Linux; the prefix is this run's alone.
        if let Ok(dir) = std::fs::read_dir("/dev/shm") {
            for entry in dir.flatten() {
                if entry
                    .file_name()
                    .to_string_lossy()
                    .starts_with(&domain.prefix)
                {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
        match std::fs::remove_dir_all(&domain.root) {
            Ok(()) => left,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => left,
            Err(_) => -1,
        }
    })
}
