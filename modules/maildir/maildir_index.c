/*
 * The per-folder index `mailproto-uidlist` (UIDs, MODSEQs, sizes; RFC 3501 section 2.3.1.1, RFC 7162) and
 * the `dovecot-keywords` file. Messages 60200-60299.
 *
 * Text, one record a line:
 *   MPUIDL1 <uidvalidity> <uidnext> <highestmodseq> <first-recent-uid> <serial> <records>
 *   <uid> <modseq> <crlf-size> <date> <N|C><suffix> <base>      `records` of these, ascending uid
 *   ...then lines appended since the last rewrite, applied in order:
 *   <uid> <modseq> <crlf-size> <date> <N|C><suffix> <base>      a new message (uid >= uidnext) or a change
 *   -<uid> <modseq>                                              expunged
 *   R<uid>                                                       first-recent moved (someone saw them)
 * N/C: the file is in new/ or cur/, suffix is what follows the base name (":2,FS"). The file names stay
 * the truth for flags (Dovecot changes them too); the index remembers them to see what changed and give
 * it a MODSEQ.
 *
 * Changes are appended (a flag change is one short write) under the folder's flock; a rewrite (temp file,
 * fsync, rename, fsync of the folder) happens when the index is built anew, had a bad line, or the
 * appended part outgrew the rest. `serial` grows with each rewrite, so a reader that has the file in
 * memory only reads what was appended since. Appends that give out UIDs are fdatasync'ed: a UID handed
 * to a client is never handed out again after a crash. A header that cannot be read means the UIDs are
 * lost: the index is built again with a new UIDVALIDITY. A bad record line only loses that message's
 * UID: it gets a new one from uidnext, which stays right.
 */
#include "maildir.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <apr_strings.h>

#define COMPACT_MIN 16384 /* appended bytes before a rewrite is considered */

/* ---- the in-memory table ---- */

static apr_status_t ix_cleanup(void *data)
{
    md_index *ix = data;
    free(ix->recs);
    free(ix->hash);
    free(ix->log);
    ix->recs = NULL, ix->hash = NULL, ix->log = NULL;
    ix->n = ix->cap = ix->hcap = 0;
    ix->log_len = ix->log_cap = 0;
    return APR_SUCCESS;
}

void md_index_init(md_index *ix, apr_pool_t *pool)
{
    memset(ix, 0, sizeof *ix);
    ix->pool = pool;
    apr_pool_create(&ix->strpool, pool);
    apr_pool_cleanup_register(pool, ix, ix_cleanup, apr_pool_cleanup_null);
}

void md_index_reset(md_index *ix)
{
    apr_pool_clear(ix->strpool);
    ix->n = 0;
    if (ix->hash)
        memset(ix->hash, 0, ix->hcap * sizeof *ix->hash);
    ix->uidvalidity = 0, ix->uidnext = 1, ix->first_recent = 1;
    ix->highestmodseq = 0, ix->serial = 0;
    ix->loaded = 0, ix->dirty = 0, ix->need_compact = 0, ix->partial_tail = 0;
    ix->dev = 0, ix->ino = 0, ix->parsed = 0, ix->base_size = 0;
    ix->log_len = 0, ix->log_durable = 0;
}

static uint32_t hash_name(const char *s, size_t len)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (size_t i = 0; i < len; i++)
        h = (h ^ (unsigned char)s[i]) * 16777619u;
    return h;
}

static void hash_insert(md_index *ix, uint32_t idx)
{
    const md_rec *r = &ix->recs[idx];
    uint32_t mask = ix->hcap - 1;
    for (uint32_t h = hash_name(r->base, r->base_len) & mask;; h = (h + 1) & mask)
        if (ix->hash[h] == 0) {
            ix->hash[h] = idx + 1;
            return;
        }
}

static void hash_rebuild(md_index *ix, uint32_t want)
{
    uint32_t cap = 64;
    while (cap < want * 2)
        cap *= 2;
    if (cap != ix->hcap) {
        free(ix->hash);
        ix->hash = calloc(cap, sizeof *ix->hash);
        if (!ix->hash)
            abort();
        ix->hcap = cap;
    } else {
        memset(ix->hash, 0, cap * sizeof *ix->hash);
    }
    for (uint32_t i = 0; i < ix->n; i++)
        hash_insert(ix, i);
}

md_rec *md_index_find_base(md_index *ix, const char *base, size_t len)
{
    if (!ix->hcap)
        return NULL;
    uint32_t mask = ix->hcap - 1;
    for (uint32_t h = hash_name(base, len) & mask; ix->hash[h]; h = (h + 1) & mask) {
        md_rec *r = &ix->recs[ix->hash[h] - 1];
        if (!r->dead && r->base_len == len && memcmp(r->base, base, len) == 0)
            return r;
    }
    return NULL;
}

md_rec *md_index_find_uid(md_index *ix, uint32_t uid)
{
    uint32_t lo = 0, hi = ix->n;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (ix->recs[mid].uid < uid)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < ix->n && ix->recs[lo].uid == uid && !ix->recs[lo].dead ? &ix->recs[lo] : NULL;
}

/* Appends a record (uid above every other). */
static md_rec *push_rec(md_index *ix, uint32_t uid, uint64_t modseq, uint64_t size, int64_t date, const char *base,
                        size_t base_len, const char *suffix, size_t suffix_len, int in_new)
{
    if (ix->n == ix->cap) {
        uint32_t cap = ix->cap ? ix->cap * 2 : 256;
        md_rec *recs = realloc(ix->recs, cap * sizeof *recs);
        if (!recs)
            abort();
        ix->recs = recs, ix->cap = cap;
    }
    md_rec *r = &ix->recs[ix->n];
    *r = (md_rec){.uid = uid, .base_len = (uint32_t)base_len, .modseq = modseq, .size = size, .date = date,
                  .base = apr_pstrmemdup(ix->strpool, base, base_len),
                  .suffix = apr_pstrmemdup(ix->strpool, suffix, suffix_len), .in_new = (uint8_t)(in_new != 0)};
    ix->n++;
    if ((ix->n) * 2 > ix->hcap)
        hash_rebuild(ix, ix->n * 2);
    else
        hash_insert(ix, ix->n - 1);
    return r;
}

static void log_printf(md_index *ix, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void log_printf(md_index *ix, const char *fmt, ...)
{
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(ix->log + ix->log_len, ix->log_cap - ix->log_len, fmt, ap);
        va_end(ap);
        if (n >= 0 && ix->log_len + (size_t)n < ix->log_cap) {
            ix->log_len += (size_t)n;
            return;
        }
        size_t cap = ix->log_cap ? ix->log_cap * 2 : 4096;
        while (n >= 0 && cap < ix->log_len + (size_t)n + 1)
            cap *= 2;
        char *log = realloc(ix->log, cap);
        if (!log)
            abort();
        ix->log = log, ix->log_cap = cap;
    }
}

static void log_rec(md_index *ix, const md_rec *r)
{
    log_printf(ix, "%u %" PRIu64 " %" PRIu64 " %" PRId64 " %c%s %s\n", r->uid, r->modseq, r->size, r->date,
               r->in_new ? 'N' : 'C', r->suffix, r->base);
}

md_rec *md_index_add(md_index *ix, const char *base, size_t len, const char *suffix, int in_new, uint64_t size,
                     int64_t date)
{
    md_rec *r = push_rec(ix, ix->uidnext++, ++ix->highestmodseq, size, date, base, len, suffix, strlen(suffix),
                         in_new);
    log_rec(ix, r);
    ix->log_durable = 1;
    return r;
}

void md_index_update(md_index *ix, md_rec *r, const char *suffix, int in_new, int bump)
{
    if (r->suffix != suffix)
        r->suffix = apr_pstrdup(ix->strpool, suffix);
    r->in_new = (uint8_t)(in_new != 0);
    if (bump)
        r->modseq = ++ix->highestmodseq;
    log_rec(ix, r);
}

void md_index_expunge(md_index *ix, md_rec *r)
{
    r->dead = 1;
    ix->need_compact = 1;
    /* RFC 7162 section 3.2.10 (and QRESYNC): an expunge is a change of the mailbox too. */
    log_printf(ix, "-%u %" PRIu64 "\n", r->uid, ++ix->highestmodseq);
}

void md_index_claim_recent(md_index *ix)
{
    if (ix->first_recent < ix->uidnext) {
        ix->first_recent = ix->uidnext;
        log_printf(ix, "R%u\n", ix->first_recent);
    }
}

void md_index_compact(md_index *ix)
{
    if (!ix->need_compact)
        return;
    uint32_t j = 0;
    for (uint32_t i = 0; i < ix->n; i++)
        if (!ix->recs[i].dead)
            ix->recs[j++] = ix->recs[i];
    ix->n = j;
    ix->need_compact = 0;
    hash_rebuild(ix, ix->n < 32 ? 32 : ix->n);
}

void md_index_create(md_index *ix, uint32_t uidvalidity)
{
    md_index_reset(ix);
    ix->uidvalidity = uidvalidity;
    ix->loaded = 1;
    ix->dirty = 1; /* written at the next save */
}

/* ---- parsing ---- */

static int parse_u64(const char **p, const char *end, uint64_t *v)
{
    const char *s = *p;
    uint64_t x = 0;
    int digits = 0;
    while (s < end && *s >= '0' && *s <= '9' && digits < 20) {
        uint64_t nx = x * 10 + (uint64_t)(*s - '0');
        if (nx < x)
            return -1;
        x = nx, s++, digits++;
    }
    if (!digits)
        return -1;
    *v = x;
    *p = s;
    return 0;
}

static int expect_space(const char **p, const char *end)
{
    if (*p >= end || **p != ' ')
        return -1;
    (*p)++;
    return 0;
}

typedef struct hdr {
    uint64_t uidvalidity, uidnext, hms, first_recent, serial, records;
} hdr;

static int parse_header(const char *line, const char *end, hdr *h)
{
    const char *p = line;
    if (end - p < 8 || memcmp(p, "MPUIDL1 ", 8) != 0)
        return -1;
    p += 8;
    uint64_t *f[] = {&h->uidvalidity, &h->uidnext, &h->hms, &h->first_recent, &h->serial, &h->records};
    for (size_t i = 0; i < 6; i++)
        if ((i && expect_space(&p, end)) || parse_u64(&p, end, f[i]))
            return -1;
    if (p != end || h->uidvalidity == 0 || h->uidvalidity > UINT32_MAX || h->uidnext == 0 ||
        h->uidnext > UINT32_MAX || h->first_recent == 0 || h->first_recent > h->uidnext)
        return -1;
    return 0;
}

/* One line (without its LF). in_base: one of the `records` lines after the header. 0, or -1 for a bad
   line (dropped). */
static int apply_line(md_index *ix, const char *p, const char *end, int in_base)
{
    uint64_t uid, modseq, size, date;
    if (!in_base && p < end && *p == 'R') {
        p++;
        if (parse_u64(&p, end, &uid) || p != end || uid > ix->uidnext)
            return -1;
        if (uid > ix->first_recent)
            ix->first_recent = (uint32_t)uid;
        return 0;
    }
    if (!in_base && p < end && *p == '-') {
        p++;
        if (parse_u64(&p, end, &uid) || expect_space(&p, end) || parse_u64(&p, end, &modseq) || p != end)
            return -1;
        md_rec *r = uid <= UINT32_MAX ? md_index_find_uid(ix, (uint32_t)uid) : NULL;
        if (r) {
            r->dead = 1;
            ix->need_compact = 1;
        }
        if (modseq > ix->highestmodseq)
            ix->highestmodseq = modseq;
        return 0;
    }
    if (parse_u64(&p, end, &uid) || expect_space(&p, end) || parse_u64(&p, end, &modseq) ||
        expect_space(&p, end) || parse_u64(&p, end, &size) || expect_space(&p, end) ||
        parse_u64(&p, end, &date) || expect_space(&p, end))
        return -1;
    if (uid == 0 || uid > UINT32_MAX || p >= end || (*p != 'N' && *p != 'C'))
        return -1;
    int in_new = *p++ == 'N';
    const char *suffix = p;
    while (p < end && *p != ' ')
        p++;
    size_t suffix_len = (size_t)(p - suffix);
    if (expect_space(&p, end) || p == end || *p == '.' || memchr(p, '/', (size_t)(end - p)) ||
        memchr(p, ':', (size_t)(end - p)) || memchr(p, ' ', (size_t)(end - p)))
        return -1;
    const char *base = p;
    size_t base_len = (size_t)(end - p);
    md_rec *r = md_index_find_uid(ix, (uint32_t)uid);
    if (r) { /* a change (appended): the same message */
        if (in_base || r->base_len != base_len || memcmp(r->base, base, base_len) != 0)
            return -1;
        r->modseq = modseq;
        r->size = size;
        r->date = (int64_t)date;
        r->in_new = (uint8_t)in_new;
        r->suffix = apr_pstrmemdup(ix->strpool, suffix, suffix_len);
    } else {
        /* New: above every UID so far (in the base: below the header's uidnext too). */
        if ((ix->n && uid <= ix->recs[ix->n - 1].uid) || md_index_find_base(ix, base, base_len))
            return -1;
        if (in_base ? uid >= ix->uidnext : uid < ix->uidnext)
            return -1;
        push_rec(ix, (uint32_t)uid, modseq, size, (int64_t)date, base, base_len, suffix, suffix_len, in_new);
        if (uid >= ix->uidnext)
            ix->uidnext = (uint32_t)uid + 1;
    }
    if (modseq > ix->highestmodseq)
        ix->highestmodseq = modseq;
    return 0;
}

/* Applies the complete lines of buf; returns the bytes used (an unfinished last line is left).
   *base_left: record lines of the base still to come; *base_end_r: where the base ended. */
static size_t apply_lines(md_index *ix, const char *buf, size_t len, uint64_t *base_left, size_t *base_end_r)
{
    size_t pos = 0;
    while (pos < len) {
        const char *nl = memchr(buf + pos, '\n', len - pos);
        if (!nl) {
            ix->partial_tail = 1;
            break;
        }
        int in_base = *base_left > 0;
        if (in_base)
            (*base_left)--;
        if (apply_line(ix, buf + pos, nl, in_base) != 0) {
            md_log(MP_LOG_WARN, 60200, "index line dropped (its message gets a new UID): %.*s",
                   (int)(nl - (buf + pos) > 200 ? 200 : nl - (buf + pos)), buf + pos);
            ix->dirty = 1;
        }
        pos = (size_t)(nl - buf) + 1;
        if (in_base && *base_left == 0)
            *base_end_r = pos;
    }
    return pos;
}

static int read_at(int fd, char *buf, size_t len, uint64_t off, size_t *got_r)
{
    size_t got = 0;
    while (got < len) {
        ssize_t n = pread(fd, buf + got, len - got, (off_t)(off + got));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -1;
        if (n == 0)
            break;
        got += (size_t)n;
    }
    *got_r = got;
    return 0;
}

int md_index_load(md_index *ix, const char *dir, uint32_t *old_uv_r)
{
    char path[4096], head[256];
    snprintf(path, sizeof path, "%s/%s", dir, MD_INDEX_FILE);
    if (old_uv_r)
        *old_uv_r = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno != ENOENT) {
            md_log(MP_LOG_ERROR, 60201, "open(%s) failed: %s", path, strerror(errno));
            return MP_STORE_ERR;
        }
        if (ix->loaded)
            md_log(MP_LOG_WARN, 60202, "%s vanished: building it again", path);
        md_index_reset(ix);
        return MP_STORE_OK;
    }
    struct stat st;
    size_t got;
    int rv = MP_STORE_ERR;
    char *buf = NULL;
    if (fstat(fd, &st) != 0 || read_at(fd, head, sizeof head - 1, 0, &got) != 0) {
        md_log(MP_LOG_ERROR, 60203, "reading %s failed: %s", path, strerror(errno));
        goto out;
    }
    head[got] = '\0';
    char *nl = memchr(head, '\n', got);
    hdr h;
    int hdr_ok = nl && parse_header(head, nl, &h) == 0;

    if (ix->loaded && hdr_ok && ix->dev == st.st_dev && ix->ino == st.st_ino && ix->serial == h.serial &&
        ix->uidvalidity == h.uidvalidity && (uint64_t)st.st_size >= ix->parsed) {
        /* The same file, maybe appended to: read only the new part. */
        size_t tail = (size_t)((uint64_t)st.st_size - ix->parsed);
        if (tail > 0) {
            buf = malloc(tail);
            if (!buf || read_at(fd, buf, tail, ix->parsed, &got) != 0) {
                md_log(MP_LOG_ERROR, 60204, "reading %s failed: %s", path, strerror(errno));
                goto out;
            }
            uint64_t none = 0;
            size_t unused;
            ix->partial_tail = 0;
            ix->parsed += apply_lines(ix, buf, got, &none, &unused);
            md_index_compact(ix);
        }
        rv = MP_STORE_OK;
        goto out;
    }

    md_index_reset(ix);
    if (!hdr_ok) {
        unsigned uv = 0;
        if (sscanf(head, "MPUIDL1 %u", &uv) == 1 && old_uv_r)
            *old_uv_r = uv; /* the new UIDVALIDITY must differ from this one */
        md_log(MP_LOG_WARN, 60205, "%s has no valid header: building it again with a new UIDVALIDITY", path);
        rv = MP_STORE_OK; /* loaded 0: the caller rebuilds */
        goto out;
    }
    buf = malloc((size_t)st.st_size + 1);
    if (!buf || read_at(fd, buf, (size_t)st.st_size, 0, &got) != 0) {
        md_log(MP_LOG_ERROR, 60206, "reading %s failed: %s", path, strerror(errno));
        goto out;
    }
    ix->uidvalidity = (uint32_t)h.uidvalidity;
    ix->uidnext = (uint32_t)h.uidnext;
    ix->first_recent = (uint32_t)h.first_recent;
    ix->highestmodseq = h.hms;
    ix->serial = h.serial;
    if (ix->hcap < h.records * 2 && h.records < 10000000)
        hash_rebuild(ix, (uint32_t)h.records);
    size_t hlen = (size_t)(nl - head) + 1;
    uint64_t base_left = h.records;
    size_t base_end = 0;
    size_t used = hlen + apply_lines(ix, buf + hlen, got - hlen, &base_left, &base_end);
    if (base_left > 0)
        ix->dirty = 1; /* fewer records than announced: rewrite it whole */
    md_index_compact(ix);
    ix->parsed = used;
    ix->base_size = hlen + base_end; /* only decides when the appended part is worth a rewrite */
    ix->dev = st.st_dev, ix->ino = st.st_ino;
    ix->loaded = 1;
    rv = MP_STORE_OK;
out:
    free(buf);
    close(fd);
    return rv;
}

/* ---- writing ---- */

static int rewrite(md_index *ix, const char *dir)
{
    md_index_compact(ix);
    ix->serial++;
    ix->log_len = 0;
    log_printf(ix, "MPUIDL1 %u %u %" PRIu64 " %u %" PRIu64 " %u\n", ix->uidvalidity, ix->uidnext,
               ix->highestmodseq, ix->first_recent, ix->serial, ix->n);
    for (uint32_t i = 0; i < ix->n; i++)
        log_rec(ix, &ix->recs[i]);
    char tmp[4096], path[4096];
    snprintf(tmp, sizeof tmp, "%s/%s", dir, MD_INDEX_TMP); /* one writer at a time: the folder lock */
    snprintf(path, sizeof path, "%s/%s", dir, MD_INDEX_FILE);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    struct stat st;
    if (fd < 0) {
        md_log(MP_LOG_ERROR, 60207, "open(%s) failed: %s", tmp, strerror(errno));
        return MP_STORE_ERR;
    }
    size_t off = 0;
    while (off < ix->log_len) {
        ssize_t n = write(fd, ix->log + off, ix->log_len - off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            break;
        off += (size_t)n;
    }
    if (off < ix->log_len || fsync(fd) != 0 || fstat(fd, &st) != 0) {
        md_log(MP_LOG_ERROR, 60208, "writing %s failed: %s", tmp, strerror(errno));
        close(fd);
        unlink(tmp);
        return MP_STORE_ERR;
    }
    close(fd);
    if (rename(tmp, path) != 0) {
        md_log(MP_LOG_ERROR, 60209, "rename(%s, %s) failed: %s", tmp, path, strerror(errno));
        unlink(tmp);
        return MP_STORE_ERR;
    }
    if (md_fsync_dir(dir) != 0)
        return MP_STORE_ERR;
    ix->dev = st.st_dev, ix->ino = st.st_ino;
    ix->parsed = ix->base_size = (uint64_t)st.st_size;
    ix->dirty = 0, ix->partial_tail = 0;
    ix->log_len = 0, ix->log_durable = 0;
    ix->loaded = 1;
    return MP_STORE_OK;
}

int md_index_save(md_index *ix, const char *dir)
{
    if (!ix->dirty && !ix->partial_tail && ix->log_len == 0) {
        md_index_compact(ix);
        return MP_STORE_OK;
    }
    uint64_t tail = ix->parsed - ix->base_size + ix->log_len;
    if (ix->dirty || ix->partial_tail || (tail > COMPACT_MIN && tail > ix->base_size))
        return rewrite(ix, dir);
    md_index_compact(ix);
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, MD_INDEX_FILE);
    int fd = open(path, O_WRONLY | O_APPEND | O_CLOEXEC);
    if (fd < 0) {
        md_log(MP_LOG_ERROR, 60210, "open(%s) failed: %s", path, strerror(errno));
        ix->dirty = 1;
        return MP_STORE_ERR;
    }
    ssize_t n = write(fd, ix->log, ix->log_len); /* one write: a reader sees whole lines or none */
    int bad = n != (ssize_t)ix->log_len || (ix->log_durable && fdatasync(fd) != 0);
    if (bad) {
        md_log(MP_LOG_ERROR, 60211, "appending to %s failed: %s", path, strerror(errno));
        ix->dirty = 1; /* a rewrite brings the file back in line */
    } else {
        ix->parsed += ix->log_len;
    }
    close(fd);
    ix->log_len = 0, ix->log_durable = 0;
    return bad ? MP_STORE_ERR : MP_STORE_OK;
}
