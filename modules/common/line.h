/* Line splitting for line-based protocols (modules/common, linked into each handler). */
#ifndef MPC_LINE_H
#define MPC_LINE_H

#include <stddef.h>

typedef enum mpc_line_status {
    MPC_LINE_MORE = 0,   /* no line end yet: wait for more bytes */
    MPC_LINE_OK = 1,     /* a line: *line_len excludes the line end, *consumed includes it */
    MPC_LINE_BARE = 2    /* a bare LF or a CR not followed by LF: *consumed covers through that byte */
} mpc_line_status;

/*
 * Finds the first line in data[0..len). With `strict`, only CRLF ends a line and a bare CR or LF is
 * reported (RFC 5321 section 2.3.8: the SMTP smuggling class); otherwise LF or CRLF ends a line.
 */
mpc_line_status mpc_line_next(const char *data, size_t len, int strict, size_t *line_len, size_t *consumed);

#endif
