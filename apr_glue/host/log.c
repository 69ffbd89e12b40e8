#include "log.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>
#include <sys/time.h>

static volatile int log_level = MP_LOG_NOTICE;
static const char *const level_names[] = {"error", "warn", "notice", "info", "debug"};

void mph_log_set_level(mp_log_level level) { log_level = (int)level; }

int mph_log_enabled(mp_log_level level) { return (int)level <= log_level; }

int mph_log_level_parse(const char *text, mp_log_level *level_r)
{
    for (int i = 0; i <= MP_LOG_DEBUG; i++)
        if (strcasecmp(text, level_names[i]) == 0) {
            *level_r = (mp_log_level)i;
            return 0;
        }
    return -1;
}

void mph_logv(const mp_session *s, mp_log_level level, int msgid, const char *fmt, va_list ap)
{
    if (!mph_log_enabled(level))
        return;
    char line[2048];
    struct timeval tv;
    struct tm tm;
    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    int n = (int)strftime(line, sizeof line, "%Y-%m-%dT%H:%M:%S", &tm);
    n += snprintf(line + n, sizeof line - (size_t)n, ".%03dZ %s [mp%05d] ", (int)(tv.tv_usec / 1000),
                  level_names[level < 0 || level > MP_LOG_DEBUG ? MP_LOG_ERROR : level], msgid);
    if (s)
        n += snprintf(line + n, sizeof line - (size_t)n, "s=%llu %s%s%s:%u ", (unsigned long long)s->id,
                      strchr(s->peer_addr, ':') ? "[" : "", s->peer_addr, strchr(s->peer_addr, ':') ? "]" : "",
                      (unsigned)s->peer_port);
    if (n < (int)sizeof line - 2)
        n += vsnprintf(line + n, sizeof line - (size_t)n - 1, fmt, ap);
    if (n > (int)sizeof line - 2)
        n = (int)sizeof line - 2;
    /* Control characters from the network never reach the log verbatim. */
    for (int i = 0; i < n; i++)
        if ((unsigned char)line[i] < 0x20)
            line[i] = '?';
    line[n++] = '\n';
    /* One write() per line: lines from several threads never interleave. */
    ssize_t w = write(STDERR_FILENO, line, (size_t)n);
    (void)w;
}

void mph_log(const mp_session *s, mp_log_level level, int msgid, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    mph_logv(s, level, msgid, fmt, ap);
    va_end(ap);
}
