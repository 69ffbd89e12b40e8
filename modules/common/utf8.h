/*
 * Strict UTF-8 (RFC 3629), the one decoder every handler uses: SMTPUTF8 addresses (RFC 6531), POP3's UTF8
 * mode (RFC 6856), SASL fields (RFC 4616) and modified UTF-7 mailbox names.
 */
#ifndef MPC_UTF8_H
#define MPC_UTF8_H

#include <stddef.h>
#include <stdint.h>

/* The code point at in[*i] (advancing *i past it), or -1 when the bytes there are not UTF-8: a stray or
   missing continuation byte, a truncated sequence, an overlong form, a surrogate (U+D800-U+DFFF) or a code
   point above U+10FFFF (RFC 3629 section 3). A NUL is code point 0. */
int32_t mpc_utf8_next(const unsigned char *in, size_t len, size_t *i);

/* 1 when s[0..len) is all UTF-8 by mpc_utf8_next (NUL included: callers that forbid it check it). */
int mpc_utf8_valid(const void *s, size_t len);

#endif
