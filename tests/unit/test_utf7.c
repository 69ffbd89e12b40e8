/* IMAP modified UTF-7 (RFC 3501 section 5.1.3): modules/common/utf7.c. */
#include <string.h>

#include <CUnit/Basic.h>
#include <apr_general.h>
#include <apr_pools.h>

#include "utf7.h"

static apr_pool_t *pool;

static const char *enc(const char *utf8)
{
    char *out;
    return mpc_utf8_to_mutf7(utf8, strlen(utf8), pool, &out, NULL) == 0 ? out : NULL;
}

static const char *dec(const char *mutf7)
{
    char *out;
    return mpc_mutf7_to_utf8(mutf7, strlen(mutf7), pool, &out, NULL) == 0 ? out : NULL;
}

/* Both ways: utf8 <-> mutf7. */
static void both(const char *utf8, const char *mutf7)
{
    const char *e = enc(utf8), *d = dec(mutf7);
    CU_ASSERT_PTR_NOT_NULL_FATAL(e);
    CU_ASSERT_STRING_EQUAL(e, mutf7);
    CU_ASSERT_PTR_NOT_NULL_FATAL(d);
    CU_ASSERT_STRING_EQUAL(d, utf8);
}

static void test_ascii_and_ampersand(void)
{
    both("INBOX", "INBOX");
    both("", "");
    both("&", "&-");
    both("a&b", "a&-b");
    both("&&", "&-&-");
    both(" ~!", " ~!");
}

static void test_rfc_examples(void)
{
    both("Entw\xc3\xbcrfe", "Entw&APw-rfe");                  /* Entwürfe */
    both("\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e", "&ZeVnLIqe-"); /* 日本語 */
    /* RFC 3501 section 5.1.3: "~peter/mail/台北/日本語" */
    both("~peter/mail/\xe5\x8f\xb0\xe5\x8c\x97/\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e",
         "~peter/mail/&U,BTFw-/&ZeVnLIqe-");
    both("\xe6\x97\xa5&", "&ZeU-&-");                         /* a shifted run, then "&" */
    both("\xf0\x9f\x98\x80", "&2D3eAA-");                     /* U+1F600: a surrogate pair */
    both("\x01", "&AAE-");                                    /* control characters are shifted */
}

static void test_round_trip_many(void)
{
    /* Every BMP code point outside the surrogates and ASCII, in runs, survives both ways. */
    char utf8[64];
    for (unsigned cp = 0x80; cp + 2 < 0x10000; cp += 97) {
        if (cp + 2 >= 0xd800 && cp <= 0xdfff)
            continue;
        size_t n = 0;
        utf8[n++] = 'x';
        for (unsigned k = 0; k < 3; k++) {
            unsigned c = cp + k;
            if (c < 0x800) {
                utf8[n++] = (char)(0xc0 | (c >> 6));
                utf8[n++] = (char)(0x80 | (c & 0x3f));
            } else {
                utf8[n++] = (char)(0xe0 | (c >> 12));
                utf8[n++] = (char)(0x80 | ((c >> 6) & 0x3f));
                utf8[n++] = (char)(0x80 | (c & 0x3f));
            }
        }
        utf8[n] = '\0';
        const char *e = enc(utf8);
        CU_ASSERT_PTR_NOT_NULL_FATAL(e);
        const char *d = dec(e);
        CU_ASSERT_PTR_NOT_NULL_FATAL(d);
        CU_ASSERT_STRING_EQUAL(d, utf8);
    }
}

static void test_invalid_mutf7(void)
{
    static const char *const bad[] = {
        "&",            /* no closing "-" */
        "&ZeVnLIqe",    /* no closing "-" */
        "&AGE-",        /* encodes "a": printable ASCII must stand for itself */
        "&ACY-",        /* encodes "&" */
        "&A-",          /* 6 bits: no whole UTF-16 unit */
        "&APx-",        /* U+00FC, then leftover bits that are not zero */
        "&2D0-",        /* a high surrogate alone */
        "&3gA-",        /* a low surrogate alone */
        "&ZeU-&ZeU-",   /* two runs back to back: not canonical */
        "&Ze/-",        /* "/" is not in the modified BASE64 alphabet */
        "&ZeU=-",       /* no padding */
        "a\x7f",        /* DEL */
        "a\tb",         /* control characters never stand for themselves */
        "\xc3\xbc",     /* 8-bit */
        "&AAA-",        /* NUL */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        CU_ASSERT_PTR_NULL(dec(bad[i]));
        if (dec(bad[i]))
            fprintf(stderr, "accepted: %s\n", bad[i]);
    }
    /* An explicit length sees a NUL inside. */
    char *out;
    CU_ASSERT_EQUAL(mpc_mutf7_to_utf8("ab\0cd", 5, pool, &out, NULL), -1);
}

static void test_invalid_utf8(void)
{
    static const char *const bad[] = {
        "\xc3",               /* truncated */
        "\x80",               /* a lone continuation byte */
        "\xc0\xaf",           /* overlong "/" */
        "\xe0\x80\xaf",       /* overlong */
        "\xed\xa0\x80",       /* a surrogate */
        "\xf4\x90\x80\x80",   /* above U+10FFFF */
        "\xff",
        "a\xe6\x97",          /* truncated at the end */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        CU_ASSERT_PTR_NULL(enc(bad[i]));
    char *out;
    size_t len;
    CU_ASSERT_EQUAL(mpc_utf8_to_mutf7("a\0b", 3, pool, &out, NULL), -1);
    CU_ASSERT_EQUAL(mpc_utf8_to_mutf7("ab", 2, pool, &out, &len), 0);
    CU_ASSERT_EQUAL(len, 2);
}

int main(void)
{
    apr_initialize();
    apr_pool_create(&pool, NULL);
    CU_initialize_registry();
    CU_pSuite s = CU_add_suite("utf7", NULL, NULL);
    CU_add_test(s, "ASCII and &", test_ascii_and_ampersand);
    CU_add_test(s, "RFC 3501 examples", test_rfc_examples);
    CU_add_test(s, "round trips", test_round_trip_many);
    CU_add_test(s, "invalid modified UTF-7", test_invalid_mutf7);
    CU_add_test(s, "invalid UTF-8", test_invalid_utf8);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned failed = CU_get_number_of_failures();
    CU_cleanup_registry();
    apr_pool_destroy(pool);
    apr_terminate();
    return failed ? 1 : 0;
}
