/*
 * Writing a message: delivery (SMTP/LMTP) and APPEND. Messages 60500-60599.
 *
 * The message goes to one spool file in the first target's tmp/, buffered (SAVE_BUF) and written as it
 * arrives. The file is made when the first bytes must go to disk: for a message that fits the buffer,
 * in save_commit, which SMTP runs on a worker, so the event loop never waits for an inode to be made.
 *
 * save_commit: the file is fsync'ed first, so that no name in new/ or cur/ ever points at data that is not
 * on disk; then hard-linked into each target (new/ for a plain delivery, cur/ with flags otherwise); then
 * each target directory is fsync'ed, by a group commit shared with the concurrent commits into the same
 * folder (md_fsync_dir_group: one fsync for all whose entry was made before it began); the tmp/ name is
 * removed last. Only then does save_commit return, so nobody hears OK before both the file and its
 * directory entry are durable; a failed directory fsync removes the entry and fails that target.
 *
 * Two alternatives measured and left out: a rename instead of link + unlink for a single target (no
 * faster here, and a rename between directories takes the file system's rename mutex, which every
 * delivery would share); and an O_TMPFILE spool linked into place (the link count of the file would then
 * be written by nothing that was fsync'ed: on a file system without a journal a crash can leave the entry
 * pointing at an inode with no links, which fsck deletes).
 *
 * A crash before the links leaves a tmp/ file that nobody reads and that is removed after 36 hours;
 * after them, the message is there once. A delivery takes no lock: the first reader that syncs gives it
 * its UID. An APPEND registers its UID at once (RFC 4315).
 */
#include "maildir.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <apr_strings.h>

#define SAVE_BUF 65536

struct mp_save {
    mp_store_user *user;
    apr_pool_t *pool;        /* subpool: buffer and paths; gone after commit or abort */
    const char *dir;         /* the first target's folder: its tmp/ holds the spool file */
    const char *tmp_base;    /* the unique part of the message's name, chosen with the spool */
    const char *tmp_path;    /* the spool in tmp/ (NULL: not made yet) */
    int fd;                  /* -1 until the first bytes go to disk */
    int failed, done;
    uint64_t size, crlf_size;
    char last;               /* the last byte written: a bare LF may follow in the next write */
    size_t blen;
    char *buf;
};

static apr_status_t save_cleanup(void *data)
{
    mp_save *s = data;
    if (s->fd >= 0)
        close(s->fd);
    s->fd = -1;
    if (s->tmp_path)
        unlink(s->tmp_path); /* aborted, or every target has its own link now */
    s->tmp_path = NULL;
    return APR_SUCCESS;
}

/* The spool file in the first target's tmp/, made when the first bytes go to disk. */
static int spool_open(mp_save *s)
{
    for (int attempt = 0; s->fd < 0; attempt++) {
        s->tmp_base = md_unique_base(s->pool);
        s->tmp_path = apr_pstrcat(s->pool, s->dir, "/tmp/", s->tmp_base, NULL);
        s->fd = open(s->tmp_path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (s->fd < 0 && (errno != EEXIST || attempt > 5)) {
            md_log(MP_LOG_ERROR, 60500, "open(%s) failed: %s", s->tmp_path, strerror(errno));
            s->tmp_path = NULL;
            s->failed = 1;
            return MP_STORE_ERR;
        }
    }
    return MP_STORE_OK;
}

int md_save_begin(mp_store_user *u, const char *folder, apr_pool_t *pool, mp_save **save_r)
{
    mp_save *s = apr_pcalloc(pool, sizeof *s);
    s->user = u;
    s->fd = -1;
    if (apr_pool_create(&s->pool, pool) != APR_SUCCESS)
        return MP_STORE_ERR;
    const char *disk;
    int rv = md_folder_resolve(u, folder, s->pool, &s->dir, &disk);
    struct stat st;
    if (rv == MP_STORE_OK && stat(apr_pstrcat(s->pool, s->dir, "/cur", NULL), &st) != 0)
        rv = MP_STORE_NOTFOUND;
    if (rv != MP_STORE_OK) {
        apr_pool_destroy(s->pool);
        return rv;
    }
    /* No file yet: spool_open makes it when the buffer first goes to disk. */
    s->buf = apr_palloc(s->pool, SAVE_BUF);
    apr_pool_cleanup_register(s->pool, s, save_cleanup, apr_pool_cleanup_null);
    *save_r = s;
    return MP_STORE_OK;
}

static int flush_buf(mp_save *s, const char *data, size_t len)
{
    if (len > 0 && s->fd < 0 && spool_open(s) != MP_STORE_OK)
        return MP_STORE_ERR;
    while (len > 0) {
        ssize_t n = write(s->fd, data, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            md_log(MP_LOG_ERROR, 60501, "write(%s) failed: %s", s->tmp_path, strerror(errno));
            s->failed = 1;
            return MP_STORE_ERR;
        }
        data += n;
        len -= (size_t)n;
    }
    return MP_STORE_OK;
}

int md_save_write(mp_save *s, const void *data, size_t len)
{
    if (!s || s->done || s->failed)
        return MP_STORE_ERR;
    const char *p = data, *end = p + len;
    /* Stored as received; the CRLF size (W=) counts each bare LF as two bytes. */
    for (const char *q = p; (q = memchr(q, '\n', (size_t)(end - q))) != NULL; q++)
        if ((q == p ? s->last : q[-1]) != '\r')
            s->crlf_size++;
    if (len) {
        s->last = end[-1];
        s->size += len;
        s->crlf_size += len;
    }
    if (s->blen + len > SAVE_BUF) {
        if (flush_buf(s, s->buf, s->blen) != MP_STORE_OK)
            return MP_STORE_ERR;
        s->blen = 0;
        if (len >= SAVE_BUF)
            return flush_buf(s, p, len);
    }
    memcpy(s->buf + s->blen, p, len);
    s->blen += len;
    return MP_STORE_OK;
}

int md_link_into(const char *src, const char *dir, const char *sub, const char *first, const char *base_tail,
                 const char *suffix, apr_pool_t *pool, const char **base_r)
{
    for (int attempt = 0; attempt < 8; attempt++) {
        const char *base = apr_pstrcat(pool, attempt == 0 && first ? first : md_unique_base(pool), base_tail, NULL);
        const char *dst = apr_pstrcat(pool, dir, "/", sub, "/", base, suffix, NULL);
        int rv = link(src, dst);
        if (rv != 0 && (errno == EXDEV || errno == EPERM || errno == EMLINK || errno == ENOTSUP))
            rv = md_copy_into(src, dir, dst, pool); /* another file system, or no hard links: a copy */
        if (rv == 0) {
            *base_r = base;
            return 0;
        }
        if (errno != EEXIST)
            return -1;
    }
    errno = EEXIST;
    return -1;
}

typedef struct user_usage {
    mp_store_user *user;
    uint64_t bytes, messages;
} user_usage;

/* Quota (RFC 2087 in spirit): usage counted once per user per commit, with what this commit added. */
static int check_quota(user_usage *uu, size_t *nuu, mp_store_user *u, uint64_t size)
{
    if (!u->bytes_limit && !u->messages_limit)
        return MP_STORE_OK;
    size_t i = 0;
    while (i < *nuu && uu[i].user != u)
        i++;
    if (i == *nuu) {
        uu[i].user = u;
        if (md_quota_usage(u, &uu[i].bytes, &uu[i].messages) != MP_STORE_OK)
            return MP_STORE_ERR;
        (*nuu)++;
    }
    if ((u->bytes_limit && uu[i].bytes + size > u->bytes_limit) ||
        (u->messages_limit && uu[i].messages + 1 > u->messages_limit))
        return MP_STORE_OVERQUOTA;
    uu[i].bytes += size;
    uu[i].messages++;
    return MP_STORE_OK;
}

int md_save_commit(mp_save *s, const mp_save_meta *meta, mp_save_target *targets, size_t ntargets)
{
    if (!s || s->done)
        return MP_STORE_ERR;
    static const mp_save_meta plain = {.delivery = 1};
    if (!meta)
        meta = &plain;
    int rv = MP_STORE_ERR;
    for (size_t i = 0; i < ntargets; i++)
        targets[i].result = MP_STORE_ERR, targets[i].uid = 0, targets[i].uidvalidity = 0;
    for (uint32_t k = 0; k < meta->nkeywords; k++)
        if (!md_keyword_valid(meta->keywords[k])) {
            for (size_t i = 0; i < ntargets; i++)
                targets[i].result = MP_STORE_BADNAME;
            rv = MP_STORE_BADNAME;
            goto out;
        }
    if (s->failed || (s->fd < 0 && spool_open(s) != MP_STORE_OK) || flush_buf(s, s->buf, s->blen) != MP_STORE_OK)
        goto out;
    s->blen = 0;
    if (meta->internal_date) {
        struct timespec ts[2] = {{0, UTIME_NOW},
                                 {(time_t)apr_time_sec(meta->internal_date),
                                  (long)apr_time_usec(meta->internal_date) * 1000}};
        if (futimens(s->fd, ts) != 0)
            md_log(MP_LOG_WARN, 60502, "futimens(%s) failed: %s", s->tmp_path, strerror(errno));
    }
    /* The data (and size) on disk before any name points at it. fsync when the mtime carries the date. */
    if ((meta->internal_date ? fsync(s->fd) : fdatasync(s->fd)) != 0) {
        md_log(MP_LOG_ERROR, 60503, "fsync(%s) failed: %s", s->tmp_path, strerror(errno));
        goto out;
    }
    close(s->fd);
    s->fd = -1;

    const char *tail = apr_psprintf(s->pool, ",S=%" APR_UINT64_T_FMT ",W=%" APR_UINT64_T_FMT, (apr_uint64_t)s->size,
                                    (apr_uint64_t)s->crlf_size);
    const char **made = apr_pcalloc(s->pool, (ntargets + 1) * sizeof *made); /* dir/sub/name per target */
    const char **subdir = apr_pcalloc(s->pool, (ntargets + 1) * sizeof *subdir);
    const char **tdir = apr_pcalloc(s->pool, (ntargets + 1) * sizeof *tdir);
    user_usage *uu = apr_pcalloc(s->pool, (ntargets + 1) * sizeof *uu);
    size_t nuu = 0;
    uint32_t flags = meta->flags & ~MP_FLAG_RECENT;
    for (size_t i = 0; i < ntargets; i++) {
        mp_save_target *t = &targets[i];
        const char *dir, *disk, *base;
        struct stat st;
        if (!t->user) {
            t->result = MP_STORE_NOTFOUND;
            continue;
        }
        t->result = md_folder_resolve(t->user, t->folder, s->pool, &dir, &disk);
        if (t->result == MP_STORE_OK && stat(apr_pstrcat(s->pool, dir, "/cur", NULL), &st) != 0)
            t->result = MP_STORE_NOTFOUND;
        if (t->result == MP_STORE_OK)
            t->result = check_quota(uu, &nuu, t->user, s->crlf_size);
        uint32_t mask = 0;
        if (t->result == MP_STORE_OK && meta->nkeywords)
            t->result = md_keyword_mask(dir, meta->nkeywords, meta->keywords, &mask);
        if (t->result != MP_STORE_OK)
            continue;
        /* A plain delivery goes to new/ (no MUA has seen it, Maildir); anything with flags to cur/. */
        int to_new = meta->delivery && !flags && !mask;
        const char *suffix = to_new ? "" : md_suffix_build(s->pool, NULL, flags, mask);
        const char *sub = to_new ? "new" : "cur";
        if (md_link_into(s->tmp_path, dir, sub, s->tmp_base, tail, suffix, s->pool, &base) != 0) {
            md_log(MP_LOG_ERROR, 60504, "linking %s into %s/%s failed: %s", s->tmp_path, dir, sub, strerror(errno));
            t->result = MP_STORE_ERR;
            continue;
        }
        tdir[i] = dir;
        subdir[i] = apr_pstrcat(s->pool, dir, "/", sub, NULL);
        made[i] = apr_pstrcat(s->pool, base, suffix, NULL);
    }
    /* Each target folder durable once (two targets may share one), its fsync shared with the other
       commits into it that run at the same time. */
    for (size_t i = 0; i < ntargets; i++) {
        if (!made[i])
            continue;
        size_t j = 0;
        while (j < i && !(made[j] && strcmp(subdir[j], subdir[i]) == 0))
            j++;
        int ok = j < i ? targets[j].result == MP_STORE_OK : md_fsync_dir_group(subdir[i]) == 0;
        if (ok && !meta->delivery) {
            int64_t date = meta->internal_date ? (int64_t)apr_time_sec(meta->internal_date) : (int64_t)time(NULL);
            ok = md_index_register(targets[i].user->root, tdir[i], &made[i], &s->crlf_size, &date, 1,
                                   &targets[i].uidvalidity, &targets[i].uid) == MP_STORE_OK;
        }
        if (!ok) {
            targets[i].result = MP_STORE_ERR;
            unlink(apr_pstrcat(s->pool, subdir[i], "/", made[i], NULL));
        }
    }
    for (size_t i = 0; i < ntargets; i++)
        if (targets[i].result == MP_STORE_OK)
            rv = MP_STORE_OK;
    if (rv != MP_STORE_OK && ntargets)
        rv = targets[0].result;
out:
    s->done = 1;
    apr_pool_destroy(s->pool); /* closes the spool, and unlinks its tmp/ name if it still has one */
    s->pool = NULL;
    return rv;
}

void md_save_abort(mp_save *s)
{
    if (!s || s->done)
        return;
    s->done = 1;
    apr_pool_destroy(s->pool);
    s->pool = NULL;
}
