/*
 * The POP3 command parser: sans-I/O, no allocation. It walks bytes the host hands over, finds lines
 * (RFC 1939 section 3: CRLF-terminated; a bare LF is accepted as well), and splits a command line into
 * its keyword and arguments, which stay slices of the input buffer. Policy (what a state allows, what a
 * too long line costs) lives in the session, not here.
 */
#ifndef POP3_PARSE_H
#define POP3_PARSE_H

#include <stddef.h>
#include <stdint.h>

/* RFC 2449 section 4: a command line is at most 255 octets including CRLF. We accept twice that and a
   little (some clients send long APOP or USER lines); longer lines get "-ERR line too long". */
#define POP3_MAX_COMMAND_LINE 512
/* A line of a SASL exchange (RFC 5034 section 4: a client response is not bound by the 255 octets). */
#define POP3_MAX_SASL_LINE 8192
#define POP3_MAX_ARGS 3

typedef enum pop3_cmd {
    POP3_CMD_UNKNOWN = 0,
    POP3_CMD_USER, POP3_CMD_PASS, POP3_CMD_APOP, POP3_CMD_AUTH, POP3_CMD_STLS, POP3_CMD_CAPA,
    POP3_CMD_QUIT, POP3_CMD_NOOP, POP3_CMD_STAT, POP3_CMD_LIST, POP3_CMD_RETR, POP3_CMD_DELE,
    POP3_CMD_RSET, POP3_CMD_TOP, POP3_CMD_UIDL, POP3_CMD_UTF8, POP3_CMD_LANG
} pop3_cmd;

typedef struct pop3_slice {
    const char *p;
    size_t len;
} pop3_slice;

typedef struct pop3_command {
    pop3_cmd cmd;
    pop3_slice keyword;              /* as sent */
    unsigned nargs;                  /* arguments split at spaces, at most POP3_MAX_ARGS */
    int too_many_args;               /* more than POP3_MAX_ARGS were sent */
    pop3_slice args[POP3_MAX_ARGS];
    pop3_slice rest;                 /* everything after the keyword and its space(s): PASS's argument */
} pop3_command;

typedef enum pop3_parse_status {
    POP3_PARSE_OK = 0,
    POP3_PARSE_EMPTY = 1,    /* an empty line (or only spaces) */
    POP3_PARSE_BADCHAR = 2   /* a control character (NUL, TAB, ...) or a byte >= 0x7f in the keyword */
} pop3_parse_status;

/* Splits one line (without its line end) into keyword and arguments. Keywords match case-insensitively
   (RFC 1939 section 3); an unknown keyword gives POP3_CMD_UNKNOWN with the keyword filled in. */
pop3_parse_status pop3_parse_command(const char *line, size_t len, pop3_command *cmd);

/* The line reader: keeps one bit of state so that a line longer than the limit is skipped up to its end
   however it arrives (the parser resynchronises at the next line end). */
typedef struct pop3_reader {
    unsigned char skipping; /* inside an over-long line, discarding up to its end */
} pop3_reader;

typedef enum pop3_line_status {
    POP3_LINE_MORE = 0,     /* no complete line; *consumed bytes (of an over-long line) may be dropped */
    POP3_LINE_OK = 1,       /* a line of *line_len bytes; *consumed includes the line end */
    POP3_LINE_TOO_LONG = 2  /* an over-long line ended; *consumed covers its rest through the line end */
} pop3_line_status;

/* The next line of data[0..len) no longer than `max` bytes without its line end. */
pop3_line_status pop3_next_line(pop3_reader *r, const char *data, size_t len, size_t max, size_t *line_len,
                                size_t *consumed);

/*
 * A message number or line count: ASCII digits only (no sign, no space, no "0x"). Returns 0 and sets
 * *v, or -1 for anything else; an all-digit number that does not fit in 64 bits gives -2 (for a message
 * number that is "no such message" rather than a syntax error, RFC 1939 section 5).
 */
int pop3_parse_number(const char *p, size_t len, uint64_t *v);

#endif
