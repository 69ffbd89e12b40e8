/*
 * Folder views (mp_folder): the snapshot a session sees, syncing it, flags, expunge, copy, POP3 lock,
 * reading messages. Messages 60400-60499.
 *
 * A view holds its own copy of the index (f->ix, the newest state it knows) and a snapshot (f->msgs, what
 * the session was told). Every index change takes the folder's flock for a moment only. Recent (RFC 3501
 * section 2.3.2): the index keeps the first UID nobody has claimed yet; a read-write view that syncs
 * claims everything from there, so exactly one session sees a message as Recent.
 */
#include "maildir.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <apr_strings.h>

static apr_status_t folder_cleanup(void *data)
{
    mp_folder *f = data;
    md_watch_unsubscribe(f); /* first: notify is never called once the view is gone */
    if (f->lock_fd >= 0)
        close(f->lock_fd);
    if (f->pop3_fd >= 0)
        close(f->pop3_fd); /* releases folder_lock's flock */
    f->lock_fd = f->pop3_fd = -1;
    return APR_SUCCESS;
}

static int folder_exists(const char *dir)
{
    char path[4096];
    struct stat st;
    snprintf(path, sizeof path, "%s/cur", dir);
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

/* Takes the folder lock. A folder deleted and made again under the same name has a new lock file:
   locking the old one would exclude nobody, so the view changes to the new one. */
static int view_lock(mp_folder *f)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", f->dir, MD_INDEX_LOCK);
    for (int attempt = 0; attempt < 3; attempt++) {
        struct stat held, now;
        if (md_lock(f->lock_fd) != 0)
            return MP_STORE_ERR;
        if (fstat(f->lock_fd, &held) == 0 && stat(path, &now) == 0 && held.st_ino == now.st_ino &&
            held.st_dev == now.st_dev)
            return MP_STORE_OK;
        md_unlock(f->lock_fd);
        int fd = md_lock_open(f->dir, MD_INDEX_LOCK);
        if (fd < 0)
            return errno == ENOENT ? MP_STORE_NOTFOUND : MP_STORE_ERR; /* the folder is gone */
        close(f->lock_fd);
        f->lock_fd = fd;
    }
    return MP_STORE_ERR;
}

/* Locked sync of the view's index with the files. */
static int refresh(mp_folder *f, unsigned flags, uint32_t *claim_from_r)
{
    int lrv = view_lock(f);
    if (lrv != MP_STORE_OK)
        return lrv;
    int rv = md_sync_locked(&f->ix, f->root, f->dir, flags, claim_from_r);
    if (rv == MP_STORE_OK && md_keywords_load(&f->kw, f->dir) != 0)
        rv = MP_STORE_ERR;
    md_unlock(f->lock_fd);
    return rv;
}

static void fill_msg(mp_folder *f, const md_rec *r, apr_pool_t *pool, mp_msg *m, uint32_t recent)
{
    uint32_t kwmask;
    m->uid = r->uid;
    m->flags = md_suffix_flags(r->suffix, &kwmask) | recent;
    m->size = r->size;
    m->modseq = r->modseq;
    m->internal_date = (apr_time_t)r->date * APR_USEC_PER_SEC;
    m->key = md_msg_key(pool, r->base, r->base_len);
    m->nkeywords = 0;
    m->keywords = NULL;
    if (kwmask) {
        const char **kws = apr_palloc(pool, MD_NKEYWORDS * sizeof *kws);
        for (int i = 0; i < MD_NKEYWORDS; i++)
            if ((kwmask & (1u << i)) && f->kw.names[i])
                kws[m->nkeywords++] = f->kw.names[i]; /* letters without a name are not shown */
        m->keywords = kws;
    }
}

static int msg_differs(const mp_msg *a, const mp_msg *b)
{
    if (((a->flags ^ b->flags) & ~MP_FLAG_RECENT) || a->modseq != b->modseq || a->nkeywords != b->nkeywords)
        return 1;
    for (uint32_t i = 0; i < a->nkeywords; i++)
        if (strcmp(a->keywords[i], b->keywords[i]) != 0)
            return 1;
    return 0;
}

/* The index record of the view's message `uid`, or NULL when the index no longer numbers messages as the
   view does: rebuilt with a new UIDVALIDITY (its file lost or damaged), a UID there may name another
   message, and no flag, deletion or read may go by it. */
static md_rec *view_find(mp_folder *f, uint32_t uid)
{
    if (f->snap_uidvalidity && f->ix.uidvalidity != f->snap_uidvalidity)
        return NULL;
    return md_index_find_uid(&f->ix, uid);
}

static mp_msg *snap_find(mp_folder *f, uint32_t uid, uint32_t *seq_r)
{
    uint32_t lo = 0, hi = f->count;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (f->msgs[mid].uid < uid)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo < f->count && f->msgs[lo].uid == uid) {
        if (seq_r)
            *seq_r = lo;
        return &f->msgs[lo];
    }
    return NULL;
}

static int64_t ns_of(const struct timespec *t)
{
    return (int64_t)t->tv_sec * 1000000000 + t->tv_nsec;
}

static void stamp_take(const mp_folder *f, md_stamp *st)
{
    struct timespec now;
    struct stat c, n, ix;
    char path[4096];
    clock_gettime(CLOCK_REALTIME, &now);
    st->ok = 0;
    snprintf(path, sizeof path, "%s/cur", f->dir);
    if (stat(path, &c) != 0)
        return;
    snprintf(path, sizeof path, "%s/new", f->dir);
    if (stat(path, &n) != 0)
        return;
    snprintf(path, sizeof path, "%s/" MD_INDEX_FILE, f->dir);
    if (stat(path, &ix) != 0)
        return;
    st->taken_ns = ns_of(&now);
    st->cur_ns = ns_of(&c.st_mtim);
    st->new_ns = ns_of(&n.st_mtim);
    st->ix_ns = ns_of(&ix.st_mtim);
    st->ix_size = (int64_t)ix.st_size;
    st->ix_ino = (uint64_t)ix.st_ino;
    st->ok = 1;
}

/* Nothing changed since the view was taken. Times move in clock ticks, so a change in the same tick as
   one the stamp saw would not show: only times a second older than the stamp are trusted. */
static int stamp_unchanged(const mp_folder *f)
{
    const md_stamp *o = &f->stamp;
    const int64_t second = 1000000000;
    if (!o->ok || o->cur_ns > o->taken_ns - second || o->new_ns > o->taken_ns - second ||
        o->ix_ns > o->taken_ns - second)
        return 0;
    md_stamp now;
    stamp_take(f, &now);
    return now.ok && now.cur_ns == o->cur_ns && now.new_ns == o->new_ns && now.ix_ns == o->ix_ns &&
           now.ix_size == o->ix_size && now.ix_ino == o->ix_ino;
}

/* Syncs and builds the next snapshot, telling cb (may be NULL) what changed. */
static int sync_view(mp_folder *f, const mp_sync_cb *cb, void *arg)
{
    md_stamp stamp;
    stamp_take(f, &stamp); /* before the scan: a change during it shows at the next sync */
    uint32_t claim_from;
    unsigned flags = f->readonly ? 0 : (MD_SYNC_MOVE_NEW | MD_SYNC_CLAIM_RECENT);
    int rv = refresh(f, flags, &claim_from);
    if (rv != MP_STORE_OK)
        return rv;
    md_index *ix = &f->ix;
    apr_pool_t *np;
    apr_pool_create(&np, f->pool);
    const mp_msg *old = f->msgs;
    uint32_t oldn = f->count;
    /* A new UIDVALIDITY: every message this view showed is gone, every message is new (RFC 3501 2.3.1.1). */
    int reset = f->snap_uidvalidity && f->snap_uidvalidity != ix->uidvalidity;
    if (reset)
        md_log(MP_LOG_WARN, 60400, "%s: UIDVALIDITY changed from %u to %u", f->dir, f->snap_uidvalidity,
               ix->uidvalidity);
    uint32_t old_max = oldn && !reset ? old[oldn - 1].uid : 0;
    mp_msg *nm = apr_palloc(np, (ix->n + 1) * sizeof *nm);
    uint32_t *gone = apr_palloc(np, (oldn + 1) * sizeof *gone), *changed = apr_palloc(np, (ix->n + 1) * sizeof *changed);
    uint32_t nn = 0, ngone = 0, nchanged = 0, added = 0, i = 0, recent = 0;
    for (uint32_t j = 0; j < ix->n; j++) {
        const md_rec *r = &ix->recs[j];
        if (r->dead)
            continue;
        while (!reset && i < oldn && old[i].uid < r->uid)
            gone[ngone++] = i++;
        if (!reset && i < oldn && old[i].uid == r->uid) {
            fill_msg(f, r, np, &nm[nn], old[i].flags & MP_FLAG_RECENT);
            if (msg_differs(&old[i], &nm[nn]))
                changed[nchanged++] = nn;
            i++;
        } else if (r->uid > old_max) {
            int is_recent = !f->readonly && r->uid >= claim_from;
            fill_msg(f, r, np, &nm[nn], is_recent ? MP_FLAG_RECENT : 0);
            added++;
        } else {
            continue; /* below the UIDs this view has shown, never seen by it: it cannot appear now */
        }
        recent += (nm[nn].flags & MP_FLAG_RECENT) != 0;
        nn++;
    }
    while (i < oldn)
        gone[ngone++] = i++;
    if (cb) {
        for (uint32_t k = ngone; k-- > 0;) /* highest first: each seq is right in the view as it shrinks */
            if (cb->expunged)
                cb->expunged(arg, gone[k] + 1, old[gone[k]].uid);
        for (uint32_t k = 0; k < nchanged && cb->flags; k++)
            cb->flags(arg, changed[k] + 1, &nm[changed[k]]);
        if (added && cb->exists)
            cb->exists(arg, nn, recent);
    }
    if (f->snap_pool)
        apr_pool_destroy(f->snap_pool);
    f->snap_pool = np;
    f->msgs = nm;
    f->count = nn;
    f->snap_uidvalidity = ix->uidvalidity;
    f->snap_uidnext = ix->uidnext;
    f->snap_hms = ix->highestmodseq;
    f->stamp = stamp;
    return MP_STORE_OK;
}

int md_folder_open(mp_store_user *u, const char *name, int readonly, apr_pool_t *pool, mp_folder **f_r)
{
    apr_pool_t *fp;
    const char *dir, *disk;
    if (apr_pool_create(&fp, pool) != APR_SUCCESS)
        return MP_STORE_ERR;
    int rv = md_folder_resolve(u, name, fp, &dir, &disk);
    if (rv == MP_STORE_OK && !folder_exists(dir))
        rv = MP_STORE_NOTFOUND;
    if (rv != MP_STORE_OK) {
        apr_pool_destroy(fp);
        return rv;
    }
    mp_folder *f = apr_pcalloc(fp, sizeof *f);
    f->user = u;
    f->pool = fp;
    f->name = apr_pstrdup(fp, name);
    f->dir = dir;
    f->root = apr_pstrdup(fp, u->root);
    f->readonly = readonly;
    f->pop3_fd = -1;
    f->kw.pool = fp;
    md_index_init(&f->ix, fp);
    f->lock_fd = md_lock_open(dir, MD_INDEX_LOCK);
    apr_pool_cleanup_register(fp, f, folder_cleanup, apr_pool_cleanup_null); /* runs before ix's */
    if (f->lock_fd < 0) {
        apr_pool_destroy(fp);
        return MP_STORE_ERR;
    }
    if (!readonly)
        md_clean_tmp(dir);
    rv = sync_view(f, NULL, NULL);
    if (rv != MP_STORE_OK) {
        apr_pool_destroy(fp);
        return rv;
    }
    *f_r = f;
    return MP_STORE_OK;
}

void md_folder_close(mp_folder *f)
{
    if (f)
        apr_pool_destroy(f->pool);
}

void md_folder_status(mp_folder *f, mp_folder_status *st)
{
    memset(st, 0, sizeof *st);
    st->uidvalidity = f->snap_uidvalidity;
    st->uidnext = f->snap_uidnext;
    st->messages = f->count;
    st->highestmodseq = f->snap_hms;
    for (uint32_t i = 0; i < f->count; i++) {
        st->recent += (f->msgs[i].flags & MP_FLAG_RECENT) != 0;
        st->unseen += (f->msgs[i].flags & MP_FLAG_SEEN) == 0;
    }
}

void md_folder_messages(mp_folder *f, const mp_msg **msgs_r, uint32_t *count_r)
{
    *msgs_r = f->msgs;
    *count_r = f->count;
}

int md_folder_sync(mp_folder *f, const mp_sync_cb *cb, void *arg)
{
    if (stamp_unchanged(f))
        return MP_STORE_OK; /* three stats instead of reading the folder (POP3 syncs once more under its lock) */
    return sync_view(f, cb, arg);
}

int md_folder_lock(mp_folder *f)
{
    if (f->pop3_fd >= 0)
        return MP_STORE_OK;
    int fd = md_lock_open(f->dir, MD_POP3_LOCK);
    if (fd < 0)
        return MP_STORE_ERR;
    /* RFC 1939 section 8: one POP3 session per maildrop. Non-blocking: the second one is told at once. */
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        int err = errno;
        close(fd);
        if (err == EWOULDBLOCK)
            return MP_STORE_LOCKED;
        md_log(MP_LOG_ERROR, 60401, "flock(%s/%s) failed: %s", f->dir, MD_POP3_LOCK, strerror(err));
        return MP_STORE_ERR;
    }
    f->pop3_fd = fd;
    return MP_STORE_OK;
}

int md_folder_peek(mp_store_user *u, const char *name, mp_folder_status *st)
{
    apr_pool_t *pool;
    const char *dir, *disk;
    apr_pool_create(&pool, u->pool);
    int rv = md_folder_resolve(u, name, pool, &dir, &disk);
    if (rv == MP_STORE_OK && !folder_exists(dir))
        rv = MP_STORE_NOTFOUND;
    int fd = -1;
    if (rv == MP_STORE_OK && ((fd = md_lock_open(dir, MD_INDEX_LOCK)) < 0 || md_lock(fd) != 0))
        rv = MP_STORE_ERR;
    if (rv == MP_STORE_OK) {
        md_index *ix = apr_palloc(pool, sizeof *ix);
        md_index_init(ix, pool);
        rv = md_sync_locked(ix, u->root, dir, 0, NULL); /* new mail gets its UIDs: UIDNEXT is right */
        memset(st, 0, sizeof *st);
        if (rv == MP_STORE_OK) {
            st->uidvalidity = ix->uidvalidity;
            st->uidnext = ix->uidnext;
            st->highestmodseq = ix->highestmodseq;
            for (uint32_t i = 0; i < ix->n; i++) {
                st->messages++;
                st->recent += ix->recs[i].uid >= ix->first_recent;
                st->unseen += (md_suffix_flags(ix->recs[i].suffix, NULL) & MP_FLAG_SEEN) == 0;
            }
        }
    }
    if (fd >= 0) {
        md_unlock(fd);
        close(fd);
    }
    apr_pool_destroy(pool);
    return rv;
}

/* ---- flags ---- */

int md_store_flags(mp_folder *f, uint32_t uid, int mode, uint32_t flags, uint32_t nkeywords,
                   const char *const *keywords, uint64_t unchangedsince)
{
    if (f->readonly)
        return MP_STORE_READONLY;
    for (uint32_t i = 0; i < nkeywords; i++)
        if (!md_keyword_valid(keywords[i]))
            return MP_STORE_BADNAME;
    mp_msg *m = snap_find(f, uid, NULL);
    if (!m)
        return MP_STORE_NOTFOUND;
    int lrv = view_lock(f);
    if (lrv != MP_STORE_OK)
        return lrv;
    apr_pool_t *tmp;
    apr_pool_create(&tmp, f->pool);
    md_index *ix = &f->ix;
    int rv = md_index_load(ix, f->dir, NULL); /* cheap when nobody else wrote */
    if (rv == MP_STORE_OK && (!ix->loaded || md_keywords_load(&f->kw, f->dir) != 0))
        rv = MP_STORE_ERR;
    md_rec *r = rv == MP_STORE_OK ? view_find(f, uid) : NULL;
    if (rv == MP_STORE_OK && !r)
        rv = MP_STORE_NOTFOUND; /* expunged by another session */
    /* RFC 7162 section 3.2: UNCHANGEDSINCE fails when the message changed after that MODSEQ. */
    if (rv == MP_STORE_OK && unchangedsince && r->modseq > unchangedsince)
        rv = MP_STORE_MODIFIED;
    uint32_t mask = 0;
    for (uint32_t i = 0; rv == MP_STORE_OK && i < nkeywords; i++) {
        int k = md_keywords_index(&f->kw, f->dir, keywords[i], mode >= 0);
        if (k == -2 || (k == -1 && mode >= 0))
            rv = MP_STORE_ERR;
        else if (k >= 0)
            mask |= 1u << k;
    }
    for (int attempt = 0; rv == MP_STORE_OK; attempt++) {
        uint32_t cur_kw, cur = md_suffix_flags(r->suffix, &cur_kw), want = flags & ~MP_FLAG_RECENT, want_kw = mask;
        if (mode > 0)
            want |= cur, want_kw |= cur_kw;
        else if (mode < 0)
            want = cur & ~want, want_kw = cur_kw & ~mask;
        if (want == cur && want_kw == cur_kw)
            break; /* no change, no new MODSEQ (RFC 7162 section 3.2) */
        char *suffix = md_suffix_build(tmp, r->suffix, want, want_kw);
        char from[4096], to[4096];
        snprintf(from, sizeof from, "%s/%s/%s%s", f->dir, r->in_new ? "new" : "cur", r->base, r->suffix);
        snprintf(to, sizeof to, "%s/cur/%s%s", f->dir, r->base, suffix);
        if (rename(from, to) == 0) {
            md_index_update(ix, r, suffix, 0, want != cur || want_kw != cur_kw);
            rv = md_index_save(ix, f->dir);
            break;
        }
        if (errno != ENOENT || attempt > 0) {
            md_log(MP_LOG_ERROR, 60402, "rename(%s, %s) failed: %s", from, to, strerror(errno));
            rv = errno == ENOENT ? MP_STORE_NOTFOUND : MP_STORE_ERR;
            break;
        }
        /* Someone else renamed it (Dovecot, a MUA): find its name now. */
        rv = md_sync_locked(ix, f->root, f->dir, 0, NULL);
        if (rv == MP_STORE_OK && !(r = view_find(f, uid)))
            rv = MP_STORE_NOTFOUND;
    }
    md_unlock(f->lock_fd);
    if (rv == MP_STORE_OK) {
        /* The view's entry shows the message as it is now (with other sessions' changes too). */
        uint32_t recent = m->flags & MP_FLAG_RECENT;
        fill_msg(f, r, f->snap_pool, m, recent);
    }
    apr_pool_destroy(tmp);
    return rv;
}

/* ---- expunge ---- */

static int uid_cmp(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

int md_expunge(mp_folder *f, const uint32_t *uids, uint32_t nuids, const mp_sync_cb *cb, void *arg)
{
    if (f->readonly)
        return MP_STORE_READONLY;
    uint32_t *sorted = NULL;
    if (uids) {
        sorted = malloc((nuids + 1) * sizeof *sorted);
        if (!sorted)
            return MP_STORE_ERR;
        memcpy(sorted, uids, nuids * sizeof *sorted);
        qsort(sorted, nuids, sizeof *sorted, uid_cmp);
    }
    int lrv = view_lock(f);
    if (lrv != MP_STORE_OK) {
        free(sorted);
        return lrv;
    }
    md_index *ix = &f->ix;
    /* The files say which messages have \Deleted now, whoever set it. */
    int rv = md_sync_locked(ix, f->root, f->dir, 0, NULL);
    uint8_t *gone = calloc(f->count + 1, 1);
    char path[4096];
    for (uint32_t i = 0; rv == MP_STORE_OK && gone && i < f->count; i++) {
        uint32_t uid = f->msgs[i].uid;
        if (sorted && !bsearch(&uid, sorted, nuids, sizeof *sorted, uid_cmp))
            continue;
        md_rec *r = view_find(f, uid);
        if (!r || !(md_suffix_flags(r->suffix, NULL) & MP_FLAG_DELETED))
            continue; /* already gone (the next sync tells), or not \Deleted */
        snprintf(path, sizeof path, "%s/%s/%s%s", f->dir, r->in_new ? "new" : "cur", r->base, r->suffix);
        if (unlink(path) != 0 && errno != ENOENT) {
            md_log(MP_LOG_ERROR, 60403, "unlink(%s) failed: %s", path, strerror(errno));
            rv = MP_STORE_ERR;
            break;
        }
        md_index_expunge(ix, r);
        gone[i] = 1;
    }
    if (!gone)
        rv = MP_STORE_ERR;
    int srv = md_index_save(ix, f->dir);
    md_unlock(f->lock_fd);
    if (rv == MP_STORE_OK)
        rv = srv;
    /* Whatever was unlinked is gone, even after an error: tell it, highest seq first, and drop it. */
    uint32_t j = 0;
    for (uint32_t i = f->count; gone && i-- > 0;)
        if (gone[i] && cb && cb->expunged)
            cb->expunged(arg, i + 1, f->msgs[i].uid);
    for (uint32_t i = 0; gone && i < f->count; i++)
        if (!gone[i])
            f->msgs[j++] = f->msgs[i];
    if (gone)
        f->count = j;
    free(gone);
    free(sorted);
    return rv;
}

/* ---- copy and move ---- */

int md_copy(mp_folder *f, const uint32_t *uids, uint32_t nuids, const char *to, int move, uint32_t *uidvalidity_r,
            uint32_t *uids_r)
{
    if (move && f->readonly)
        return MP_STORE_READONLY;
    apr_pool_t *pool;
    const char *dest, *disk;
    apr_pool_create(&pool, f->pool);
    int rv = md_folder_resolve(f->user, to, pool, &dest, &disk);
    if (rv == MP_STORE_OK && !folder_exists(dest))
        rv = MP_STORE_NOTFOUND;
    uint64_t total = 0;
    for (uint32_t i = 0; rv == MP_STORE_OK && i < nuids; i++) {
        const mp_msg *m = snap_find(f, uids[i], NULL);
        if (!m)
            rv = MP_STORE_NOTFOUND;
        else
            total += m->size;
    }
    mp_store_user *u = f->user;
    if (rv == MP_STORE_OK && !move && (u->bytes_limit || u->messages_limit)) {
        uint64_t bytes, msgs;
        rv = md_quota_usage(u, &bytes, &msgs);
        if (rv == MP_STORE_OK && ((u->bytes_limit && bytes + total > u->bytes_limit) ||
                                  (u->messages_limit && msgs + nuids > u->messages_limit)))
            rv = MP_STORE_OVERQUOTA;
    }
    /* Keywords are letters per folder: map the names into the destination's letters. */
    uint32_t names_n = 0, dest_mask = 0;
    const char *names[MD_NKEYWORDS];
    int dest_letter[MD_NKEYWORDS];
    for (uint32_t i = 0; rv == MP_STORE_OK && i < nuids; i++) {
        const mp_msg *m = snap_find(f, uids[i], NULL);
        for (uint32_t k = 0; k < m->nkeywords; k++) {
            uint32_t x = 0;
            while (x < names_n && strcmp(names[x], m->keywords[k]) != 0)
                x++;
            if (x == names_n && names_n < MD_NKEYWORDS)
                names[names_n++] = m->keywords[k];
        }
    }
    for (uint32_t x = 0; rv == MP_STORE_OK && x < names_n; x++) {
        uint32_t one;
        rv = md_keyword_mask(dest, 1, &names[x], &one);
        dest_letter[x] = __builtin_ctz(one ? one : 1);
        dest_mask |= one;
    }
    const char **made = apr_pcalloc(pool, (nuids + 1) * sizeof *made);
    uint64_t *sizes = apr_palloc(pool, (nuids + 1) * sizeof *sizes);
    int64_t *dates = apr_palloc(pool, (nuids + 1) * sizeof *dates);
    uint32_t nmade = 0;
    for (uint32_t i = 0; rv == MP_STORE_OK && i < nuids; i++) {
        const mp_msg *m = snap_find(f, uids[i], NULL);
        uint32_t mask = 0;
        for (uint32_t k = 0; k < m->nkeywords; k++)
            for (uint32_t x = 0; x < names_n; x++)
                if (strcmp(names[x], m->keywords[k]) == 0)
                    mask |= 1u << dest_letter[x];
        for (int attempt = 0;; attempt++) {
            md_rec *r = view_find(f, uids[i]);
            if (!r && attempt == 0) {
                if ((rv = refresh(f, 0, NULL)) != MP_STORE_OK)
                    break;
                continue;
            }
            if (!r) {
                rv = MP_STORE_NOTFOUND; /* expunged meanwhile */
                break;
            }
            char src[4096];
            snprintf(src, sizeof src, "%s/%s/%s%s", f->dir, r->in_new ? "new" : "cur", r->base, r->suffix);
            const char *comma = memchr(r->base, ',', r->base_len), *base;
            const char *tail = comma ? apr_pstrdup(pool, comma) : "";
            uint64_t w;
            if (!md_base_field(r->base, r->base_len, 'W', &w))
                tail = apr_psprintf(pool, "%s,W=%" APR_UINT64_T_FMT, tail, (apr_uint64_t)r->size);
            const char *suffix = md_suffix_build(pool, r->suffix, m->flags & ~MP_FLAG_RECENT, mask & dest_mask);
            if (md_link_into(src, dest, "cur", NULL, tail, suffix, pool, &base) == 0) {
                made[nmade] = apr_pstrcat(pool, base, suffix, NULL);
                sizes[nmade] = r->size;
                dates[nmade++] = r->date;
                break;
            }
            if (errno != ENOENT || attempt > 0) {
                md_log(MP_LOG_ERROR, 60404, "copying %s to %s failed: %s", src, dest, strerror(errno));
                rv = errno == ENOENT ? MP_STORE_NOTFOUND : MP_STORE_ERR;
                break;
            }
            if ((rv = refresh(f, 0, NULL)) != MP_STORE_OK) /* renamed by someone: its name now */
                break;
        }
    }
    char cur[4096];
    snprintf(cur, sizeof cur, "%s/cur", dest);
    if (rv == MP_STORE_OK && nmade && md_fsync_dir(cur) != 0)
        rv = MP_STORE_ERR;
    *uidvalidity_r = 0;
    if (rv == MP_STORE_OK)
        rv = md_index_register(f->root, dest, made, sizes, dates, nmade, uidvalidity_r, uids_r);
    if (rv != MP_STORE_OK) {
        for (uint32_t i = 0; i < nmade; i++) /* all or nothing */
            unlink(apr_pstrcat(pool, cur, "/", made[i], NULL));
    } else if (move && nuids) {
        /* RFC 6851: the originals go; this view hears it at its next sync. */
        if ((rv = view_lock(f)) == MP_STORE_OK) {
            rv = md_sync_locked(&f->ix, f->root, f->dir, 0, NULL); /* the files' names as they are now */
            for (uint32_t i = 0; rv == MP_STORE_OK && i < nuids; i++) {
                md_rec *r = view_find(f, uids[i]);
                char path[4096];
                if (!r)
                    continue;
                snprintf(path, sizeof path, "%s/%s/%s%s", f->dir, r->in_new ? "new" : "cur", r->base, r->suffix);
                if (unlink(path) != 0 && errno != ENOENT) {
                    md_log(MP_LOG_ERROR, 60405, "unlink(%s) failed: %s", path, strerror(errno));
                    continue; /* kept; the copy is made */
                }
                md_index_expunge(&f->ix, r);
            }
            if (rv == MP_STORE_OK)
                rv = md_index_save(&f->ix, f->dir);
            md_unlock(f->lock_fd);
        }
    }
    apr_pool_destroy(pool);
    return rv;
}

/* ---- reading a message ---- */

struct mp_msg_stream {
    apr_pool_t *pool;
    int fd;
    int prev_cr;     /* the last byte given out was a CR */
    int pending_lf;  /* a bare LF became CR, its LF is still to give */
    size_t pos, len;
    char buf[32768];
};

static apr_status_t stream_cleanup(void *data)
{
    mp_msg_stream *s = data;
    if (s->fd >= 0)
        close(s->fd);
    s->fd = -1;
    return APR_SUCCESS;
}

int md_message_open(mp_folder *f, uint32_t uid, apr_pool_t *pool, mp_msg_stream **stream_r)
{
    if (!snap_find(f, uid, NULL))
        return MP_STORE_NOTFOUND;
    for (int attempt = 0;; attempt++) {
        md_rec *r = view_find(f, uid);
        int fd = -1;
        char path[4096] = "";
        if (r) {
            snprintf(path, sizeof path, "%s/%s/%s%s", f->dir, r->in_new ? "new" : "cur", r->base, r->suffix);
            fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
        } else if (attempt > 0) {
            return MP_STORE_NOTFOUND; /* expunged by another session */
        } else {
            errno = ENOENT; /* the view's index was reset by an error: read it again */
        }
        if (fd >= 0) {
            mp_msg_stream *s = apr_palloc(pool, sizeof *s);
            s->pool = pool;
            s->fd = fd;
            s->prev_cr = s->pending_lf = 0;
            s->pos = s->len = 0;
            apr_pool_cleanup_register(pool, s, stream_cleanup, apr_pool_cleanup_null);
            *stream_r = s;
            return MP_STORE_OK;
        }
        if (errno != ENOENT) {
            md_log(MP_LOG_ERROR, 60406, "open(%s) failed: %s", path, strerror(errno));
            return MP_STORE_ERR;
        }
        if (attempt > 0)
            return MP_STORE_NOTFOUND;
        int rv = refresh(f, 0, NULL); /* flags changed its name: find it */
        if (rv != MP_STORE_OK)
            return rv;
    }
}

long md_stream_read(mp_msg_stream *s, char *buf, size_t len)
{
    size_t out = 0;
    while (out < len) {
        if (s->pending_lf) {
            buf[out++] = '\n';
            s->pending_lf = 0;
            continue;
        }
        if (s->pos == s->len) {
            ssize_t n = s->fd >= 0 ? read(s->fd, s->buf, sizeof s->buf) : 0;
            if (n < 0 && errno == EINTR)
                continue;
            if (n < 0) {
                md_log(MP_LOG_ERROR, 60407, "reading a message failed: %s", strerror(errno));
                return out ? (long)out : -1;
            }
            if (n == 0)
                break;
            s->pos = 0, s->len = (size_t)n;
        }
        size_t n = s->len - s->pos < len - out ? s->len - s->pos : len - out;
        const char *src = s->buf + s->pos, *lf = memchr(src, '\n', n);
        size_t run = lf ? (size_t)(lf - src) : n;
        memcpy(buf + out, src, run);
        out += run, s->pos += run;
        if (run)
            s->prev_cr = src[run - 1] == '\r';
        if (!lf || out == len)
            continue;
        /* At an LF: as it is after a CR, else CRLF (files written by Dovecot or a MUA with LF ends). */
        buf[out++] = s->prev_cr ? '\n' : '\r';
        s->pending_lf = !s->prev_cr;
        s->prev_cr = 0;
        s->pos++;
    }
    return (long)out;
}

void md_stream_close(mp_msg_stream *s)
{
    if (!s)
        return;
    apr_pool_cleanup_run(s->pool, s, stream_cleanup);
}
