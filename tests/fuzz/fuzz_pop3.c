/*
 * libFuzzer target for the POP3 handler: the command parser on its own, then whole sessions of mod_pop3
 * driven by the fake host (tests/unit/fake_host.c) with the in-memory store and auth providers
 * (tests/unit/test_pop3_fake.c), in every listener TLS mode and state.
 *
 * Input: byte 0 = options (bits 0-1 TLS mode, bit 2 log in first, bit 3 fail the store reads, bits 4-7
 * the stream's read size), byte 1 = feed size (1-64 bytes per on_input), the rest = client bytes. After
 * every feed the harness plays the host's part: on_writable for pending output, timers, the TLS handshake
 * after STLS. A handler contract violation seen by the fake host aborts (a crash for the fuzzer).
 *
 * Build (clang), with tests/fuzz/pop3.cmake holding
 *   mailproto_fuzzer(fuzz_pop3 SOURCES fuzz_pop3.c ${CMAKE_SOURCE_DIR}/tests/unit/test_pop3_fake.c
 *                    ${MAILPROTO_POP3_SOURCES})
 *   target_include_directories(fuzz_pop3 PRIVATE ${CMAKE_SOURCE_DIR}/modules/pop3)
 * then
 *   cmake -S . -B build-fuzz -DCMAKE_C_COMPILER=clang -DMAILPROTO_FUZZ=ON -DCMAKE_BUILD_TYPE=Debug
 *   cmake --build build-fuzz --target fuzz_pop3
 *   build-fuzz/tests/fuzz/fuzz_pop3 -max_total_time=60 -max_len=4096 corpus/
 * A useful seed: "\x04\x07STAT\r\nLIST\r\nUIDL\r\nRETR 1\r\nTOP 2 1\r\nDELE 1\r\nRSET\r\nQUIT\r\n" (logged in,
 * 7-byte feeds); a dictionary of the command words helps it find the AUTH and APOP paths.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <apr_general.h>

#include "fake_host.h"
#include "pop3_parse.h"
#include "test_pop3_fake.h"

extern const mp_module mp_module_descriptor;

static const char *const M1 = "Subject: one\r\n\r\nHello\r\n.dot\r\n";
static const char *const M2 = "Subject: two\r\nX: y\r\n\r\n.\r\n..\r\nno end";

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    apr_initialize(); /* keeps APR up between sessions (fake_new/fake_end nest inside it) */
    return 0;
}

static void fuzz_parser(const uint8_t *data, size_t size)
{
    pop3_reader r = {0};
    size_t used = 0;
    while (used < size) {
        size_t line_len = 0, consumed = 0;
        pop3_line_status st = pop3_next_line(&r, (const char *)data + used, size - used, 64, &line_len, &consumed);
        if (consumed > size - used)
            abort();
        if (st == POP3_LINE_OK) {
            pop3_command c;
            if (line_len > consumed)
                abort();
            if (pop3_parse_command((const char *)data + used, line_len, &c) == POP3_PARSE_OK) {
                for (unsigned i = 0; i < c.nargs; i++) {
                    uint64_t v;
                    if (c.args[i].p < (const char *)data + used ||
                        c.args[i].p + c.args[i].len > (const char *)data + used + line_len)
                        abort();
                    (void)pop3_parse_number(c.args[i].p, c.args[i].len, &v);
                }
            }
        }
        used += consumed;
        if (st == POP3_LINE_MORE)
            break;
    }
}

static void settle_host(fake_session *fs)
{
    for (int guard = 0; guard < 10000; guard++) {
        if (fake_closed(fs))
            return;
        if (fake_want_writable(fs)) {
            fake_writable(fs);
            continue;
        }
        if (fake_tls_pending(fs)) {
            fake_tls_complete(fs);
            continue;
        }
        if (fake_timers_active(fs)) {
            fake_fire_timers(fs);
            continue;
        }
        return;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_parser(data, size);
    if (size < 2)
        return 0;
    uint8_t opt = data[0];
    size_t step = (size_t)(data[1] % 64) + 1;
    data += 2;
    size -= 2;

    pop3fake_reset();
    pop3fake_cfg.max_read = (size_t)(opt >> 4) + 1;
    if (opt & 8)
        pop3fake_cfg.read_fail_after = 7;
    pop3fake_add("alice@example.test", NULL, M1, strlen(M1));
    pop3fake_add("alice@example.test", "a key with spaces", M2, strlen(M2));

    static const mp_tls_mode modes[] = {MP_TLS_OFF, MP_TLS_STARTTLS, MP_TLS_REQUIRED, MP_TLS_IMPLICIT};
    fake_session *fs = fake_new_module(&mp_module_descriptor, modes[opt & 3]);
    pop3fake_setup(fs);
    fake_set_max_errors(fs, 50);
    fake_connect(fs);
    if (opt & 4) {
        if ((opt & 3) == MP_TLS_STARTTLS || (opt & 3) == MP_TLS_REQUIRED) {
            fake_feed_str(fs, "STLS\r\n");
            settle_host(fs);
        }
        fake_feed_str(fs, "USER alice\r\nPASS secret\r\n");
        settle_host(fs);
    }
    for (size_t off = 0; off < size && !fake_closed(fs); off += step) {
        size_t n = size - off < step ? size - off : step;
        fake_feed(fs, data + off, n);
        settle_host(fs);
        fake_clear(fs);
        fake_clear_log(fs);
    }
    if (fake_violations(fs))
        abort();
    fake_end(fs);
    if (pop3fake_locked("alice@example.test"))
        abort(); /* the lock must be released however the session ended */
    return 0;
}
