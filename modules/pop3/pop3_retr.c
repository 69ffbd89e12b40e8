/*
 * Multi-line responses produced as the client reads them (RFC 1939 section 3): RETR and TOP stream the
 * message, LIST and UIDL without argument walk the maildrop. A producer writes until POP3_OUT_HIGH bytes
 * are queued, then asks the host for on_writable() and goes on from there, so a 50 MB message or a
 * 100,000-message listing never sits in memory: one POP3_CHUNK read buffer and the bounded output queue.
 * While a response is being produced the host delivers no input, so pipelined commands wait their turn.
 *
 * Message text arrives from the store with CRLF line ends (store.h); here it is dot-stuffed (a line that
 * starts with "." gets one more), given a final CRLF if the message lacks one, and terminated by ".".
 * The dot-stuffing state (at a line start or not) carries over from one read to the next, so a line
 * whose "." is the first byte of a chunk is stuffed too.
 *
 * Reading is blocking file I/O done on the event-loop thread: message_open() opens one file and each
 * stream_read() reads one chunk, normally from the page cache, comparable to a socket write. Moving them
 * to a job per chunk would cost a thread hand-off per 64 KiB for the common case; the folder open, the
 * lock and the expunge, which may scan or fsync, do go through run_blocking().
 *
 * Non-ASCII header fields and clients not in UTF-8 mode (RFC 6856). Outside UTF-8 mode "character strings
 * outside the ASCII repertoire MUST NOT be sent to the client as is": a message that needs the mode gets a
 * surrogate or an -ERR [UTF8] (sections 2.1, 4 and 5). We send a surrogate: every 8-bit byte of the
 * header section becomes "?". It has the size LIST gave (section 2.1: they SHOULD match), and it reaches
 * every client. A refusal would strand such messages for the many clients that never send UTF8
 * (fetchmail, and raw 8-bit subjects are common in old and in unwanted mail): they would stay on the
 * server, refused at every poll. A client in UTF-8 mode gets every message exactly as stored.
 *
 * The check costs no read: RETR and TOP read the message's first chunk anyway, so for a session not in
 * UTF-8 mode that read happens before the status line, the header section found in it (memchr from line
 * to line up to the empty one) is tested for 8-bit bytes (8 bytes at a time), and the chunk is then sent
 * from the buffer instead of being read again: about 0.3 microseconds for a 2 KiB header. Sessions in
 * UTF-8 mode skip all of it. What is changed is the message's own header section, what RFC 6532
 * internationalizes and what a client shows; bodies (8bit content-transfer-encoding, RFC 6152) have always
 * been sent over POP3 as they are. A header section longer than the first chunk (64 KiB, only ever seen in
 * crafted mail) goes on being changed as it streams.
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include <apr_strings.h>
#include <openssl/evp.h>

#include "pop3.h"

typedef enum out_kind { OUT_MESSAGE = 1, OUT_LIST = 2, OUT_UIDL = 3 } out_kind;

struct pop3_output {
    out_kind kind;
    apr_pool_t *pool;          /* this response's; freed when it ends */
    uint32_t index;            /* OUT_MESSAGE: the message; listings: the next entry */
    mp_msg_stream *stream;
    char *buf;                 /* POP3_CHUNK bytes */
    int top;                   /* TOP: stop after lines_left body lines */
    int in_body;               /* TOP: the blank line after the headers has been sent */
    uint64_t lines_left;
    int at_line_start;         /* the next byte starts a line (dot-stuffing, line counting) */
    char line_first;           /* first byte of the current line */
    uint64_t line_len;         /* bytes of the current line so far, its LF included */
    uint64_t left;             /* bytes of the stream not read yet, by the message's size */
    uint64_t sent;
    size_t buffered;           /* bytes in buf read ahead (before the status line), not sent yet */
    int stream_end;            /* the read ahead reached the end of the stream */
    int hdr_open;              /* the header section goes on past the read ahead: sanitize it (see above) */
    int hdr_state;             /* hdr_open: 0 inside a line, 1 after LF, 2 after LF CR */
    uint64_t hdr_replaced;     /* 8-bit header bytes replaced by "?" */
};

const char *pop3_uid_of(const mp_msg *m, char buf[72])
{
    const char *k = m->key ? m->key : "";
    size_t n = strlen(k);
    int ok = n >= 1 && n <= 70;
    for (size_t i = 0; ok && i < n; i++)
        ok = k[i] >= 0x21 && k[i] <= 0x7e;
    if (ok)
        return k;
    /* RFC 1939 section 7: a unique-id is 1 to 70 characters 0x21-0x7E; a key that is not gets a digest of
       itself, as stable as the key */
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned mdlen = 0;
    if (EVP_Digest(k, n, md, &mdlen, EVP_md5(), NULL) != 1)
        mdlen = 0;
    for (unsigned i = 0; i < mdlen && i < 16; i++)
        snprintf(buf + 2 * i, 3, "%02x", md[i]);
    if (mdlen == 0)
        snprintf(buf, 72, "U%" PRIu32, m->uid);
    return buf;
}

static void out_end(mp_session *s)
{
    pop3_session *ps = s->state;
    pop3_output *o = ps->out;
    if (!o)
        return;
    if (o->stream)
        ps->prov.store_if->stream_close(o->stream);
    o->stream = NULL;
    ps->out = NULL;
    if (ps->wait == POP3_WAIT_OUTPUT)
        ps->wait = POP3_WAIT_NONE;
    apr_pool_destroy(o->pool);
}

void pop3_out_abort(mp_session *s)
{
    out_end(s);
}

static void put(mp_session *s, pop3_output *o, const char *p, size_t n)
{
    if (n) {
        s->host->write(s, p, n);
        o->sent += n;
    }
}

/* Writes data[0..n) of the message, dot-stuffed. For TOP, stops at the start of the body line after the
   last one asked for; returns 1 then, else 0. */
static int emit(mp_session *s, pop3_output *o, const char *data, size_t n)
{
    size_t start = 0, i = 0;
    while (i < n) {
        if (o->at_line_start) {
            if (o->top && o->in_body) {
                if (o->lines_left == 0) {
                    put(s, o, data + start, i - start);
                    return 1;
                }
                o->lines_left--;
            }
            if (data[i] == '.') {
                /* RFC 1939 section 3: byte-stuff a line that begins with the termination octet */
                put(s, o, data + start, i - start);
                put(s, o, ".", 1);
                start = i;
            }
            o->at_line_start = 0;
            o->line_first = data[i];
            o->line_len = 0;
        }
        const char *nl = memchr(data + i, '\n', n - i);
        size_t end = nl ? (size_t)(nl - data) + 1 : n;
        o->line_len += end - i;
        i = end;
        if (nl) {
            o->at_line_start = 1;
            /* TOP (RFC 1939 section 7): the headers, the blank line that ends them, then body lines */
            if (o->top && !o->in_body && (o->line_len == 1 || (o->line_len == 2 && o->line_first == '\r')))
                o->in_body = 1;
        }
    }
    put(s, o, data + start, n - start);
    return 0;
}

/* ---------------------------------------------------------------- non-ASCII header fields (RFC 6856) */

/* The length of the header section at the start of p[0..n): up to and including the line end of its last
   field, so that the empty line follows. -1 when p holds no empty line. The store gives CRLF streams
   (store.h); a bare LF ends a line too. The search starts at `from` (bytes before it were searched).
   memchr per line: about 200 ns for a 2 KiB header, three times faster than memmem for "\n\r\n". */
static long header_length(const char *p, size_t n, size_t from)
{
    if (n >= 1 && (p[0] == '\n' || (p[0] == '\r' && n >= 2 && p[1] == '\n')))
        return 0; /* an empty header section */
    const char *end = p + n, *q = p + (from > 2 ? from - 2 : 0); /* an empty line may straddle two reads */
    while ((q = memchr(q, '\n', (size_t)(end - q))) != NULL) {
        q++;
        if ((q < end && q[0] == '\n') || (end - q >= 2 && q[0] == '\r' && q[1] == '\n'))
            return (long)(q - p);
    }
    return -1;
}

/* 1 when p[0..n) has a byte >= 0x80. Eight bytes at a time: about 100 ns for a 2 KiB header. */
static int has_8bit(const char *p, size_t n)
{
    uint64_t acc = 0;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, p + i, 8);
        acc |= w;
    }
    unsigned char tail = 0;
    for (; i < n; i++)
        tail |= (unsigned char)p[i];
    return (acc & 0x8080808080808080ull) != 0 || (tail & 0x80) != 0;
}

/* Logs once per message that its header section was sent as a surrogate (see the top of this file). */
static void header_replaced_log(mp_session *s, pop3_output *o)
{
    pop3_session *ps = s->state;
    if (!o->hdr_replaced)
        return;
    s->host->log(s, MP_LOG_NOTICE, 40206, "message %" PRIu32 " (uid %" PRIu32 ") of user=%s: %" PRIu64
                 " 8-bit header bytes sent as \"?\" to a client not in UTF-8 mode (RFC 6856)", o->index + 1,
                 ps->msgs[o->index].uid, ps->login, o->hdr_replaced);
    o->hdr_replaced = 0;
}

/* A header section longer than the read ahead, in a session not in UTF-8 mode: its 8-bit bytes become "?"
   up to the empty line (see the top of this file). Byte by byte, but only ever for such rare messages. */
static void header_sanitize(mp_session *s, pop3_output *o, char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        if (c == '\n') {
            if (o->hdr_state) { /* an empty line: the body starts */
                o->hdr_open = 0;
                break;
            }
            o->hdr_state = 1;
        } else if (c == '\r') {
            o->hdr_state = o->hdr_state == 1 ? 2 : 0;
        } else {
            o->hdr_state = 0;
            if (c >= 0x80) {
                p[i] = '?';
                o->hdr_replaced++;
            }
        }
    }
    if (!o->hdr_open || o->left == 0)
        header_replaced_log(s, o);
}

/* For a session not in UTF-8 mode, before the status line: reads the message's first chunk (the read RETR
   makes anyway) until it holds the end of the header section, and makes a surrogate of that section if it
   has 8-bit bytes. Returns 0 to go on (the chunk waits in o->buf), -1 on a read error. */
static int read_ahead(mp_session *s, pop3_output *o)
{
    pop3_session *ps = s->state;
    size_t want = o->left < POP3_CHUNK ? (size_t)o->left : POP3_CHUNK;
    size_t filled = 0;
    long hlen = -1;
    while (filled < want) {
        long n = ps->prov.store_if->stream_read(o->stream, o->buf + filled, want - filled);
        if (n < 0)
            return -1;
        if (n == 0) {
            o->stream_end = 1;
            break;
        }
        size_t from = filled;
        filled += (size_t)n;
        hlen = header_length(o->buf, filled, from);
        if (hlen >= 0)
            break;
    }
    o->buffered = filled;
    o->left -= filled;
    size_t hdr = hlen >= 0 ? (size_t)hlen : filled;
    if (has_8bit(o->buf, hdr))
        for (size_t k = 0; k < hdr; k++)
            if ((unsigned char)o->buf[k] >= 0x80) {
                o->buf[k] = '?';
                o->hdr_replaced++;
            }
    if (hlen < 0 && o->left > 0 && !o->stream_end) {
        /* the header section goes on past the chunk: from here on it is changed as it streams */
        o->hdr_open = 1;
        const char *e = o->buf + filled;
        o->hdr_state = e[-1] == '\n' ? 1 : (e[-1] == '\r' && filled >= 2 && e[-2] == '\n') ? 2 : 0;
    } else {
        header_replaced_log(s, o);
    }
    return 0;
}

/* Produces message text until the queue is full. Returns 1 when the response is complete, 0 when more is
   to come, -1 when the store failed mid-response (the session is closed).
   mp_msg.size is the exact size of the CRLF stream (store.h), so reading stops there: no read is spent on
   finding the end (two system calls per message for small messages). A stream shorter than its size ends
   at its end; a longer one (a file changed in place, against the Maildir rules) is cut at the size the
   client was given. */
static int produce_message(mp_session *s, pop3_output *o)
{
    pop3_session *ps = s->state;
    const mp_host *h = s->host;
    while (h->pending_output(s) < POP3_OUT_HIGH) {
        long n;
        if (o->buffered) {
            n = (long)o->buffered; /* the read ahead; o->left already counts it */
            o->buffered = 0;
        } else if (o->stream_end) {
            n = 0;
        } else {
            size_t want = o->left < POP3_CHUNK ? (size_t)o->left : POP3_CHUNK;
            n = want ? ps->prov.store_if->stream_read(o->stream, o->buf, want) : 0;
            if (n < 0) {
                h->log(s, MP_LOG_ERROR, 40201, "read error in message %" PRIu32 " (uid %" PRIu32 ") of user=%s after %"
                       PRIu64 " bytes; closing", o->index + 1, ps->msgs[o->index].uid, ps->login, o->sent);
                return -1;
            }
            if (n > 0)
                o->left -= (uint64_t)n < o->left ? (uint64_t)n : o->left;
        }
        if (n > 0 && o->hdr_open)
            header_sanitize(s, o, o->buf, (size_t)n);
        if (n == 0 || emit(s, o, o->buf, (size_t)n) || o->left == 0) {
            if (!o->at_line_start)
                put(s, o, "\r\n", 2);
            put(s, o, ".\r\n", 3);
            return 1;
        }
    }
    return 0;
}

static int produce_listing(mp_session *s, pop3_output *o)
{
    pop3_session *ps = s->state;
    const mp_host *h = s->host;
    char buf[8192];
    size_t len = 0;
    while (o->index < ps->nmsgs && h->pending_output(s) + len < POP3_OUT_HIGH) {
        uint32_t i = o->index++;
        if (ps->deleted[i])
            continue; /* RFC 1939 section 5: messages marked as deleted are not listed */
        char idbuf[72];
        int n = o->kind == OUT_UIDL ? snprintf(buf + len, sizeof buf - len, "%" PRIu32 " %s\r\n", i + 1,
                                               pop3_uid_of(&ps->msgs[i], idbuf))
                                    : snprintf(buf + len, sizeof buf - len, "%" PRIu32 " %" PRIu64 "\r\n", i + 1,
                                               ps->msgs[i].size);
        len += (size_t)n;
        if (sizeof buf - len < 100) {
            h->write(s, buf, len);
            len = 0;
        }
    }
    if (o->index >= ps->nmsgs) {
        memcpy(buf + len, ".\r\n", 3);
        len += 3;
    }
    h->write(s, buf, len);
    return o->index >= ps->nmsgs;
}

static void produce(mp_session *s)
{
    pop3_session *ps = s->state;
    pop3_output *o = ps->out;
    int r = o->kind == OUT_MESSAGE ? produce_message(s, o) : produce_listing(s, o);
    if (o->kind == OUT_MESSAGE)
        ps->retr_bytes += o->sent, o->sent = 0;
    if (r == 0) {
        ps->wait = POP3_WAIT_OUTPUT;
        s->host->want_writable(s);
        return;
    }
    out_end(s);
    if (r < 0) {
        /* No terminating "." after a failure: the client sees an incomplete response, not a short message. */
        ps->stop = 1;
        s->host->close(s);
    }
}

void pop3_out_continue(mp_session *s)
{
    pop3_session *ps = s->state;
    if (ps->out)
        produce(s);
}

static pop3_output *out_new(mp_session *s, out_kind kind)
{
    apr_pool_t *pool;
    if (apr_pool_create(&pool, s->pool) != APR_SUCCESS)
        return NULL;
    pop3_output *o = apr_pcalloc(pool, sizeof *o);
    o->pool = pool;
    o->kind = kind;
    o->at_line_start = 1;
    return o;
}

void pop3_out_message(mp_session *s, uint32_t i, uint64_t lines)
{
    pop3_session *ps = s->state;
    const mp_msg *m = &ps->msgs[i];
    pop3_output *o = out_new(s, OUT_MESSAGE);
    if (!o) {
        pop3_err(s, "[SYS/TEMP] Out of memory");
        return;
    }
    int rc = ps->prov.store_if->message_open(ps->folder, m->uid, o->pool, &o->stream);
    if (rc != MP_STORE_OK) {
        o->stream = NULL;
        apr_pool_destroy(o->pool);
        if (rc == MP_STORE_NOTFOUND) {
            /* expunged by another client (IMAP) since this session took its snapshot */
            s->host->log(s, MP_LOG_NOTICE, 40202, "message %" PRIu32 " (uid %" PRIu32 ") of user=%s is gone", i + 1,
                         m->uid, ps->login);
            pop3_err(s, "Message %" PRIu32 " is no longer available", i + 1);
        } else {
            s->host->log(s, MP_LOG_ERROR, 40203, "cannot open message %" PRIu32 " (uid %" PRIu32 ") of user=%s: "
                         "store error %d", i + 1, m->uid, ps->login, rc);
            pop3_err(s, "[SYS/TEMP] Cannot read message %" PRIu32, i + 1);
        }
        return;
    }
    o->index = i;
    o->buf = apr_palloc(o->pool, POP3_CHUNK);
    o->top = lines != UINT64_MAX;
    o->lines_left = lines;
    o->left = m->size;
    if (!ps->utf8) {
        if (read_ahead(s, o) != 0) {
            ps->prov.store_if->stream_close(o->stream);
            apr_pool_destroy(o->pool);
            s->host->log(s, MP_LOG_ERROR, 40205, "read error in message %" PRIu32 " (uid %" PRIu32 ") of user=%s",
                         i + 1, m->uid, ps->login);
            pop3_err(s, "[SYS/TEMP] Cannot read message %" PRIu32, i + 1);
            return;
        }
    }
    ps->out = o;
    ps->nretr++;
    if (o->top)
        pop3_ok(s, "Top of message follows");
    else
        s->host->printf(s, "+OK %" PRIu64 " octets\r\n", m->size);
    produce(s);
}

void pop3_out_listing(mp_session *s, int uidl)
{
    pop3_session *ps = s->state;
    pop3_output *o = out_new(s, uidl ? OUT_UIDL : OUT_LIST);
    if (!o) {
        pop3_err(s, "[SYS/TEMP] Out of memory");
        return;
    }
    ps->out = o;
    if (uidl)
        pop3_ok(s, "Unique-ID listing follows");
    else
        pop3_ok(s, "%" PRIu32 " messages (%" PRIu64 " octets)", ps->nmsgs - ps->ndeleted,
                ps->total_size - ps->deleted_size);
    produce(s);
}
