// Boost.Interprocess message_queue behind a C interface, for benches/compare.rs: the bench
// compiles this into a shared library at run time when the Boost headers are installed
// (`apt-get install libboost-dev`) and loads it with dlopen; otherwise Boost is skipped.
//
// Every call catches what Boost throws: a C++ exception must not unwind into Rust.

#include <boost/interprocess/ipc/message_queue.hpp>

#include <cstddef>
#include <new>

using boost::interprocess::create_only;
using boost::interprocess::message_queue;
using boost::interprocess::open_only;

extern "C" {

// Creates queue `name` (removing a stale one first); 0 on success.
int bmq_create(const char *name, std::size_t max_messages, std::size_t message_size) {
    try {
        message_queue::remove(name);
        message_queue q(create_only, name, max_messages, message_size);
        return 0;
    } catch (...) {
        return -1;
    }
}

// Opens queue `name`; NULL on failure.
void *bmq_open(const char *name) {
    try {
        return new message_queue(open_only, name);
    } catch (...) {
        return nullptr;
    }
}

// Sends `len` bytes, waiting for room; 0 on success.
int bmq_send(void *q, const void *data, std::size_t len) {
    try {
        static_cast<message_queue *>(q)->send(data, len, 0);
        return 0;
    } catch (...) {
        return -1;
    }
}

// Receives one message into `buf` (capacity `cap`), waiting for one; its length, or -1.
long bmq_receive(void *q, void *buf, std::size_t cap) {
    try {
        message_queue::size_type got = 0;
        unsigned int priority = 0;
        static_cast<message_queue *>(q)->receive(buf, cap, got, priority);
        return static_cast<long>(got);
    } catch (...) {
        return -1;
    }
}

int bmq_remove(const char *name) {
    try {
        return message_queue::remove(name) ? 0 : -1;
    } catch (...) {
        return -1;
    }
}

}  // extern "C"
