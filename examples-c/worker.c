/*
 * The design note's worker, in C: connects to `task_queue`, processes tasks with 300 ms of
 * simulated work each, and exits when the producer has shut the queue down and it is
 * drained. Mixes with the Rust examples (examples/producer.rs, examples/worker.rs).
 *
 *   cargo build --release && make -C examples-c
 *   examples-c/build/worker worker-1 [--queue NAME --work-ms MS]
 */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "shmq.h"

static const char *arg(int argc, char **argv, const char *name) {
    for (int i = 1; i + 1 < argc; i++) {
        if (strcmp(argv[i], name) == 0) {
            return argv[i + 1];
        }
    }
    return NULL;
}

static uint64_t monotonic_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void sleep_ms(uint64_t ms) {
    struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* Producers should start first; give one a few seconds to create the queue. */
static shmq_status connect_with_retry(const char *name, shmq_queue **out) {
    uint64_t deadline = monotonic_ms() + 10000;
    for (;;) {
        shmq_status s = shmq_connect(name, out);
        if (s != SHMQ_ERR_NOT_FOUND || monotonic_ms() >= deadline) {
            return s;
        }
        sleep_ms(50);
    }
}

int main(int argc, char **argv) {
    const char *worker = (argc > 1 && strncmp(argv[1], "--", 2) != 0) ? argv[1] : "worker-1";
    const char *queue_name = arg(argc, argv, "--queue");
    const char *work_arg = arg(argc, argv, "--work-ms");
    uint64_t work_ms = 300;
    if (queue_name == NULL) {
        queue_name = "task_queue";
    }
    if (work_arg != NULL) {
        char *end = NULL;
        errno = 0;
        work_ms = strtoull(work_arg, &end, 10);
        if (errno != 0 || end == work_arg || *end != '\0' || work_arg[0] == '-') {
            fprintf(stderr, "usage: %s [NAME] [--queue NAME] [--work-ms MS]\n", argv[0]);
            return 2;
        }
    }

    printf("starting worker %s (PID: %ld)\n", worker, (long)getpid());
    shmq_queue *queue = NULL;
    shmq_status s = connect_with_retry(queue_name, &queue);
    if (s != SHMQ_OK) {
        fprintf(stderr, "[%s] cannot connect: %s (%s)\n", worker, shmq_status_str(s),
                shmq_last_error());
        return 1;
    }
    printf("[%s] connected to task queue %s\n", worker, queue_name);
    fflush(stdout);

    /* A buffer of the queue's message size holds any message. */
    size_t buf_len = shmq_message_size(queue);
    char *buf = malloc(buf_len);
    if (buf == NULL) {
        fprintf(stderr, "[%s] out of memory\n", worker);
        shmq_close(queue);
        return 1;
    }
    unsigned long done = 0;
    int rc = 0;
    for (;;) {
        shmq_message_info info;
        s = shmq_receive_message(queue, buf, buf_len, &info, -1);
        if (s == SHMQ_ERR_CLOSED) {
            break;
        }
        if (s != SHMQ_OK) {
            fprintf(stderr, "[%s] receive failed: %s (%s)\n", worker, shmq_status_str(s),
                    shmq_last_error());
            rc = 1;
            break;
        }
        printf("[%s] processing task %llu: %.*s\n", worker, (unsigned long long)info.id,
               (int)info.len, buf);
        fflush(stdout);
        uint64_t started = monotonic_ms();
        sleep_ms(work_ms);
        printf("[%s] finished task %llu (took %llums)\n", worker, (unsigned long long)info.id,
               (unsigned long long)(monotonic_ms() - started));
        printf("[%s] queue status: %zu/%u messages left\n", worker, shmq_len(queue),
               shmq_capacity(queue));
        fflush(stdout);
        done++;
    }
    if (rc == 0) {
        printf("[%s] queue shut down and drained; processed %lu tasks\n", worker, done);
    }
    free(buf);
    shmq_close(queue);
    return rc;
}
