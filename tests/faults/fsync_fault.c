/*
 * An LD_PRELOAD shim that makes fsync(2) and fdatasync(2) fail with EIO, as a disk that
 * cannot write back would, for chosen files and only while a control file exists, so a
 * test can turn the fault on and off while the process under test runs.
 *
 *   FSYNC_FAULT_PATTERN  fnmatch(3) pattern (no flags: `*` matches `/` too) matched against
 *                        the descriptor's path as /proc/self/fd resolves it
 *   FSYNC_FAULT_CONTROL  path of the control file: failures only while it exists
 *   FSYNC_FAULT_LOG      optional: one line per call on a matching path, appended:
 *                        "<fsync|fdatasync> <eio|ok> <path>"
 *
 * A failing call does not reach the kernel: the pages stay dirty, as after a real EIO
 * nothing about them is known.
 *
 * Build: gcc -shared -fPIC -O2 -o fsync_fault.so fsync_fault.c -ldl
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef int (*sync_fn)(int);

static void note(const char *fn, const char *outcome, const char *path) {
    const char *log = getenv("FSYNC_FAULT_LOG");
    char line[4200];
    int n, fd;
    if (log == NULL || *log == '\0')
        return;
    n = snprintf(line, sizeof line, "%s %s %s\n", fn, outcome, path);
    if (n <= 0 || (size_t)n >= sizeof line)
        return;
    fd = open(log, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0)
        return;
    /* One write with O_APPEND: lines from threads and forked children do not interleave. */
    if (write(fd, line, (size_t)n) < 0) {
    }
    close(fd);
}

static int faulty(int fd, const char *fn, sync_fn real) {
    const char *pattern = getenv("FSYNC_FAULT_PATTERN");
    const char *control = getenv("FSYNC_FAULT_CONTROL");
    char link[64], path[4096];
    ssize_t len;
    int saved = errno, fail, rc;

    if (pattern == NULL || *pattern == '\0')
        return real(fd);
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    len = readlink(link, path, sizeof path - 1);
    if (len < 0) {
        errno = saved;
        return real(fd);
    }
    path[len] = '\0';
    if (fnmatch(pattern, path, 0) != 0) {
        errno = saved;
        return real(fd);
    }
    fail = control != NULL && *control != '\0' && access(control, F_OK) == 0;
    note(fn, fail ? "eio" : "ok", path);
    if (fail) {
        errno = EIO;
        return -1;
    }
    errno = saved;
    rc = real(fd);
    return rc;
}

static sync_fn real_fsync, real_fdatasync;

int fsync(int fd) {
    if (real_fsync == NULL)
        real_fsync = (sync_fn)dlsym(RTLD_NEXT, "fsync");
    return faulty(fd, "fsync", real_fsync);
}

int fdatasync(int fd) {
    if (real_fdatasync == NULL)
        real_fdatasync = (sync_fn)dlsym(RTLD_NEXT, "fdatasync");
    return faulty(fd, "fdatasync", real_fdatasync);
}
