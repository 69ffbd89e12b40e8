/* The POP3 command parser (see pop3_parse.h). */
#include "pop3_parse.h"

#include <string.h>
#include <strings.h>

static const struct {
    const char *name;
    pop3_cmd cmd;
} keywords[] = {
    /* RFC 1939 sections 4-7 */
    {"USER", POP3_CMD_USER}, {"PASS", POP3_CMD_PASS}, {"APOP", POP3_CMD_APOP}, {"QUIT", POP3_CMD_QUIT},
    {"NOOP", POP3_CMD_NOOP}, {"STAT", POP3_CMD_STAT}, {"LIST", POP3_CMD_LIST}, {"RETR", POP3_CMD_RETR},
    {"DELE", POP3_CMD_DELE}, {"RSET", POP3_CMD_RSET}, {"TOP", POP3_CMD_TOP},   {"UIDL", POP3_CMD_UIDL},
    /* RFC 2449 section 5, RFC 2595 section 4, RFC 5034 section 4 */
    {"CAPA", POP3_CMD_CAPA}, {"STLS", POP3_CMD_STLS}, {"AUTH", POP3_CMD_AUTH},
    /* RFC 6856 sections 2.1 and 3 */
    {"UTF8", POP3_CMD_UTF8}, {"LANG", POP3_CMD_LANG},
};

pop3_parse_status pop3_parse_command(const char *line, size_t len, pop3_command *cmd)
{
    memset(cmd, 0, sizeof *cmd);
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)line[i];
        if (c < 0x20 || c == 0x7f)
            return POP3_PARSE_BADCHAR;
    }
    size_t i = 0;
    while (i < len && line[i] == ' ')
        i++;
    if (i == len)
        return POP3_PARSE_EMPTY;
    size_t k = i;
    while (i < len && line[i] != ' ')
        i++;
    cmd->keyword = (pop3_slice){line + k, i - k};
    for (size_t j = k; j < i; j++)
        if ((unsigned char)line[j] >= 0x80)
            return POP3_PARSE_BADCHAR;
    for (size_t n = 0; n < sizeof keywords / sizeof keywords[0]; n++)
        if (strlen(keywords[n].name) == i - k && strncasecmp(keywords[n].name, line + k, i - k) == 0) {
            cmd->cmd = keywords[n].cmd;
            break;
        }

    /* The rest of the line after the separating space (PASS takes it whole, RFC 1939 section 7). */
    if (i < len) {
        cmd->rest = (pop3_slice){line + i + 1, len - i - 1};
    } else {
        cmd->rest = (pop3_slice){line + len, 0};
    }
    /* Arguments: RFC 1939 section 3 separates them by a single space; runs of spaces and trailing spaces
       are tolerated here (clients do send "LIST " now and then). */
    while (i < len) {
        while (i < len && line[i] == ' ')
            i++;
        if (i == len)
            break;
        size_t a = i;
        while (i < len && line[i] != ' ')
            i++;
        if (cmd->nargs < POP3_MAX_ARGS)
            cmd->args[cmd->nargs++] = (pop3_slice){line + a, i - a};
        else
            cmd->too_many_args = 1;
    }
    return POP3_PARSE_OK;
}

pop3_line_status pop3_next_line(pop3_reader *r, const char *data, size_t len, size_t max, size_t *line_len,
                                size_t *consumed)
{
    const char *nl = memchr(data, '\n', len);
    if (r->skipping) {
        if (!nl) {
            *consumed = len; /* keep dropping the over-long line */
            return POP3_LINE_MORE;
        }
        r->skipping = 0;
        *consumed = (size_t)(nl - data) + 1;
        *line_len = 0;
        return POP3_LINE_TOO_LONG;
    }
    if (!nl) {
        /* No end yet: a partial line that cannot fit any more is dropped now, so the host's buffer never
           fills; "+1" leaves room for a CR whose LF has not arrived. */
        if (len > max + 1) {
            r->skipping = 1;
            *consumed = len;
        } else {
            *consumed = 0;
        }
        return POP3_LINE_MORE;
    }
    size_t n = (size_t)(nl - data);
    *consumed = n + 1;
    if (n > 0 && data[n - 1] == '\r')
        n--;
    if (n > max) {
        *line_len = 0;
        return POP3_LINE_TOO_LONG;
    }
    *line_len = n;
    return POP3_LINE_OK;
}

int pop3_parse_number(const char *p, size_t len, uint64_t *v)
{
    if (len == 0)
        return -1;
    uint64_t n = 0;
    int overflow = 0;
    for (size_t i = 0; i < len; i++) {
        if (p[i] < '0' || p[i] > '9')
            return -1;
        unsigned d = (unsigned)(p[i] - '0');
        if (n > (UINT64_MAX - d) / 10)
            overflow = 1;
        else
            n = n * 10 + d;
    }
    if (overflow)
        return -2;
    *v = n;
    return 0;
}
