/*
 * store_tool: drives a store provider module (mod_maildir.so) through include/mailproto/store.h alone,
 * for the interoperability tests (what did the store see that Dovecot wrote?) and the delivery benchmark.
 *
 *   store_tool MODULE.so SPEC BASE_DIR USER dump                   JSON: folders, messages, flags, digests
 *   store_tool MODULE.so SPEC BASE_DIR USER save FOLDER FLAGS < m  FLAGS: "-" or e.g. "Seen,Flagged,$Label"
 *   store_tool MODULE.so SPEC BASE_DIR USER create FOLDER
 *   store_tool MODULE.so SPEC BASE_DIR USER bench COUNT THREADS SIZE
 *                                                    durable deliveries per second into USER's INBOX
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <apr_general.h>
#include <apr_strings.h>
#include <apr_thread_proc.h>
#include <openssl/evp.h>

#include <mailproto/host.h>
#include <mailproto/store.h>
#include "loader.h"
#include "server.h"

static const mp_store_iface *st;
static mp_store *store;

static void die(const char *what, int rc)
{
    fprintf(stderr, "store_tool: %s failed (%d)\n", what, rc);
    exit(1);
}

static void json_str(const char *s)
{
    putchar('"');
    for (; *s; s++) {
        if (*s == '"' || *s == '\\')
            printf("\\%c", *s);
        else if ((unsigned char)*s < 0x20)
            printf("\\u%04x", (unsigned char)*s);
        else
            putchar(*s);
    }
    putchar('"');
}

static const struct { uint32_t bit; const char *name; } flag_names[] = {
    {MP_FLAG_SEEN, "Seen"}, {MP_FLAG_ANSWERED, "Answered"}, {MP_FLAG_FLAGGED, "Flagged"},
    {MP_FLAG_DELETED, "Deleted"}, {MP_FLAG_DRAFT, "Draft"},
};

static void dump_folder(mp_store_user *u, const mp_folder_entry *e, apr_pool_t *p)
{
    mp_folder *f;
    printf("{\"name\": ");
    json_str(e->name);
    printf(", \"attrs\": %u", e->attrs);
    int rc = (e->attrs & MP_FOLDER_NOSELECT) ? MP_STORE_NOTFOUND : st->folder_open(u, e->name, 1, p, &f);
    if (rc != MP_STORE_OK) {
        printf(", \"messages\": []}");
        return;
    }
    mp_folder_status fs;
    st->folder_status(f, &fs);
    printf(", \"uidvalidity\": %u, \"uidnext\": %u, \"messages\": [", fs.uidvalidity, fs.uidnext);
    const mp_msg *msgs;
    uint32_t n;
    st->folder_messages(f, &msgs, &n);
    for (uint32_t i = 0; i < n; i++) {
        const mp_msg *m = &msgs[i];
        printf("%s{\"uid\": %u, \"size\": %llu, \"key\": ", i ? ", " : "", m->uid, (unsigned long long)m->size);
        json_str(m->key);
        printf(", \"flags\": [");
        int first = 1;
        for (size_t k = 0; k < sizeof flag_names / sizeof flag_names[0]; k++)
            if (m->flags & flag_names[k].bit) {
                printf("%s\"%s\"", first ? "" : ", ", flag_names[k].name);
                first = 0;
            }
        printf("], \"keywords\": [");
        for (uint32_t k = 0; k < m->nkeywords; k++) {
            printf("%s", k ? ", " : "");
            json_str(m->keywords[k]);
        }
        /* The content as a client gets it: a digest and its length, to compare byte for byte. */
        mp_msg_stream *ms;
        unsigned long long len = 0;
        unsigned char md[32];
        unsigned mdlen = 0;
        EVP_MD_CTX *ctx = EVP_MD_CTX_new();
        EVP_DigestInit_ex(ctx, EVP_sha256(), NULL);
        if (st->message_open(f, m->uid, p, &ms) == MP_STORE_OK) {
            char buf[65536];
            long r;
            while ((r = st->stream_read(ms, buf, sizeof buf)) > 0) {
                EVP_DigestUpdate(ctx, buf, (size_t)r);
                len += (unsigned long long)r;
            }
            st->stream_close(ms);
        }
        EVP_DigestFinal_ex(ctx, md, &mdlen);
        EVP_MD_CTX_free(ctx);
        printf("], \"read\": %llu, \"sha256\": \"", len);
        for (unsigned k = 0; k < mdlen; k++)
            printf("%02x", md[k]);
        printf("\"}");
    }
    printf("]}");
    st->folder_close(f);
}

static int cmd_dump(mp_store_user *u, apr_pool_t *p)
{
    apr_array_header_t *entries;
    int rc = st->list(u, p, &entries);
    if (rc != MP_STORE_OK)
        die("list", rc);
    printf("{\"folders\": [");
    for (int i = 0; i < entries->nelts; i++) {
        printf("%s", i ? ", " : "");
        dump_folder(u, &APR_ARRAY_IDX(entries, i, mp_folder_entry), p);
    }
    printf("]}\n");
    return 0;
}

static int cmd_save(mp_store_user *u, const char *folder, const char *flags, apr_pool_t *p)
{
    mp_save_meta meta = {0};
    apr_array_header_t *kw = apr_array_make(p, 4, sizeof(const char *));
    if (strcmp(flags, "-") != 0) {
        char *last, *list = apr_pstrdup(p, flags);
        for (char *t = apr_strtok(list, ",", &last); t; t = apr_strtok(NULL, ",", &last)) {
            int found = 0;
            for (size_t k = 0; k < sizeof flag_names / sizeof flag_names[0]; k++)
                if (strcmp(t, flag_names[k].name) == 0) {
                    meta.flags |= flag_names[k].bit;
                    found = 1;
                }
            if (!found)
                *(const char **)apr_array_push(kw) = t;
        }
    }
    meta.nkeywords = (uint32_t)kw->nelts;
    meta.keywords = (const char *const *)kw->elts;
    mp_save *s;
    int rc = st->save_begin(u, folder, p, &s);
    if (rc != MP_STORE_OK)
        die("save_begin", rc);
    char buf[65536];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, stdin)) > 0)
        if ((rc = st->save_write(s, buf, n)) != MP_STORE_OK)
            die("save_write", rc);
    mp_save_target t = {.user = u, .folder = folder};
    if ((rc = st->save_commit(s, &meta, &t, 1)) != MP_STORE_OK || t.result != MP_STORE_OK)
        die("save_commit", rc ? rc : t.result);
    printf("{\"uid\": %u, \"uidvalidity\": %u}\n", t.uid, t.uidvalidity);
    return 0;
}

typedef struct bench_arg {
    mp_store_user *u;
    int count;
    const char *body;
    size_t size;
} bench_arg;

static void *APR_THREAD_FUNC bench_thread(apr_thread_t *t, void *data)
{
    bench_arg *a = data;
    apr_pool_t *p;
    apr_pool_create(&p, NULL);
    for (int i = 0; i < a->count; i++) {
        apr_pool_t *mp;
        apr_pool_create(&mp, p);
        mp_save *s;
        mp_save_meta meta = {.delivery = 1};
        mp_save_target tg = {.user = a->u, .folder = "INBOX"};
        if (st->save_begin(a->u, "INBOX", mp, &s) != MP_STORE_OK || st->save_write(s, a->body, a->size) != MP_STORE_OK ||
            st->save_commit(s, &meta, &tg, 1) != MP_STORE_OK)
            die("bench save", -1);
        apr_pool_destroy(mp);
    }
    apr_pool_destroy(p);
    return NULL;
}

static int cmd_bench(const char *user, int count, int threads, size_t size, apr_pool_t *p)
{
    char *body = apr_palloc(p, size);
    for (size_t i = 0; i < size; i++)
        body[i] = (i % 78 == 76) ? '\r' : (i % 78 == 77) ? '\n' : (char)('a' + i % 26);
    apr_thread_t **ts = apr_pcalloc(p, sizeof *ts * (size_t)threads);
    bench_arg *args = apr_pcalloc(p, sizeof *args * (size_t)threads);
    for (int i = 0; i < threads; i++) {
        /* One user handle per writer, as one session each. */
        if (st->user_open(store, user, 1, p, &args[i].u) != MP_STORE_OK)
            die("user_open", -1);
        args[i].count = count / threads;
        args[i].body = body;
        args[i].size = size;
    }
    apr_time_t t0 = apr_time_now();
    for (int i = 0; i < threads; i++)
        apr_thread_create(&ts[i], NULL, bench_thread, &args[i], p);
    for (int i = 0; i < threads; i++) {
        apr_status_t rv;
        apr_thread_join(&rv, ts[i]);
    }
    double secs = (double)(apr_time_now() - t0) / 1e6;
    int done = (count / threads) * threads;
    printf("{\"messages\": %d, \"threads\": %d, \"size\": %zu, \"seconds\": %.3f, \"per_second\": %.1f}\n", done,
           threads, size, secs, done / secs);
    for (int i = 0; i < threads; i++)
        st->user_close(args[i].u);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 6) {
        fprintf(stderr, "usage: store_tool MODULE.so SPEC BASE_DIR USER dump|save FOLDER FLAGS|create FOLDER|"
                        "bench COUNT THREADS SIZE\n");
        return 2;
    }
    apr_initialize();
    atexit(apr_terminate);
    apr_pool_t *p;
    apr_pool_create(&p, NULL);
    const char *tmp;
    apr_temp_dir_get(&tmp, p);
    mph_generation *g;
    const char *err = mph_module_load(p, "maildir", argv[1], tmp, 1, &g);
    if (err) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    if (g->module->init && g->module->init(&mph_host_services, g->pool, &g->ctx) != 0)
        die("module init", -1);
    g->inited = 1;
    const mp_provider *prov = g->module->provider;
    if (!prov || strcmp(prov->kind, "store") != 0 || prov->iface_version != MP_STORE_IFACE_VERSION)
        die("not a store provider of this interface version", -1);
    st = prov->iface;
    void *inst = NULL;
    int irc = st->instance(argv[2], argv[3], p, &inst, &err);
    store = inst;
    if (irc != MP_STORE_OK) {
        fprintf(stderr, "store_tool: %s\n", err ? err : "instance failed");
        return 1;
    }
    int rc = 1;
    if (strcmp(argv[5], "bench") == 0 && argc == 9) {
        rc = cmd_bench(argv[4], atoi(argv[6]), atoi(argv[7]), (size_t)atol(argv[8]), p);
    } else {
        mp_store_user *u;
        int r = st->user_open(store, argv[4], 1, p, &u);
        if (r != MP_STORE_OK)
            die("user_open", r);
        if (strcmp(argv[5], "dump") == 0)
            rc = cmd_dump(u, p);
        else if (strcmp(argv[5], "save") == 0 && argc == 8)
            rc = cmd_save(u, argv[6], argv[7], p);
        else if (strcmp(argv[5], "create") == 0 && argc == 7) {
            if ((r = st->create(u, argv[6], 0)) != MP_STORE_OK)
                die("create", r);
            rc = 0;
        } else {
            fprintf(stderr, "store_tool: bad command\n");
        }
        st->user_close(u);
    }
    fflush(stdout);
    mph_module_unload(g);
    apr_pool_destroy(p);
    return rc;
}
