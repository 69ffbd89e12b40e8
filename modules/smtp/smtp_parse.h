/*
 * The SMTP command parser: sans-I/O, no allocation. A complete command line (without its CRLF) becomes a
 * command and its arguments as slices of that line; MAIL and RCPT arguments become a path and ESMTP
 * parameters, checked strictly against the grammar of RFC 5321 section 4.1.2 (with the UTF-8 additions of
 * RFC 6531 section 3.3 when the session negotiated SMTPUTF8). The line framing (only CRLF ends a line,
 * RFC 5321 section 2.3.8) is here too, so the session can hand over raw input.
 *
 * Every slice points into the caller's buffer: valid as long as that buffer is.
 */
#ifndef SMTP_PARSE_H
#define SMTP_PARSE_H

#include <stddef.h>
#include <stdint.h>

typedef struct smtp_slice {
    const char *p;
    size_t len;
} smtp_slice;

/* ---- line framing ---- */

typedef enum smtp_line_status {
    SMTP_LINE_MORE = 0, /* no CRLF yet */
    SMTP_LINE_OK = 1    /* a line: *line_len without the CRLF, *consumed with it */
} smtp_line_status;

/*
 * Finds the first CRLF in data[0..len). *bare is set to 1 when a bare LF, or a CR not followed by LF, comes
 * before it (or, with SMTP_LINE_MORE, anywhere in the bytes seen): such a line is refused whole, never split
 * at the bare byte (RFC 5321 section 2.3.8; the SMTP smuggling class).
 */
smtp_line_status smtp_line_find(const char *data, size_t len, size_t *line_len, size_t *consumed, int *bare);

/* ---- commands ---- */

typedef enum smtp_cmd_id {
    SMTP_CMD_UNKNOWN = 0,
    SMTP_CMD_HELO,
    SMTP_CMD_EHLO,
    SMTP_CMD_LHLO,     /* RFC 2033 section 4.1 */
    SMTP_CMD_MAIL,
    SMTP_CMD_RCPT,
    SMTP_CMD_DATA,
    SMTP_CMD_BDAT,     /* RFC 3030 section 2 */
    SMTP_CMD_RSET,
    SMTP_CMD_NOOP,
    SMTP_CMD_QUIT,
    SMTP_CMD_VRFY,
    SMTP_CMD_EXPN,
    SMTP_CMD_HELP,
    SMTP_CMD_STARTTLS, /* RFC 3207 */
    SMTP_CMD_AUTH      /* RFC 4954 */
} smtp_cmd_id;

typedef struct smtp_command {
    smtp_cmd_id id;
    smtp_slice verb;   /* as sent */
    smtp_slice arg;    /* after the verb and one SP; for MAIL/RCPT after "FROM:"/"TO:"; len 0 if none */
    int has_arg;       /* something (even spaces) followed the verb */
} smtp_command;

/*
 * Splits a command line. Returns 0, or -1 when the line is not "verb [SP args]" (empty, verb not
 * alphabetic, or MAIL/RCPT without "FROM:"/"TO:"): then cmd->id is still set when the verb was known.
 */
int smtp_parse_command(const char *line, size_t len, smtp_command *cmd);

/* ---- MAIL / RCPT (RFC 5321 section 4.1.2) ---- */

#define SMTP_MAX_PARAMS 16

typedef struct smtp_param {
    smtp_slice key;
    smtp_slice value;  /* len 0 and has_value 0 for a keyword alone */
    int has_value;
} smtp_param;

typedef struct smtp_path {
    smtp_slice mailbox; /* "local@domain" without the brackets or the source route; empty for <> */
    smtp_slice local;   /* the local part as sent (a quoted string keeps its quotes) */
    smtp_slice domain;  /* a domain or an address literal, as sent */
    int null_path;      /* "<>" */
    int postmaster;     /* RCPT TO:<Postmaster> without a domain (RFC 5321 section 4.5.1) */
    int utf8;           /* bytes over 0x7f in the mailbox (RFC 6531 section 3.3) */
    int literal;        /* the domain is an address literal */
} smtp_path;

typedef struct smtp_envelope_arg {
    smtp_path path;
    smtp_param params[SMTP_MAX_PARAMS];
    size_t nparams;
} smtp_envelope_arg;

typedef enum smtp_parse_result {
    SMTP_PARSE_OK = 0,
    SMTP_PARSE_BAD_PATH = 1,    /* 501 5.1.7 (sender) / 5.1.3 (recipient): the path breaks the grammar */
    SMTP_PARSE_PATH_LONG = 2,   /* 501 5.5.4 ... too long: RFC 5321 section 4.5.3.1.1-3 */
    SMTP_PARSE_BAD_PARAM = 3,   /* 501 5.5.4: parameter syntax */
    SMTP_PARSE_TOO_MANY = 4,    /* 501 5.5.4: more than SMTP_MAX_PARAMS parameters */
    SMTP_PARSE_BAD_UTF8 = 5     /* 553 5.6.7 / 501 5.6.7: invalid UTF-8 */
} smtp_parse_result;

/*
 * Parses the argument of MAIL FROM: / RCPT TO: (cmd->arg): optional spaces (tolerated, as every MTA does),
 * a path, then SP-separated esmtp-params. `rcpt` allows "<Postmaster>" and refuses "<>". `utf8_ok` allows
 * UTF-8 in the path and values (the caller still checks that SMTPUTF8 was given, RFC 6531 section 3.4).
 */
smtp_parse_result smtp_parse_envelope(const char *arg, size_t len, int rcpt, smtp_envelope_arg *out);

/* The parameter `key` (case-insensitive), or NULL. Sets *dup when it occurs more than once. */
const smtp_param *smtp_find_param(const smtp_envelope_arg *a, const char *key, int *dup);

/* 1 when s[0..len) is valid UTF-8 (no overlong forms, no surrogates, at most U+10FFFF). */
int smtp_utf8_valid(const unsigned char *s, size_t len);

/* 1 when s[0..len) is xtext (RFC 3461 section 4): "!".."~" except "+" and "=", and "+" HEXCHAR HEXCHAR
   with upper-case hex digits. `utf8`: also UTF-8 (RFC 6533 utf-8-addr-xtext, loosely). */
int smtp_xtext_valid(const char *s, size_t len, int utf8);

/* Decodes xtext s[0..len) that passed smtp_xtext_valid() into out (len + 1 bytes at least): every
   "+" HEXCHAR HEXCHAR becomes its octet (RFC 3461 section 4). NUL-terminates; returns the length. */
size_t smtp_xtext_decode(const char *s, size_t len, char *out);

/* 1 when decoded DSN text (an ENVID, an ORCPT address) can go into a DSN field: "printable (graphic and
   white space) characters from the US-ASCII repertoire" (RFC 3461 sections 4.2 and 4.4), here: no control
   character but HT; `utf8` also allows valid UTF-8 (RFC 6533). */
int smtp_dsn_text_ok(const char *s, size_t len, int utf8);

/* 1 when s[0..len) is a valid EHLO/HELO argument: a domain or an address literal (RFC 5321 4.1.1.1). */
int smtp_helo_valid(const char *s, size_t len);

/* Parses 1*20DIGIT (RFC 1870 section 4); saturates at UINT64_MAX. Returns 0 or -1. */
int smtp_parse_size(const char *s, size_t len, uint64_t *size_r);

/* 1 when two slices are equal ignoring ASCII case. */
int smtp_slice_ieq(smtp_slice a, const char *b);

#endif
