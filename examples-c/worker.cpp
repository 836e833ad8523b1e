/*
 * The design note's worker, in C++ (include/shmq.hpp): connects to `task_queue`, processes
 * tasks with 300 ms of simulated work each, and exits when the producer has shut the queue
 * down and it is drained. Mixes with the C, Rust and Python producers and workers.
 *
 *   cargo build --release && make -C examples-c
 *   examples-c/build/worker_cpp cpp-worker [--queue NAME --work-ms MS]
 */
#include "shmq.hpp"

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

static const char *arg(int argc, char **argv, const char *name) {
    for (int i = 1; i + 1 < argc; i++) {
        if (std::strcmp(argv[i], name) == 0) return argv[i + 1];
    }
    return nullptr;
}

/* Producers should start first; give one a few seconds to create the queue. */
static shmq::Queue connect_with_retry(const std::string &name) {
    const auto deadline = Clock::now() + 10s;
    for (;;) {
        try {
            return shmq::Queue::connect(name);
        } catch (const shmq::Error &e) {
            if (e.status() != SHMQ_ERR_NOT_FOUND || Clock::now() >= deadline) throw;
        }
        std::this_thread::sleep_for(50ms);
    }
}

int main(int argc, char **argv) {
    const std::string worker =
        (argc > 1 && std::strncmp(argv[1], "--", 2) != 0) ? argv[1] : "cpp-worker";
    const char *queue_arg = arg(argc, argv, "--queue");
    const std::string queue_name = queue_arg != nullptr ? queue_arg : "task_queue";
    std::chrono::milliseconds work(300);
    if (const char *ms = arg(argc, argv, "--work-ms")) {
        try {
            size_t used = 0;
            const unsigned long n = std::stoul(ms, &used);
            if (used != std::strlen(ms) || ms[0] == '-') throw std::invalid_argument(ms);
            work = std::chrono::milliseconds(n);
        } catch (const std::exception &) {
            std::fprintf(stderr, "usage: %s [NAME] [--queue NAME] [--work-ms MS]\n", argv[0]);
            return 2;
        }
    }

    std::printf("starting worker %s (PID: %ld)\n", worker.c_str(), static_cast<long>(getpid()));
    try {
        shmq::Queue queue = connect_with_retry(queue_name);
        std::printf("[%s] connected to task queue %s\n", worker.c_str(), queue_name.c_str());
        std::fflush(stdout);
        std::vector<uint8_t> buf;  // resized to the queue's message size by receive()
        unsigned long done = 0;
        // Waits for each task; ends once the queue is shut down and drained.
        while (shmq::Received task = queue.receive(buf)) {
            std::printf("[%s] processing task %llu: %.*s\n", worker.c_str(),
                        static_cast<unsigned long long>(task.id), static_cast<int>(task.len),
                        reinterpret_cast<const char *>(buf.data()));
            std::fflush(stdout);
            const auto started = Clock::now();
            std::this_thread::sleep_for(work);
            const auto took =
                std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - started);
            std::printf("[%s] finished task %llu (took %lldms)\n", worker.c_str(),
                        static_cast<unsigned long long>(task.id),
                        static_cast<long long>(took.count()));
            std::printf("[%s] queue status: %zu/%u messages left\n", worker.c_str(), queue.size(),
                        queue.capacity());
            std::fflush(stdout);
            done++;
        }
        std::printf("[%s] queue shut down and drained; processed %lu tasks\n", worker.c_str(),
                    done);
    } catch (const shmq::Error &e) {
        std::fprintf(stderr, "[%s] %s (%s)\n", worker.c_str(), shmq_status_str(e.status()),
                     e.what());
        return 1;
    }
    return 0;
}
