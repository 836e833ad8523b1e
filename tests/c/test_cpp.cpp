/*
 * The C++ interface's test suite (include/shmq.hpp; driven by tests/c_abi.rs, plain and under
 * ASan/UBSan; also runnable by hand):
 *
 *   make -C tests/c LIBDIR=target/debug && tests/c/build/test_cpp [--prefix P] [--only NAME]
 *
 * Every queue is named "<prefix>_<n>" and unlinked by its test (the driver also removes what
 * a crashed run left). Prints "N passed, N failed" last.
 */
#include "shmq.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <climits>
#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <string>
#include <new>
#include <vector>

using namespace std::chrono_literals;

// ----- a small harness ---------------------------------------------------------------------

static int checks_failed;
static const char *current_test = "";

#define CHECK(cond)                                                                    \
    do {                                                                               \
        if (!(cond)) {                                                                 \
            std::fprintf(stderr, "%s:%d: [%s] CHECK failed: %s\n", __FILE__, __LINE__, \
                         current_test, #cond);                                         \
            checks_failed++;                                                           \
        }                                                                              \
    } while (0)

/* Checks that `expr` throws shmq::Error with status `want` (and a non-empty text). */
#define CHECK_THROWS(expr, want)                                                          \
    do {                                                                                  \
        int got_ = -1;                                                                    \
        try {                                                                             \
            (void)(expr);                                                                 \
        } catch (const shmq::Error &e_) {                                                 \
            got_ = e_.status();                                                           \
            if (std::strlen(e_.what()) == 0) got_ = -2;                                   \
        }                                                                                 \
        if (got_ != (want)) {                                                             \
            std::fprintf(stderr, "%s:%d: [%s] %s: expected Error %s, got %d\n", __FILE__, \
                         __LINE__, current_test, #expr, #want, got_);                     \
            checks_failed++;                                                              \
        }                                                                                 \
    } while (0)

static std::string prefix = "cpptest";
static int name_counter;

static std::string fresh_name() { return prefix + "_" + std::to_string(name_counter++); }

/* Unlinks its queue when the test ends, however it ends. */
struct Cleanup {
    std::string name;
    ~Cleanup() {
        try {
            shmq::Queue::unlink(name);
        } catch (const shmq::Error &e) {
            std::fprintf(stderr, "[%s] unlink %s: %s\n", current_test, name.c_str(), e.what());
            checks_failed++;
        }
    }
};

/* Message `seq`'s bytes: "m<seq>:" then a pattern of `seq`, `len` bytes in all. */
static std::string pattern(uint64_t seq, size_t len) {
    std::string s = "m" + std::to_string(seq) + ":";
    while (s.size() < len) s.push_back(static_cast<char>('a' + (seq + s.size()) % 26));
    s.resize(len);
    return s;
}

static size_t pattern_len(uint64_t seq) { return 8 + seq % 50; }

/* Whether `len` bytes at `data` are message `*seq` for some seq below `total`. */
static bool parse(const uint8_t *data, size_t len, uint64_t total, uint64_t *seq) {
    const std::string m(reinterpret_cast<const char *>(data), len);
    if (m.size() < 3 || m[0] != 'm') return false;
    uint64_t n = 0;
    size_t i = 1;
    for (; i < m.size() && m[i] >= '0' && m[i] <= '9' && i < 12; i++)
        n = n * 10 + static_cast<uint64_t>(m[i] - '0');
    if (i == 1 || i >= m.size() || m[i] != ':' || n >= total) return false;
    *seq = n;
    return m == pattern(n, pattern_len(n));
}

// ----- tests -------------------------------------------------------------------------------

static void test_create_connect_unlink() {
    const std::string name = fresh_name();
    Cleanup cleanup{name};
    CHECK(std::strcmp(shmq::version(), SHMQ_VERSION) == 0);
    CHECK(std::strcmp(shmq::checksum_implementation(), shmq_checksum_implementation()) == 0);
    CHECK(std::strncmp(shmq::checksum_implementation(), "CRC32C, ", 8) == 0);
    shmq::Queue q = shmq::Queue::create(name, 8, 64);
    CHECK(q && q.capacity() == 8 && q.message_size() == 64 && q.size() == 0);
    CHECK(!q.is_shutdown() && !q.is_single_producer_single_consumer());
    CHECK(q.uses_real_fences() == (shmq_uses_real_fences(q.handle()) == 1));
    CHECK_THROWS(shmq::Queue::create(name, 8, 64), SHMQ_ERR_ALREADY_EXISTS);
    shmq::Options open;
    open.if_exists = shmq::IfExists::open;
    shmq::Queue same = shmq::Queue::create(name, 8, 64, open);
    CHECK(same.send("shared"));
    shmq::Queue other = shmq::Queue::connect(name);
    std::vector<uint8_t> buf;
    CHECK(other.receive(buf) && std::string(buf.begin(), buf.end()) == "shared");
    CHECK_THROWS(shmq::Queue::create(name, 9, 64, open), SHMQ_ERR_INVALID_ARGUMENT);

    // IfExists::replace: a fresh queue under the name; the handles on the old one keep it.
    CHECK(q.send("old"));
    shmq::Options spsc;
    spsc.single_producer_single_consumer = true;
    spsc.if_exists = shmq::IfExists::replace;
    shmq::Queue fresh = shmq::Queue::create(name, 4, 32, spsc);
    CHECK(fresh.is_single_producer_single_consumer() && fresh.capacity() == 4);
    CHECK(fresh.size() == 0 && q.size() == 1);
    shmq::Queue by_name = shmq::Queue::connect(name);
    CHECK(by_name.is_single_producer_single_consumer() && by_name.message_size() == 32);
    CHECK(shmq::Queue::unlink(name));
    CHECK(!shmq::Queue::unlink(name));
    CHECK_THROWS(shmq::Queue::connect(name), SHMQ_ERR_NOT_FOUND);
    CHECK_THROWS(shmq::Queue::connect(std::string("a\0b", 3)), SHMQ_ERR_INVALID_ARGUMENT);
    CHECK_THROWS(shmq::Queue::create("bad/name", 8, 64), SHMQ_ERR_INVALID_ARGUMENT);
    CHECK_THROWS(shmq::Queue::create(name, 0, 64), SHMQ_ERR_INVALID_ARGUMENT);
}

/* Options::mode sets the segment's permission bits; Options::checksum = false delivers a
 * message whose payload changed in shared memory, which a checksummed queue drops. */
static void test_options_mode_and_checksum() {
    for (bool checksum : {true, false}) {
        const std::string name = fresh_name();
        Cleanup cleanup{name};
        shmq::Options options;
        options.mode = 0640;
        options.checksum = checksum;
        shmq::Queue q = shmq::Queue::create(name, 4, 64, options);
        const std::string path = "/dev/shm/shmq." + name;
        struct stat st;
        CHECK(stat(path.c_str(), &st) == 0 && (st.st_mode & 0777) == 0640);
        CHECK(q.send("original") && q.send("second"));
        // Position 0's payload follows the 4096-byte header; its 64-byte slot header comes
        // after it (docs/LAYOUT.md).
        const int fd = open(path.c_str(), O_RDWR);
        CHECK(fd >= 0);
        if (fd >= 0) {
            void *map = mmap(nullptr, 8192, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
            CHECK(map != MAP_FAILED);
            if (map != MAP_FAILED) {
                auto *bytes = static_cast<unsigned char *>(map);
                CHECK(std::memcmp(bytes + 4096, "original", 8) == 0);
                bytes[4096] = 'X';
                munmap(map, 8192);
            }
            close(fd);
        }
        std::vector<uint8_t> buf;
        if (checksum) {
            CHECK_THROWS(q.receive(buf, shmq::no_wait), SHMQ_ERR_CORRUPTED_DATA);
        } else {
            CHECK(q.receive(buf, shmq::no_wait) &&
                  std::string(buf.begin(), buf.end()) == "Xriginal");
        }
        CHECK(q.receive(buf, shmq::no_wait) && std::string(buf.begin(), buf.end()) == "second");
    }
}

static void test_waits() {
    CHECK(shmq::Wait().milliseconds() == -1);
    CHECK(shmq::forever.milliseconds() == -1);
    CHECK(shmq::no_wait.milliseconds() == 0);
    CHECK(shmq::Wait(0ms).milliseconds() == 0);
    CHECK(shmq::Wait(-5s).milliseconds() == 0);
    CHECK(shmq::Wait(1us).milliseconds() == 1);
    CHECK(shmq::Wait(1500us).milliseconds() == 2);
    CHECK(shmq::Wait(std::chrono::duration<double, std::milli>(2.5)).milliseconds() == 3);
    CHECK(shmq::Wait(std::chrono::hours::max()).milliseconds() == INT_MAX);
    CHECK(shmq::Wait(std::chrono::nanoseconds::min()).milliseconds() == 0);
}

static void test_spin_limit() {
    const std::string name = fresh_name();
    Cleanup cleanup{name};
    shmq::Queue q = shmq::Queue::create(name, 2, 16);
    CHECK(q.spin_limit() == 10us);
    q.set_spin_limit(250us);
    CHECK(q.spin_limit() == 250us);
    q.set_spin_limit(std::chrono::duration<double, std::micro>(1.5));
    CHECK(q.spin_limit() == 1500ns);
    q.set_spin_limit(-3s);
    CHECK(q.spin_limit() == 0ns);
    q.set_spin_limit(std::chrono::hours::max());  // beyond 2^64 ns: never sleep
    CHECK(q.spin_limit() == std::chrono::nanoseconds::max());
    q.set_spin_limit(0ns);
    std::vector<uint8_t> buf;
    const shmq::Received r = q.receive(buf, 20ms);  // a zero limit still waits, asleep
    CHECK(!r && r.status == SHMQ_ERR_TIMEOUT);
    shmq::Queue empty;
    CHECK_THROWS(empty.spin_limit(), SHMQ_ERR_INVALID_ARGUMENT);
    CHECK_THROWS(empty.set_spin_limit(1us), SHMQ_ERR_INVALID_ARGUMENT);
}

static void test_send_receive() {
    const std::string name = fresh_name();
    Cleanup cleanup{name};
    shmq::Queue q = shmq::Queue::create(name, 4, 64);
    char small[4];
    shmq::Received r = q.receive(small, sizeof small, shmq::no_wait);
    CHECK(!r && r.status == SHMQ_ERR_EMPTY && !r.closed());
    r = q.receive(small, sizeof small, 5ms);
    CHECK(!r && r.status == SHMQ_ERR_TIMEOUT);
    for (int i = 0; i < 4; i++) CHECK(q.send(pattern(i, pattern_len(i)), shmq::no_wait));
    CHECK(!q.send("no room", shmq::no_wait));
    CHECK(!q.send("no room", 5ms));
    CHECK(q.size() == 4);
    CHECK_THROWS(q.receive(small, sizeof small), SHMQ_ERR_BUFFER_TOO_SMALL);
    CHECK(q.size() == 4);  // nothing taken
    std::vector<uint8_t> buf;
    for (uint64_t i = 0; i < 4; i++) {
        r = q.receive(buf);
        CHECK(r && r.len == pattern_len(i) && buf.size() == r.len && !r.redelivered);
        CHECK(std::string(buf.begin(), buf.end()) == pattern(i, pattern_len(i)));
    }
    r = q.receive(buf, shmq::no_wait);
    CHECK(!r && buf.empty());
    CHECK_THROWS(q.send(std::string(65, 'x')), SHMQ_ERR_MESSAGE_TOO_LARGE);
    CHECK(q.send_message(77, 123456789, "with id", 7));
    char out[64];
    r = q.receive(out, sizeof out);
    CHECK(r && r.id == 77 && r.timestamp_ns == 123456789 && r.len == 7);
    CHECK(q.send(nullptr, 0));  // an empty message
    r = q.receive(out, sizeof out);
    CHECK(r && r.len == 0);
    const shmq_queue_stats s = q.stats();
    CHECK(s.struct_size == sizeof s && s.messages_sent == 6 && s.messages_received == 6);
    CHECK(s.capacity == 4 && s.depth == 0);
}

static void test_shutdown_and_drain() {
    const std::string name = fresh_name();
    Cleanup cleanup{name};
    shmq::Queue q = shmq::Queue::create(name, 8, 32);
    CHECK(q.send("one") && q.send("two"));
    q.shutdown();
    q.shutdown();  // idempotent
    CHECK(q.is_shutdown());
    CHECK_THROWS(q.send("three"), SHMQ_ERR_CLOSED);
    std::vector<uint8_t> buf;
    CHECK(q.receive(buf) && std::string(buf.begin(), buf.end()) == "one");
    CHECK(q.receive(buf) && std::string(buf.begin(), buf.end()) == "two");
    shmq::Received r = q.receive(buf);  // waits forever, but the queue is shut and drained
    CHECK(!r && r.closed());
    shmq::ReceivedBatch b =
        q.receive_batch_in_place(8, [](const uint8_t *, size_t, const shmq::Received &) {});
    CHECK(!b && b.closed() && b.count == 0);
}

static void test_move_and_ownership() {
    const std::string name = fresh_name();
    Cleanup cleanup{name};
    shmq::Queue a = shmq::Queue::create(name, 8, 32);
    shmq::Queue b = std::move(a);
    CHECK(!a && b);  // the moved-from state is specified: an empty handle
    CHECK(a.capacity() == 0 && a.message_size() == 0 && a.size() == 0);
    CHECK_THROWS(a.send("x"), SHMQ_ERR_INVALID_ARGUMENT);
    CHECK_THROWS(a.is_shutdown(), SHMQ_ERR_INVALID_ARGUMENT);
    CHECK_THROWS(a.stats(), SHMQ_ERR_INVALID_ARGUMENT);
    char buf[32];
    CHECK_THROWS(a.receive(buf, sizeof buf, shmq::no_wait), SHMQ_ERR_INVALID_ARGUMENT);
    CHECK(b.send("kept"));
    shmq_queue *raw = b.release();
    CHECK(!b && raw != nullptr);
    shmq::Queue c(raw);
    CHECK(c.size() == 1);
    c = shmq::Queue::connect(name);  // closes the adopted handle
    CHECK(c.size() == 1);
    size_t len = 0;
    CHECK(shmq_receive(c.handle(), buf, sizeof buf, &len, 0) == SHMQ_OK && len == 4);
    shmq::Queue empty;
    CHECK(!empty);
}

static void test_in_place() {
    const std::string name = fresh_name();
    Cleanup cleanup{name};
    shmq::Queue q = shmq::Queue::create(name, 8, 16);
    CHECK(q.send_in_place([](uint8_t *slot, size_t capacity) {
        CHECK(capacity == 16);
        std::memcpy(slot, "abc", 3);
        return size_t{3};
    }));
    int calls = 0;
    shmq::Received r =
        q.receive_in_place([&](const uint8_t *data, size_t len, const shmq::Received &info) {
            calls++;
            CHECK(len == 3 && std::memcmp(data, "abc", 3) == 0 && info.len == 3 && info);
        });
    CHECK(r && r.len == 3 && calls == 1);

    // An exception from fill: rethrown; the slot is published poisoned and dropped once.
    bool caught = false;
    try {
        q.send_in_place([](uint8_t *, size_t) -> size_t { throw std::runtime_error("boom"); });
    } catch (const std::runtime_error &e) {
        caught = std::strcmp(e.what(), "boom") == 0;
    }
    CHECK(caught);
    CHECK_THROWS(q.send_in_place([](uint8_t *, size_t capacity) { return capacity + 1; }),
                 SHMQ_ERR_MESSAGE_TOO_LARGE);
    CHECK_THROWS(q.send_in_place([](uint8_t *, size_t) { return -1; }), SHMQ_ERR_INVALID_ARGUMENT);
    CHECK(q.send("after"));
    char buf[16];
    CHECK_THROWS(q.receive(buf, sizeof buf), SHMQ_ERR_CORRUPTED_DATA);
    CHECK_THROWS(q.receive(buf, sizeof buf), SHMQ_ERR_CORRUPTED_DATA);
    CHECK_THROWS(q.receive(buf, sizeof buf), SHMQ_ERR_CORRUPTED_DATA);
    r = q.receive(buf, sizeof buf);
    CHECK(r && r.len == 5 && std::memcmp(buf, "after", 5) == 0);
    CHECK(q.stats().corrupted == 3);

    // An exception from read: the message counts as received, the exception reaches us.
    CHECK(q.send("taken"));
    caught = false;
    try {
        q.receive_in_place([](const uint8_t *, size_t, const shmq::Received &) { throw 42; });
    } catch (int v) {
        caught = v == 42;
    }
    CHECK(caught && q.size() == 0);
    calls = 0;
    r = q.receive_in_place([&](const uint8_t *, size_t, const shmq::Received &) { calls++; },
                           shmq::no_wait);
    CHECK(!r && r.status == SHMQ_ERR_EMPTY && calls == 0);
    // No room: fill is not called.
    for (int i = 0; i < 8; i++) CHECK(q.send("x"));
    calls = 0;
    CHECK(!q.send_in_place(
        [&](uint8_t *, size_t) {
            calls++;
            return 0;
        },
        1ms));
    CHECK(calls == 0);
}

static void test_send_parts() {
    const std::string name = fresh_name();
    Cleanup cleanup{name};
    shmq::Queue q = shmq::Queue::create(name, 2, 64);
    const std::string header = "head:", body(59, 'b');
    CHECK(q.send_parts({header, "", body}));  // exactly 64 bytes
    // 20 parts through the pointer form.
    std::vector<std::string> many;
    for (int i = 0; i < 20; i++) many.push_back(std::string(1, static_cast<char>('a' + i)));
    std::vector<const void *> ptrs;
    std::vector<size_t> lens;
    for (const std::string &m : many) {
        ptrs.push_back(m.data());
        lens.push_back(m.size());
    }
    CHECK(q.send_parts(ptrs.data(), lens.data(), ptrs.size()));
    CHECK(!q.send_parts({"x"}, shmq::no_wait));  // full
    std::vector<uint8_t> buf(q.message_size());
    shmq::Received m = q.receive(buf.data(), buf.size());
    CHECK(m && std::string(reinterpret_cast<char *>(buf.data()), m.len) == header + body);
    m = q.receive(buf.data(), buf.size());
    CHECK(m && std::string(reinterpret_cast<char *>(buf.data()), m.len) ==
                   "abcdefghijklmnopqrst");
    bool thrown = false;
    try {
        q.send_parts({header, body, "!"});  // 65 bytes
    } catch (const shmq::Error &e) {
        thrown = e.status() == SHMQ_ERR_MESSAGE_TOO_LARGE;
    }
    CHECK(thrown && q.size() == 0);
    // Exactly the 32 parts the wrapper keeps in place, and one more (its heap), through the
    // list form.
    CHECK(q.send_parts({"a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k", "l", "m", "n",
                        "o", "p", "q", "r", "s", "t", "u", "v", "w", "x", "y", "z", "A", "B",
                        "C", "D", "E", "F"}));
    CHECK(q.send_parts({"a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k", "l", "m", "n",
                        "o", "p", "q", "r", "s", "t", "u", "v", "w", "x", "y", "z", "A", "B",
                        "C", "D", "E", "F", "G"}));
    m = q.receive(buf.data(), buf.size());
    CHECK(m && std::string(reinterpret_cast<char *>(buf.data()), m.len) ==
                   "abcdefghijklmnopqrstuvwxyzABCDEF");
    m = q.receive(buf.data(), buf.size());
    CHECK(m && std::string(reinterpret_cast<char *>(buf.data()), m.len) ==
                   "abcdefghijklmnopqrstuvwxyzABCDEFG");
}

static void test_batches() {
    const std::string name = fresh_name();
    Cleanup cleanup{name};
    shmq::Queue q = shmq::Queue::create(name, 8, 64);
    std::vector<std::string> msgs;
    for (uint64_t i = 0; i < 10; i++) msgs.push_back(pattern(i, pattern_len(i)));
    CHECK(q.send_batch(msgs) == 8);  // as many as fit
    CHECK(q.send_batch(msgs, shmq::no_wait) == 0);

    std::vector<uint8_t> buf(5 * q.message_size());
    shmq_message_info infos[5];
    shmq::ReceivedBatch b = q.receive_batch(buf.data(), buf.size(), infos, 5);
    CHECK(b && b.count == 5 && !b.dropped_corrupted);
    for (size_t i = 0; i < b.count; i++) {
        CHECK(infos[i].len == pattern_len(i));
        CHECK(std::string(reinterpret_cast<char *>(&buf[i * q.message_size()]), infos[i].len) ==
              pattern(i, pattern_len(i)));
    }
    uint64_t next = 5;
    b = q.receive_batch_in_place(8, [&](const uint8_t *data, size_t len, const shmq::Received &) {
        CHECK(std::string(reinterpret_cast<const char *>(data), len) ==
              pattern(next, pattern_len(next)));
        next++;
        return next < 7;  // false after message 6 ends the batch
    });
    CHECK(b && b.count == 2 && next == 7);
    b = q.receive_batch_in_place(8,
                                 [&](const uint8_t *, size_t, const shmq::Received &) { next++; });
    CHECK(b && b.count == 1 && next == 8);

    // Zero-copy batch send; an exception at index 2 ends it after 0 and 1 (then rethrown).
    size_t filled = 0;
    CHECK(q.send_batch_in_place(5, [&](size_t index, uint8_t *slot, size_t) {
        const std::string m = pattern(100 + index, 20);
        std::memcpy(slot, m.data(), m.size());
        filled++;
        return m.size();
    }) == 5);
    CHECK(filled == 5);
    bool caught = false;
    try {
        q.send_batch_in_place(3, [](size_t index, uint8_t *slot, size_t) -> size_t {
            if (index == 2) throw std::logic_error("third");
            slot[0] = static_cast<uint8_t>('0' + index);
            return 1;
        });
    } catch (const std::logic_error &) {
        caught = true;
    }
    CHECK(caught && q.size() == 8);
    // The 5 good ones, then 0 and 1, then the poisoned slot: dropped, reported, not thrown.
    std::vector<std::string> got;
    b = q.receive_batch_in_place(16, [&](const uint8_t *data, size_t len, const shmq::Received &) {
        got.emplace_back(reinterpret_cast<const char *>(data), len);
    });
    CHECK(b && b.count == 7 && b.dropped_corrupted && got.size() == 7);
    for (size_t i = 0; i < 5 && i < got.size(); i++) CHECK(got[i] == pattern(100 + i, 20));
    CHECK(got.size() == 7 && got[5] == "0" && got[6] == "1");
    CHECK(q.size() == 0);
    b = q.receive_batch(buf.data(), buf.size(), infos, 5, shmq::no_wait);
    CHECK(!b && b.status == SHMQ_ERR_EMPTY);
    CHECK(q.send_batch_in_place(0, [](size_t, uint8_t *, size_t) { return 0; }) == 0);

    // An exception from a batch read: the batch ends there (that message counts as
    // received) and the exception reaches us; the rest stays queued.
    CHECK(q.send_batch(std::vector<std::string>{"r0", "r1", "r2"}) == 3);
    {
        // A range longer than the 32 the wrapper keeps in place (in a queue with room for
        // 40): every message sent, in order.
        const std::string name40 = fresh_name();
        Cleanup cleanup40{name40};
        shmq::Queue big = shmq::Queue::create(name40, 40, 64);
        std::vector<std::string> forty;
        for (uint64_t i = 0; i < 40; i++) forty.push_back(pattern(i, pattern_len(i)));
        CHECK(big.send_batch(forty) == 40);
        std::vector<uint8_t> buf40(big.message_size());
        for (uint64_t i = 0; i < 40; i++) {
            shmq::Received r = big.receive(buf40.data(), buf40.size(), shmq::no_wait);
            CHECK(r && std::string(reinterpret_cast<char *>(buf40.data()), r.len) == forty[i]);
        }
    }
    int reads = 0;
    bool thrown = false;
    try {
        q.receive_batch_in_place(8, [&](const uint8_t *, size_t, const shmq::Received &) {
            if (++reads == 2) throw std::out_of_range("second");
        });
    } catch (const std::out_of_range &) {
        thrown = true;
    }
    CHECK(thrown && reads == 2 && q.size() == 1);
    std::vector<uint8_t> rest;
    CHECK(q.receive(rest, shmq::no_wait) && std::string(rest.begin(), rest.end()) == "r2");
    CHECK_THROWS(q.receive_batch(buf.data(), 10, infos, 5, shmq::no_wait),
                 SHMQ_ERR_BUFFER_TOO_SMALL);
    // A corrupted message first in a batch throws.
    CHECK_THROWS(q.send_in_place([](uint8_t *, size_t) { return -1; }), SHMQ_ERR_INVALID_ARGUMENT);
    CHECK_THROWS(q.receive_batch(buf.data(), buf.size(), infos, 5), SHMQ_ERR_CORRUPTED_DATA);
}

/* One consumer process: takes messages with every receive form in turn until the queue is
 * shut down and drained, checking each, and marks each seq in `seen`. Exit status 0 if all
 * were well formed. */
static int consume(const std::string &name, std::atomic<uint8_t> *seen, uint64_t total) {
    // A consumer outlives neither its parent nor a stalled producer: the test fails instead.
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    const shmq::Wait patience = std::chrono::seconds(30);
    try {
        shmq::Queue q = shmq::Queue::connect(name);
        std::vector<uint8_t> buf;
        std::vector<uint8_t> batch_buf(8 * q.message_size());
        shmq_message_info infos[8];
        int bad = 0;
        auto take = [&](const uint8_t *data, size_t len) {
            uint64_t seq = 0;
            if (parse(data, len, total, &seq)) {
                seen[seq].fetch_add(1);
            } else {
                bad++;
            }
        };
        for (unsigned turn = 0;; turn++) {
            shmq_status status = SHMQ_OK;
            switch (turn % 4) {
                case 0: {
                    shmq::Received r = q.receive(buf, patience);
                    if (r) take(buf.data(), r.len);
                    status = r.status;
                    break;
                }
                case 1: {
                    status = q.receive_in_place([&](const uint8_t *data, size_t len,
                                                    const shmq::Received &) { take(data, len); },
                                                patience)
                                 .status;
                    break;
                }
                case 2: {
                    shmq::ReceivedBatch b =
                        q.receive_batch(batch_buf.data(), batch_buf.size(), infos, 8, patience);
                    for (size_t i = 0; i < b.count; i++)
                        take(&batch_buf[i * q.message_size()], infos[i].len);
                    status = b.status;
                    break;
                }
                default: {
                    status = q.receive_batch_in_place(
                                  8,
                                  [&](const uint8_t *data, size_t len, const shmq::Received &) {
                                      take(data, len);
                                  },
                                  patience)
                                 .status;
                    break;
                }
            }
            if (status == SHMQ_ERR_CLOSED) break;
            if (status != SHMQ_OK) return 3;  // nothing for 30 s: the producer stalled
        }
        return bad == 0 ? 0 : 1;
    } catch (const std::exception &e) {
        std::fprintf(stderr, "consumer: %s\n", e.what());
        return 2;
    }
}

/* `consumers` child processes take what this process sends with every send form in turn
 * through an 8-slot queue; each message must arrive exactly once. */
static void across_processes(bool spsc, int consumers) {
    const uint64_t total = 3000;
    const std::string name = fresh_name();
    Cleanup cleanup{name};
    shmq::Options options;
    options.single_producer_single_consumer = spsc;
    shmq::Queue q = shmq::Queue::create(name, 8, 64, options);
    void *map = mmap(nullptr, total, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    CHECK(map != MAP_FAILED);
    if (map == MAP_FAILED) return;
    auto *seen = static_cast<std::atomic<uint8_t> *>(map);
    for (uint64_t i = 0; i < total; i++) new (&seen[i]) std::atomic<uint8_t>(0);
    std::vector<pid_t> pids;
    for (int c = 0; c < consumers; c++) {
        std::fflush(nullptr);
        const pid_t pid = fork();
        if (pid == 0) _exit(consume(name, seen, total));
        CHECK(pid > 0);
        if (pid > 0) pids.push_back(pid);
    }
    uint64_t seq = 0;
    for (unsigned turn = 0; seq < total; turn++) {
        switch (turn % 4) {
            case 0:
                CHECK(q.send(pattern(seq, pattern_len(seq))));
                seq++;
                break;
            case 1:
                CHECK(q.send_in_place([&](uint8_t *slot, size_t) {
                    const std::string m = pattern(seq, pattern_len(seq));
                    std::memcpy(slot, m.data(), m.size());
                    return m.size();
                }));
                seq++;
                break;
            case 2: {
                std::vector<std::string> msgs;
                for (uint64_t s = seq; s < total && s < seq + 5; s++)
                    msgs.push_back(pattern(s, pattern_len(s)));
                seq += q.send_batch(msgs);
                break;
            }
            default:
                seq += q.send_batch_in_place(
                    std::min<uint64_t>(total - seq, 6), [&](size_t i, uint8_t *slot, size_t) {
                        const std::string m = pattern(seq + i, pattern_len(seq + i));
                        std::memcpy(slot, m.data(), m.size());
                        return m.size();
                    });
                break;
        }
    }
    q.shutdown();
    for (pid_t pid : pids) {
        int status = 0;
        CHECK(waitpid(pid, &status, 0) == pid);
        CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    }
    uint64_t once = 0;
    for (uint64_t i = 0; i < total; i++) once += seen[i].load() == 1;
    CHECK(once == total);
    munmap(map, total);
}

static void test_across_processes() { across_processes(false, 2); }
static void test_across_processes_spsc() { across_processes(true, 1); }

// ----- main --------------------------------------------------------------------------------

struct Test {
    const char *name;
    void (*run)();
};

static const Test tests[] = {
    {"create_connect_unlink", test_create_connect_unlink},
    {"waits", test_waits},
    {"options_mode_and_checksum", test_options_mode_and_checksum},
    {"send_receive", test_send_receive},
    {"spin_limit", test_spin_limit},
    {"shutdown_and_drain", test_shutdown_and_drain},
    {"move_and_ownership", test_move_and_ownership},
    {"in_place", test_in_place},
    {"send_parts", test_send_parts},
    {"batches", test_batches},
    {"across_processes", test_across_processes},
    {"across_processes_spsc", test_across_processes_spsc},
};

int main(int argc, char **argv) {
    const char *only = nullptr;
    for (int i = 1; i < argc; i++) {
        if (std::strcmp(argv[i], "--prefix") == 0 && i + 1 < argc) {
            prefix = argv[++i];
        } else if (std::strcmp(argv[i], "--only") == 0 && i + 1 < argc) {
            only = argv[++i];
        }
    }
    if (prefix == "cpptest") prefix += std::to_string(getpid());
#if defined(__SANITIZE_ADDRESS__)
    std::printf("sanitizers: address+undefined\n");
#else
    std::printf("sanitizers: none\n");
#endif
    int passed = 0, failed = 0;
    for (const Test &t : tests) {
        if (only != nullptr && std::strcmp(only, t.name) != 0) continue;
        current_test = t.name;
        const int before = checks_failed;
        alarm(120);  // a test that hangs fails the suite (SIGALRM) rather than stall it
        try {
            t.run();
        } catch (const std::exception &e) {
            std::fprintf(stderr, "[%s] unexpected exception: %s\n", t.name, e.what());
            checks_failed++;
        }
        alarm(0);
        if (checks_failed == before) {
            std::printf("test %s ... ok\n", t.name);
            passed++;
        } else {
            std::printf("test %s ... FAILED\n", t.name);
            failed++;
        }
        std::fflush(stdout);
    }
    std::printf("%d passed, %d failed\n", passed, failed);
    return failed == 0 && passed > 0 ? 0 : 1;
}
