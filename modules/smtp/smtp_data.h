/*
 * The message data machines, sans-I/O: DATA (RFC 5321 section 4.1.1.4 and 4.5.2) and BDAT content
 * (RFC 3030). Both keep their state between calls, so input may arrive in any slices (one byte at a time
 * gives the same result as one burst).
 *
 * DATA: dot-unstuffing, and only <CRLF>.<CRLF> ends the data. A bare LF, or a CR not followed by LF,
 * anywhere in the data is never a line end (RFC 5321 section 2.3.8): it marks the message bad (refused
 * with 554 5.6.0 at the end) and the machine goes on looking for the real <CRLF>.<CRLF>, so no variant
 * (`\n.\n`, `\r.\r`, `\r\n.\n`, `\n.\r\n`, ...) can end the data early and smuggle a second message.
 *
 * BDAT: the content is counted by the client, so nothing ends it early; the same bare CR/LF rule is kept
 * (we do not offer BINARYMIME), tracking a CR split across chunks.
 */
#ifndef SMTP_DATA_H
#define SMTP_DATA_H

#include <stddef.h>

/* Where the message bytes go: called with runs of message bytes (after unstuffing). */
typedef void (*smtp_data_out_fn)(void *arg, const char *bytes, size_t len);

typedef struct smtp_data_machine {
    int state;     /* internal: position relative to line starts */
    int bare;      /* a bare CR or LF was seen */
} smtp_data_machine;

/* Ready for the first byte after the 354 reply (which is at a line start). */
void smtp_data_init(smtp_data_machine *m);

/*
 * Feeds in[0..len). Message bytes go to out(). Returns how many bytes were consumed: all of them, or fewer
 * when the end of data (<CRLF>.<CRLF>, its CRLF included) was reached, in which case *done is set to 1
 * and the bytes after it are the next command. The final CRLF before the dot belongs to the message.
 */
size_t smtp_data_feed(smtp_data_machine *m, const char *in, size_t len, smtp_data_out_fn out, void *arg,
                      int *done);

/* BDAT content: checks in[0..len) for bare CR/LF, keeping a trailing CR pending for the next chunk. */
void smtp_bdat_check(smtp_data_machine *m, const char *in, size_t len);
/* At BDAT LAST: a pending CR is a bare CR. Returns m->bare. */
int smtp_bdat_finish(smtp_data_machine *m);

#endif
