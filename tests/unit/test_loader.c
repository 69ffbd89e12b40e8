/*
 * The module loader against real shared objects: mod_echo.so and the broken fixtures built by
 * tests/unit/fixtures/ (FIXTURE_DIR), plus in-memory descriptors for mph_module_check.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <CUnit/Basic.h>
#include <CUnit/CUnit.h>

#include <apr_file_io.h>
#include <apr_general.h>
#include <apr_strings.h>
#include <apr_time.h>

#include "loader.h"

#ifndef FIXTURE_DIR
#error "FIXTURE_DIR must be defined (tests/unit/CMakeLists.txt)"
#endif
#ifndef ECHO_MODULE
#error "ECHO_MODULE must be defined (tests/unit/CMakeLists.txt)"
#endif

static apr_pool_t *pool;     /* for the whole program */
static const char *tmp_dir;  /* /tmp/mailproto-test-loader-PID-TIME: scratch files */
static const char *copy_dir; /* tmp_dir/copies: where the loader puts its private copies */

/* ---- helpers ---- */

static int contains(const char *hay, const char *needle)
{
    return hay && strcasestr(hay, needle) != NULL;
}

/* Expects mph_module_load to refuse `path` loaded as `name`, with a message naming the file and
   containing each of the NULL-terminated key words. */
static void expect_refused(const char *name, const char *path, ...)
{
    mph_generation *gen = NULL;
    const char *err = mph_module_load(pool, name, path, copy_dir, 1, &gen);
    CU_ASSERT_PTR_NOT_NULL(err);
    CU_ASSERT_PTR_NULL(gen);
    if (!err)
        return;
    fprintf(stderr, "    refused as expected: %s\n", err);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, path));
    va_list ap;
    va_start(ap, path);
    for (const char *w; (w = va_arg(ap, const char *)) != NULL;) {
        if (!contains(err, w))
            fprintf(stderr, "    missing key word \"%s\"\n", w);
        CU_ASSERT_TRUE(contains(err, w));
    }
    va_end(ap);
}

static const char *fixture(const char *what)
{
    return apr_psprintf(pool, "%s/mod_fixture_%s.so", FIXTURE_DIR, what);
}

/* Number of entries in `dir` (without . and ..), -1 when it cannot be read. */
static int count_entries(const char *dir)
{
    apr_dir_t *d;
    apr_finfo_t fi;
    int n = 0;
    if (apr_dir_open(&d, dir, pool) != APR_SUCCESS)
        return -1;
    while (apr_dir_read(&fi, APR_FINFO_NAME, d) == APR_SUCCESS)
        if (strcmp(fi.name, ".") != 0 && strcmp(fi.name, "..") != 0)
            n++;
    apr_dir_close(d);
    return n;
}

static apr_status_t remove_tree(const char *dir, apr_pool_t *p)
{
    apr_dir_t *d;
    apr_finfo_t fi;
    apr_status_t rv = apr_dir_open(&d, dir, p);
    if (rv != APR_SUCCESS)
        return rv;
    while (apr_dir_read(&fi, APR_FINFO_NAME | APR_FINFO_TYPE, d) == APR_SUCCESS) {
        if (strcmp(fi.name, ".") == 0 || strcmp(fi.name, "..") == 0)
            continue;
        const char *path = apr_pstrcat(p, dir, "/", fi.name, NULL);
        if (fi.filetype == APR_DIR)
            remove_tree(path, p);
        else
            apr_file_remove(path, p);
    }
    apr_dir_close(d);
    return apr_dir_remove(dir, p);
}

static int write_file(const char *path, const char *text, apr_int32_t extra_flags)
{
    apr_file_t *f;
    apr_size_t n = strlen(text);
    if (apr_file_open(&f, path, APR_FOPEN_WRITE | APR_FOPEN_CREATE | extra_flags, APR_FPROT_OS_DEFAULT, pool)
        != APR_SUCCESS)
        return -1;
    apr_status_t rv = apr_file_write_full(f, text, n, NULL);
    apr_file_close(f);
    return rv == APR_SUCCESS ? 0 : -1;
}

static int suite_init(void)
{
    if (apr_initialize() != APR_SUCCESS || apr_pool_create(&pool, NULL) != APR_SUCCESS)
        return -1;
    tmp_dir = apr_psprintf(pool, "/tmp/mailproto-test-loader-%ld-%" APR_TIME_T_FMT, (long)getpid(),
                           apr_time_now());
    copy_dir = apr_pstrcat(pool, tmp_dir, "/copies", NULL);
    if (apr_dir_make_recursive(copy_dir, APR_FPROT_OS_DEFAULT, pool) != APR_SUCCESS)
        return -1;
    return 0;
}

static int suite_clean(void)
{
    apr_status_t rv = remove_tree(tmp_dir, pool);
    apr_pool_destroy(pool);
    apr_terminate();
    return rv == APR_SUCCESS ? 0 : -1;
}

/* ---- loading real files ---- */

static void test_refuse_bad_magic(void)
{
    expect_refused("fixture_badmagic", fixture("badmagic"), "magic", NULL);
}

static void test_refuse_bad_major(void)
{
    expect_refused("fixture_badmajor", fixture("badmajor"), "ABI major", NULL);
}

static void test_refuse_no_descriptor(void)
{
    expect_refused("fixture_nodesc", fixture("nodesc"), MP_MODULE_SYMBOL, NULL);
}

static void test_refuse_missing_file(void)
{
    expect_refused("echo", apr_pstrcat(pool, tmp_dir, "/no-such-module.so", NULL), NULL);
    expect_refused("echo", tmp_dir, NULL); /* a directory */
}

static void test_refuse_not_a_shared_object(void)
{
    const char *path = apr_pstrcat(pool, tmp_dir, "/mod_text.so", NULL);
    CU_ASSERT_EQUAL_FATAL(write_file(path, "this is not an ELF file\n", APR_FOPEN_TRUNCATE), 0);
    expect_refused("text", path, NULL);
    CU_ASSERT_EQUAL(count_entries(copy_dir), 0); /* no copy left behind */
}

static void test_refuse_name_mismatch(void)
{
    expect_refused("smtp", ECHO_MODULE, "smtp", NULL);
    expect_refused("fixture_newminor", ECHO_MODULE, NULL);
    expect_refused("echo", fixture("newminor"), NULL);
}

static void test_accept_echo(void)
{
    mph_generation *gen = NULL;
    const char *err = mph_module_load(pool, "echo", ECHO_MODULE, copy_dir, 1, &gen);
    CU_ASSERT_PTR_NULL(err);
    if (err)
        fprintf(stderr, "    unexpected: %s\n", err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(gen);
    CU_ASSERT_STRING_EQUAL(gen->name, "echo");
    CU_ASSERT_STRING_EQUAL(gen->file, ECHO_MODULE);
    CU_ASSERT_EQUAL(gen->number, 1);
    CU_ASSERT_PTR_NOT_NULL(gen->dso);
    CU_ASSERT_PTR_NOT_NULL(gen->pool);
    CU_ASSERT_FALSE(gen->inited); /* load does not call init */
    CU_ASSERT_PTR_NOT_NULL_FATAL(gen->module);
    CU_ASSERT_EQUAL(gen->module->magic, MP_MODULE_MAGIC);
    CU_ASSERT_STRING_EQUAL(gen->module->name, "echo");
    CU_ASSERT_EQUAL(gen->module->kind, MP_KIND_PROTOCOL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(gen->module->protocol);
    CU_ASSERT_STRING_EQUAL(gen->module->protocol->name, "echo");
    CU_ASSERT_PTR_NOT_NULL(gen->module->protocol->on_input);
    CU_ASSERT(gen->size > 0);
    CU_ASSERT_FALSE(mph_module_changed(gen));
    CU_ASSERT_EQUAL(count_entries(copy_dir), 0); /* the private copy is unlinked after dlopen */
    mph_module_unload(gen);
}

static void test_accept_newer_minor(void)
{
    mph_generation *gen = NULL;
    const char *err = mph_module_load(pool, "fixture_newminor", fixture("newminor"), copy_dir, 1, &gen);
    CU_ASSERT_PTR_NULL(err);
    if (err)
        fprintf(stderr, "    unexpected: %s\n", err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(gen);
    CU_ASSERT_PTR_NOT_NULL_FATAL(gen->module);
    CU_ASSERT_EQUAL(gen->module->abi_major, MP_ABI_MAJOR);
    CU_ASSERT_EQUAL(gen->module->abi_minor, MP_ABI_MINOR + 1);
    CU_ASSERT(gen->module->struct_size > sizeof(mp_module));
    CU_ASSERT_STRING_EQUAL(gen->module->name, "fixture_newminor");
    mph_module_unload(gen);
}

/* The same file as generations 1 and 2: two distinct objects (dlopen's cache by path is defeated). */
static void test_two_generations(void)
{
    mph_generation *g1 = NULL, *g2 = NULL;
    CU_ASSERT_PTR_NULL(mph_module_load(pool, "echo", ECHO_MODULE, copy_dir, 1, &g1));
    CU_ASSERT_PTR_NULL(mph_module_load(pool, "echo", ECHO_MODULE, copy_dir, 2, &g2));
    CU_ASSERT_PTR_NOT_NULL_FATAL(g1);
    CU_ASSERT_PTR_NOT_NULL_FATAL(g2);
    CU_ASSERT_EQUAL(g1->number, 1);
    CU_ASSERT_EQUAL(g2->number, 2);
    CU_ASSERT_PTR_NOT_EQUAL(g1->module, g2->module);
    CU_ASSERT_PTR_NOT_EQUAL(g1->module->protocol, g2->module->protocol);
    CU_ASSERT_PTR_NOT_EQUAL(g1->module->protocol->on_input, g2->module->protocol->on_input);
    CU_ASSERT_PTR_NOT_EQUAL(g1->dso, g2->dso);
    CU_ASSERT_EQUAL(count_entries(copy_dir), 0);

    /* unloading generation 1 leaves generation 2 usable */
    mph_module_unload(g1);
    CU_ASSERT_STRING_EQUAL(g2->module->name, "echo");
    CU_ASSERT_STRING_EQUAL(g2->module->protocol->name, "echo");
    mph_module_unload(g2);
}

static int copy_echo_to(const char *dest)
{
    return apr_file_copy(ECHO_MODULE, dest, APR_FPROT_FILE_SOURCE_PERMS, pool) == APR_SUCCESS ? 0 : -1;
}

static void test_changed(void)
{
    const char *path = apr_pstrcat(pool, tmp_dir, "/mod_echo.so", NULL);
    const char *next = apr_pstrcat(pool, tmp_dir, "/mod_echo.so.new", NULL);
    CU_ASSERT_EQUAL_FATAL(copy_echo_to(path), 0);

    mph_generation *gen = NULL;
    CU_ASSERT_PTR_NULL(mph_module_load(pool, "echo", path, copy_dir, 1, &gen));
    CU_ASSERT_PTR_NOT_NULL_FATAL(gen);
    CU_ASSERT_FALSE(mph_module_changed(gen));
    CU_ASSERT_FALSE(mph_module_changed(gen)); /* asking does not change anything */

    /* replaced the way `install` and `cp --remove-destination` do: a new file renamed over it */
    CU_ASSERT_EQUAL_FATAL(copy_echo_to(next), 0);
    CU_ASSERT_EQUAL_FATAL(apr_file_rename(next, path, pool), APR_SUCCESS);
    CU_ASSERT_TRUE(mph_module_changed(gen));
    mph_module_unload(gen);

    /* rewritten in place: same inode, other size */
    gen = NULL;
    CU_ASSERT_PTR_NULL(mph_module_load(pool, "echo", path, copy_dir, 2, &gen));
    CU_ASSERT_PTR_NOT_NULL_FATAL(gen);
    CU_ASSERT_FALSE(mph_module_changed(gen));
    CU_ASSERT_EQUAL_FATAL(write_file(path, "garbage appended\n", APR_FOPEN_APPEND), 0);
    CU_ASSERT_TRUE(mph_module_changed(gen));
    mph_module_unload(gen);
}

static void test_unload_inited_without_fini(void)
{
    /* echo has no fini: unloading an initialised generation must not call through NULL */
    mph_generation *gen = NULL;
    CU_ASSERT_PTR_NULL(mph_module_load(pool, "echo", ECHO_MODULE, copy_dir, 7, &gen));
    CU_ASSERT_PTR_NOT_NULL_FATAL(gen);
    CU_ASSERT_PTR_NULL(gen->module->fini);
    gen->inited = 1;
    mph_module_unload(gen);
    CU_PASS("unloaded");
}

/* ---- mph_module_check on in-memory descriptors ---- */

static int m_connect(mp_session *s) { return 0; }
static long m_input(mp_session *s, const char *d, size_t n) { return (long)n; }
static void m_goodbye(mp_session *s, mp_goodbye why) {}

static const mp_protocol good_protocol = {
    .name = "mem",
    .session_size = 8,
    .on_connect = m_connect,
    .on_input = m_input,
    .on_goodbye = m_goodbye,
};

static const mp_provider good_provider = {.kind = "store", .name = "mem", .iface_version = 1, .iface = &good_provider};

static mp_module good_module(void)
{
    return (mp_module){MP_MODULE_HEADER, .name = "mem", .kind = MP_KIND_PROTOCOL, .version = "1",
                       .protocol = &good_protocol};
}

#define MEM_PATH "/memory/mod_mem.so"

/* Expects mph_module_check to refuse `m` with a message naming MEM_PATH. */
static void expect_check_refuses(const mp_module *m, const char *why, const char *word)
{
    const char *err = mph_module_check(pool, m, MEM_PATH);
    if (!err)
        fprintf(stderr, "    accepted, but should not be: %s\n", why);
    CU_ASSERT_PTR_NOT_NULL(err);
    if (!err)
        return;
    fprintf(stderr, "    %-28s -> %s\n", why, err);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, MEM_PATH));
    if (word)
        CU_ASSERT_TRUE(contains(err, word));
}

static void test_check(void)
{
    mp_module m = good_module();
    CU_ASSERT_PTR_NULL(mph_module_check(pool, &m, MEM_PATH));

    m = good_module();
    m.magic = 0;
    expect_check_refuses(&m, "magic 0", "magic");

    m = good_module();
    m.abi_major = MP_ABI_MAJOR + 1;
    expect_check_refuses(&m, "major + 1", "ABI major");
    m.abi_major = MP_ABI_MAJOR - 1;
    expect_check_refuses(&m, "major - 1", "ABI major");

    m = good_module();
    m.name = NULL;
    expect_check_refuses(&m, "NULL name", "name");
    m.name = "";
    expect_check_refuses(&m, "empty name", "name");

    m = good_module();
    m.kind = 7;
    expect_check_refuses(&m, "kind 7", "kind");
    m.kind = 0;
    expect_check_refuses(&m, "kind 0", "kind");

    m = good_module();
    m.protocol = NULL;
    expect_check_refuses(&m, "protocol kind, NULL protocol", NULL);

    mp_protocol p = good_protocol;
    p.on_input = NULL;
    m = good_module();
    m.protocol = &p;
    expect_check_refuses(&m, "protocol without on_input", NULL);

    m = good_module();
    m.struct_size = (uint32_t)offsetof(mp_module, description);
    expect_check_refuses(&m, "struct_size: fixed part only", NULL);
    m.struct_size = (uint32_t)offsetof(mp_module, provider);
    expect_check_refuses(&m, "struct_size: one field short", NULL);
    m.struct_size = 0;
    expect_check_refuses(&m, "struct_size 0", NULL);

    /* a newer minor that covers everything this host reads is fine */
    m = good_module();
    m.abi_minor = MP_ABI_MINOR + 1;
    m.struct_size = (uint32_t)sizeof(mp_module) + 64;
    CU_ASSERT_PTR_NULL(mph_module_check(pool, &m, MEM_PATH));

    /* providers */
    m = good_module();
    m.kind = MP_KIND_PROVIDER;
    m.protocol = NULL;
    m.provider = &good_provider;
    CU_ASSERT_PTR_NULL(mph_module_check(pool, &m, MEM_PATH));
    m.provider = NULL;
    expect_check_refuses(&m, "provider kind, NULL provider", NULL);
}

/* ---------------------------------------------------------------------------------------------------- */

int main(void)
{
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 2;
    CU_pSuite s = CU_add_suite("loader", suite_init, suite_clean);
    if (!s)
        return 2;
    struct {
        const char *name;
        CU_TestFunc fn;
    } tests[] = {
        {"refuses a wrong magic", test_refuse_bad_magic},
        {"refuses another ABI major", test_refuse_bad_major},
        {"refuses a file without descriptor", test_refuse_no_descriptor},
        {"refuses a missing file", test_refuse_missing_file},
        {"refuses a file that is not a shared object", test_refuse_not_a_shared_object},
        {"refuses a name mismatch", test_refuse_name_mismatch},
        {"accepts mod_echo.so", test_accept_echo},
        {"accepts a newer ABI minor", test_accept_newer_minor},
        {"two generations of one file are two objects", test_two_generations},
        {"mph_module_changed sees a rewritten file", test_changed},
        {"unload of an inited module without fini", test_unload_inited_without_fini},
        {"mph_module_check on in-memory descriptors", test_check},
    };
    for (size_t i = 0; i < sizeof tests / sizeof tests[0]; i++)
        if (!CU_add_test(s, tests[i].name, tests[i].fn))
            return 2;
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned failed = CU_get_number_of_failures() + CU_get_number_of_tests_failed()
        + CU_get_number_of_suites_failed();
    CU_cleanup_registry();
    return failed ? 1 : 0;
}
