/* The DATA and BDAT content machines (see smtp_data.h). */
#include "smtp_data.h"

/*
 * States. "Line start" means just after a CRLF (or at the start of the data). A bare CR/LF never brings
 * the machine back to a line start: only a real CRLF does.
 */
enum {
    D_BOL = 0,     /* at a line start */
    D_DOT = 1,     /* a line start, then '.' (held back: it may be the end, or a stuffed dot) */
    D_DOT_CR = 2,  /* line start, '.', CR: LF now ends the data */
    D_MID = 3,     /* inside a line */
    D_CR = 4       /* inside a line after CR (held back until we know whether LF follows) */
};

void smtp_data_init(smtp_data_machine *m)
{
    m->state = D_BOL;
    m->bare = 0;
}

static const char CRLF[2] = {'\r', '\n'};
static const char CR[1] = {'\r'};

size_t smtp_data_feed(smtp_data_machine *m, const char *in, size_t len, smtp_data_out_fn out, void *arg,
                      int *done)
{
    size_t i = 0;
    *done = 0;
    while (i < len) {
        char c = in[i];
        switch (m->state) {
        case D_BOL:
        case D_MID:
            if (m->state == D_BOL && c == '.') {
                m->state = D_DOT;
                i++;
                break;
            }
            if (c != '\r' && c != '\n') {
                /* the fast path: a run of ordinary bytes goes out in one piece */
                size_t j = i + 1;
                while (j < len && in[j] != '\r' && in[j] != '\n')
                    j++;
                out(arg, in + i, j - i);
                i = j;
                m->state = D_MID;
                break;
            }
            i++;
            if (c == '\r') {
                m->state = D_CR;
            } else {
                m->bare = 1; /* bare LF (RFC 5321 section 2.3.8) */
                out(arg, in + i - 1, 1);
                m->state = D_MID;
            }
            break;
        case D_DOT:
            /* RFC 5321 section 4.5.2: the first dot of a line is deleted; ".CRLF" ends the data */
            i++;
            if (c == '\r') {
                m->state = D_DOT_CR;
            } else if (c == '\n') {
                m->bare = 1; /* "\r\n.\n": not an end */
                out(arg, in + i - 1, 1);
                m->state = D_MID;
            } else {
                out(arg, in + i - 1, 1);
                m->state = D_MID;
            }
            break;
        case D_DOT_CR:
            i++;
            if (c == '\n') {
                m->state = D_BOL;
                *done = 1;
                return i;
            }
            m->bare = 1; /* "\r\n.\r" followed by something else: a bare CR */
            out(arg, CR, 1);
            if (c == '\r') {
                m->state = D_CR;
            } else {
                out(arg, in + i - 1, 1);
                m->state = D_MID;
            }
            break;
        case D_CR:
            i++;
            if (c == '\n') {
                out(arg, CRLF, 2);
                m->state = D_BOL;
            } else {
                m->bare = 1; /* the CR before was bare */
                out(arg, CR, 1);
                if (c == '\r') {
                    m->state = D_CR;
                } else {
                    out(arg, in + i - 1, 1);
                    m->state = D_MID;
                }
            }
            break;
        }
    }
    return i;
}

void smtp_bdat_check(smtp_data_machine *m, const char *in, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        char c = in[i];
        if (m->state == D_CR) {
            if (c != '\n')
                m->bare = 1;
            m->state = c == '\r' ? D_CR : D_MID;
            continue;
        }
        if (c == '\r')
            m->state = D_CR;
        else if (c == '\n')
            m->bare = 1;
    }
}

int smtp_bdat_finish(smtp_data_machine *m)
{
    if (m->state == D_CR)
        m->bare = 1;
    m->state = D_MID;
    return m->bare;
}
