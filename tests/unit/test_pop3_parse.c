/* The POP3 command parser (modules/pop3/pop3_parse.c) on its own: lines, keywords, arguments, numbers. */
#include <stdint.h>
#include <string.h>

#include <CUnit/Basic.h>
#include <CUnit/CUnit.h>

#include "pop3_parse.h"

static int slice_is(pop3_slice s, const char *text)
{
    return s.len == strlen(text) && memcmp(s.p, text, s.len) == 0;
}

static void test_keywords(void)
{
    pop3_command c;
    static const struct {
        const char *line;
        pop3_cmd cmd;
    } cases[] = {
        {"USER a", POP3_CMD_USER}, {"pass x", POP3_CMD_PASS}, {"ApOp a b", POP3_CMD_APOP},
        {"AUTH", POP3_CMD_AUTH},   {"stls", POP3_CMD_STLS},   {"CAPA", POP3_CMD_CAPA},
        {"QUIT", POP3_CMD_QUIT},   {"noop", POP3_CMD_NOOP},   {"STAT", POP3_CMD_STAT},
        {"LIST", POP3_CMD_LIST},   {"RETR 1", POP3_CMD_RETR}, {"DELE 1", POP3_CMD_DELE},
        {"RSET", POP3_CMD_RSET},   {"TOP 1 2", POP3_CMD_TOP}, {"UIDL", POP3_CMD_UIDL},
        {"UTF8", POP3_CMD_UTF8},   {"utf8", POP3_CMD_UTF8},   {"LANG", POP3_CMD_LANG},
        {"lang en", POP3_CMD_LANG}, {"UTF-8", POP3_CMD_UNKNOWN}, {"LANGUAGE", POP3_CMD_UNKNOWN},
        {"TOPS", POP3_CMD_UNKNOWN}, {"US", POP3_CMD_UNKNOWN}, {"USERX a", POP3_CMD_UNKNOWN},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        CU_ASSERT_EQUAL(pop3_parse_command(cases[i].line, strlen(cases[i].line), &c), POP3_PARSE_OK);
        CU_ASSERT_EQUAL(c.cmd, cases[i].cmd);
    }
    CU_ASSERT_EQUAL(pop3_parse_command("", 0, &c), POP3_PARSE_EMPTY);
    CU_ASSERT_EQUAL(pop3_parse_command("   ", 3, &c), POP3_PARSE_EMPTY);
    CU_ASSERT_EQUAL(pop3_parse_command("RE\0TR", 5, &c), POP3_PARSE_BADCHAR);
    CU_ASSERT_EQUAL(pop3_parse_command("RETR\t1", 6, &c), POP3_PARSE_BADCHAR);
    CU_ASSERT_EQUAL(pop3_parse_command("RETR\r1", 6, &c), POP3_PARSE_BADCHAR);
    CU_ASSERT_EQUAL(pop3_parse_command("R\xc3\xa9TR", 6, &c), POP3_PARSE_BADCHAR);
    /* 8-bit bytes are fine in arguments (UTF-8 passwords) */
    CU_ASSERT_EQUAL(pop3_parse_command("PASS p\xc3\xa4ss", 10, &c), POP3_PARSE_OK);
}

static void test_arguments(void)
{
    pop3_command c;
    const char *l = "TOP 12 3";
    CU_ASSERT_EQUAL(pop3_parse_command(l, strlen(l), &c), POP3_PARSE_OK);
    CU_ASSERT_EQUAL(c.nargs, 2);
    CU_ASSERT_TRUE(slice_is(c.keyword, "TOP"));
    CU_ASSERT_TRUE(slice_is(c.args[0], "12"));
    CU_ASSERT_TRUE(slice_is(c.args[1], "3"));
    CU_ASSERT_FALSE(c.too_many_args);
    CU_ASSERT_PTR_EQUAL(c.args[0].p, l + 4); /* slices of the input, not copies */

    l = "  list   1  ";
    CU_ASSERT_EQUAL(pop3_parse_command(l, strlen(l), &c), POP3_PARSE_OK);
    CU_ASSERT_EQUAL(c.cmd, POP3_CMD_LIST);
    CU_ASSERT_EQUAL(c.nargs, 1);
    CU_ASSERT_TRUE(slice_is(c.args[0], "1"));

    l = "PASS  two words ";
    CU_ASSERT_EQUAL(pop3_parse_command(l, strlen(l), &c), POP3_PARSE_OK);
    CU_ASSERT_TRUE(slice_is(c.rest, " two words ")); /* PASS takes everything after the one separator */
    CU_ASSERT_EQUAL(c.nargs, 2);

    l = "RETR 1 2 3 4";
    CU_ASSERT_EQUAL(pop3_parse_command(l, strlen(l), &c), POP3_PARSE_OK);
    CU_ASSERT_EQUAL(c.nargs, 3);
    CU_ASSERT_TRUE(c.too_many_args);

    l = "STAT";
    CU_ASSERT_EQUAL(pop3_parse_command(l, strlen(l), &c), POP3_PARSE_OK);
    CU_ASSERT_EQUAL(c.nargs, 0);
    CU_ASSERT_EQUAL(c.rest.len, 0);
}

static void test_numbers(void)
{
    uint64_t v = 7;
    CU_ASSERT_EQUAL(pop3_parse_number("1", 1, &v), 0);
    CU_ASSERT_EQUAL(v, 1);
    CU_ASSERT_EQUAL(pop3_parse_number("0", 1, &v), 0);
    CU_ASSERT_EQUAL(v, 0);
    CU_ASSERT_EQUAL(pop3_parse_number("007", 3, &v), 0);
    CU_ASSERT_EQUAL(v, 7);
    CU_ASSERT_EQUAL(pop3_parse_number("18446744073709551615", 20, &v), 0);
    CU_ASSERT_EQUAL(v, UINT64_MAX);
    CU_ASSERT_EQUAL(pop3_parse_number("18446744073709551616", 20, &v), -2);
    CU_ASSERT_EQUAL(pop3_parse_number("99999999999999999999", 20, &v), -2);
    CU_ASSERT_EQUAL(pop3_parse_number("123456789012345678901234567890", 30, &v), -2);
    CU_ASSERT_EQUAL(pop3_parse_number("", 0, &v), -1);
    CU_ASSERT_EQUAL(pop3_parse_number("-1", 2, &v), -1);
    CU_ASSERT_EQUAL(pop3_parse_number("+1", 2, &v), -1);
    CU_ASSERT_EQUAL(pop3_parse_number("1x", 2, &v), -1);
    CU_ASSERT_EQUAL(pop3_parse_number("1 ", 2, &v), -1);
    CU_ASSERT_EQUAL(pop3_parse_number("99999999999999999999x", 21, &v), -1);
    CU_ASSERT_EQUAL(pop3_parse_number("12", 1, &v), 0); /* only len bytes are read */
    CU_ASSERT_EQUAL(v, 1);
}

static void test_lines(void)
{
    pop3_reader r = {0};
    size_t ll = 99, used = 99;
    CU_ASSERT_EQUAL(pop3_next_line(&r, "STAT\r\nNOOP", 10, 16, &ll, &used), POP3_LINE_OK);
    CU_ASSERT_EQUAL(ll, 4);
    CU_ASSERT_EQUAL(used, 6);
    CU_ASSERT_EQUAL(pop3_next_line(&r, "NOOP", 4, 16, &ll, &used), POP3_LINE_MORE);
    CU_ASSERT_EQUAL(used, 0);
    CU_ASSERT_EQUAL(pop3_next_line(&r, "NOOP\n", 5, 16, &ll, &used), POP3_LINE_OK);
    CU_ASSERT_EQUAL(ll, 4);
    CU_ASSERT_EQUAL(used, 5);
    CU_ASSERT_EQUAL(pop3_next_line(&r, "\r\n", 2, 16, &ll, &used), POP3_LINE_OK);
    CU_ASSERT_EQUAL(ll, 0);

    /* at the limit (16) and one over */
    CU_ASSERT_EQUAL(pop3_next_line(&r, "0123456789abcdef\r\n", 18, 16, &ll, &used), POP3_LINE_OK);
    CU_ASSERT_EQUAL(ll, 16);
    CU_ASSERT_EQUAL(pop3_next_line(&r, "0123456789abcdefg\r\nX", 20, 16, &ll, &used), POP3_LINE_TOO_LONG);
    CU_ASSERT_EQUAL(used, 19);
    /* a CR may wait for its LF at the limit */
    CU_ASSERT_EQUAL(pop3_next_line(&r, "0123456789abcdef\r", 17, 16, &ll, &used), POP3_LINE_MORE);
    CU_ASSERT_EQUAL(used, 0);

    /* an over-long line without an end is dropped as it comes */
    CU_ASSERT_EQUAL(pop3_next_line(&r, "0123456789abcdefgh", 18, 16, &ll, &used), POP3_LINE_MORE);
    CU_ASSERT_EQUAL(used, 18);
    CU_ASSERT_EQUAL(r.skipping, 1);
    CU_ASSERT_EQUAL(pop3_next_line(&r, "more", 4, 16, &ll, &used), POP3_LINE_MORE);
    CU_ASSERT_EQUAL(used, 4);
    CU_ASSERT_EQUAL(pop3_next_line(&r, "end\r\nSTAT\r\n", 11, 16, &ll, &used), POP3_LINE_TOO_LONG);
    CU_ASSERT_EQUAL(used, 5);
    CU_ASSERT_EQUAL(r.skipping, 0);
    CU_ASSERT_EQUAL(pop3_next_line(&r, "STAT\r\n", 6, 16, &ll, &used), POP3_LINE_OK);
}

int main(void)
{
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    CU_pSuite su = CU_add_suite("pop3_parse", NULL, NULL);
    CU_add_test(su, "keywords", test_keywords);
    CU_add_test(su, "arguments", test_arguments);
    CU_add_test(su, "numbers", test_numbers);
    CU_add_test(su, "lines", test_lines);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned failed = CU_get_number_of_failures();
    CU_cleanup_registry();
    return failed ? 1 : 0;
}
