/*
 * The raw durable-write ceiling of a disk, as a Maildir delivery needs it: for each message write 4 KiB
 * into tmp/, fsync the file, rename it into new/, fsync new/. N writer threads share one Maildir.
 *
 *   cc -O2 -pthread -o durable_write tests/bench/durable_write.c
 *   ./durable_write DIR THREADS TOTAL [SIZE]      prints "RESULT durable-write threads=T files=N secs=S rate=R files/s"
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static const char *root;
static size_t msg_size = 4096;
static atomic_long remaining;
static atomic_long failures;

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void *writer(void *arg)
{
    long id = (long)arg, n = 0;
    char *buf = malloc(msg_size);
    memset(buf, 'm', msg_size);
    char tmp[4096], dst[4096], newdir[4096];
    snprintf(newdir, sizeof newdir, "%s/new", root);
    int dfd = open(newdir, O_RDONLY | O_DIRECTORY);
    while (atomic_fetch_sub(&remaining, 1) > 0) {
        snprintf(tmp, sizeof tmp, "%s/tmp/%ld.%ld.%d", root, id, n, getpid());
        snprintf(dst, sizeof dst, "%s/new/%ld.%ld.%d", root, id, n, getpid());
        n++;
        int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL, 0600);
        if (fd < 0 || write(fd, buf, msg_size) != (ssize_t)msg_size || fsync(fd) != 0 || close(fd) != 0 ||
            rename(tmp, dst) != 0 || fsync(dfd) != 0) {
            atomic_fetch_add(&failures, 1);
            fprintf(stderr, "durable_write: %s: %s\n", tmp, strerror(errno));
        }
    }
    close(dfd);
    free(buf);
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: %s DIR THREADS TOTAL [SIZE]\n", argv[0]);
        return 2;
    }
    root = argv[1];
    int threads = atoi(argv[2]);
    long total = atol(argv[3]);
    if (argc > 4)
        msg_size = (size_t)atol(argv[4]);
    if (threads < 1 || total < 1)
        return 2;
    char d[4096];
    mkdir(root, 0700);
    snprintf(d, sizeof d, "%s/tmp", root);
    mkdir(d, 0700);
    snprintf(d, sizeof d, "%s/new", root);
    mkdir(d, 0700);
    atomic_store(&remaining, total);
    pthread_t *t = calloc((size_t)threads, sizeof *t);
    double t0 = now();
    for (long i = 0; i < threads; i++)
        pthread_create(&t[i], NULL, writer, (void *)i);
    for (int i = 0; i < threads; i++)
        pthread_join(t[i], NULL);
    double secs = now() - t0;
    printf("RESULT durable-write threads=%d files=%ld size=%zu secs=%.2f rate=%.1f files/s failures=%ld\n", threads,
           total, msg_size, secs, (double)total / secs, (long)atomic_load(&failures));
    free(t);
    return atomic_load(&failures) ? 1 : 0;
}
