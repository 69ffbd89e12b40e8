/* Logging (host internal). One line per event: time, level, [mpNNNNN], session id and peer, message. */
#ifndef MPH_LOG_H
#define MPH_LOG_H

#include <stdarg.h>
#include <mailproto/host.h>

/* Message numbers: 1xxxx the host, 2xxxx mod_echo, 3xxxx SMTP, 4xxxx POP3, 5xxxx IMAP, 6xxxx providers. */
void mph_log_set_level(mp_log_level level);
int mph_log_level_parse(const char *text, mp_log_level *level_r);
int mph_log_enabled(mp_log_level level);
/* `session` may be NULL. */
void mph_logv(const mp_session *session, mp_log_level level, int msgid, const char *fmt, va_list ap);
void mph_log(const mp_session *session, mp_log_level level, int msgid, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#endif
