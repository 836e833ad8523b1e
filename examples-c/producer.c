/*
 * The design note's producer, in C: creates `task_queue` (100 x 1024), sends 20 tasks
 * ("Task N - Process this data", id N), then shuts the queue down so workers exit once it
 * is drained. Mixes with the Rust examples (examples/producer.rs, examples/worker.rs).
 *
 *   cargo build --release && make -C examples-c
 *   examples-c/build/producer [--queue NAME --tasks N --interval-ms MS]
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

static int parse_u64(const char *text, uint64_t *out) {
    char *end = NULL;
    errno = 0;
    unsigned long long v = strtoull(text, &end, 10);
    if (errno != 0 || end == text || *end != '\0' || text[0] == '-') {
        return -1;
    }
    *out = (uint64_t)v;
    return 0;
}

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void sleep_ms(uint64_t ms) {
    struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static int fail(const char *what, shmq_status status) {
    fprintf(stderr, "[c producer] %s failed: %s (%s)\n", what, shmq_status_str(status),
            shmq_last_error());
    return 1;
}

int main(int argc, char **argv) {
    const char *queue_name = arg(argc, argv, "--queue");
    const char *tasks_arg = arg(argc, argv, "--tasks");
    const char *interval_arg = arg(argc, argv, "--interval-ms");
    uint64_t tasks = 20, interval_ms = 50;
    if (queue_name == NULL) {
        queue_name = "task_queue";
    }
    if ((tasks_arg != NULL && parse_u64(tasks_arg, &tasks) != 0) ||
        (interval_arg != NULL && parse_u64(interval_arg, &interval_ms) != 0)) {
        fprintf(stderr, "usage: %s [--queue NAME] [--tasks N] [--interval-ms MS]\n", argv[0]);
        return 2;
    }

    printf("=== shmq C producer (PID: %ld) ===\n", (long)getpid());
    /* The producer owns the queue: a stale one left by an earlier (or crashed) run is
       replaced, never reused. */
    shmq_queue *queue = NULL;
    shmq_status s = shmq_create_with(queue_name, 100, 1024, 0, SHMQ_CREATE_REPLACE, &queue);
    if (s != SHMQ_OK) {
        return fail("creating the queue", s);
    }
    printf("created queue %s (%u slots x %u bytes)\n", queue_name, shmq_capacity(queue),
           shmq_message_size(queue));
    printf("sending tasks\n");
    for (uint64_t i = 1; i <= tasks; i++) {
        char text[64];
        int len = snprintf(text, sizeof text, "Task %llu - Process this data",
                           (unsigned long long)i);
        s = shmq_send_message(queue, i, now_ns(), text, (size_t)len, -1);
        if (s != SHMQ_OK) {
            shmq_close(queue);
            return fail("sending", s);
        }
        printf("[c producer] sent task %llu: %s\n", (unsigned long long)i, text);
        printf("queue status: %zu/%u messages\n", shmq_len(queue), shmq_capacity(queue));
        fflush(stdout);
        sleep_ms(interval_ms);
    }
    s = shmq_shutdown(queue);
    if (s != SHMQ_OK) {
        shmq_close(queue);
        return fail("shutting down", s);
    }
    printf("producer done, sent %llu tasks (queue shut down; workers drain it)\n",
           (unsigned long long)tasks);
    shmq_close(queue);
    return 0;
}
