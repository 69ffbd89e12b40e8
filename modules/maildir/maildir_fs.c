/* File system helpers: durable writes, locks, directories. Every failure is logged here (60100-60199). */
#include "maildir.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <apr_strings.h>

static pthread_once_t proc_once = PTHREAD_ONCE_INIT;
static int proc_fd_ok;

static void proc_probe(void)
{
    proc_fd_ok = access("/proc/self/fd", X_OK) == 0;
}

int md_proc_fd_ok(void)
{
    pthread_once(&proc_once, proc_probe);
    return proc_fd_ok;
}

int md_fsync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
        md_log(MP_LOG_ERROR, 60100, "open(%s) failed: %s", dir, strerror(errno));
        return -1;
    }
    int rv = fsync(fd);
    if (rv != 0)
        md_log(MP_LOG_ERROR, 60101, "fsync(%s) failed: %s", dir, strerror(errno));
    close(fd);
    return rv;
}

/* ---- group commit of directory fsyncs ----
 *
 * Delivery makes each message durable with fsync(file), a link into new/ (or cur/), and an
 * fsync of that directory. The last step is what concurrent deliveries into one folder can share: an
 * fsync of a directory makes every entry made in it before the call durable, so one fsync serves every
 * caller whose link was done when it started. Batches per directory path:
 *
 *   - A caller (its entry already made) joins the directory's open batch.
 *   - When no fsync of the directory is under way, the first member to see that becomes the leader: it
 *     closes the batch (later callers start the next one), runs one fsync without the lock, and
 *     publishes the result to every member. Otherwise members wait; when the running fsync ends, a member
 *     of the open batch leads the next. So at most one fsync per directory runs at a time, and a caller
 *     waits for at most the fsync under way plus its own.
 *   - A member is never answered by an fsync that started before it joined (it joined an open batch,
 *     and a batch is closed before its fsync starts), so nothing is reported durable early. A failed
 *     fsync fails every member of its batch, each of which undoes its own entry.
 *
 * One mutex for the table (held only for bookkeeping, never during I/O); a condition variable per
 * directory in use; entries live while a caller uses them, so the table holds only directories with a
 * commit in progress. The leader opens the directory by path for each fsync (after every member's entry
 * exists): a cached descriptor could outlive a folder removed and made again under the same name. */

typedef struct gc_batch {
    int members;
    int done;
    int rc, err;
} gc_batch;

typedef struct gc_dir {
    struct gc_dir *next;
    char *path;
    pthread_cond_t cv;
    gc_batch *open;      /* gathering members; NULL when none */
    int syncing;         /* a leader's fsync is under way */
    int users;           /* callers inside md_fsync_dir_group on this directory */
} gc_dir;

static pthread_mutex_t gc_mu = PTHREAD_MUTEX_INITIALIZER;
static gc_dir *gc_dirs;
static atomic_ulong gc_syncs, gc_callers;
int (*md_dirsync_hook)(const char *dir);

void md_dirsync_stats(unsigned long *syncs_r, unsigned long *callers_r)
{
    *syncs_r = atomic_load(&gc_syncs);
    *callers_r = atomic_load(&gc_callers);
}

static gc_dir *gc_get(const char *dir)
{
    for (gc_dir *d = gc_dirs; d; d = d->next)
        if (strcmp(d->path, dir) == 0)
            return d;
    gc_dir *d = calloc(1, sizeof *d);
    if (!d || !(d->path = strdup(dir)) || pthread_cond_init(&d->cv, NULL) != 0) {
        if (d)
            free(d->path);
        free(d);
        return NULL;
    }
    d->next = gc_dirs;
    gc_dirs = d;
    return d;
}

static void gc_put(gc_dir *d)
{
    if (--d->users > 0)
        return;
    for (gc_dir **pp = &gc_dirs; *pp; pp = &(*pp)->next)
        if (*pp == d) {
            *pp = d->next;
            break;
        }
    pthread_cond_destroy(&d->cv);
    free(d->path);
    free(d);
}

int md_fsync_dir_group(const char *dir)
{
    atomic_fetch_add(&gc_callers, 1);
    pthread_mutex_lock(&gc_mu);
    gc_dir *d = gc_get(dir);
    gc_batch *b = NULL;
    if (d) {
        d->users++;
        if (!d->open)
            d->open = calloc(1, sizeof *d->open);
        b = d->open;
        if (!b)
            gc_put(d);
    }
    if (!b) { /* out of memory: an fsync of our own is as durable */
        pthread_mutex_unlock(&gc_mu);
        atomic_fetch_add(&gc_syncs, 1);
        return md_fsync_dir(dir);
    }
    b->members++;
    while (!b->done) {
        if (!d->syncing && d->open == b) {
            d->syncing = 1;
            d->open = NULL; /* closed: whoever comes now waits for the next fsync */
            pthread_mutex_unlock(&gc_mu);
            atomic_fetch_add(&gc_syncs, 1);
            int rc = md_dirsync_hook ? md_dirsync_hook(dir) : 0;
            if (rc != 0)
                md_log(MP_LOG_ERROR, 60101, "fsync(%s) failed: %s", dir, strerror(errno));
            else
                rc = md_fsync_dir(dir);
            int err = errno;
            pthread_mutex_lock(&gc_mu);
            b->rc = rc;
            b->err = err;
            b->done = 1;
            d->syncing = 0;
            pthread_cond_broadcast(&d->cv); /* this batch's members, and the next batch's leader */
        } else {
            pthread_cond_wait(&d->cv, &gc_mu);
        }
    }
    int rc = b->rc, err = b->err;
    if (--b->members == 0)
        free(b);
    gc_put(d);
    pthread_mutex_unlock(&gc_mu);
    errno = err;
    return rc;
}

static int write_all(int fd, const char *data, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, data, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        data += n;
        len -= (size_t)n;
    }
    return 0;
}

int md_write_atomic(const char *dir, const char *name, const char *data, size_t len)
{
    static atomic_uint counter;
    char tmp[4096], path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    snprintf(tmp, sizeof tmp, "%s/%s.tmp%ld.%u", dir, name, (long)getpid(), atomic_fetch_add(&counter, 1));
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        md_log(MP_LOG_ERROR, 60102, "open(%s) failed: %s", tmp, strerror(errno));
        return -1;
    }
    if (write_all(fd, data, len) != 0 || fsync(fd) != 0) {
        md_log(MP_LOG_ERROR, 60103, "write/fsync(%s) failed: %s", tmp, strerror(errno));
        close(fd);
        unlink(tmp);
        return -1;
    }
    close(fd);
    if (rename(tmp, path) != 0) {
        md_log(MP_LOG_ERROR, 60104, "rename(%s, %s) failed: %s", tmp, path, strerror(errno));
        unlink(tmp);
        return -1;
    }
    return md_fsync_dir(dir);
}

int md_read_file(const char *path, apr_pool_t *pool, char **data_r, size_t *len_r)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT)
            return 1;
        md_log(MP_LOG_ERROR, 60105, "open(%s) failed: %s", path, strerror(errno));
        return -1;
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        md_log(MP_LOG_ERROR, 60106, "fstat(%s) failed: %s", path, strerror(errno));
        close(fd);
        return -1;
    }
    size_t cap = (size_t)st.st_size + 1, len = 0;
    char *buf = apr_palloc(pool, cap);
    for (;;) {
        ssize_t n = read(fd, buf + len, cap - 1 - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            md_log(MP_LOG_ERROR, 60107, "read(%s) failed: %s", path, strerror(errno));
            close(fd);
            return -1;
        }
        if (n == 0 || (len += (size_t)n) == cap - 1)
            break; /* a file that grew meanwhile: what was there at fstat is enough */
    }
    close(fd);
    buf[len] = '\0';
    *data_r = buf;
    *len_r = len;
    return 0;
}

int md_lock_open(const char *dir, const char *name)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0 && errno != ENOENT)
        md_log(MP_LOG_ERROR, 60108, "open(%s) failed: %s", path, strerror(errno));
    return fd;
}

int md_lock(int fd)
{
    /* flock, not fcntl: its locks belong to the open file, so two threads of one process (two sessions)
       exclude each other as two processes do. */
    while (flock(fd, LOCK_EX) != 0) {
        if (errno != EINTR) {
            md_log(MP_LOG_ERROR, 60109, "flock failed: %s", strerror(errno));
            return -1;
        }
    }
    return 0;
}

void md_unlock(int fd)
{
    flock(fd, LOCK_UN);
}

static int mkdir_p(char *path)
{
    for (char *p = path + 1;; p++) {
        if (*p == '/' || *p == '\0') {
            char c = *p;
            *p = '\0';
            int rv = mkdir(path, 0700);
            *p = c;
            if (rv != 0 && errno != EEXIST)
                return -1;
            if (c == '\0')
                return 0;
        }
    }
}

int md_mkdir_beneath(const char *base, const char *rel)
{
    char *b = strdup(base), *r = strdup(rel);
    int rv = -1, fd = -1;
    if (!b || !r)
        goto out;
    if (b[0] && mkdir_p(b) != 0) {
        md_log(MP_LOG_ERROR, 60110, "mkdir(%s) failed: %s", base, strerror(errno));
        goto out;
    }
    fd = open(b[0] ? b : "/", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
        md_log(MP_LOG_ERROR, 60111, "open(%s) failed: %s", base, strerror(errno));
        goto out;
    }
    char *save = NULL;
    for (char *comp = strtok_r(r, "/", &save); comp; comp = strtok_r(NULL, "/", &save)) {
        if (mkdirat(fd, comp, 0700) == 0) {
            /* the new entry durable in its parent: the first delivery's 250 must not depend on luck */
            if (fsync(fd) != 0) {
                md_log(MP_LOG_ERROR, 60119, "fsync(%s/...) failed: %s", base, strerror(errno));
                goto out;
            }
        } else if (errno != EEXIST) {
            md_log(MP_LOG_ERROR, 60112, "mkdir(%s/.../%s) failed: %s", base, comp, strerror(errno));
            goto out;
        }
        /* O_NOFOLLOW: a symbolic link planted inside the store never leads a user out of it. */
        int next = openat(fd, comp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (next < 0) {
            md_log(MP_LOG_ERROR, 60113, "open(%s/.../%s) failed: %s", base, comp, strerror(errno));
            goto out;
        }
        close(fd);
        fd = next;
    }
    rv = 0;
out:
    if (fd >= 0)
        close(fd);
    free(b);
    free(r);
    return rv;
}

int md_make_maildir(const char *dir, int folder)
{
    static const char *const subs[] = {"cur", "new", "tmp"};
    char path[4096];
    int made = 0;
    if (mkdir(dir, 0700) == 0) {
        snprintf(path, sizeof path, "%s", dir);
        char *slash = strrchr(path, '/');
        if (slash && slash != path)
            *slash = '\0';
        if (slash && md_fsync_dir(path) != 0) /* the maildir's own entry in its parent */
            return -1;
    } else if (errno != EEXIST) {
        md_log(MP_LOG_ERROR, 60114, "mkdir(%s) failed: %s", dir, strerror(errno));
        return -1;
    }
    for (size_t i = 0; i < 3; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, subs[i]);
        if (mkdir(path, 0700) == 0)
            made = 1;
        else if (errno != EEXIST) {
            md_log(MP_LOG_ERROR, 60115, "mkdir(%s) failed: %s", path, strerror(errno));
            return -1;
        }
    }
    if (folder) {
        snprintf(path, sizeof path, "%s/%s", dir, MD_FOLDER_MARKER);
        int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
        if (fd < 0) {
            md_log(MP_LOG_ERROR, 60116, "open(%s) failed: %s", path, strerror(errno));
            return -1;
        }
        close(fd);
        made = 1;
    }
    return made ? md_fsync_dir(dir) : 0; /* new/ cur/ tmp/ durable before anything is delivered there */
}

static int remove_one(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
    (void)st, (void)ftw;
    int rv = type == FTW_DP ? rmdir(path) : unlink(path);
    if (rv != 0 && errno != ENOENT)
        md_log(MP_LOG_ERROR, 60117, "removing %s failed: %s", path, strerror(errno));
    return 0;
}

int md_remove_tree(const char *path)
{
    /* FTW_PHYS: symbolic links are removed, never followed. */
    return nftw(path, remove_one, 16, FTW_DEPTH | FTW_PHYS) == 0 ? 0 : -1;
}

int md_copy_file(const char *src, const char *dst)
{
    int in = open(src, O_RDONLY | O_CLOEXEC), out = -1, rv = -1;
    char buf[65536];
    struct stat st;
    if (in < 0 || fstat(in, &st) != 0)
        goto out;
    out = open(dst, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (out < 0)
        goto out;
    for (;;) {
        ssize_t n = read(in, buf, sizeof buf);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            goto out;
        if (n == 0)
            break;
        if (write_all(out, buf, (size_t)n) != 0)
            goto out;
    }
    struct timespec times[2] = {st.st_atim, st.st_mtim}; /* the internal date is the mtime */
    futimens(out, times);
    if (fsync(out) != 0)
        goto out;
    rv = 0;
out:;
    int saved = errno;
    if (in >= 0)
        close(in);
    if (out >= 0) {
        close(out);
        if (rv != 0)
            unlink(dst);
    }
    errno = saved;
    return rv;
}

int md_copy_into(const char *src, const char *dir, const char *dst, apr_pool_t *pool)
{
    const char *tmp = apr_pstrcat(pool, dir, "/tmp/", md_unique_base(pool), NULL);
    if (md_copy_file(src, tmp) != 0)
        return -1;
    int rv = link(tmp, dst);
    if (rv != 0 && (errno == EPERM || errno == EMLINK || errno == ENOTSUP)) {
        /* no hard links here: a rename that refuses to replace, or a plain one where the file system
           cannot say (the name is unique: time, pid, counter, host) */
        rv = renameat2(AT_FDCWD, tmp, AT_FDCWD, dst, RENAME_NOREPLACE);
        if (rv != 0 && (errno == EINVAL || errno == ENOSYS))
            rv = rename(tmp, dst);
        if (rv == 0)
            return 0;
    }
    int saved = errno;
    unlink(tmp);
    errno = saved;
    return rv;
}

int md_file_crlf_size(const char *path, uint64_t *size_r, int64_t *mtime_r)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return -1;
    struct stat st;
    if (fstat(fd, &st) != 0) {
        close(fd);
        return -1;
    }
    char buf[65536];
    uint64_t size = 0;
    char prev = 0;
    for (;;) {
        ssize_t n = read(fd, buf, sizeof buf);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            close(fd);
            return -1;
        }
        if (n == 0)
            break;
        for (ssize_t i = 0; i < n; i++) {
            if (buf[i] == '\n' && prev != '\r')
                size++; /* a bare LF is read as CRLF */
            prev = buf[i];
        }
        size += (uint64_t)n;
    }
    close(fd);
    *size_r = size;
    if (mtime_r)
        *mtime_r = (int64_t)st.st_mtime;
    return 0;
}

long md_tmp_max_age = MD_TMP_MAX_AGE;

void md_clean_tmp(const char *dir)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/tmp", dir);
    DIR *d = opendir(path);
    if (!d)
        return;
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    int64_t limit = ((int64_t)now.tv_sec - md_tmp_max_age) * 1000000000 + now.tv_nsec;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        struct stat st;
        if (de->d_name[0] == '.' || fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0)
            continue;
        /* Dovecot's rule: the ctime, which every write, link and utime moves, so a delivery in progress
           (or an APPEND that set an old date) is never taken for a leftover. */
        int64_t ctime_ns = (int64_t)st.st_ctim.tv_sec * 1000000000 + st.st_ctim.tv_nsec;
        if (S_ISREG(st.st_mode) && ctime_ns < limit && unlinkat(dirfd(d), de->d_name, 0) == 0)
            md_log(MP_LOG_INFO, 60118, "removed the stale temporary file %s/%s", path, de->d_name);
    }
    closedir(d);
}

uint32_t md_new_uidvalidity(const char *root, uint32_t old)
{
    /* RFC 3501 section 2.3.1.1: a folder that loses its UIDs, or is made again under the same name, needs a
       UIDVALIDITY it never had. Time alone can repeat within a second, so the user keeps the last one. */
    char path[4096], *data, buf[32];
    size_t len;
    uint64_t v = (uint64_t)time(NULL), last = 0;
    apr_pool_t *pool;
    apr_pool_create(&pool, NULL);
    int fd = md_lock_open(root, MD_META_LOCK);
    if (fd >= 0)
        md_lock(fd);
    snprintf(path, sizeof path, "%s/%s", root, MD_UIDVALIDITY);
    if (md_read_file(path, pool, &data, &len) == 0)
        last = strtoull(data, NULL, 10);
    if (v <= last)
        v = last + 1;
    if (v <= old)
        v = (uint64_t)old + 1;
    if (v > UINT32_MAX)
        v = 1;
    int n = snprintf(buf, sizeof buf, "%u\n", (unsigned)v);
    md_write_atomic(root, MD_UIDVALIDITY, buf, (size_t)n);
    if (fd >= 0) {
        md_unlock(fd);
        close(fd);
    }
    apr_pool_destroy(pool);
    return (uint32_t)v;
}
