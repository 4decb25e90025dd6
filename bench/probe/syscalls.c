/*
 * moat benchmark probe: cost of two system calls, in nanoseconds per operation.
 *
 *   syscalls FILE [GETPPID_ITERS [OPEN_CLOSE_ITERS]]
 *
 *   getppid     syscall(SYS_getppid) in a loop (default 10,000,000 iterations): the
 *               cheapest round trip into the kernel, so it shows the per-syscall tax of
 *               seccomp filters (moat, runc) or of syscall interception (gVisor).
 *   open+close  open(FILE, O_RDONLY) + close() in a loop (default 1,000,000 iterations):
 *               adds path walk and, under Landlock, the file-access hook.
 *
 * Prints one line of JSON: {"getppid_ns":..., "open_close_ns":..., ...}.
 * Built with `gcc -O2 -static` so it also runs in a bare busybox root (runc, runsc).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static long parse_count(const char *arg, const char *what)
{
    char *end = NULL;
    errno = 0;
    long n = strtol(arg, &end, 10);
    if (errno != 0 || end == arg || *end != '\0' || n <= 0) {
        fprintf(stderr, "syscalls: bad %s count: %s\n", what, arg);
        exit(2);
    }
    return n;
}

int main(int argc, char **argv)
{
    if (argc < 2 || argc > 4) {
        fprintf(stderr, "usage: %s FILE [GETPPID_ITERS [OPEN_CLOSE_ITERS]]\n", argv[0]);
        return 2;
    }
    const char *path = argv[1];
    long getppid_iters = argc > 2 ? parse_count(argv[2], "getppid") : 10000000L;
    long open_iters = argc > 3 ? parse_count(argv[3], "open+close") : 1000000L;

    /* Warm up: page in the code, resolve the path once, fail early if unreadable. */
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        fprintf(stderr, "syscalls: open %s: %s\n", path, strerror(errno));
        return 1;
    }
    close(fd);
    for (int i = 0; i < 1000; i++)
        syscall(SYS_getppid);

    volatile long sink = 0;
    double t0 = now_ns();
    for (long i = 0; i < getppid_iters; i++)
        sink += syscall(SYS_getppid);
    double t1 = now_ns();

    for (long i = 0; i < open_iters; i++) {
        fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
            fprintf(stderr, "syscalls: open %s: %s\n", path, strerror(errno));
            return 1;
        }
        close(fd);
    }
    double t2 = now_ns();
    (void)sink;

    printf("{\"getppid_ns\": %.2f, \"open_close_ns\": %.2f, "
           "\"getppid_iters\": %ld, \"open_close_iters\": %ld}\n",
           (t1 - t0) / (double)getppid_iters, (t2 - t1) / (double)open_iters,
           getppid_iters, open_iters);
    return 0;
}
