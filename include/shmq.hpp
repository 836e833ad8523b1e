/*
 * shmq.hpp: a C++17 interface to shmq, header-only, over the C ABI of shmq.h (link with
 * -lshmq as for C). Written by hand; shmq.h stays the contract.
 *
 *   shmq::Queue q = shmq::Queue::create("tasks", 256, 1024);
 *   q.send("hello");                                  // waits for room
 *   std::vector<uint8_t> buf(q.message_size());
 *   while (shmq::Received m = q.receive(buf.data(), buf.size()))   // waits for a message
 *       handle(buf.data(), m.len);                    // ends once shut down and drained
 *
 * Conventions (docs/C_API.md, "C++"):
 *  - Failures throw shmq::Error, whose status() is the C status and what() the library's
 *    detail. Outcomes a caller plans for are return values: a send that finds no room in
 *    time returns false; a receive that gets nothing returns a Received whose status says
 *    why (SHMQ_ERR_EMPTY, SHMQ_ERR_TIMEOUT, or SHMQ_ERR_CLOSED once the queue is shut down
 *    and drained), and which converts to false.
 *  - Every waiting call takes a shmq::Wait: shmq::forever (the default), shmq::no_wait, or
 *    any std::chrono duration (rounded up to whole milliseconds).
 *  - An exception thrown by a fill or read callback never crosses the C library: the call
 *    ends as documented for a failing callback (a fill's message is cancelled, a read's
 *    message counts as received) and the exception is then rethrown to the caller.
 *  - A Queue owns its handle (closed by the destructor) and is movable, not copyable; one
 *    Queue may be used by many threads at once, as a shmq_queue may.
 */
#ifndef SHMQ_HPP
#define SHMQ_HPP

#include "shmq.h"

#include <chrono>
#include <climits>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <initializer_list>
#include <iterator>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

namespace shmq {

/// A failed call: `status()` is the C status code, `what()` the library's detail.
class Error : public std::runtime_error {
public:
    Error(shmq_status status, const std::string &what)
        : std::runtime_error(what), status_(status) {}
    shmq_status status() const noexcept { return status_; }

private:
    shmq_status status_;
};

namespace detail {

/// Throws the Error for `status`, with this thread's last error as its text.
[[noreturn]] inline void raise(shmq_status status) {
    std::string text = shmq_last_error();
    if (text.empty()) text = shmq_status_str(status);
    throw Error(status, text);
}

inline void check(shmq_status status) {
    if (status != SHMQ_OK) raise(status);
}

/// A name for the C calls: refuses an embedded NUL, which the C string would silently cut.
inline const char *c_name(const std::string &name) {
    if (name.find('\0') != std::string::npos) {
        throw Error(SHMQ_ERR_INVALID_ARGUMENT, "shmq: queue name contains a NUL byte");
    }
    return name.c_str();
}

/// The pointers and lengths of byte strings, for the C calls that take arrays of them
/// (`shmq_send_batch`, `shmq_send_parts`): up to 32 kept in place, more on the heap, so a
/// call with a few buffers allocates nothing.
class ByteArrays {
public:
    void push(std::string_view bytes) {
        if (count_ == on_stack && heap_pointers_.empty()) {
            heap_pointers_.assign(pointers_, pointers_ + on_stack);
            heap_lengths_.assign(lengths_, lengths_ + on_stack);
        }
        if (count_ < on_stack) {
            pointers_[count_] = bytes.data();
            lengths_[count_] = bytes.size();
        } else {
            heap_pointers_.push_back(bytes.data());
            heap_lengths_.push_back(bytes.size());
        }
        count_++;
    }
    const void *const *pointers() const {
        return count_ <= on_stack ? pointers_ : heap_pointers_.data();
    }
    const size_t *lengths() const { return count_ <= on_stack ? lengths_ : heap_lengths_.data(); }
    size_t size() const { return count_; }

private:
    static constexpr size_t on_stack = 32;
    const void *pointers_[on_stack];
    size_t lengths_[on_stack];
    std::vector<const void *> heap_pointers_;
    std::vector<size_t> heap_lengths_;
    size_t count_ = 0;
};

}  // namespace detail

/// How long a call may wait: `forever` (the default), `no_wait`, or a duration.
class Wait {
public:
    /// Waits without limit.
    constexpr Wait() noexcept = default;

    /// Waits at most `d`, rounded up to whole milliseconds (a positive wait below 1 ms
    /// waits 1 ms; zero or negative does not wait; beyond INT_MAX ms waits INT_MAX ms).
    /// Implicit, so that a duration can be passed as is: `q.send(m, 5ms)`.
    template <class Rep, class Period>
    Wait(std::chrono::duration<Rep, Period> d) noexcept : ms_(to_ms(d)) {}

    static constexpr Wait forever() noexcept { return Wait(-1, 0); }
    static constexpr Wait none() noexcept { return Wait(0, 0); }

    /// The C API's `timeout_ms`: -1, 0, or a positive number of milliseconds.
    constexpr int milliseconds() const noexcept { return ms_; }

private:
    constexpr Wait(int ms, int) noexcept : ms_(ms) {}

    template <class Rep, class Period>
    static int to_ms(std::chrono::duration<Rep, Period> d) noexcept {
        // Through double: no integer overflow for huge durations, and NaN compares false.
        const double ms = std::chrono::duration<double, std::milli>(d).count();
        if (!(ms > 0)) return 0;
        if (ms >= static_cast<double>(INT_MAX)) return INT_MAX;
        return static_cast<int>(std::ceil(ms));
    }

    int ms_ = -1;
};

/// Wait without limit.
inline constexpr Wait forever = Wait::forever();
/// Do not wait: a full queue fails the send, an empty one the receive, at once.
inline constexpr Wait no_wait = Wait::none();

/// What `Queue::create` does when a queue of that name exists.
enum class IfExists {
    fail,     ///< throw Error with SHMQ_ERR_ALREADY_EXISTS
    open,     ///< connect to it (capacity and message size must match)
    replace,  ///< unlink it and create a fresh one
};

/// Options of `Queue::create` (see shmq_create_with).
struct Options {
    /// Permission bits of the segment (0 = 0600; the umask does not apply).
    uint32_t mode = 0;
    /// Messages carry a CRC32C that receivers verify.
    bool checksum = true;
    /// One sending and one receiving handle at a time, without atomic read-modify-writes.
    bool single_producer_single_consumer = false;
    IfExists if_exists = IfExists::fail;
};

/// The outcome of a receive: a message (converts to true; `len` bytes, its id, timestamp
/// and whether it is a redelivery) or the reason there is none.
struct Received {
    /// SHMQ_OK, or SHMQ_ERR_EMPTY (nothing there and no wait), SHMQ_ERR_TIMEOUT, or
    /// SHMQ_ERR_CLOSED (the queue is shut down and drained).
    shmq_status status = SHMQ_ERR_EMPTY;
    size_t len = 0;
    uint64_t id = 0;
    uint64_t timestamp_ns = 0;
    /// The message had been handed to a receiver that died before finishing with it.
    bool redelivered = false;

    explicit operator bool() const noexcept { return status == SHMQ_OK; }
    bool closed() const noexcept { return status == SHMQ_ERR_CLOSED; }

    static Received from(const shmq_message_info &info) noexcept {
        Received r;
        r.status = SHMQ_OK;
        r.len = info.len;
        r.id = info.id;
        r.timestamp_ns = info.timestamp_ns;
        r.redelivered = (info.flags & SHMQ_MESSAGE_REDELIVERED) != 0;
        return r;
    }
};

/// The outcome of a batch receive: how many messages (at least 1, converts to true), or
/// the reason there are none (as in `Received`).
struct ReceivedBatch {
    shmq_status status = SHMQ_ERR_EMPTY;
    size_t count = 0;
    /// The batch ended at a message that failed verification, dropped after the `count`
    /// good ones (a batch that meets one first throws SHMQ_ERR_CORRUPTED_DATA instead).
    bool dropped_corrupted = false;

    explicit operator bool() const noexcept { return status == SHMQ_OK; }
    bool closed() const noexcept { return status == SHMQ_ERR_CLOSED; }
};

/// The library's version ("MAJOR.MINOR.PATCH"; SHMQ_VERSION is the header's).
inline const char *version() noexcept { return shmq_version(); }

/// Which CRC32C implementation this process uses for message checksums (static text; see
/// `shmq_checksum_implementation`): the same checksum on every CPU, not the same speed.
inline const char *checksum_implementation() noexcept { return shmq_checksum_implementation(); }

/// An open queue. Create with `Queue::create` or `Queue::connect`.
class Queue {
public:
    /// An empty handle: its calls throw SHMQ_ERR_INVALID_ARGUMENT, except `capacity()`,
    /// `message_size()` and `size()`, which return 0 (and `operator bool`, false).
    Queue() noexcept = default;

    /// Takes ownership of `handle` (from shmq_create/shmq_connect; may be NULL).
    explicit Queue(shmq_queue *handle) noexcept : q_(handle) {}

    Queue(Queue &&other) noexcept : q_(std::exchange(other.q_, nullptr)) {}
    Queue &operator=(Queue &&other) noexcept {
        if (this != &other) {
            shmq_close(q_);
            q_ = std::exchange(other.q_, nullptr);
        }
        return *this;
    }
    Queue(const Queue &) = delete;
    Queue &operator=(const Queue &) = delete;
    ~Queue() { shmq_close(q_); }

    /// Creates a queue of `capacity` slots of `message_size` bytes (see shmq_create_with).
    static Queue create(const std::string &name, uint32_t capacity, uint32_t message_size,
                        const Options &options = {}) {
        uint32_t flags = 0;
        if (!options.checksum) flags |= SHMQ_CREATE_NO_CHECKSUM;
        if (options.single_producer_single_consumer)
            flags |= SHMQ_CREATE_SINGLE_PRODUCER_SINGLE_CONSUMER;
        if (options.if_exists == IfExists::open) flags |= SHMQ_CREATE_OPEN_EXISTING;
        if (options.if_exists == IfExists::replace) flags |= SHMQ_CREATE_REPLACE;
        shmq_queue *q = nullptr;
        detail::check(shmq_create_with(detail::c_name(name), capacity, message_size, options.mode,
                                       flags, &q));
        return Queue(q);
    }

    /// Connects to an existing queue (SHMQ_ERR_NOT_FOUND if there is none).
    static Queue connect(const std::string &name) {
        shmq_queue *q = nullptr;
        detail::check(shmq_connect(detail::c_name(name), &q));
        return Queue(q);
    }

    /// Removes the queue's name; false if there was no such queue.
    static bool unlink(const std::string &name) {
        const shmq_status status = shmq_unlink(detail::c_name(name));
        if (status == SHMQ_ERR_NOT_FOUND) return false;
        detail::check(status);
        return true;
    }

    /// The C handle, for calls this header does not wrap (still owned by this Queue).
    shmq_queue *handle() const noexcept { return q_; }
    /// Gives up ownership: the caller must shmq_close the returned handle.
    shmq_queue *release() noexcept { return std::exchange(q_, nullptr); }
    explicit operator bool() const noexcept { return q_ != nullptr; }

    uint32_t capacity() const noexcept { return shmq_capacity(q_); }
    uint32_t message_size() const noexcept { return shmq_message_size(q_); }
    /// Messages in the queue now (including ones being written or read).
    size_t size() const noexcept { return shmq_len(q_); }
    bool is_shutdown() const { return flag(shmq_is_shutdown(q_)); }
    bool is_single_producer_single_consumer() const {
        return flag(shmq_is_single_producer_single_consumer(q_));
    }
    /// Whether every send and receive on the queue fences for real: a process that cannot
    /// call membarrier joined it (shmq_uses_real_fences).
    bool uses_real_fences() const { return flag(shmq_uses_real_fences(q_)); }

    /// How long blocking calls on this handle poll before they sleep (shmq_spin_limit).
    std::chrono::nanoseconds spin_limit() const {
        uint64_t ns = 0;
        detail::check(shmq_spin_limit(q_, &ns));
        const uint64_t most = static_cast<uint64_t>(std::chrono::nanoseconds::max().count());
        return std::chrono::nanoseconds(static_cast<std::chrono::nanoseconds::rep>(
            ns < most ? ns : most));
    }
    /// Sets it (shmq_set_spin_limit): zero or negative sleeps after one look,
    /// `std::chrono::nanoseconds::max()` (or more) never sleeps. Durations are counted in
    /// whole nanoseconds, rounded down.
    template <class Rep, class Period>
    void set_spin_limit(std::chrono::duration<Rep, Period> limit) {
        // Through double: no integer overflow for huge durations, and NaN compares false.
        const double ns = std::chrono::duration<double, std::nano>(limit).count();
        uint64_t value = 0;
        if (ns >= 18446744073709551615.0) {
            value = UINT64_MAX;
        } else if (ns > 0) {
            value = static_cast<uint64_t>(ns);
        }
        detail::check(shmq_set_spin_limit(q_, value));
    }

    shmq_queue_stats stats() const {
        shmq_queue_stats s{};
        s.struct_size = sizeof s;
        detail::check(shmq_stats(q_, &s));
        return s;
    }

    /// Closes the queue for sending, for every process (receivers drain it). Idempotent.
    void shutdown() { detail::check(shmq_shutdown(q_)); }

    // ----- sending ---------------------------------------------------------------------

    /// Sends `len` bytes; false if there was no room within `wait`. Throws Error for the
    /// rest (SHMQ_ERR_CLOSED after shutdown, SHMQ_ERR_MESSAGE_TOO_LARGE, ...).
    bool send(const void *data, size_t len, Wait wait = forever) {
        return sent(shmq_send(q_, data, len, wait.milliseconds()));
    }
    bool send(std::string_view bytes, Wait wait = forever) {
        return send(bytes.data(), bytes.size(), wait);
    }
    /// Refused: `send("text", 0)` would take the 0 as a length (through the pointer form),
    /// not as "do not wait". Write `send("text", shmq::no_wait)` or a duration.
    template <std::size_t N, class Int, std::enable_if_t<std::is_integral_v<Int>, int> = 0>
    bool send(const char (&)[N], Int) = delete;

    /// `send` with the id and timestamp chosen by the caller.
    bool send_message(uint64_t id, uint64_t timestamp_ns, const void *data, size_t len,
                      Wait wait = forever) {
        return sent(shmq_send_message(q_, id, timestamp_ns, data, len, wait.milliseconds()));
    }

    /// Gather send: one message made of `count` parts (`parts[i]`, `lens[i]` bytes), copied
    /// into the queue one after another without assembling them first. False if there was
    /// no room within `wait`; throws Error for the rest (as `send`).
    bool send_parts(const void *const *parts, const size_t *lens, size_t count,
                    Wait wait = forever) {
        return sent(shmq_send_parts(q_, parts, lens, count, wait.milliseconds(), 0));
    }
    /// `send_parts` of byte strings: `q.send_parts({header, body})` (up to 32 parts without
    /// an allocation).
    bool send_parts(std::initializer_list<std::string_view> parts, Wait wait = forever) {
        detail::ByteArrays arrays;
        for (const std::string_view part : parts) arrays.push(part);
        return send_parts(arrays.pointers(), arrays.lengths(), arrays.size(), wait);
    }

    /// Zero-copy send: `fill(uint8_t *slot, size_t capacity) -> size_t` writes the message
    /// into shared memory and returns its length. False if there was no room within `wait`
    /// (`fill` not called). A length above `capacity` throws SHMQ_ERR_MESSAGE_TOO_LARGE; an
    /// exception from `fill` is rethrown. Either way the slot is published as a poisoned
    /// message, which its receiver drops (one SHMQ_ERR_CORRUPTED_DATA).
    template <class Fill>
    bool send_in_place(Fill &&fill, Wait wait = forever) {
        FillCall<Fill> call{fill, nullptr};
        const shmq_status status =
            shmq_send_in_place(q_, &FillCall<Fill>::trampoline, &call, wait.milliseconds(), 0);
        if (call.error) std::rethrow_exception(call.error);
        return sent(status);
    }

    /// Sends `count` messages (`msgs[i]`, `lens[i]` bytes) in order with one wait (for the
    /// first) and one wake-up: returns how many were sent (as many as fit; 0 if there was
    /// no room within `wait`). Send the rest again to send them all.
    size_t send_batch(const void *const *msgs, const size_t *lens, size_t count,
                      Wait wait = forever) {
        size_t n = 0;
        return sent(shmq_send_batch(q_, msgs, lens, count, &n, wait.milliseconds(), 0)) ? n : 0;
    }

    /// `send_batch` over a range of byte strings (anything convertible to std::string_view).
    template <class Range>
    size_t send_batch(const Range &messages, Wait wait = forever) {
        using Element = decltype(*std::begin(messages));
        // The bytes must outlive the loop below: elements the range makes on the fly (a
        // transforming view yielding std::string) would be gone before the call.
        static_assert(std::is_lvalue_reference_v<Element> ||
                          std::is_same_v<std::decay_t<Element>, std::string_view> ||
                          std::is_same_v<std::decay_t<Element>, const char *>,
                      "send_batch: the range must yield references to stored messages (or "
                      "string_views / C strings); store temporaries in a container first");
        detail::ByteArrays arrays;  // up to 32 messages without an allocation
        for (const auto &m : messages) arrays.push(std::string_view(m));
        return send_batch(arrays.pointers(), arrays.lengths(), arrays.size(), wait);
    }

    /// Zero-copy batch send: for index 0, 1, ... up to `count - 1` while slots are free,
    /// `fill(size_t index, uint8_t *slot, size_t capacity) -> size_t` writes message
    /// `index`. Returns how many were sent (0 if there was no room within `wait`); `fill`
    /// ran exactly that many times. A bad length or an exception from `fill` ends the batch
    /// as in `send_in_place` (the messages before it are sent; positions claimed after it
    /// on a multi-producer queue are given up, and receivers skip them).
    template <class Fill>
    size_t send_batch_in_place(size_t count, Fill &&fill, Wait wait = forever) {
        FillCall<Fill> call{fill, nullptr};
        size_t n = 0;
        const shmq_status status = shmq_send_batch_in_place(
            q_, &FillCall<Fill>::batch_trampoline, &call, count, &n, wait.milliseconds(), 0);
        if (call.error) std::rethrow_exception(call.error);
        return sent(status) ? n : 0;
    }

    // ----- receiving -------------------------------------------------------------------

    /// Receives the next message into `buf` (`buf_len` bytes; `message_size()` always
    /// suffices). Throws SHMQ_ERR_BUFFER_TOO_SMALL (nothing taken), SHMQ_ERR_CORRUPTED_DATA
    /// (the bad message is dropped; receive again) and other failures.
    Received receive(void *buf, size_t buf_len, Wait wait = forever) {
        shmq_message_info info{};
        const shmq_status status =
            shmq_receive_message(q_, buf, buf_len, &info, wait.milliseconds());
        return status == SHMQ_OK ? Received::from(info) : nothing(status);
    }

    /// Receives into `buf`, sized to the message: resized to `message_size()` first, then to
    /// the message's length (no allocation once its capacity suffices). On no message, `buf`
    /// is left empty.
    Received receive(std::vector<uint8_t> &buf, Wait wait = forever) {
        buf.resize(message_size());
        try {
            Received r = receive(buf.data(), buf.size(), wait);
            buf.resize(r ? r.len : 0);
            return r;
        } catch (...) {
            buf.clear();  // no message: empty, as on any other outcome without one
            throw;
        }
    }

    /// Zero-copy receive: `read(const uint8_t *data, size_t len, const Received &info)` reads
    /// the message where it lies in shared memory (valid only during the call); the slot is
    /// freed when `read` returns. An exception from `read` is rethrown after the slot is
    /// freed (the message counts as received). The bytes are shared memory a hostile process
    /// could change: use `receive` when peers are untrusted.
    template <class Read>
    Received receive_in_place(Read &&read, Wait wait = forever) {
        ReadCall<Read> call{read, nullptr, {}};
        const shmq_status status =
            shmq_receive_in_place(q_, &ReadCall<Read>::trampoline, &call, wait.milliseconds(), 0);
        if (call.error) std::rethrow_exception(call.error);
        return status == SHMQ_OK ? call.last : nothing(status);
    }

    /// Receives up to `max_messages` (at most SHMQ_RECEIVE_BATCH_MAX and `buf_len /
    /// message_size()`) with one wait: message `i` at `buf + i * message_size()`, its
    /// metadata in `infos[i]`. A message that fails verification is dropped and ends the
    /// batch (`dropped_corrupted`; it throws SHMQ_ERR_CORRUPTED_DATA if no other message was
    /// received).
    ReceivedBatch receive_batch(void *buf, size_t buf_len, shmq_message_info *infos,
                                size_t max_messages, Wait wait = forever) {
        size_t n = 0;
        const shmq_status status =
            shmq_receive_batch(q_, buf, buf_len, infos, max_messages, &n, wait.milliseconds(), 0);
        return batch(status, n);
    }

    /// Zero-copy batch receive: waits for the first message, then takes up to
    /// `max_messages` without waiting again, calling `read(const uint8_t *data, size_t len,
    /// const Received &info)` for each in order, freeing each slot as its `read` returns.
    /// `read` may return bool: false ends the batch after that message. An exception from
    /// `read` ends the batch (that message counts as received) and is rethrown. A message
    /// that fails verification ends it as in `receive_batch`.
    template <class Read>
    ReceivedBatch receive_batch_in_place(size_t max_messages, Read &&read, Wait wait = forever) {
        ReadCall<Read> call{read, nullptr, {}};
        size_t n = 0;
        const shmq_status status = shmq_receive_batch_in_place(
            q_, &ReadCall<Read>::batch_trampoline, &call, max_messages, &n, wait.milliseconds(), 0);
        if (call.error) std::rethrow_exception(call.error);
        return batch(status, n);
    }

private:
    static bool flag(int value) {
        if (value < 0) {
            throw Error(SHMQ_ERR_INVALID_ARGUMENT,
                        "shmq: empty Queue (moved from or default-constructed)");
        }
        return value != 0;
    }

    /// true on success, false for "no room in time", throws otherwise.
    static bool sent(shmq_status status) {
        if (status == SHMQ_OK) return true;
        if (status == SHMQ_ERR_FULL || status == SHMQ_ERR_TIMEOUT) return false;
        detail::raise(status);
    }

    /// The Received for "no message" statuses; throws for the others.
    static Received nothing(shmq_status status) {
        if (status != SHMQ_ERR_EMPTY && status != SHMQ_ERR_TIMEOUT && status != SHMQ_ERR_CLOSED) {
            detail::raise(status);
        }
        Received r;
        r.status = status;
        return r;
    }

    static ReceivedBatch batch(shmq_status status, size_t n) {
        if (status == SHMQ_OK) return ReceivedBatch{status, n, false};
        if (status == SHMQ_ERR_CORRUPTED_DATA && n > 0) return ReceivedBatch{SHMQ_OK, n, true};
        return ReceivedBatch{nothing(status).status, 0, false};
    }

    template <class Fill>
    struct FillCall {
        Fill &fill;
        std::exception_ptr error;

        /// The callback's length in the C convention: negative cancels (the library's
        /// SHMQ_ERR_INVALID_ARGUMENT), above `capacity` is refused (its
        /// SHMQ_ERR_MESSAGE_TOO_LARGE; clamped so that no length wraps to a negative one).
        template <class N>
        static int64_t length(N len, size_t capacity) noexcept {
            static_assert(std::is_integral_v<N> && !std::is_same_v<N, bool>,
                          "a fill callback returns the message length (an integer)");
            if constexpr (std::is_signed_v<N>) {
                if (len < 0) return -1;
            }
            const auto n = static_cast<std::make_unsigned_t<N>>(len);
            return static_cast<int64_t>(n > capacity ? capacity + 1 : static_cast<size_t>(n));
        }

        static int64_t trampoline(void *ctx, uint8_t *slot, size_t capacity) noexcept {
            auto *call = static_cast<FillCall *>(ctx);
            try {
                return length(call->fill(slot, capacity), capacity);
            } catch (...) {
                call->error = std::current_exception();
                return -1;
            }
        }

        static int64_t batch_trampoline(void *ctx, size_t index, uint8_t *slot,
                                        size_t capacity) noexcept {
            auto *call = static_cast<FillCall *>(ctx);
            try {
                return length(call->fill(index, slot, capacity), capacity);
            } catch (...) {
                call->error = std::current_exception();
                return -1;
            }
        }
    };

    template <class Read>
    struct ReadCall {
        Read &read;
        std::exception_ptr error;
        Received last;

        static void trampoline(void *ctx, const uint8_t *data, size_t len,
                               const shmq_message_info *info) noexcept {
            auto *call = static_cast<ReadCall *>(ctx);
            call->last = Received::from(*info);
            try {
                call->read(data, len, static_cast<const Received &>(call->last));
            } catch (...) {
                call->error = std::current_exception();
            }
        }

        static int batch_trampoline(void *ctx, const uint8_t *data, size_t len,
                                    const shmq_message_info *info) noexcept {
            auto *call = static_cast<ReadCall *>(ctx);
            call->last = Received::from(*info);
            try {
                using Result =
                    decltype(call->read(data, len, static_cast<const Received &>(call->last)));
                // Not any type that converts to bool: a C-style `int` (0 = go on) would mean
                // the opposite here.
                static_assert(std::is_void_v<Result> || std::is_same_v<Result, bool>,
                              "a batch read callback returns void or bool (false ends the batch)");
                if constexpr (std::is_void_v<Result>) {
                    call->read(data, len, static_cast<const Received &>(call->last));
                    return 0;
                } else {
                    return call->read(data, len, static_cast<const Received &>(call->last)) ? 0 : 1;
                }
            } catch (...) {
                call->error = std::current_exception();
                return 1;
            }
        }
    };

    shmq_queue *q_ = nullptr;
};

}  // namespace shmq

#endif  // SHMQ_HPP
