/*
 * Bringing a folder's index up to its files (new/ and cur/), and the dovecot-keywords file.
 * Messages 60300-60399.
 *
 * Deliveries only add files (a link into new/, no lock), so a reader finds them here and gives them UIDs in
 * the order they arrived. Every other change of files we make (flags, expunge, new/ -> cur/) happens under
 * the folder lock, which this runs under too, so a readdir here never races our own renames. Other
 * programs (Dovecot, a MUA) may rename without our lock: a message the readdir misses is looked for once
 * more before it counts as expunged.
 */
#include "maildir.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <apr_strings.h>

/* ---- dovecot-keywords: "N name" per line, N 0..25 is the letter 'a' + N ---- */

int md_keywords_load(md_keywords *kw, const char *dir)
{
    char path[4096], *data;
    size_t len;
    struct stat st;
    snprintf(path, sizeof path, "%s/%s", dir, MD_KEYWORDS_FILE);
    if (stat(path, &st) != 0) {
        if (errno != ENOENT) {
            md_log(MP_LOG_ERROR, 60300, "stat(%s) failed: %s", path, strerror(errno));
            return -1;
        }
        memset(kw->names, 0, sizeof kw->names);
        kw->ino = 0;
        return 0;
    }
    int64_t mtime_ns = (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec;
    if (kw->ino == st.st_ino && kw->dev == st.st_dev && kw->size == st.st_size && kw->mtime_ns == mtime_ns)
        return 0;
    int rv = md_read_file(path, kw->pool, &data, &len);
    if (rv < 0)
        return -1;
    memset(kw->names, 0, sizeof kw->names);
    if (rv == 0) {
        for (char *save = NULL, *line = strtok_r(data, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
            char *end;
            unsigned long i = strtoul(line, &end, 10);
            if (end == line || *end != ' ' || i >= MD_NKEYWORDS || !md_keyword_valid(end + 1))
                continue; /* what we cannot use, Dovecot cannot either */
            kw->names[i] = end + 1;
        }
    }
    kw->dev = st.st_dev, kw->ino = st.st_ino, kw->size = st.st_size, kw->mtime_ns = mtime_ns;
    return 0;
}

int md_keywords_index(md_keywords *kw, const char *dir, const char *name, int create)
{
    if (md_keywords_load(kw, dir) != 0)
        return -2;
    int free_slot = -1;
    for (int i = 0; i < MD_NKEYWORDS; i++) {
        if (kw->names[i] && strcasecmp(kw->names[i], name) == 0) /* RFC 3501: flags are case-insensitive */
            return i;
        if (!kw->names[i] && free_slot < 0)
            free_slot = i;
    }
    if (!create)
        return -1;
    if (free_slot < 0) {
        md_log(MP_LOG_WARN, 60301, "%s: no keyword letter left for \"%s\"", dir, name);
        return -1;
    }
    kw->names[free_slot] = apr_pstrdup(kw->pool, name);
    char *text = "";
    for (int i = 0; i < MD_NKEYWORDS; i++)
        if (kw->names[i])
            text = apr_psprintf(kw->pool, "%s%d %s\n", text, i, kw->names[i]);
    if (md_write_atomic(dir, MD_KEYWORDS_FILE, text, strlen(text)) != 0) {
        kw->names[free_slot] = NULL;
        return -2;
    }
    kw->ino = 0; /* read it back next time: the stat of our own write */
    md_keywords_load(kw, dir);
    return free_slot;
}

int md_keyword_mask(const char *dir, uint32_t n, const char *const *names, uint32_t *mask_r)
{
    apr_pool_t *pool;
    apr_pool_create(&pool, NULL);
    md_keywords kw = {.pool = pool};
    uint32_t mask = 0;
    int rv = MP_STORE_OK, fd = -1;
    for (uint32_t i = 0; i < n; i++) {
        int k = md_keywords_index(&kw, dir, names[i], 0);
        if (k == -1 && fd < 0) {
            /* A new keyword: the file changes under the folder lock (Dovecot reads it as is). */
            if ((fd = md_lock_open(dir, MD_INDEX_LOCK)) < 0 || md_lock(fd) != 0) {
                rv = MP_STORE_ERR;
                break;
            }
        }
        if (k == -1)
            k = md_keywords_index(&kw, dir, names[i], 1);
        if (k < 0) {
            rv = MP_STORE_ERR;
            break;
        }
        mask |= 1u << k;
    }
    if (fd >= 0) {
        md_unlock(fd);
        close(fd);
    }
    apr_pool_destroy(pool);
    *mask_r = mask;
    return rv;
}

/* ---- scanning ---- */

typedef struct entry {
    const char *name;
    uint32_t base_len;
    uint8_t in_new;
} entry;

typedef struct scan {
    apr_pool_t *pool;
    entry *e;
    size_t n, cap;
} scan;

/* One of new/ cur/. 0, 1 when the folder is gone, -1 on error. */
static int scan_dir(scan *sc, const char *dir, int in_new)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, in_new ? "new" : "cur");
    DIR *d = opendir(path);
    if (!d) {
        if (errno == ENOENT)
            return 1;
        md_log(MP_LOG_ERROR, 60302, "opendir(%s) failed: %s", path, strerror(errno));
        return -1;
    }
    struct dirent *de;
    errno = 0;
    while ((de = readdir(d)) != NULL) {
        const char *name = de->d_name;
        /* Hidden files are not messages (Maildir); names with blanks could not be index lines. */
        if (name[0] == '.' || strpbrk(name, " \t\n\r") || (de->d_type != DT_REG && de->d_type != DT_UNKNOWN))
            continue;
        size_t blen = md_base_len(name);
        if (blen == 0)
            continue;
        if (sc->n == sc->cap) {
            size_t cap = sc->cap ? sc->cap * 2 : 1024;
            entry *e = realloc(sc->e, cap * sizeof *e);
            if (!e)
                abort();
            sc->e = e, sc->cap = cap;
        }
        sc->e[sc->n++] = (entry){apr_pstrdup(sc->pool, name), (uint32_t)blen, (uint8_t)in_new};
    }
    int err = errno;
    closedir(d);
    if (err) {
        md_log(MP_LOG_ERROR, 60303, "readdir(%s) failed: %s", path, strerror(err));
        return -1;
    }
    return 0;
}

static int scan_folder(scan *sc, const char *dir)
{
    sc->n = 0;
    int rv = scan_dir(sc, dir, 0);
    if (rv == 0)
        rv = scan_dir(sc, dir, 1);
    return rv;
}

/* Arrival order: "<sec>.M<usec>..." compared as numbers, other names by bytes. */
static int arrival_cmp(const void *a, const void *b)
{
    const char *x = ((const entry *)a)->name, *y = ((const entry *)b)->name;
    char *ex, *ey;
    unsigned long long sx = strtoull(x, &ex, 10), sy = strtoull(y, &ey, 10);
    if (ex != x && ey != y && *ex == '.' && *ey == '.') {
        if (sx != sy)
            return sx < sy ? -1 : 1;
        if (ex[1] == 'M' && ey[1] == 'M') {
            unsigned long ux = strtoul(ex + 2, NULL, 10), uy = strtoul(ey + 2, NULL, 10);
            if (ux != uy)
                return ux < uy ? -1 : 1;
        }
    }
    return strcmp(x, y);
}

static int flags_differ(const char *a, const char *b)
{
    uint32_t ka, kb;
    uint32_t fa = md_suffix_flags(a, &ka), fb = md_suffix_flags(b, &kb);
    return fa != fb || ka != kb;
}

/* Matches the files to the index: moves, flag changes, expunges, new messages. */
static int reconcile(md_index *ix, const char *dir, apr_pool_t *pool)
{
    scan sc = {.pool = pool};
    int rv = scan_folder(&sc, dir);
    if (rv != 0) {
        free(sc.e);
        return rv > 0 ? MP_STORE_NOTFOUND : MP_STORE_ERR;
    }
    for (uint32_t i = 0; i < ix->n; i++)
        ix->recs[i].mark = 0;
    entry *fresh = malloc((sc.n + 1) * sizeof *fresh); /* copies: a second scan reuses sc.e */
    if (!fresh)
        abort();
    size_t nfresh = 0;
    for (int pass = 0; pass < 2; pass++) {
        for (size_t i = 0; i < sc.n; i++) {
            entry *e = &sc.e[i];
            md_rec *r = md_index_find_base(ix, e->name, e->base_len);
            if (!r) {
                if (pass == 0)
                    fresh[nfresh++] = *e;
                continue;
            }
            if (r->mark)
                continue; /* the same message twice (new/ and cur/, or two suffixes): the first wins */
            r->mark = 1;
            const char *suffix = e->name + e->base_len;
            if (r->in_new != e->in_new || strcmp(r->suffix, suffix) != 0)
                md_index_update(ix, r, suffix, e->in_new, flags_differ(r->suffix, suffix));
        }
        size_t missing = 0;
        for (uint32_t i = 0; i < ix->n; i++)
            missing += !ix->recs[i].dead && !ix->recs[i].mark;
        if (missing == 0 || pass == 1)
            break;
        /* A rename by another program may have hidden a file from readdir: look once more. */
        if (scan_folder(&sc, dir) != 0)
            break;
    }
    for (uint32_t i = 0; i < ix->n; i++)
        if (!ix->recs[i].dead && !ix->recs[i].mark)
            md_index_expunge(ix, &ix->recs[i]);

    qsort(fresh, nfresh, sizeof *fresh, arrival_cmp);
    char path[4096];
    for (size_t i = 0; i < nfresh; i++) {
        entry *e = &fresh[i];
        if (md_index_find_base(ix, e->name, e->base_len))
            continue; /* listed twice */
        uint64_t size;
        int64_t date;
        struct stat st;
        snprintf(path, sizeof path, "%s/%s/%s", dir, e->in_new ? "new" : "cur", e->name);
        if (md_base_field(e->name, e->base_len, 'W', &size)) {
            if (stat(path, &st) != 0)
                continue; /* gone again */
            date = (int64_t)st.st_mtime;
        } else if (md_file_crlf_size(path, &size, &date) != 0) {
            continue; /* no W= (not ours, not Dovecot's): the size is counted once and kept */
        }
        md_index_add(ix, e->name, e->base_len, e->name + e->base_len, e->in_new, size, date);
    }
    free(fresh);
    free(sc.e);
    return MP_STORE_OK;
}

/* Maildir: a message someone has seen lives in cur/ with an info suffix. cur/ is fsync'ed after a move:
   without a journal, new/ may reach the disk without the message before cur/ has it. */
static void move_new(md_index *ix, const char *dir)
{
    char from[4096], to[4096];
    int moved = 0;
    for (uint32_t i = 0; i < ix->n; i++) {
        md_rec *r = &ix->recs[i];
        if (r->dead || !r->in_new)
            continue;
        const char *suffix = r->suffix[0] ? r->suffix : ":2,";
        snprintf(from, sizeof from, "%s/new/%s%s", dir, r->base, r->suffix);
        snprintf(to, sizeof to, "%s/cur/%s%s", dir, r->base, suffix);
        if (rename(from, to) == 0) {
            md_index_update(ix, r, suffix, 0, 0);
            moved = 1;
        } else if (errno != ENOENT) {
            md_log(MP_LOG_ERROR, 60304, "rename(%s, %s) failed: %s", from, to, strerror(errno));
        }
    }
    if (moved) {
        snprintf(to, sizeof to, "%s/cur", dir);
        md_fsync_dir(to);
    }
}

int md_sync_locked(md_index *ix, const char *root, const char *dir, unsigned flags, uint32_t *claim_from_r)
{
    uint32_t old_uv;
    int rv = md_index_load(ix, dir, &old_uv);
    if (rv != MP_STORE_OK)
        return rv;
    if (!ix->loaded) {
        char cur[4096];
        struct stat st;
        snprintf(cur, sizeof cur, "%s/cur", dir);
        if (stat(cur, &st) != 0)
            return MP_STORE_NOTFOUND; /* the folder went away: no new UIDVALIDITY for nothing */
        md_index_create(ix, md_new_uidvalidity(root, old_uv));
    }
    apr_pool_t *scratch;
    apr_pool_create(&scratch, ix->pool);
    rv = reconcile(ix, dir, scratch);
    apr_pool_destroy(scratch);
    if (rv != MP_STORE_OK) {
        md_index_reset(ix); /* half-applied: read the file again next time */
        return rv;
    }
    if (flags & MD_SYNC_MOVE_NEW)
        move_new(ix, dir);
    if (claim_from_r)
        *claim_from_r = (flags & MD_SYNC_CLAIM_RECENT) ? ix->first_recent : ix->uidnext;
    if (flags & MD_SYNC_CLAIM_RECENT)
        md_index_claim_recent(ix);
    rv = md_index_save(ix, dir);
    if (rv != MP_STORE_OK)
        md_index_reset(ix);
    return rv;
}

int md_index_register(const char *root, const char *dir, const char *const *names, const uint64_t *sizes,
                      const int64_t *dates, size_t n, uint32_t *uidvalidity_r, uint32_t *uids_r)
{
    apr_pool_t *pool;
    apr_pool_create(&pool, NULL);
    md_index *ix = apr_palloc(pool, sizeof *ix);
    md_index_init(ix, pool);
    int fd = md_lock_open(dir, MD_INDEX_LOCK), rv = MP_STORE_ERR;
    if (fd < 0 || md_lock(fd) != 0)
        goto out;
    uint32_t old_uv;
    if ((rv = md_index_load(ix, dir, &old_uv)) != MP_STORE_OK)
        goto out;
    if (!ix->loaded)
        md_index_create(ix, md_new_uidvalidity(root, old_uv));
    for (size_t i = 0; i < n; i++) {
        size_t blen = md_base_len(names[i]);
        /* A sync may have found the file first (it was linked before we took the lock). */
        md_rec *r = md_index_find_base(ix, names[i], blen);
        if (!r)
            r = md_index_add(ix, names[i], blen, names[i] + blen, 0, sizes[i], dates[i]);
        uids_r[i] = r->uid;
    }
    *uidvalidity_r = ix->uidvalidity;
    rv = md_index_save(ix, dir);
out:
    if (fd >= 0) {
        md_unlock(fd);
        close(fd);
    }
    apr_pool_destroy(pool);
    return rv;
}
