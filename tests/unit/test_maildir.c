/*
 * The Maildir++ store provider (modules/maildir), driven through its mp_store_iface as a handler would,
 * against a real directory under /tmp. The module's init/fini run around each test with the fake host, so
 * its log lines can be checked.
 *
 * MAILDIR_BENCH=1 also runs the timing test (1,000 save_commit calls, opening 10,000 messages).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <CUnit/Basic.h>
#include <apr_general.h>
#include <apr_pools.h>
#include <apr_strings.h>
#include <mailproto/host.h>
#include <mailproto/module.h>
#include <mailproto/store.h>

#include "fake_host.h"

extern const mp_module mp_module_descriptor;

static char tmpdir[256];
static apr_pool_t *pool;
static const mp_store_iface *S;
static mp_store *store;
static fake_session *fs;
static void *mod_ctx;
static const char *ALICE = "alice@example.test";

static long dummy_input(mp_session *s, const char *d, size_t n)
{
    (void)s, (void)d;
    return (long)n;
}
static const mp_protocol dummy_proto = {.name = "dummy", .on_input = dummy_input};

static int rm_one(const char *p, const struct stat *st, int type, struct FTW *ftw)
{
    (void)st, (void)ftw;
    return type == FTW_DP ? rmdir(p) : unlink(p);
}

static void rm_tree(const char *path)
{
    nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static int setup(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/mdtest.XXXXXX");
    if (!mkdtemp(tmpdir))
        return 1;
    apr_pool_create(&pool, NULL);
    fs = fake_new(&dummy_proto, MP_TLS_OFF); /* catches the module's log lines */
    if (mp_module_descriptor.init(fake_host(), pool, &mod_ctx) != 0)
        return 1;
    S = mp_module_descriptor.provider->iface;
    const char *err = NULL;
    void *inst = NULL;
    int rc = S->instance("mail/%d/%n", tmpdir, pool, &inst, &err);
    store = inst;
    return rc != MP_STORE_OK;
}

static int teardown(void)
{
    mp_module_descriptor.fini(mod_ctx);
    apr_pool_destroy(pool);
    fake_end(fs);
    rm_tree(tmpdir);
    return 0;
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static mp_store_user *user(const char *name)
{
    mp_store_user *u = NULL;
    int rv = S->user_open(store, name, 1, pool, &u);
    CU_ASSERT_EQUAL(rv, MP_STORE_OK);
    return u;
}

static const char *upath(const char *rel)
{
    return apr_psprintf(pool, "%s/mail/example.test/alice%s%s", tmpdir, *rel ? "/" : "", rel);
}

/* One save into one target; returns the result and the UID. */
static int save_to(mp_store_user *u, const char *folder, const char *text, size_t len, const mp_save_meta *meta,
                   uint32_t *uid_r, uint32_t *uv_r)
{
    apr_pool_t *p;
    apr_pool_create(&p, pool);
    mp_save *sv;
    int rv = S->save_begin(u, folder, p, &sv);
    if (rv == MP_STORE_OK) {
        /* In two pieces, split inside a line end, as a network delivers it. */
        size_t half = len / 2;
        S->save_write(sv, text, half);
        S->save_write(sv, text + half, len - half);
        mp_save_target t = {.user = u, .folder = folder};
        rv = S->save_commit(sv, meta, &t, 1);
        if (uid_r)
            *uid_r = t.uid;
        if (uv_r)
            *uv_r = t.uidvalidity;
    }
    apr_pool_destroy(p);
    return rv;
}

static int deliver(mp_store_user *u, const char *text)
{
    static const mp_save_meta plain = {.delivery = 1};
    return save_to(u, "INBOX", text, strlen(text), &plain, NULL, NULL);
}

static uint32_t append(mp_store_user *u, const char *folder, const char *text, uint32_t flags)
{
    mp_save_meta meta = {.flags = flags};
    uint32_t uid = 0;
    CU_ASSERT_EQUAL(save_to(u, folder, text, strlen(text), &meta, &uid, NULL), MP_STORE_OK);
    return uid;
}

static char *read_msg(mp_folder *f, uint32_t uid, size_t chunk, size_t *len_r)
{
    mp_msg_stream *st;
    if (S->message_open(f, uid, pool, &st) != MP_STORE_OK)
        return NULL;
    size_t cap = 1 << 20, len = 0;
    char *buf = apr_palloc(pool, cap + 1);
    long n;
    while ((n = S->stream_read(st, buf + len, chunk < cap - len ? chunk : cap - len)) > 0)
        len += (size_t)n;
    S->stream_close(st);
    buf[len] = '\0';
    if (len_r)
        *len_r = len;
    return buf;
}

static int count_files(const char *dir)
{
    DIR *d = opendir(dir);
    int n = 0;
    struct dirent *de;
    if (!d)
        return -1;
    while ((de = readdir(d)) != NULL)
        n += de->d_name[0] != '.';
    closedir(d);
    return n;
}

static char *first_file(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *de;
    char *name = NULL;
    while (d && (de = readdir(d)) != NULL)
        if (de->d_name[0] != '.') {
            name = apr_pstrdup(pool, de->d_name);
            break;
        }
    if (d)
        closedir(d);
    return name;
}

static char *slurp(const char *path)
{
    FILE *fp = fopen(path, "r");
    if (!fp)
        return NULL;
    char *buf = apr_pcalloc(pool, 1 << 20);
    size_t n = fread(buf, 1, (1 << 20) - 1, fp);
    buf[n] = '\0';
    fclose(fp);
    return buf;
}

static void spit(const char *path, const char *text)
{
    FILE *fp = fopen(path, "w");
    CU_ASSERT_PTR_NOT_NULL_FATAL(fp);
    fputs(text, fp);
    fclose(fp);
}

/* ---- recording sync callbacks ---- */

typedef struct events {
    char log[4096];
} events;

static void ev_expunged(void *arg, uint32_t seq, uint32_t uid)
{
    events *e = arg;
    snprintf(e->log + strlen(e->log), sizeof e->log - strlen(e->log), "X%u/%u ", seq, uid);
}

static void ev_flags(void *arg, uint32_t seq, const mp_msg *m)
{
    events *e = arg;
    snprintf(e->log + strlen(e->log), sizeof e->log - strlen(e->log), "F%u/%u:%x ", seq, m->uid, m->flags);
}

static void ev_exists(void *arg, uint32_t count, uint32_t recent)
{
    events *e = arg;
    snprintf(e->log + strlen(e->log), sizeof e->log - strlen(e->log), "E%u/%u ", count, recent);
}

static const mp_sync_cb ev_cb = {ev_expunged, ev_flags, ev_exists};

/* ================================================================ tests */

static void test_deliver_and_read(void)
{
    mp_store_user *u = user(ALICE);
    CU_ASSERT_PTR_NOT_NULL_FATAL(u);
    const char *crlf = "From: a@b\r\nSubject: hi\r\n\r\nline one\r\nline two\r\n";
    CU_ASSERT_EQUAL(deliver(u, crlf), MP_STORE_OK);
    /* In new/, with Dovecot's S= and W=, nothing left in tmp/. */
    CU_ASSERT_EQUAL(count_files(upath("new")), 1);
    CU_ASSERT_EQUAL(count_files(upath("tmp")), 0);
    char *name = first_file(upath("new"));
    char expect[64];
    snprintf(expect, sizeof expect, ",S=%zu,W=%zu", strlen(crlf), strlen(crlf));
    CU_ASSERT_PTR_NOT_NULL(strstr(name, expect));
    CU_ASSERT_PTR_NULL(strchr(name, ':'));
    /* The file holds the bytes as received. */
    CU_ASSERT_STRING_EQUAL(slurp(apr_pstrcat(pool, upath("new"), "/", name, NULL)), crlf);

    const char *lf = "Subject: lf\n\nbare\nends\r\nmixed\n";
    const char *lf_as_crlf = "Subject: lf\r\n\r\nbare\r\nends\r\nmixed\r\n";
    CU_ASSERT_EQUAL(deliver(u, lf), MP_STORE_OK);

    mp_folder *f;
    CU_ASSERT_EQUAL_FATAL(S->folder_open(u, "INBOX", 0, pool, &f), MP_STORE_OK);
    const mp_msg *msgs;
    uint32_t n;
    S->folder_messages(f, &msgs, &n);
    CU_ASSERT_EQUAL_FATAL(n, 2);
    CU_ASSERT_EQUAL(msgs[0].uid, 1);
    CU_ASSERT_EQUAL(msgs[1].uid, 2);
    CU_ASSERT_EQUAL(msgs[0].size, strlen(crlf));
    CU_ASSERT_EQUAL(msgs[1].size, strlen(lf_as_crlf));
    CU_ASSERT(msgs[0].flags & MP_FLAG_RECENT);
    CU_ASSERT(msgs[0].key && strlen(msgs[0].key) > 10);
    CU_ASSERT(msgs[0].internal_date > 0);
    /* A read-write open moved them to cur/. */
    CU_ASSERT_EQUAL(count_files(upath("new")), 0);
    CU_ASSERT_EQUAL(count_files(upath("cur")), 2);
    /* CRLF stream, whatever the reads' sizes. */
    size_t chunks[] = {1, 2, 3, 7, 4096};
    for (size_t i = 0; i < sizeof chunks / sizeof chunks[0]; i++) {
        size_t len;
        char *m1 = read_msg(f, 1, chunks[i], &len);
        CU_ASSERT_PTR_NOT_NULL_FATAL(m1);
        CU_ASSERT_EQUAL(len, strlen(crlf));
        CU_ASSERT_STRING_EQUAL(m1, crlf);
        char *m2 = read_msg(f, 2, chunks[i], &len);
        CU_ASSERT_PTR_NOT_NULL_FATAL(m2);
        CU_ASSERT_EQUAL(len, msgs[1].size);
        CU_ASSERT_STRING_EQUAL(m2, lf_as_crlf);
    }
    mp_folder_status st;
    S->folder_status(f, &st);
    CU_ASSERT_EQUAL(st.messages, 2);
    CU_ASSERT_EQUAL(st.recent, 2);
    CU_ASSERT_EQUAL(st.unseen, 2);
    CU_ASSERT_EQUAL(st.uidnext, 3);
    CU_ASSERT(st.uidvalidity > 0);
    mp_msg_stream *stream;
    CU_ASSERT_EQUAL(S->message_open(f, 99, pool, &stream), MP_STORE_NOTFOUND);
    S->folder_close(f);

    /* A second session does not see them as Recent again. */
    CU_ASSERT_EQUAL(S->folder_open(u, "INBOX", 0, pool, &f), MP_STORE_OK);
    S->folder_status(f, &st);
    CU_ASSERT_EQUAL(st.recent, 0);
    S->folder_close(f);
    S->user_close(u);
}

static void test_dovecot_files(void)
{
    mp_store_user *u = user(ALICE);
    /* As Dovecot or a MUA leaves them: LF line ends, no W=, flags and a keyword letter. */
    spit(upath("cur/1700000000.M1P1.otherhost:2,Sa"), "Subject: x\n\nhello\n");
    spit(upath("dovecot-keywords"), "0 $Junk\n1 work\n");
    mp_folder *f;
    CU_ASSERT_EQUAL_FATAL(S->folder_open(u, "INBOX", 1, pool, &f), MP_STORE_OK);
    const mp_msg *m;
    uint32_t n;
    S->folder_messages(f, &m, &n);
    CU_ASSERT_EQUAL_FATAL(n, 1);
    CU_ASSERT_EQUAL(m[0].size, strlen("Subject: x\r\n\r\nhello\r\n"));
    CU_ASSERT_EQUAL(m[0].flags, MP_FLAG_SEEN); /* read-only: no Recent */
    CU_ASSERT_EQUAL_FATAL(m[0].nkeywords, 1);
    CU_ASSERT_STRING_EQUAL(m[0].keywords[0], "$Junk");
    CU_ASSERT_EQUAL(m[0].internal_date / APR_USEC_PER_SEC > 0, 1);
    CU_ASSERT_STRING_EQUAL(read_msg(f, m[0].uid, 5, NULL), "Subject: x\r\n\r\nhello\r\n");
    /* The computed size is kept in the index, not counted again. */
    CU_ASSERT_PTR_NOT_NULL(strstr(slurp(upath("mailproto-uidlist")), " 21 ")); /* the CRLF size */
    CU_ASSERT_PTR_NOT_NULL(strstr(slurp(upath("mailproto-uidlist")), "1700000000.M1P1.otherhost"));
    S->folder_close(f);
    /* A base name that would not be a valid POP3 UIDL (RFC 1939: up to 70 characters) gets a digest. */
    char longbase[128];
    memset(longbase, 'b', 90);
    memcpy(longbase, "1700000001.", 11);
    strcpy(longbase + 90, ":2,");
    spit(upath(apr_pstrcat(pool, "cur/", longbase, NULL)), "x\n");
    CU_ASSERT_EQUAL_FATAL(S->folder_open(u, "INBOX", 1, pool, &f), MP_STORE_OK);
    S->folder_messages(f, &m, &n);
    CU_ASSERT_EQUAL_FATAL(n, 2);
    CU_ASSERT_STRING_EQUAL(m[0].key, "1700000000.M1P1.otherhost");
    CU_ASSERT_EQUAL(strlen(m[1].key), 33);
    CU_ASSERT_EQUAL(m[1].key[0], 'H');
    const char *key = apr_pstrdup(pool, m[1].key);
    S->folder_close(f);
    CU_ASSERT_EQUAL_FATAL(S->folder_open(u, "INBOX", 1, pool, &f), MP_STORE_OK);
    S->folder_messages(f, &m, &n);
    CU_ASSERT_STRING_EQUAL(m[1].key, key); /* stable */
    S->folder_close(f);
    S->user_close(u);
}

static void test_flags_and_keywords(void)
{
    mp_store_user *u = user(ALICE);
    const char *kws[] = {"$Label1", "work"};
    mp_save_meta meta = {.flags = MP_FLAG_SEEN | MP_FLAG_FLAGGED, .nkeywords = 2, .keywords = kws};
    uint32_t uid, uv;
    CU_ASSERT_EQUAL(save_to(u, "INBOX", "a\r\n", 3, &meta, &uid, &uv), MP_STORE_OK);
    CU_ASSERT_EQUAL(uid, 1);
    CU_ASSERT(uv > 0);
    char *name = first_file(upath("cur"));
    CU_ASSERT_PTR_NOT_NULL_FATAL(name);
    CU_ASSERT_PTR_NOT_NULL(strstr(name, ":2,FSab"));
    CU_ASSERT_STRING_EQUAL(slurp(upath("dovecot-keywords")), "0 $Label1\n1 work\n");

    mp_folder *f;
    CU_ASSERT_EQUAL_FATAL(S->folder_open(u, "INBOX", 0, pool, &f), MP_STORE_OK);
    const mp_msg *m;
    uint32_t n;
    S->folder_messages(f, &m, &n);
    CU_ASSERT_EQUAL_FATAL(n, 1);
    CU_ASSERT_EQUAL(m[0].flags & ~MP_FLAG_RECENT, MP_FLAG_SEEN | MP_FLAG_FLAGGED);
    CU_ASSERT_EQUAL(m[0].nkeywords, 2);
    uint64_t ms0 = m[0].modseq;

    /* add \Answered and \Deleted: R and T, in ASCII order */
    CU_ASSERT_EQUAL(S->store_flags(f, 1, 1, MP_FLAG_ANSWERED | MP_FLAG_DELETED, 0, NULL, 0), MP_STORE_OK);
    CU_ASSERT_PTR_NOT_NULL(strstr(first_file(upath("cur")), ":2,FRSTab"));
    S->folder_messages(f, &m, &n);
    CU_ASSERT(m[0].modseq > ms0);
    CU_ASSERT(m[0].flags & MP_FLAG_ANSWERED);
    uint64_t ms1 = m[0].modseq;
    /* UNCHANGEDSINCE older than the message's MODSEQ (RFC 7162) */
    CU_ASSERT_EQUAL(S->store_flags(f, 1, 1, MP_FLAG_DRAFT, 0, NULL, ms0), MP_STORE_MODIFIED);
    CU_ASSERT_PTR_NULL(strstr(first_file(upath("cur")), "D"));
    CU_ASSERT_EQUAL(S->store_flags(f, 1, 1, MP_FLAG_DRAFT, 0, NULL, ms1), MP_STORE_OK);
    CU_ASSERT_PTR_NOT_NULL(strstr(first_file(upath("cur")), ":2,DFRSTab"));
    /* a new keyword, removing one, replacing all */
    const char *k3[] = {"Project-X"};
    CU_ASSERT_EQUAL(S->store_flags(f, 1, 1, 0, 1, k3, 0), MP_STORE_OK);
    CU_ASSERT_STRING_EQUAL(slurp(upath("dovecot-keywords")), "0 $Label1\n1 work\n2 Project-X\n");
    CU_ASSERT_PTR_NOT_NULL(strstr(first_file(upath("cur")), ":2,DFRSTabc"));
    const char *k1[] = {"WORK"}; /* keywords are case-insensitive */
    CU_ASSERT_EQUAL(S->store_flags(f, 1, -1, MP_FLAG_DELETED | MP_FLAG_DRAFT, 1, k1, 0), MP_STORE_OK);
    CU_ASSERT_PTR_NOT_NULL(strstr(first_file(upath("cur")), ":2,FRSac"));
    CU_ASSERT_EQUAL(S->store_flags(f, 1, 0, MP_FLAG_SEEN, 0, NULL, 0), MP_STORE_OK);
    CU_ASSERT_PTR_NOT_NULL(strstr(first_file(upath("cur")), ":2,S"));
    CU_ASSERT_PTR_NULL(strstr(first_file(upath("cur")), ":2,S" "a"));
    S->folder_messages(f, &m, &n);
    CU_ASSERT_EQUAL(m[0].flags & ~MP_FLAG_RECENT, MP_FLAG_SEEN);
    CU_ASSERT_EQUAL(m[0].nkeywords, 0);
    /* the same flags again: no new MODSEQ */
    uint64_t ms2 = m[0].modseq;
    CU_ASSERT_EQUAL(S->store_flags(f, 1, 1, MP_FLAG_SEEN, 0, NULL, 0), MP_STORE_OK);
    S->folder_messages(f, &m, &n);
    CU_ASSERT_EQUAL(m[0].modseq, ms2);
    const char *badkw[] = {"two words"};
    CU_ASSERT_EQUAL(S->store_flags(f, 1, 1, 0, 1, badkw, 0), MP_STORE_BADNAME);
    CU_ASSERT_EQUAL(S->store_flags(f, 42, 1, MP_FLAG_SEEN, 0, NULL, 0), MP_STORE_NOTFOUND);
    S->folder_close(f);

    /* After a restart (a new view, the module again), flags and keywords are what the file name says. */
    mp_module_descriptor.fini(mod_ctx);
    mp_module_descriptor.init(fake_host(), pool, &mod_ctx);
    const char *k4[] = {"work"};
    CU_ASSERT_EQUAL_FATAL(S->folder_open(u, "INBOX", 0, pool, &f), MP_STORE_OK);
    CU_ASSERT_EQUAL(S->store_flags(f, 1, 1, MP_FLAG_FLAGGED, 1, k4, 0), MP_STORE_OK);
    S->folder_close(f);
    CU_ASSERT_EQUAL_FATAL(S->folder_open(u, "INBOX", 1, pool, &f), MP_STORE_OK);
    S->folder_messages(f, &m, &n);
    CU_ASSERT_EQUAL(m[0].flags, MP_FLAG_SEEN | MP_FLAG_FLAGGED);
    CU_ASSERT_EQUAL_FATAL(m[0].nkeywords, 1);
    CU_ASSERT_STRING_EQUAL(m[0].keywords[0], "work");
    CU_ASSERT_EQUAL(S->store_flags(f, 1, 1, MP_FLAG_SEEN, 0, NULL, 0), MP_STORE_READONLY);
    S->folder_close(f);
    S->user_close(u);
}

static void test_append_copy_move_expunge(void)
{
    mp_store_user *u = user(ALICE);
    uint32_t a1 = append(u, "INBOX", "one\r\n", 0), a2 = append(u, "INBOX", "two\r\n", MP_FLAG_SEEN),
             a3 = append(u, "INBOX", "three\r\n", 0);
    CU_ASSERT(a1 == 1 && a2 == 2 && a3 == 3);
    CU_ASSERT_EQUAL(S->create(u, "Work", 0), MP_STORE_OK);
    mp_folder *f;
    CU_ASSERT_EQUAL_FATAL(S->folder_open(u, "INBOX", 0, pool, &f), MP_STORE_OK);
    uint32_t src[] = {1, 3}, got[2] = {0, 0}, uv = 0;
    CU_ASSERT_EQUAL(S->copy(f, src, 2, "Work", 0, &uv, got), MP_STORE_OK);
    CU_ASSERT(uv > 0);
    CU_ASSERT_EQUAL(got[0], 1);
    CU_ASSERT_EQUAL(got[1], 2);
    uint32_t mv[] = {2}, mgot[1] = {0}, muv = 0;
    CU_ASSERT_EQUAL(S->copy(f, mv, 1, "Work", 1, &muv, mgot), MP_STORE_OK);
    CU_ASSERT_EQUAL(mgot[0], 3);
    CU_ASSERT_EQUAL(muv, uv);
    uint32_t bad[] = {77}, scratch_uv, scratch[2];
    CU_ASSERT_EQUAL(S->copy(f, bad, 1, "Work", 0, &scratch_uv, scratch), MP_STORE_NOTFOUND);
    CU_ASSERT_EQUAL(S->copy(f, src, 2, "Nowhere", 0, &scratch_uv, scratch), MP_STORE_NOTFOUND);
    CU_ASSERT_EQUAL(S->copy(f, src, 2, "../Work", 0, &scratch_uv, scratch), MP_STORE_BADNAME);
    /* The move shows as an expunge at the next sync. */
    events ev = {""};
    CU_ASSERT_EQUAL(S->folder_sync(f, &ev_cb, &ev), MP_STORE_OK);
    CU_ASSERT_STRING_EQUAL(ev.log, "X2/2 ");
    /* EXPUNGE removes only \Deleted messages; UID EXPUNGE only the given ones of those. */
    CU_ASSERT_EQUAL(S->store_flags(f, 1, 1, MP_FLAG_DELETED, 0, NULL, 0), MP_STORE_OK);
    CU_ASSERT_EQUAL(S->store_flags(f, 3, 1, MP_FLAG_DELETED, 0, NULL, 0), MP_STORE_OK);
    uint32_t only3[] = {3};
    ev.log[0] = '\0';
    CU_ASSERT_EQUAL(S->expunge(f, only3, 1, &ev_cb, &ev), MP_STORE_OK);
    CU_ASSERT_STRING_EQUAL(ev.log, "X2/3 ");
    ev.log[0] = '\0';
    CU_ASSERT_EQUAL(S->expunge(f, NULL, 0, &ev_cb, &ev), MP_STORE_OK);
    CU_ASSERT_STRING_EQUAL(ev.log, "X1/1 ");
    const mp_msg *m;
    uint32_t n;
    S->folder_messages(f, &m, &n);
    CU_ASSERT_EQUAL(n, 0);
    CU_ASSERT_EQUAL(count_files(upath("cur")), 0);
    S->folder_close(f);

    /* Work has copies with the source's flags, readable, with UIDs 1..3. */
    CU_ASSERT_EQUAL_FATAL(S->folder_open(u, "Work", 0, pool, &f), MP_STORE_OK);
    S->folder_messages(f, &m, &n);
    CU_ASSERT_EQUAL_FATAL(n, 3);
    CU_ASSERT_EQUAL(m[2].uid, 3);
    CU_ASSERT(m[2].flags & MP_FLAG_SEEN);
    CU_ASSERT_STRING_EQUAL(read_msg(f, 1, 100, NULL), "one\r\n");
    CU_ASSERT_STRING_EQUAL(read_msg(f, 2, 100, NULL), "three\r\n");
    CU_ASSERT_STRING_EQUAL(read_msg(f, 3, 100, NULL), "two\r\n");
    mp_folder_status st;
    S->folder_status(f, &st);
    CU_ASSERT_EQUAL(st.uidvalidity, uv);
    CU_ASSERT_EQUAL(st.uidnext, 4);
    CU_ASSERT_EQUAL(st.recent, 3); /* the first session to see copies has them as Recent */
    S->folder_close(f);
    /* A read-only view may copy but not move or expunge. */
    CU_ASSERT_EQUAL_FATAL(S->folder_open(u, "Work", 1, pool, &f), MP_STORE_OK);
    uint32_t one[] = {1};
    CU_ASSERT_EQUAL(S->copy(f, one, 1, "INBOX", 1, &uv, got), MP_STORE_READONLY);
    CU_ASSERT_EQUAL(S->copy(f, one, 1, "INBOX", 0, &uv, got), MP_STORE_OK);
    CU_ASSERT_EQUAL(got[0], 4); /* INBOX never reuses 1..3 */
    CU_ASSERT_EQUAL(S->expunge(f, NULL, 0, NULL, NULL), MP_STORE_READONLY);
    S->folder_close(f);
    S->user_close(u);
}

static void test_uidvalidity_restart_and_rebuild(void)
{
    mp_store_user *u = user(ALICE);
    for (int i = 0; i < 3; i++)
        CU_ASSERT_EQUAL(deliver(u, apr_psprintf(pool, "message %d\r\n", i)), MP_STORE_OK);
    mp_folder *f;
    mp_folder_status st0, st;
    CU_ASSERT_EQUAL_FATAL(S->folder_open(u, "INBOX", 0, pool, &f), MP_STORE_OK);
    S->folder_status(f, &st0);
    S->folder_close(f);
    S->user_close(u);
    /* A restart: the module and the user again. */
    mp_module_descriptor.fini(mod_ctx);
    mp_module_descriptor.init(fake_host(), pool, &mod_ctx);
    u = user(ALICE);
    CU_ASSERT_EQUAL(deliver(u, "message 3\r\n"), MP_STORE_OK);
    CU_ASSERT_EQUAL_FATAL(S->folder_open(u, "INBOX", 0, pool, &f), MP_STORE_OK);
    S->folder_status(f, &st);
    CU_ASSERT_EQUAL(st.uidvalidity, st0.uidvalidity);
    CU_ASSERT_EQUAL(st.uidnext, 5);
    CU_ASSERT_STRING_EQUAL(read_msg(f, 4, 100, NULL), "message 3\r\n");
    CU_ASSERT_STRING_EQUAL(read_msg(f, 1, 100, NULL), "message 0\r\n");
    S->folder_close(f);

    /* One bad record line: that message gets a new UID, the others and UIDVALIDITY stay. */
    char *ix = slurp(upath("mailproto-uidlist"));
    char *line2 = strchr(strchr(ix, '\n') + 1, '\n') + 1; /* the record of UID 2 */
    CU_ASSERT_EQUAL_FATAL(strncmp(line2, "2 ", 2), 0);
    line2[0] = 'x';
    spit(upath("mailproto-uidlist"), ix);
    fake_clear_log(fs);
    CU_ASSERT_EQUAL_FATAL(S->folder_open(u, "INBOX", 0, pool, &f), MP_STORE_OK);
    S->folder_status(f, &st);
    CU_ASSERT_EQUAL(st.uidvalidity, st0.uidvalidity);
    const mp_msg *m;
    uint32_t n;
    S->folder_messages(f, &m, &n);
    CU_ASSERT_EQUAL_FATAL(n, 4);
    CU_ASSERT(m[0].uid == 1 && m[1].uid == 3 && m[2].uid == 4 && m[3].uid == 5);
    CU_ASSERT_STRING_EQUAL(read_msg(f, 5, 100, NULL), "message 1\r\n");
    CU_ASSERT_PTR_NOT_NULL(strstr(fake_log(fs), "[mp60200]"));
    S->folder_close(f);

    /* A header that cannot be read: the UIDs are lost, so a new UIDVALIDITY. */
    spit(upath("mailproto-uidlist"), "garbage\n1 2 3\n");
    CU_ASSERT_EQUAL_FATAL(S->folder_open(u, "INBOX", 0, pool, &f), MP_STORE_OK);
    S->folder_status(f, &st);
    CU_ASSERT(st.uidvalidity != st0.uidvalidity);
    CU_ASSERT_EQUAL(st.messages, 4);
    CU_ASSERT_EQUAL(st.uidnext, 5);
    CU_ASSERT_PTR_NOT_NULL(strstr(fake_log(fs), "[mp60205]"));
    uint32_t uv1 = st.uidvalidity;
    S->folder_close(f);
    /* No index at all: again a UIDVALIDITY never used (even within the same second). */
    unlink(upath("mailproto-uidlist"));
    CU_ASSERT_EQUAL_FATAL(S->folder_open(u, "INBOX", 0, pool, &f), MP_STORE_OK);
    S->folder_status(f, &st);
    CU_ASSERT(st.uidvalidity != uv1 && st.uidvalidity != st0.uidvalidity);
    CU_ASSERT_EQUAL(st.messages, 4);
    S->folder_close(f);
    S->user_close(u);
}

/* The index rebuilt under an open view (its file lost): the view's UIDs now name other messages, so
   nothing is flagged, deleted or read by them (a POP3 QUIT must not delete the wrong message). */
static void test_rebuilt_index_under_a_view(void)
{
    mp_store_user *u = user("dora@example.test");
    mp_folder *f;
    for (int i = 1; i <= 3; i++)
        CU_ASSERT_EQUAL(deliver(u, apr_psprintf(pool, "m%d\r\n", i)), MP_STORE_OK);
    CU_ASSERT_EQUAL_FATAL(S->folder_open(u, "INBOX", 0, pool, &f), MP_STORE_OK);
    CU_ASSERT_EQUAL(S->store_flags(f, 1, 1, MP_FLAG_DELETED, 0, NULL, 0), MP_STORE_OK);
    CU_ASSERT_EQUAL(S->expunge(f, NULL, 0, NULL, NULL), MP_STORE_OK);
    S->folder_close(f);
    /* a POP3-like view: UIDs 2 (m2) and 3 (m3) */
    CU_ASSERT_EQUAL_FATAL(S->folder_open(u, "INBOX", 0, pool, &f), MP_STORE_OK);
    CU_ASSERT_EQUAL(S->folder_lock(f), MP_STORE_OK);
    const mp_msg *m;
    uint32_t n;
    S->folder_messages(f, &m, &n);
    CU_ASSERT_FATAL(n == 2 && m[0].uid == 2 && m[1].uid == 3);
    /* another reader rebuilds the lost index: m2 and m3 become UIDs 1 and 2 of a new UIDVALIDITY */
    const char *ixpath = apr_pstrcat(pool, tmpdir, "/mail/example.test/dora/mailproto-uidlist", NULL);
    CU_ASSERT_EQUAL_FATAL(unlink(ixpath), 0);
    mp_folder_status st;
    CU_ASSERT_EQUAL(S->folder_peek(u, "INBOX", &st), MP_STORE_OK);
    uint32_t uid = 2;
    CU_ASSERT_EQUAL(S->store_flags(f, uid, 1, MP_FLAG_DELETED, 0, NULL, 0), MP_STORE_NOTFOUND);
    S->expunge(f, &uid, 1, NULL, NULL);
    mp_msg_stream *ms;
    CU_ASSERT_EQUAL(S->message_open(f, 3, pool, &ms), MP_STORE_NOTFOUND);
    S->folder_close(f);
    /* both messages are still there, untouched */
    CU_ASSERT_EQUAL_FATAL(S->folder_open(u, "INBOX", 1, pool, &f), MP_STORE_OK);
    S->folder_messages(f, &m, &n);
    CU_ASSERT_EQUAL_FATAL(n, 2);
    CU_ASSERT_STRING_EQUAL(read_msg(f, m[0].uid, 100, NULL), "m2\r\n");
    CU_ASSERT_STRING_EQUAL(read_msg(f, m[1].uid, 100, NULL), "m3\r\n");
    CU_ASSERT_EQUAL(m[0].flags & MP_FLAG_DELETED, 0);
    S->folder_close(f);
    S->user_close(u);
}

int md_copy_into(const char *src, const char *dir, const char *dst, apr_pool_t *pool); /* modules/maildir */

/* The fallback when a delivery cannot hard-link (another file system, no links): the copy is made in tmp/
   and only then named in new/, never over a file already there. */
static void test_copy_into(void)
{
    mp_store_user *u = user(ALICE);
    const char *src = apr_pstrcat(pool, tmpdir, "/copy-src", NULL);
    spit(src, "Subject: copied\r\n\r\nbody\r\n");
    const char *dst = upath("new/1700000000.copy.test");
    int tmp_before = count_files(upath("tmp"));
    CU_ASSERT_EQUAL(md_copy_into(src, upath(""), dst, pool), 0);
    CU_ASSERT_STRING_EQUAL(slurp(dst), "Subject: copied\r\n\r\nbody\r\n");
    CU_ASSERT_EQUAL(count_files(upath("tmp")), tmp_before);
    spit(src, "another\r\n");
    errno = 0;
    CU_ASSERT_EQUAL(md_copy_into(src, upath(""), dst, pool), -1);
    CU_ASSERT_EQUAL(errno, EEXIST);
    CU_ASSERT_STRING_EQUAL(slurp(dst), "Subject: copied\r\n\r\nbody\r\n");
    CU_ASSERT_EQUAL(count_files(upath("tmp")), tmp_before);
    unlink(dst);
    unlink(src);
    S->user_close(u);
}

static void age(const char *path, int seconds)
{
    struct timespec t[2];
    clock_gettime(CLOCK_REALTIME, &t[0]);
    t[0].tv_sec -= seconds;
    t[1] = t[0];
    CU_ASSERT_EQUAL(utimensat(AT_FDCWD, path, t, 0), 0);
}

/* folder_sync skips reading a folder whose directories and index did not change since the view was
   taken, but only when their times are old enough to trust; any delivery or removal is still seen. */
static void test_sync_shortcut(void)
{
    mp_store_user *u = user("erin@example.test");
    const char *root = apr_pstrcat(pool, tmpdir, "/mail/example.test/erin", NULL);
    CU_ASSERT_EQUAL(deliver(u, "one\r\n"), MP_STORE_OK);
    mp_folder *f;
    CU_ASSERT_EQUAL_FATAL(S->folder_open(u, "INBOX", 0, pool, &f), MP_STORE_OK);
    const mp_msg *m;
    uint32_t n;
    S->folder_messages(f, &m, &n);
    CU_ASSERT_EQUAL(n, 1);
    const char *parts[] = {"cur", "new", "mailproto-uidlist"};
    for (int i = 0; i < 3; i++)
        age(apr_pstrcat(pool, root, "/", parts[i], NULL), 10);
    CU_ASSERT_EQUAL(S->folder_sync(f, NULL, NULL), MP_STORE_OK); /* a full sync: the stamp was too fresh */
    const mp_msg *before;
    S->folder_messages(f, &before, &n);
    CU_ASSERT_EQUAL(S->folder_sync(f, NULL, NULL), MP_STORE_OK); /* nothing changed: the shortcut */
    S->folder_messages(f, &m, &n);
    CU_ASSERT_EQUAL(n, 1);
    CU_ASSERT_PTR_EQUAL(m, before); /* the snapshot was not rebuilt */
    /* a delivery after the old stamp: new/ changed, the sync reads the folder */
    CU_ASSERT_EQUAL(deliver(u, "two\r\n"), MP_STORE_OK);
    events ev = {{0}};
    CU_ASSERT_EQUAL(S->folder_sync(f, &ev_cb, &ev), MP_STORE_OK);
    S->folder_messages(f, &m, &n);
    CU_ASSERT_EQUAL(n, 2);
    CU_ASSERT_PTR_NOT_NULL(strstr(ev.log, "E2/"));
    /* an expunge by another view after an old stamp is seen too */
    for (int i = 0; i < 3; i++)
        age(apr_pstrcat(pool, root, "/", parts[i], NULL), 10);
    CU_ASSERT_EQUAL(S->folder_sync(f, NULL, NULL), MP_STORE_OK);
    S->folder_messages(f, &m, &n);
    uint32_t first = m[0].uid;
    mp_folder *g;
    CU_ASSERT_EQUAL_FATAL(S->folder_open(u, "INBOX", 0, pool, &g), MP_STORE_OK);
    CU_ASSERT_EQUAL(S->store_flags(g, first, 1, MP_FLAG_DELETED, 0, NULL, 0), MP_STORE_OK);
    CU_ASSERT_EQUAL(S->expunge(g, NULL, 0, NULL, NULL), MP_STORE_OK);
    S->folder_close(g);
    CU_ASSERT_EQUAL(S->folder_sync(f, NULL, NULL), MP_STORE_OK);
    S->folder_messages(f, &m, &n);
    CU_ASSERT_EQUAL(n, 1);
    S->folder_close(f);
    S->user_close(u);
}

static void test_view_sees_other_writers(void)
{
    mp_store_user *u = user(ALICE);
    for (int i = 0; i < 4; i++)
        CU_ASSERT_EQUAL(deliver(u, "x\r\n"), MP_STORE_OK);
    mp_folder *a, *b;
    CU_ASSERT_EQUAL_FATAL(S->folder_open(u, "INBOX", 0, pool, &a), MP_STORE_OK);
    CU_ASSERT_EQUAL_FATAL(S->folder_open(u, "INBOX", 0, pool, &b), MP_STORE_OK);
    events ev = {""};
    CU_ASSERT_EQUAL(S->folder_sync(a, &ev_cb, &ev), MP_STORE_OK);
    CU_ASSERT_STRING_EQUAL(ev.log, ""); /* nothing changed */
    /* b: flags on 2, expunge 1 and 3, a new message arrives */
    CU_ASSERT_EQUAL(S->store_flags(b, 2, 1, MP_FLAG_FLAGGED, 0, NULL, 0), MP_STORE_OK);
    CU_ASSERT_EQUAL(S->store_flags(b, 1, 1, MP_FLAG_DELETED, 0, NULL, 0), MP_STORE_OK);
    CU_ASSERT_EQUAL(S->store_flags(b, 3, 1, MP_FLAG_DELETED, 0, NULL, 0), MP_STORE_OK);
    CU_ASSERT_EQUAL(S->expunge(b, NULL, 0, NULL, NULL), MP_STORE_OK);
    CU_ASSERT_EQUAL(deliver(u, "y\r\n"), MP_STORE_OK);
    /* a hears: expunges highest first (3 then 1), then flags of 2 (now seq 1) and of the
       expunged-flag changes not at all, then EXISTS with the new message (Recent to a). */
    CU_ASSERT_EQUAL(S->folder_sync(a, &ev_cb, &ev), MP_STORE_OK);
    CU_ASSERT_STRING_EQUAL(ev.log, "X3/3 X1/1 F1/2:24 E3/3 ");
    const mp_msg *m;
    uint32_t n;
    S->folder_messages(a, &m, &n);
    CU_ASSERT_EQUAL_FATAL(n, 3);
    CU_ASSERT(m[0].uid == 2 && m[1].uid == 4 && m[2].uid == 5);
    CU_ASSERT(m[2].flags & MP_FLAG_RECENT);
    /* b hears about the new one too, but it is a's Recent, not b's. */
    ev.log[0] = '\0';
    CU_ASSERT_EQUAL(S->folder_sync(b, &ev_cb, &ev), MP_STORE_OK);
    CU_ASSERT_STRING_EQUAL(ev.log, "E3/0 ");
    /* A message expunged elsewhere cannot be read any more. */
    CU_ASSERT_EQUAL(S->store_flags(b, 4, 1, MP_FLAG_DELETED, 0, NULL, 0), MP_STORE_OK);
    CU_ASSERT_EQUAL(S->expunge(b, NULL, 0, NULL, NULL), MP_STORE_OK);
    mp_msg_stream *st;
    CU_ASSERT_EQUAL(S->message_open(a, 4, pool, &st), MP_STORE_NOTFOUND);
    CU_ASSERT_STRING_EQUAL(read_msg(a, 5, 100, NULL), "y\r\n");
    /* Flags changed by another program (a rename, no index) are found too. */
    char *name = NULL;
    DIR *d = opendir(upath("cur"));
    struct dirent *de;
    while ((de = readdir(d)) != NULL)
        if (de->d_name[0] != '.' && strstr(de->d_name, ":2,") && !strstr(de->d_name, "F"))
            name = apr_pstrdup(pool, de->d_name);
    closedir(d);
    CU_ASSERT_PTR_NOT_NULL_FATAL(name);
    char *renamed = apr_pstrcat(pool, name, "S", NULL);
    CU_ASSERT_EQUAL(rename(apr_pstrcat(pool, upath("cur"), "/", name, NULL),
                           apr_pstrcat(pool, upath("cur"), "/", renamed, NULL)), 0);
    ev.log[0] = '\0';
    CU_ASSERT_EQUAL(S->folder_sync(a, &ev_cb, &ev), MP_STORE_OK);
    CU_ASSERT_STRING_EQUAL(ev.log, "X2/4 F2/5:21 ");
    S->folder_close(a);
    S->folder_close(b);
    S->user_close(u);
}

extern long md_tmp_max_age; /* modules/maildir: 36 hours */

static void test_tmp_leftovers(void)
{
    mp_store_user *u = user(ALICE);
    spit(upath("tmp/1.M1P1.crashed"), "half a message");
    spit(upath("tmp/2.M2P2.old"), "left long ago");
    mp_folder *f;
    const mp_msg *m;
    uint32_t n;
    /* Young leftovers of a crash: nobody reads them as messages, nobody removes them yet. */
    for (int readonly = 1; readonly >= 0; readonly--) {
        CU_ASSERT_EQUAL_FATAL(S->folder_open(u, "INBOX", readonly, pool, &f), MP_STORE_OK);
        S->folder_messages(f, &m, &n);
        CU_ASSERT_EQUAL(n, 0);
        S->folder_close(f);
        CU_ASSERT_EQUAL(count_files(upath("tmp")), 2);
    }
    /* Older than the limit (the ctime cannot be set back, so the limit comes forward): a read-write
       open removes them, and says so. */
    fake_clear_log(fs);
    md_tmp_max_age = 0;
    CU_ASSERT_EQUAL_FATAL(S->folder_open(u, "INBOX", 0, pool, &f), MP_STORE_OK);
    md_tmp_max_age = 36 * 3600;
    S->folder_close(f);
    CU_ASSERT_EQUAL(count_files(upath("tmp")), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(fake_log(fs), "[mp60118]"));
    S->user_close(u);
}

static void test_hostile_folder_names(void)
{
    mp_store_user *u = user(ALICE);
    char *longname = apr_palloc(pool, 10001);
    memset(longname, 'a', 10000);
    longname[10000] = '\0';
    char *long_utf8 = apr_pcalloc(pool, 2 * 120 + 1); /* 120 x "é": 242 bytes, longer on disk */
    for (int i = 0; i < 120; i++)
        memcpy(long_utf8 + 2 * i, "\xc3\xa9", 2);
    const char *bad[] = {"../x", "/etc", "a/../../b", "..", ".", "a/./b", ".hidden", "a..b", "a.b", "a/", "/", "",
                         "a//b", "x\ny", "tab\there", "del\x7f", "\xc3(", "\xed\xa0\x80", longname, long_utf8,
                         "Work/..", "../../../../../../etc/passwd"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        mp_folder *f;
        mp_save *sv;
        mp_folder_status st;
        CU_ASSERT_EQUAL(S->create(u, bad[i], 0), MP_STORE_BADNAME);
        CU_ASSERT_EQUAL(S->folder_open(u, bad[i], 0, pool, &f), MP_STORE_BADNAME);
        CU_ASSERT_EQUAL(S->folder_peek(u, bad[i], &st), MP_STORE_BADNAME);
        CU_ASSERT_EQUAL(S->save_begin(u, bad[i], pool, &sv), MP_STORE_BADNAME);
        CU_ASSERT_EQUAL(S->subscribe(u, bad[i], 1), MP_STORE_BADNAME);
        CU_ASSERT_EQUAL(S->rename(u, "INBOX", bad[i]), MP_STORE_BADNAME);
        CU_ASSERT_EQUAL(S->rename(u, bad[i], "ok"), MP_STORE_BADNAME);
        CU_ASSERT_EQUAL(S->remove(u, bad[i]), MP_STORE_BADNAME);
    }
    CU_ASSERT_EQUAL(S->create(u, NULL, 0), MP_STORE_BADNAME);
    /* Nothing was made anywhere: the user root has only its Maildir, the store only this user. */
    DIR *d = opendir(upath(""));
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        const char *nm = de->d_name;
        CU_ASSERT(strcmp(nm, ".") == 0 || strcmp(nm, "..") == 0 || strcmp(nm, "cur") == 0 || strcmp(nm, "new") == 0 ||
                  strcmp(nm, "tmp") == 0 || strncmp(nm, "mailproto-", 10) == 0);
    }
    closedir(d);
    CU_ASSERT_EQUAL(count_files(tmpdir), 1);
    CU_ASSERT_EQUAL(count_files(apr_pstrcat(pool, tmpdir, "/mail", NULL)), 1);
    CU_ASSERT_EQUAL(count_files(apr_pstrcat(pool, tmpdir, "/mail/example.test", NULL)), 1);
    /* Fine names still work, non-ASCII ones stored in modified UTF-7 as Dovecot does. */
    CU_ASSERT_EQUAL(S->create(u, "Entw\xc3\xbcrfe", 0), MP_STORE_OK);
    CU_ASSERT_EQUAL(access(upath(".Entw&APw-rfe/maildirfolder"), F_OK), 0);
    CU_ASSERT_EQUAL(S->create(u, "A&B", 0), MP_STORE_OK);
    CU_ASSERT_EQUAL(access(upath(".A&-B/cur"), F_OK), 0);
    CU_ASSERT_EQUAL(S->create(u, "inbox", 0), MP_STORE_EXISTS);
    S->user_close(u);
}

static void test_hostile_users(void)
{
    const char *bad[] = {"../x@example.test", "a/b@example.test", ".a@example.test", "a@..", "a@.x", "x@a/../b",
                         "", "a\n@example.test", "alice", "alice@", "@example.test", "a@b..c", "..@x", "a@x\x01",
                         "a@/etc"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        mp_store_user *u = NULL;
        CU_ASSERT_EQUAL(S->user_open(store, bad[i], 1, pool, &u), MP_STORE_BADNAME);
    }
    char *longuser = apr_palloc(pool, 400);
    memset(longuser, 'u', 300);
    strcpy(longuser + 300, "@example.test");
    mp_store_user *u = NULL;
    CU_ASSERT_EQUAL(S->user_open(store, longuser, 1, pool, &u), MP_STORE_BADNAME);
    CU_ASSERT_EQUAL(S->user_open(store, "nobody@example.test", 0, pool, &u), MP_STORE_NOTFOUND);
    CU_ASSERT_EQUAL(count_files(tmpdir), 0); /* nothing made, not even the store */
    /* A symbolic link in the store never leads a user out of it. */
    char *outside = apr_pstrcat(pool, tmpdir, "/outside", NULL);
    mkdir(outside, 0700);
    mkdir(apr_pstrcat(pool, tmpdir, "/mail", NULL), 0700);
    CU_ASSERT_EQUAL(symlink(outside, apr_pstrcat(pool, tmpdir, "/mail/evil.test", NULL)), 0);
    CU_ASSERT_NOT_EQUAL(S->user_open(store, "bob@evil.test", 1, pool, &u), MP_STORE_OK);
    CU_ASSERT_NOT_EQUAL(S->user_open(store, "bob@evil.test", 0, pool, &u), MP_STORE_OK);
    CU_ASSERT_EQUAL(count_files(outside), 0);
    /* Nor when a whole maildir waits outside (user_open's quick path: no mkdir, the kernel's name). */
    char *ready = apr_pstrcat(pool, tmpdir, "/outside2", NULL);
    mkdir(ready, 0700);
    mkdir(apr_pstrcat(pool, ready, "/bob", NULL), 0700);
    static const char *const subs[] = {"cur", "new", "tmp"};
    for (int i = 0; i < 3; i++)
        mkdir(apr_pstrcat(pool, ready, "/bob/", subs[i], NULL), 0700);
    CU_ASSERT_EQUAL(symlink(ready, apr_pstrcat(pool, tmpdir, "/mail/evil2.test", NULL)), 0);
    CU_ASSERT_EQUAL(S->user_open(store, "bob@evil2.test", 1, pool, &u), MP_STORE_BADNAME);
    CU_ASSERT_EQUAL(S->user_open(store, "bob@evil2.test", 0, pool, &u), MP_STORE_BADNAME);
    /* A maildir that lost its tmp/ gets it back when opened for delivery. */
    mp_store_user *c = user("carol@example.test");
    S->user_close(c);
    CU_ASSERT_EQUAL(rmdir(apr_psprintf(pool, "%s/mail/example.test/carol/tmp", tmpdir)), 0);
    CU_ASSERT_EQUAL(S->user_open(store, "carol@example.test", 0, pool, &c), MP_STORE_OK); /* cur/ is enough */
    S->user_close(c);
    c = user("carol@example.test");
    CU_ASSERT_EQUAL(deliver(c, "for carol\r\n"), MP_STORE_OK);
    S->user_close(c);
    /* Two users never share anything. */
    mp_store_user *a = user(ALICE), *b = user("bob@example.test");
    CU_ASSERT_EQUAL(deliver(a, "for alice\r\n"), MP_STORE_OK);
    mp_folder_status st;
    CU_ASSERT_EQUAL(S->folder_peek(b, "INBOX", &st), MP_STORE_OK);
    CU_ASSERT_EQUAL(st.messages, 0);
    CU_ASSERT_EQUAL(S->folder_peek(a, "INBOX", &st), MP_STORE_OK);
    CU_ASSERT_EQUAL(st.messages, 1);
    CU_ASSERT_EQUAL(st.recent, 1);
    S->user_close(a);
    S->user_close(b);
}

/* ---- concurrency ---- */

typedef struct writer_arg {
    int id, n, append, errors;
    uint32_t *uids;
} writer_arg;

static void *writer(void *p)
{
    writer_arg *w = p;
    apr_pool_t *wp;
    apr_pool_create(&wp, NULL);
    mp_store_user *u;
    if (S->user_open(store, ALICE, 1, wp, &u) != MP_STORE_OK) {
        w->errors = w->n;
        apr_pool_destroy(wp);
        return NULL;
    }
    for (int i = 0; i < w->n; i++) {
        apr_pool_t *ip;
        apr_pool_create(&ip, wp);
        char text[128];
        int len = snprintf(text, sizeof text, "Subject: w%d-%d\r\n\r\nbody %d\r\n", w->id, i, i);
        mp_save *sv;
        mp_save_target t = {.user = u, .folder = "INBOX"};
        mp_save_meta meta = {.delivery = !w->append, .flags = w->append ? MP_FLAG_SEEN : 0};
        if (S->save_begin(u, "INBOX", ip, &sv) != MP_STORE_OK || S->save_write(sv, text, (size_t)len) != MP_STORE_OK ||
            S->save_commit(sv, &meta, &t, 1) != MP_STORE_OK || t.result != MP_STORE_OK ||
            (w->append && t.uid == 0))
            w->errors++;
        if (w->uids)
            w->uids[i] = t.uid;
        apr_pool_destroy(ip);
    }
    S->user_close(u);
    apr_pool_destroy(wp);
    return NULL;
}

static volatile int writers_done;

static void *syncer(void *p)
{
    int *errors = p;
    apr_pool_t *sp;
    apr_pool_create(&sp, NULL);
    mp_store_user *u;
    mp_folder *f;
    if (S->user_open(store, ALICE, 1, sp, &u) != MP_STORE_OK || S->folder_open(u, "INBOX", 0, sp, &f) != MP_STORE_OK) {
        (*errors)++;
        apr_pool_destroy(sp);
        return NULL;
    }
    uint32_t last_count = 0;
    while (!__atomic_load_n(&writers_done, __ATOMIC_SEQ_CST)) {
        if (S->folder_sync(f, NULL, NULL) != MP_STORE_OK)
            (*errors)++;
        const mp_msg *m;
        uint32_t n;
        S->folder_messages(f, &m, &n);
        for (uint32_t i = 1; i < n; i++)
            if (m[i].uid <= m[i - 1].uid)
                (*errors)++;
        if (n < last_count)
            (*errors)++; /* nobody expunges here */
        last_count = n;
    }
    S->folder_close(f);
    S->user_close(u);
    apr_pool_destroy(sp);
    return NULL;
}

#define PER_WRITER 200

static int run_writers(int first_id, uint32_t *append_uids, int with_syncer)
{
    pthread_t t[3];
    writer_arg w[2] = {{.id = first_id, .n = PER_WRITER, .append = 0},
                       {.id = first_id + 1, .n = PER_WRITER, .append = 1, .uids = append_uids}};
    int sync_errors = 0;
    writers_done = 0;
    for (int i = 0; i < 2; i++)
        pthread_create(&t[i], NULL, writer, &w[i]);
    if (with_syncer)
        pthread_create(&t[2], NULL, syncer, &sync_errors);
    for (int i = 0; i < 2; i++)
        pthread_join(t[i], NULL);
    __atomic_store_n(&writers_done, 1, __ATOMIC_SEQ_CST);
    if (with_syncer)
        pthread_join(t[2], NULL);
    return w[0].errors + w[1].errors + sync_errors;
}

static void test_concurrent_writers(void)
{
    mp_store_user *u = user(ALICE);
    int pfd[2];
    CU_ASSERT_EQUAL_FATAL(pipe(pfd), 0);
    pid_t pid = fork();
    CU_ASSERT_FATAL(pid >= 0);
    if (pid == 0) { /* a second process: two more writers */
        close(pfd[0]);
        uint32_t uids[PER_WRITER];
        int errors = run_writers(2, uids, 0);
        ssize_t n = write(pfd[1], uids, sizeof uids);
        _exit(errors == 0 && n == (ssize_t)sizeof uids ? 0 : 1);
    }
    close(pfd[1]);
    uint32_t mine[PER_WRITER], theirs[PER_WRITER];
    CU_ASSERT_EQUAL(run_writers(0, mine, 1), 0);
    size_t got = 0;
    while (got < sizeof theirs) {
        ssize_t n = read(pfd[0], (char *)theirs + got, sizeof theirs - got);
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    close(pfd[0]);
    int status;
    CU_ASSERT_EQUAL(waitpid(pid, &status, 0), pid);
    CU_ASSERT(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    CU_ASSERT_EQUAL_FATAL(got, sizeof theirs);

    mp_folder *f;
    CU_ASSERT_EQUAL_FATAL(S->folder_open(u, "INBOX", 0, pool, &f), MP_STORE_OK);
    const mp_msg *m;
    uint32_t n;
    S->folder_messages(f, &m, &n);
    CU_ASSERT_EQUAL_FATAL(n, 4 * PER_WRITER);
    for (uint32_t i = 1; i < n; i++)
        CU_ASSERT(m[i].uid > m[i - 1].uid);
    /* Every message once, and each APPEND's UID is its own message. */
    char *seen = apr_pcalloc(pool, 4 * PER_WRITER);
    for (uint32_t i = 0; i < n; i++) {
        char *text = read_msg(f, m[i].uid, 4096, NULL);
        int w = -1, k = -1;
        CU_ASSERT_FATAL(text && sscanf(text, "Subject: w%d-%d", &w, &k) == 2);
        CU_ASSERT_FATAL(w >= 0 && w < 4 && k >= 0 && k < PER_WRITER);
        CU_ASSERT_EQUAL(seen[w * PER_WRITER + k], 0);
        seen[w * PER_WRITER + k] = 1;
        if (w == 1)
            CU_ASSERT_EQUAL(mine[k], m[i].uid);
        if (w == 3)
            CU_ASSERT_EQUAL(theirs[k], m[i].uid);
        CU_ASSERT_EQUAL((m[i].flags & MP_FLAG_SEEN) != 0, w == 1 || w == 3);
    }
    S->folder_close(f);
    CU_ASSERT_EQUAL(count_files(upath("tmp")), 0);
    S->user_close(u);
}

/* ---- watching ---- */

typedef struct notified {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int count;
} notified;

static void on_notify(void *arg)
{
    notified *nt = arg;
    pthread_mutex_lock(&nt->mu);
    nt->count++;
    pthread_cond_broadcast(&nt->cv);
    pthread_mutex_unlock(&nt->mu);
}

/* Waits until nt->count >= want or the deadline; returns the count. */
static int wait_notified(notified *nt, int want, int ms)
{
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_sec += ms / 1000;
    dl.tv_nsec += (long)(ms % 1000) * 1000000;
    if (dl.tv_nsec >= 1000000000)
        dl.tv_sec++, dl.tv_nsec -= 1000000000;
    pthread_mutex_lock(&nt->mu);
    while (nt->count < want && pthread_cond_timedwait(&nt->cv, &nt->mu, &dl) == 0)
        ;
    int c = nt->count;
    pthread_mutex_unlock(&nt->mu);
    return c;
}

static void test_watch(void)
{
    mp_store_user *u = user(ALICE);
    CU_ASSERT_EQUAL(S->create(u, "Other", 0), MP_STORE_OK);
    mp_folder *f, *g;
    CU_ASSERT_EQUAL_FATAL(S->folder_open(u, "INBOX", 0, pool, &f), MP_STORE_OK);
    CU_ASSERT_EQUAL_FATAL(S->folder_open(u, "Other", 0, pool, &g), MP_STORE_OK);
    notified nf = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0};
    notified ng = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0};
    CU_ASSERT_EQUAL(S->folder_watch(f, on_notify, &nf), MP_STORE_OK);
    CU_ASSERT_EQUAL(S->folder_watch(g, on_notify, &ng), MP_STORE_OK);
    /* A delivery by another process. */
    pid_t pid = fork();
    if (pid == 0) {
        apr_pool_t *p;
        apr_pool_create(&p, NULL);
        mp_store_user *cu;
        int ok = S->user_open(store, ALICE, 0, p, &cu) == MP_STORE_OK && deliver(cu, "hello\r\n") == MP_STORE_OK;
        _exit(ok ? 0 : 1);
    }
    int status;
    waitpid(pid, &status, 0);
    CU_ASSERT(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    double t0 = now_ms();
    CU_ASSERT(wait_notified(&nf, 1, 5000) >= 1);
    CU_ASSERT(now_ms() - t0 < 5000);
    events ev = {""};
    CU_ASSERT_EQUAL(S->folder_sync(f, &ev_cb, &ev), MP_STORE_OK);
    CU_ASSERT_STRING_EQUAL(ev.log, "E1/1 ");
    /* A flag change in another view is news too. */
    mp_folder *h;
    CU_ASSERT_EQUAL_FATAL(S->folder_open(u, "INBOX", 0, pool, &h), MP_STORE_OK);
    int before = wait_notified(&nf, 0, 0);
    CU_ASSERT_EQUAL(S->store_flags(h, 1, 1, MP_FLAG_SEEN, 0, NULL, 0), MP_STORE_OK);
    CU_ASSERT(wait_notified(&nf, before + 1, 5000) > before);
    S->folder_close(h);
    /* Unsubscribed: no more calls. The watcher handles events in order, so once g hears of a later
       delivery, f's would have come before it. */
    CU_ASSERT_EQUAL(S->folder_watch(f, NULL, NULL), MP_STORE_OK);
    int fcount = wait_notified(&nf, 0, 0);
    CU_ASSERT_EQUAL(deliver(u, "again\r\n"), MP_STORE_OK);
    CU_ASSERT_EQUAL(save_to(u, "Other", "x\r\n", 3, NULL, NULL, NULL), MP_STORE_OK);
    CU_ASSERT(wait_notified(&ng, 1, 5000) >= 1);
    CU_ASSERT_EQUAL(wait_notified(&nf, 0, 0), fcount);
    /* Watching again, then folder_close ends it for good. */
    CU_ASSERT_EQUAL(S->folder_watch(f, on_notify, &nf), MP_STORE_OK);
    S->folder_close(f);
    S->folder_close(g);
    S->user_close(u);
}

static void test_pop3_lock(void)
{
    mp_store_user *u = user(ALICE);
    mp_folder *a, *b;
    CU_ASSERT_EQUAL_FATAL(S->folder_open(u, "INBOX", 0, pool, &a), MP_STORE_OK);
    CU_ASSERT_EQUAL_FATAL(S->folder_open(u, "INBOX", 0, pool, &b), MP_STORE_OK);
    CU_ASSERT_EQUAL(S->folder_lock(a), MP_STORE_OK);
    CU_ASSERT_EQUAL(S->folder_lock(b), MP_STORE_LOCKED);
    /* Deliveries and other readers go on. */
    CU_ASSERT_EQUAL(deliver(u, "x\r\n"), MP_STORE_OK);
    CU_ASSERT_EQUAL(S->folder_sync(b, NULL, NULL), MP_STORE_OK);
    /* Another process is refused as well. */
    pid_t pid = fork();
    if (pid == 0) {
        apr_pool_t *p;
        apr_pool_create(&p, NULL);
        mp_store_user *cu;
        mp_folder *cf;
        int rv = S->user_open(store, ALICE, 0, p, &cu) == MP_STORE_OK &&
                 S->folder_open(cu, "INBOX", 0, p, &cf) == MP_STORE_OK ? S->folder_lock(cf) : 99;
        _exit(rv == MP_STORE_LOCKED ? 0 : 1);
    }
    int status;
    waitpid(pid, &status, 0);
    CU_ASSERT(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    S->folder_close(a);
    CU_ASSERT_EQUAL(S->folder_lock(b), MP_STORE_OK);
    S->folder_close(b);
    S->user_close(u);
}

static void test_quota(void)
{
    mp_store_user *u = user(ALICE);
    char big[601];
    memset(big, 'q', 598);
    memcpy(big + 598, "\r\n", 3);
    S->set_quota_limits(u, 1000, 0);
    CU_ASSERT_EQUAL(deliver(u, big), MP_STORE_OK);
    CU_ASSERT_EQUAL(deliver(u, big), MP_STORE_OVERQUOTA);
    CU_ASSERT_EQUAL(count_files(upath("new")), 1);
    CU_ASSERT_EQUAL(count_files(upath("tmp")), 0);
    mp_quota q;
    CU_ASSERT_EQUAL(S->quota(u, &q), MP_STORE_OK);
    CU_ASSERT_EQUAL(q.bytes, 600);
    CU_ASSERT_EQUAL(q.messages, 1);
    CU_ASSERT_EQUAL(q.bytes_limit, 1000);
    /* Counted across folders; APPEND and COPY are refused the same way. */
    CU_ASSERT_EQUAL(S->create(u, "Box", 0), MP_STORE_OK);
    mp_save_meta meta = {0};
    CU_ASSERT_EQUAL(save_to(u, "Box", "small\r\n", 7, &meta, NULL, NULL), MP_STORE_OK);
    CU_ASSERT_EQUAL(S->quota(u, &q), MP_STORE_OK);
    CU_ASSERT_EQUAL(q.bytes, 607);
    CU_ASSERT_EQUAL(q.messages, 2);
    mp_folder *f;
    CU_ASSERT_EQUAL_FATAL(S->folder_open(u, "INBOX", 0, pool, &f), MP_STORE_OK);
    uint32_t one[] = {1}, got[1], uv;
    CU_ASSERT_EQUAL(S->copy(f, one, 1, "Box", 0, &uv, got), MP_STORE_OVERQUOTA);
    CU_ASSERT_EQUAL(S->copy(f, one, 1, "Box", 1, &uv, got), MP_STORE_OK); /* a move takes no more room */
    S->folder_close(f);
    S->set_quota_limits(u, 0, 2);
    CU_ASSERT_EQUAL(deliver(u, "x\r\n"), MP_STORE_OVERQUOTA);
    S->set_quota_limits(u, 0, 0);
    CU_ASSERT_EQUAL(deliver(u, "x\r\n"), MP_STORE_OK);
    S->user_close(u);
}

static const mp_folder_entry *find_entry(apr_array_header_t *a, const char *name)
{
    for (int i = 0; i < a->nelts; i++)
        if (strcmp(APR_ARRAY_IDX(a, i, mp_folder_entry).name, name) == 0)
            return &APR_ARRAY_IDX(a, i, mp_folder_entry);
    return NULL;
}

static void test_list_create_remove(void)
{
    mp_store_user *u = user(ALICE);
    CU_ASSERT_EQUAL(S->create(u, "Work/Projects", 0), MP_STORE_OK);
    CU_ASSERT_EQUAL(access(upath(".Work.Projects/maildirfolder"), F_OK), 0);
    CU_ASSERT_EQUAL(S->create(u, "Sent", 0), MP_STORE_OK);
    CU_ASSERT_EQUAL(S->create(u, "Sent Items", MP_FOLDER_SENT), MP_STORE_OK);
    CU_ASSERT_EQUAL(S->create(u, "Sent", 0), MP_STORE_EXISTS);
    CU_ASSERT_EQUAL(S->create(u, "INBOX/Sub", 0), MP_STORE_OK);
    CU_ASSERT_EQUAL(access(upath(".INBOX.Sub/cur"), F_OK), 0);
    CU_ASSERT_EQUAL(S->subscribe(u, "Sent Items", 1), MP_STORE_OK);
    CU_ASSERT_EQUAL(S->subscribe(u, "inbox", 1), MP_STORE_OK);
    CU_ASSERT_EQUAL(S->subscribe(u, "Work/Projects", 1), MP_STORE_OK);
    CU_ASSERT_EQUAL(S->subscribe(u, "Work/Projects", 1), MP_STORE_OK); /* once */
    CU_ASSERT_STRING_EQUAL(slurp(upath("subscriptions")), "Sent Items\nINBOX\nWork.Projects\n");
    apr_array_header_t *a;
    CU_ASSERT_EQUAL_FATAL(S->list(u, pool, &a), MP_STORE_OK);
    CU_ASSERT_EQUAL_FATAL(a->nelts, 6);
    CU_ASSERT_STRING_EQUAL(APR_ARRAY_IDX(a, 0, mp_folder_entry).name, "INBOX");
    const mp_folder_entry *e;
    CU_ASSERT((e = find_entry(a, "INBOX")) && e->attrs == (MP_FOLDER_HASCHILDREN | MP_FOLDER_SUBSCRIBED));
    CU_ASSERT((e = find_entry(a, "INBOX/Sub")) && e->attrs == MP_FOLDER_HASNOCHILDREN);
    CU_ASSERT((e = find_entry(a, "Work")) && e->attrs == (MP_FOLDER_NOSELECT | MP_FOLDER_HASCHILDREN));
    CU_ASSERT((e = find_entry(a, "Work/Projects")) && e->attrs == (MP_FOLDER_HASNOCHILDREN | MP_FOLDER_SUBSCRIBED));
    CU_ASSERT((e = find_entry(a, "Sent")) && e->attrs == (MP_FOLDER_HASNOCHILDREN | MP_FOLDER_SENT));
    CU_ASSERT((e = find_entry(a, "Sent Items")) &&
              e->attrs == (MP_FOLDER_HASNOCHILDREN | MP_FOLDER_SENT | MP_FOLDER_SUBSCRIBED));
    /* Dovecot's version 2 subscriptions file is read (and kept in that format). */
    spit(upath("subscriptions"), "V\t2\n\nWork\tProjects\nSent\n");
    CU_ASSERT_EQUAL(S->subscribe(u, "Sent", 0), MP_STORE_OK);
    CU_ASSERT_STRING_EQUAL(slurp(upath("subscriptions")), "V\t2\n\nWork\tProjects\n");
    CU_ASSERT_EQUAL_FATAL(S->list(u, pool, &a), MP_STORE_OK);
    CU_ASSERT((e = find_entry(a, "Work/Projects")) && (e->attrs & MP_FOLDER_SUBSCRIBED));
    CU_ASSERT((e = find_entry(a, "INBOX")) && !(e->attrs & MP_FOLDER_SUBSCRIBED));

    CU_ASSERT_EQUAL(S->create(u, "Work", 0), MP_STORE_OK); /* the \Noselect level becomes a folder */
    CU_ASSERT_EQUAL(S->remove(u, "Work"), MP_STORE_NOTEMPTY);
    CU_ASSERT_EQUAL(S->remove(u, "INBOX"), MP_STORE_BADNAME);
    CU_ASSERT_EQUAL(S->remove(u, "Nope"), MP_STORE_NOTFOUND);
    CU_ASSERT_EQUAL(save_to(u, "Work/Projects", "x\r\n", 3, NULL, NULL, NULL), MP_STORE_OK);
    CU_ASSERT_EQUAL(S->remove(u, "Work/Projects"), MP_STORE_OK);
    CU_ASSERT_EQUAL(access(upath(".Work.Projects"), F_OK), -1);
    CU_ASSERT_EQUAL(S->remove(u, "Work"), MP_STORE_OK);
    CU_ASSERT_EQUAL(S->remove(u, "Sent Items"), MP_STORE_OK);
    CU_ASSERT_STRING_EQUAL(slurp(upath("mailproto-special-use")), "");
    CU_ASSERT_EQUAL_FATAL(S->list(u, pool, &a), MP_STORE_OK);
    CU_ASSERT_EQUAL(a->nelts, 3); /* INBOX, INBOX/Sub, Sent */
    /* Recreated under the same name: a new UIDVALIDITY (RFC 3501 section 2.3.1.1). */
    mp_folder_status st1, st2;
    CU_ASSERT_EQUAL(S->create(u, "Again", 0), MP_STORE_OK);
    CU_ASSERT_EQUAL(S->folder_peek(u, "Again", &st1), MP_STORE_OK);
    CU_ASSERT_EQUAL(S->remove(u, "Again"), MP_STORE_OK);
    CU_ASSERT_EQUAL(S->create(u, "Again", 0), MP_STORE_OK);
    CU_ASSERT_EQUAL(S->folder_peek(u, "Again", &st2), MP_STORE_OK);
    CU_ASSERT_NOT_EQUAL(st1.uidvalidity, st2.uidvalidity);
    CU_ASSERT_EQUAL(S->folder_peek(u, "Gone", &st2), MP_STORE_NOTFOUND);
    S->user_close(u);
}

static void test_folder_gone_under_a_view(void)
{
    mp_store_user *u = user(ALICE), *other = user(ALICE);
    CU_ASSERT_EQUAL(S->create(u, "Gone", 0), MP_STORE_OK);
    append(u, "Gone", "first\r\n", 0);
    mp_folder *f;
    CU_ASSERT_EQUAL_FATAL(S->folder_open(u, "Gone", 0, pool, &f), MP_STORE_OK);
    mp_folder_status st0, st;
    S->folder_status(f, &st0);
    CU_ASSERT_EQUAL(S->remove(other, "Gone"), MP_STORE_OK);
    CU_ASSERT_EQUAL(S->folder_sync(f, NULL, NULL), MP_STORE_NOTFOUND);
    mp_msg_stream *stream;
    CU_ASSERT_EQUAL(S->message_open(f, 1, pool, &stream), MP_STORE_NOTFOUND);
    /* Made again under the same name: the view follows it, with its new UIDVALIDITY. */
    CU_ASSERT_EQUAL(S->create(other, "Gone", 0), MP_STORE_OK);
    append(other, "Gone", "second\r\n", 0);
    events ev = {""};
    CU_ASSERT_EQUAL(S->folder_sync(f, &ev_cb, &ev), MP_STORE_OK);
    CU_ASSERT_STRING_EQUAL(ev.log, "X1/1 E1/1 ");
    S->folder_status(f, &st);
    CU_ASSERT_NOT_EQUAL(st.uidvalidity, st0.uidvalidity);
    CU_ASSERT_STRING_EQUAL(read_msg(f, 1, 64, NULL), "second\r\n");
    /* and its lock is the new folder's: another session's changes are seen */
    mp_folder *g;
    CU_ASSERT_EQUAL_FATAL(S->folder_open(other, "Gone", 0, pool, &g), MP_STORE_OK);
    CU_ASSERT_EQUAL(S->store_flags(g, 1, 1, MP_FLAG_SEEN, 0, NULL, 0), MP_STORE_OK);
    ev.log[0] = '\0';
    CU_ASSERT_EQUAL(S->folder_sync(f, &ev_cb, &ev), MP_STORE_OK);
    CU_ASSERT_STRING_EQUAL(ev.log, "F1/1:21 ");
    S->folder_close(g);
    S->folder_close(f);
    S->user_close(other);
    S->user_close(u);
}

static void test_rename(void)
{
    mp_store_user *u = user(ALICE);
    CU_ASSERT_EQUAL(S->create(u, "Work", 0), MP_STORE_OK);
    CU_ASSERT_EQUAL(S->create(u, "Work/Projects", 0), MP_STORE_OK);
    CU_ASSERT_EQUAL(S->create(u, "Work/Projects/2024", MP_FOLDER_ARCHIVE), MP_STORE_OK);
    CU_ASSERT_EQUAL(S->create(u, "Workshop", 0), MP_STORE_OK); /* not a child of Work */
    CU_ASSERT_EQUAL(S->subscribe(u, "Work/Projects", 1), MP_STORE_OK);
    CU_ASSERT_EQUAL(save_to(u, "Work/Projects", "p\r\n", 3, NULL, NULL, NULL), MP_STORE_OK);
    CU_ASSERT_EQUAL(S->rename(u, "Work", "Work/Inside"), MP_STORE_BADNAME);
    CU_ASSERT_EQUAL(S->rename(u, "Work", "Workshop"), MP_STORE_EXISTS);
    CU_ASSERT_EQUAL(S->rename(u, "Nope", "Other"), MP_STORE_NOTFOUND);
    CU_ASSERT_EQUAL(S->rename(u, "Work", "INBOX"), MP_STORE_EXISTS);
    CU_ASSERT_EQUAL(S->rename(u, "Work", "Old/W\xc3\xb6rk"), MP_STORE_OK);
    apr_array_header_t *a;
    CU_ASSERT_EQUAL_FATAL(S->list(u, pool, &a), MP_STORE_OK);
    CU_ASSERT_PTR_NULL(find_entry(a, "Work"));
    CU_ASSERT_PTR_NULL(find_entry(a, "Work/Projects"));
    CU_ASSERT_PTR_NOT_NULL(find_entry(a, "Workshop"));
    const mp_folder_entry *e;
    CU_ASSERT((e = find_entry(a, "Old/W\xc3\xb6rk/Projects")) && (e->attrs & MP_FOLDER_SUBSCRIBED));
    CU_ASSERT((e = find_entry(a, "Old/W\xc3\xb6rk/Projects/2024")) && (e->attrs & MP_FOLDER_ARCHIVE));
    CU_ASSERT_EQUAL(access(upath(".Old.W&APY-rk.Projects/cur"), F_OK), 0);
    mp_folder_status st;
    CU_ASSERT_EQUAL(S->folder_peek(u, "Old/W\xc3\xb6rk/Projects", &st), MP_STORE_OK);
    CU_ASSERT_EQUAL(st.messages, 1);

    /* RENAME INBOX: its messages move to a new folder, INBOX stays, empty, keeping its UIDs' range. */
    for (int i = 0; i < 3; i++)
        CU_ASSERT_EQUAL(deliver(u, apr_psprintf(pool, "in %d\r\n", i)), MP_STORE_OK);
    mp_folder_status in0;
    CU_ASSERT_EQUAL(S->folder_peek(u, "INBOX", &in0), MP_STORE_OK);
    CU_ASSERT_EQUAL(S->rename(u, "INBOX", "Old Inbox"), MP_STORE_OK);
    CU_ASSERT_EQUAL(S->folder_peek(u, "INBOX", &st), MP_STORE_OK);
    CU_ASSERT_EQUAL(st.messages, 0);
    CU_ASSERT_EQUAL(st.uidvalidity, in0.uidvalidity);
    CU_ASSERT_EQUAL(st.uidnext, in0.uidnext);
    mp_folder *f;
    CU_ASSERT_EQUAL_FATAL(S->folder_open(u, "Old Inbox", 0, pool, &f), MP_STORE_OK);
    const mp_msg *m;
    uint32_t n;
    S->folder_messages(f, &m, &n);
    CU_ASSERT_EQUAL_FATAL(n, 3);
    CU_ASSERT_STRING_EQUAL(read_msg(f, m[2].uid, 100, NULL), "in 2\r\n");
    S->folder_close(f);
    CU_ASSERT_EQUAL(deliver(u, "after\r\n"), MP_STORE_OK);
    CU_ASSERT_EQUAL(S->folder_peek(u, "INBOX", &st), MP_STORE_OK);
    CU_ASSERT_EQUAL(st.messages, 1);
    CU_ASSERT_EQUAL(st.uidnext, in0.uidnext + 1);
    S->user_close(u);
}

static void test_peek_and_save_abort(void)
{
    mp_store_user *u = user(ALICE);
    for (int i = 0; i < 3; i++)
        CU_ASSERT_EQUAL(deliver(u, "m\r\n"), MP_STORE_OK);
    mp_folder_status st;
    CU_ASSERT_EQUAL(S->folder_peek(u, "INBOX", &st), MP_STORE_OK);
    CU_ASSERT(st.messages == 3 && st.recent == 3 && st.unseen == 3 && st.uidnext == 4 && st.highestmodseq >= 3);
    mp_save *sv;
    apr_pool_t *p;
    apr_pool_create(&p, pool);
    /* A small beginning stays in the buffer: no file yet. More than the buffer goes to the spool file in
       tmp/. Either way an abort leaves nothing. */
    static char big[100000];
    memset(big, 'x', sizeof big);
    CU_ASSERT_EQUAL(S->save_begin(u, "INBOX", p, &sv), MP_STORE_OK);
    S->save_write(sv, "partial", 7);
    CU_ASSERT_EQUAL(count_files(upath("tmp")), 0);
    S->save_write(sv, big, sizeof big);
    CU_ASSERT_EQUAL(count_files(upath("tmp")), 1);
    S->save_abort(sv);
    S->save_abort(sv); /* twice is harmless */
    CU_ASSERT_EQUAL(count_files(upath("tmp")), 0);
    /* A save whose pool goes away unfinished leaves nothing either. */
    CU_ASSERT_EQUAL(S->save_begin(u, "INBOX", p, &sv), MP_STORE_OK);
    S->save_write(sv, big, sizeof big);
    CU_ASSERT_EQUAL(count_files(upath("tmp")), 1);
    apr_pool_destroy(p);
    CU_ASSERT_EQUAL(count_files(upath("tmp")), 0);
    CU_ASSERT_EQUAL(S->save_begin(u, "Missing", pool, &sv), MP_STORE_NOTFOUND);
    /* Several targets: one file written, linked into each user's INBOX. */
    mp_store_user *b = user("bob@example.test");
    apr_pool_create(&p, pool);
    CU_ASSERT_EQUAL_FATAL(S->save_begin(u, "INBOX", p, &sv), MP_STORE_OK);
    S->save_write(sv, "to both\r\n", 9);
    mp_save_target t[3] = {{.user = u, .folder = "INBOX"}, {.user = b, .folder = "INBOX"},
                           {.user = b, .folder = "Nope"}};
    CU_ASSERT_EQUAL(S->save_commit(sv, NULL, t, 3), MP_STORE_OK);
    CU_ASSERT(t[0].result == MP_STORE_OK && t[1].result == MP_STORE_OK && t[2].result == MP_STORE_NOTFOUND);
    CU_ASSERT(t[0].uid == 0 && t[1].uid == 0); /* a delivery: UIDs come at the next sync */
    CU_ASSERT_EQUAL(S->folder_peek(b, "INBOX", &st), MP_STORE_OK);
    CU_ASSERT_EQUAL(st.messages, 1);
    CU_ASSERT_EQUAL(count_files(upath("tmp")), 0);
    /* The same file in both folders: one inode, two names (the tmp/ name is gone). */
    const char *nb = first_file(apr_psprintf(pool, "%s/mail/example.test/bob/new", tmpdir));
    CU_ASSERT_PTR_NOT_NULL_FATAL(nb);
    struct stat sb;
    CU_ASSERT_EQUAL(stat(apr_psprintf(pool, "%s/mail/example.test/bob/new/%s", tmpdir, nb), &sb), 0);
    CU_ASSERT_EQUAL(sb.st_nlink, 2);
    apr_pool_destroy(p);
    S->user_close(b);
    S->user_close(u);
}

/* ---- group commit of the folder fsyncs (md_fsync_dir_group) ---- */

extern int (*md_dirsync_hook)(const char *dir);
extern void md_dirsync_stats(unsigned long *syncs_r, unsigned long *callers_r);

#define GC_THREADS 16
#define GC_EACH 25
#define GC_SNAPS 4096

/* What the leaders saw: before each folder fsync, the hook lists new/ (the entries that fsync makes
   durable). */
static struct {
    pthread_mutex_t mu;
    char *snap[GC_SNAPS];
    int nsnaps;
    int delay_us;
    int fail_at; /* the fsync (1-based) to fail, 0: none */
    int calls;
} gc = {.mu = PTHREAD_MUTEX_INITIALIZER};

static int gc_hook(const char *dir)
{
    pthread_mutex_lock(&gc.mu);
    int call = ++gc.calls;
    pthread_mutex_unlock(&gc.mu);
    if (gc.delay_us)
        usleep((useconds_t)gc.delay_us); /* a slow disk: callers gather behind this fsync */
    size_t cap = 1 << 16, len = 0;
    char *list = malloc(cap);
    list[len++] = '\n';
    list[len] = '\0';
    DIR *d = opendir(dir);
    struct dirent *de;
    while (d && (de = readdir(d)) != NULL) {
        size_t n = strlen(de->d_name);
        if (de->d_name[0] == '.')
            continue;
        while (len + n + 2 >= cap)
            list = realloc(list, cap *= 2);
        memcpy(list + len, de->d_name, n);
        len += n;
        list[len++] = '\n';
        list[len] = '\0';
    }
    if (d)
        closedir(d);
    pthread_mutex_lock(&gc.mu);
    if (gc.nsnaps < GC_SNAPS)
        gc.snap[gc.nsnaps++] = list;
    else
        free(list);
    pthread_mutex_unlock(&gc.mu);
    if (call == gc.fail_at) {
        errno = EIO;
        return -1;
    }
    return 0;
}

typedef struct gc_writer {
    int id;
    const char *user;
    int results[GC_EACH];
    int target_results[GC_EACH];
    int seen_snaps[GC_EACH]; /* snapshots taken when the commit returned */
} gc_writer;

static void *gc_writer_run(void *arg)
{
    gc_writer *w = arg;
    apr_pool_t *wp;
    apr_pool_create(&wp, NULL);
    mp_store_user *u;
    if (S->user_open(store, w->user, 1, wp, &u) != MP_STORE_OK) {
        for (int i = 0; i < GC_EACH; i++)
            w->results[i] = -100;
        apr_pool_destroy(wp);
        return NULL;
    }
    for (int i = 0; i < GC_EACH; i++) {
        apr_pool_t *ip;
        apr_pool_create(&ip, wp);
        char text[128];
        int len = snprintf(text, sizeof text, "Subject: g%d-%d\r\n\r\nbody\r\n", w->id, i);
        mp_save *sv;
        mp_save_target t = {.user = u, .folder = "INBOX"};
        static const mp_save_meta plain = {.delivery = 1};
        w->results[i] = S->save_begin(u, "INBOX", ip, &sv);
        if (w->results[i] == MP_STORE_OK && (w->results[i] = S->save_write(sv, text, (size_t)len)) == MP_STORE_OK)
            w->results[i] = S->save_commit(sv, &plain, &t, 1);
        w->target_results[i] = t.result;
        pthread_mutex_lock(&gc.mu);
        w->seen_snaps[i] = gc.nsnaps;
        pthread_mutex_unlock(&gc.mu);
        apr_pool_destroy(ip);
    }
    S->user_close(u);
    apr_pool_destroy(wp);
    return NULL;
}

#define GC_IDS 256

/* The names of the files in `dir` by their "Subject: g<id>-<i>" (id < GC_IDS); NULL where none. */
static const char **gc_names(const char *dir)
{
    const char **names = apr_pcalloc(pool, GC_IDS * GC_EACH * sizeof *names);
    DIR *d = opendir(dir);
    struct dirent *de;
    while (d && (de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.')
            continue;
        char text[64] = "";
        int fd = open(apr_pstrcat(pool, dir, "/", de->d_name, NULL), O_RDONLY);
        ssize_t n = fd >= 0 ? read(fd, text, sizeof text - 1) : -1;
        if (fd >= 0)
            close(fd);
        int id, i;
        if (n > 0 && (text[n] = '\0', sscanf(text, "Subject: g%d-%d\r", &id, &i)) == 2 && id >= 0 && id < GC_IDS &&
            i >= 0 && i < GC_EACH) {
            CU_ASSERT_PTR_NULL(names[id * GC_EACH + i]); /* once */
            names[id * GC_EACH + i] = apr_pstrdup(pool, de->d_name);
        }
    }
    if (d)
        closedir(d);
    return names;
}

/* Checks every writer's messages after a run; returns how many commits failed. */
static int gc_check(gc_writer *w, int nw)
{
    int failed = 0;
    const char **by_user[2] = {gc_names(upath("new")),
                               gc_names(apr_psprintf(pool, "%s/mail/example.test/bob/new", tmpdir))};
    for (int k = 0; k < nw; k++) {
        const char **names = by_user[strcmp(w[k].user, ALICE) != 0];
        for (int i = 0; i < GC_EACH; i++) {
            const char *name = names[w[k].id * GC_EACH + i];
            if (w[k].results[i] != MP_STORE_OK) {
                /* A failed commit is answered as such, per writer and per target, and leaves nothing. */
                CU_ASSERT_EQUAL(w[k].results[i], MP_STORE_ERR);
                CU_ASSERT_EQUAL(w[k].target_results[i], MP_STORE_ERR);
                CU_ASSERT_PTR_NULL(name);
                failed++;
                continue;
            }
            CU_ASSERT_EQUAL(w[k].target_results[i], MP_STORE_OK);
            CU_ASSERT_PTR_NOT_NULL(name);
            if (!name)
                continue;
            /* Durable before the answer: a folder fsync that began before the commit returned had the
               entry in new/ already. */
            char *line = apr_pstrcat(pool, "\n", name, "\n", NULL);
            int covered = 0;
            for (int j = 0; j < w[k].seen_snaps[i] && !covered; j++)
                covered = strstr(gc.snap[j], line) != NULL;
            CU_ASSERT(covered);
        }
    }
    return failed;
}

static void gc_reset(void)
{
    for (int j = 0; j < gc.nsnaps; j++)
        free(gc.snap[j]);
    gc.nsnaps = 0;
    gc.calls = 0;
    gc.fail_at = 0;
}

static void gc_empty_new(const char *user)
{
    apr_pool_t *p;
    apr_pool_create(&p, pool);
    mp_store_user *u;
    mp_folder *f;
    CU_ASSERT_EQUAL_FATAL(S->user_open(store, user, 1, p, &u), MP_STORE_OK);
    CU_ASSERT_EQUAL(S->folder_open(u, "INBOX", 0, p, &f), MP_STORE_OK); /* new/ to cur/ */
    S->folder_close(f);
    S->user_close(u);
    apr_pool_destroy(p);
}

static void test_group_commit(void)
{
    static const char *const users[2] = {"alice@example.test", "bob@example.test"};
    for (int round = 0; round < 2; round++) { /* twice: the second round meets the first's files in cur/ */
        gc_empty_new(users[0]);
        gc_empty_new(users[1]);
        gc_reset();
        gc.delay_us = 3000;
        md_dirsync_hook = gc_hook;
        unsigned long syncs0, callers0, syncs1, callers1;
        md_dirsync_stats(&syncs0, &callers0);
        /* 16 writers, as 16 sessions on 16 workers, into two folders at once. */
        gc_writer w[GC_THREADS];
        pthread_t t[GC_THREADS];
        for (int k = 0; k < GC_THREADS; k++) {
            memset(&w[k], 0, sizeof w[k]);
            w[k].id = round * GC_THREADS + k;
            w[k].user = users[k % 2];
            pthread_create(&t[k], NULL, gc_writer_run, &w[k]);
        }
        for (int k = 0; k < GC_THREADS; k++)
            pthread_join(t[k], NULL);
        md_dirsync_hook = NULL;
        md_dirsync_stats(&syncs1, &callers1);
        CU_ASSERT_EQUAL(gc_check(w, GC_THREADS), 0);
        CU_ASSERT_EQUAL(callers1 - callers0, GC_THREADS * GC_EACH);
        /* Shared: far fewer fsyncs than commits (8 writers per folder behind a 3 ms fsync). */
        CU_ASSERT(syncs1 - syncs0 < (GC_THREADS * GC_EACH) / 2);
        CU_ASSERT_EQUAL(count_files(upath("tmp")), 0);
        CU_ASSERT_EQUAL(count_files(upath("new")), GC_THREADS / 2 * GC_EACH);
        /* Every message once, readable through the store with its own content. */
        mp_store_user *u = user(ALICE);
        mp_folder *f;
        CU_ASSERT_EQUAL_FATAL(S->folder_open(u, "INBOX", 1, pool, &f), MP_STORE_OK);
        const mp_msg *m;
        uint32_t n;
        S->folder_messages(f, &m, &n);
        char *seen = apr_pcalloc(pool, GC_THREADS * GC_EACH);
        int fresh = 0;
        for (uint32_t i = 0; i < n; i++) {
            char *text = read_msg(f, m[i].uid, 4096, NULL);
            int id = -1, k = -1;
            if (text && sscanf(text, "Subject: g%d-%d", &id, &k) == 2 && id >= round * GC_THREADS &&
                id < (round + 1) * GC_THREADS && k >= 0 && k < GC_EACH) {
                id -= round * GC_THREADS;
                CU_ASSERT_EQUAL(seen[id * GC_EACH + k], 0);
                CU_ASSERT_EQUAL(id % 2, 0);
                seen[id * GC_EACH + k] = 1;
                fresh++;
            }
        }
        CU_ASSERT_EQUAL(fresh, GC_THREADS / 2 * GC_EACH);
        S->folder_close(f);
        S->user_close(u);
    }
    gc_reset();
}

static void test_group_commit_failure(void)
{
    gc_empty_new(ALICE);
    gc_reset();
    /* The first fsync is slow, so that the others gather in the next batch; that one fails. */
    gc.delay_us = 20000;
    gc.fail_at = 2;
    md_dirsync_hook = gc_hook;
    gc_writer w[8];
    pthread_t t[8];
    for (int k = 0; k < 8; k++) {
        memset(&w[k], 0, sizeof w[k]);
        w[k].id = 100 + k;
        w[k].user = ALICE;
        pthread_create(&t[k], NULL, gc_writer_run, &w[k]);
    }
    for (int k = 0; k < 8; k++)
        pthread_join(t[k], NULL);
    md_dirsync_hook = NULL;
    fake_clear_log(fs);
    int failed = gc_check(w, 8);
    /* Only the members of the failed fsync's batch failed: more than one, not all. */
    CU_ASSERT(failed > 1);
    CU_ASSERT(failed < 8 * GC_EACH);
    CU_ASSERT_EQUAL(count_files(upath("new")), 8 * GC_EACH - failed);
    CU_ASSERT_EQUAL(count_files(upath("tmp")), 0);
    gc_reset();
}

/* ---- timing (MAILDIR_BENCH=1) ---- */

static void test_bench(void)
{
    if (!getenv("MAILDIR_BENCH"))
        return;
    mp_store_user *u = user(ALICE);
    char msg[2048];
    memset(msg, 'x', sizeof msg);
    for (size_t i = 78; i < sizeof msg; i += 80)
        msg[i] = '\r', msg[i + 1] = '\n';
    static const mp_save_meta plain = {.delivery = 1};
    double commit_ms = 0, t0 = now_ms();
    for (int i = 0; i < 1000; i++) {
        apr_pool_t *p;
        apr_pool_create(&p, pool);
        mp_save *sv;
        mp_save_target t = {.user = u, .folder = "INBOX"};
        S->save_begin(u, "INBOX", p, &sv);
        S->save_write(sv, msg, sizeof msg);
        double c0 = now_ms();
        CU_ASSERT_EQUAL(S->save_commit(sv, &plain, &t, 1), MP_STORE_OK);
        commit_ms += now_ms() - c0;
        apr_pool_destroy(p);
    }
    double total = now_ms() - t0;
    printf("\n  BENCH 1000 deliveries of 2 KiB: %.0f ms in all, %.0f ms in save_commit (%.3f ms each)\n", total,
           commit_ms, commit_ms / 1000);
    /* A folder of 10,000 messages, files made directly (as a migration would leave them). */
    CU_ASSERT_EQUAL(S->create(u, "Big", 0), MP_STORE_OK);
    for (int i = 0; i < 10000; i++) {
        char path[512];
        snprintf(path, sizeof path, "%s/%d.M%dP1Q%d.host,S=%zu,W=%zu:2,S", upath(".Big/cur"), 1700000000 + i / 100, i,
                 i, sizeof msg, sizeof msg);
        int fd = open(path, O_WRONLY | O_CREAT, 0600);
        CU_ASSERT(fd >= 0 && write(fd, msg, sizeof msg) == (ssize_t)sizeof msg);
        close(fd);
    }
    mp_folder *f;
    const mp_msg *m;
    uint32_t n;
    t0 = now_ms();
    CU_ASSERT_EQUAL_FATAL(S->folder_open(u, "Big", 0, pool, &f), MP_STORE_OK);
    double first = now_ms() - t0;
    S->folder_messages(f, &m, &n);
    CU_ASSERT_EQUAL(n, 10000);
    S->folder_close(f);
    t0 = now_ms();
    CU_ASSERT_EQUAL_FATAL(S->folder_open(u, "Big", 0, pool, &f), MP_STORE_OK);
    double again = now_ms() - t0;
    t0 = now_ms();
    CU_ASSERT_EQUAL(S->folder_sync(f, NULL, NULL), MP_STORE_OK);
    double sync = now_ms() - t0;
    t0 = now_ms();
    for (uint32_t uid = 1; uid <= 10000; uid++)
        S->store_flags(f, uid, 1, MP_FLAG_FLAGGED, 0, NULL, 0);
    double store = now_ms() - t0;
    S->folder_close(f);
    printf("  BENCH 10,000 messages: first open (index built) %.1f ms, open %.1f ms, sync %.1f ms, "
           "10,000 store_flags %.0f ms\n", first, again, sync, store);
    S->user_close(u);
}

int main(void)
{
    if (apr_initialize() != APR_SUCCESS)
        return 1;
    CU_initialize_registry();
    CU_pSuite s = CU_add_suite_with_setup_and_teardown("maildir", NULL, NULL, (void (*)(void))setup,
                                                       (void (*)(void))teardown);
    CU_add_test(s, "delivery, then reading it back", test_deliver_and_read);
    CU_add_test(s, "files as Dovecot leaves them", test_dovecot_files);
    CU_add_test(s, "flags and keywords in file names", test_flags_and_keywords);
    CU_add_test(s, "append, copy, move, expunge with UIDs", test_append_copy_move_expunge);
    CU_add_test(s, "UIDVALIDITY across restarts and rebuilds", test_uidvalidity_restart_and_rebuild);
    CU_add_test(s, "an index rebuilt under an open view", test_rebuilt_index_under_a_view);
    CU_add_test(s, "a copy goes through tmp/", test_copy_into);
    CU_add_test(s, "folder_sync skips an unchanged folder", test_sync_shortcut);
    CU_add_test(s, "a view sees other writers", test_view_sees_other_writers);
    CU_add_test(s, "tmp/ leftovers", test_tmp_leftovers);
    CU_add_test(s, "hostile folder names", test_hostile_folder_names);
    CU_add_test(s, "hostile user names", test_hostile_users);
    CU_add_test(s, "concurrent writers, threads and processes", test_concurrent_writers);
    CU_add_test(s, "folder_watch", test_watch);
    CU_add_test(s, "POP3 lock", test_pop3_lock);
    CU_add_test(s, "quota", test_quota);
    CU_add_test(s, "list, create, remove, subscribe", test_list_create_remove);
    CU_add_test(s, "a folder deleted and made again under a view", test_folder_gone_under_a_view);
    CU_add_test(s, "rename with children, rename INBOX", test_rename);
    CU_add_test(s, "peek, abort, several targets", test_peek_and_save_abort);
    CU_add_test(s, "group commit: concurrent deliveries share folder fsyncs", test_group_commit);
    CU_add_test(s, "group commit: a failed fsync fails its batch only", test_group_commit_failure);
    CU_add_test(s, "timing", test_bench);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned failed = CU_get_number_of_failures();
    CU_cleanup_registry();
    apr_terminate();
    return failed ? 1 : 0;
}
