/*
 * folder_watch: one inotify instance and one watcher thread per generation of the module (statics are
 * per generation: each generation is its own copy of the .so), started at the first watch and stopped in
 * fini. Messages 60700-60799.
 *
 * A watched folder has watches on new/ (deliveries) and cur/ (flags, expunges, moves). inotify gives one
 * watch descriptor per directory however often it is added, so watches are shared and counted. The thread
 * reads a burst of events, marks the subscribers of the directories involved, then calls each marked
 * subscriber's notify once (coalesced; the host's wakeup coalesces further). notify runs with the mutex
 * held, and unsubscribing takes it: once folder_watch(f, NULL, NULL) or folder_close returned, notify is
 * neither running nor ever called again for that view.
 */
#include "maildir.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <unistd.h>

#define NBUCKETS 256

typedef struct wdir wdir;
typedef struct md_watch_sub md_watch_sub;

typedef struct link {
    md_watch_sub *sub;
    struct link *next;
} link_t;

struct wdir {
    int wd;
    unsigned refs;
    link_t *subs;
    wdir *next;            /* bucket chain */
};

struct md_watch_sub {
    void (*notify)(void *arg);
    void *arg;
    int wd[2];             /* new/ and cur/ */
    link_t link[2];
    int marked;
    md_watch_sub *next_marked;
};

static struct {
    pthread_mutex_t mu;
    int ifd, efd;          /* inotify; eventfd that stops the thread */
    int running;
    pthread_t thread;
    wdir *buckets[NBUCKETS];
} W = {.mu = PTHREAD_MUTEX_INITIALIZER, .ifd = -1, .efd = -1};

static wdir *wdir_find(int wd)
{
    for (wdir *d = W.buckets[(unsigned)wd % NBUCKETS]; d; d = d->next)
        if (d->wd == wd)
            return d;
    return NULL;
}

static void mark(md_watch_sub **marked, md_watch_sub *s)
{
    if (!s->marked) {
        s->marked = 1;
        s->next_marked = *marked;
        *marked = s;
    }
}

static void *watcher(void *unused)
{
    (void)unused;
    char buf[16384] __attribute__((aligned(__alignof__(struct inotify_event))));
    struct pollfd p[2] = {{.fd = W.ifd, .events = POLLIN}, {.fd = W.efd, .events = POLLIN}};
    for (;;) {
        if (poll(p, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            md_log(MP_LOG_ERROR, 60700, "watcher: poll failed: %s", strerror(errno));
            return NULL;
        }
        if (p[1].revents)
            return NULL; /* fini */
        ssize_t n = read(W.ifd, buf, sizeof buf);
        if (n <= 0)
            continue;
        md_watch_sub *marked = NULL;
        pthread_mutex_lock(&W.mu);
        for (char *q = buf; q < buf + n;) {
            struct inotify_event *ev = (struct inotify_event *)q;
            q += sizeof *ev + ev->len;
            if (ev->mask & IN_Q_OVERFLOW) { /* events lost: everybody looks */
                for (int b = 0; b < NBUCKETS; b++)
                    for (wdir *d = W.buckets[b]; d; d = d->next)
                        for (link_t *l = d->subs; l; l = l->next)
                            mark(&marked, l->sub);
                continue;
            }
            wdir *d = wdir_find(ev->wd);
            for (link_t *l = d ? d->subs : NULL; l; l = l->next)
                mark(&marked, l->sub);
        }
        for (md_watch_sub *s = marked; s; s = s->next_marked) {
            s->marked = 0;
            s->notify(s->arg);
        }
        pthread_mutex_unlock(&W.mu);
    }
}

/* With W.mu held. */
static int start_locked(void)
{
    if (W.running)
        return 0;
    W.ifd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    W.efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (W.ifd < 0 || W.efd < 0 || pthread_create(&W.thread, NULL, watcher, NULL) != 0) {
        md_log(MP_LOG_ERROR, 60701, "cannot start the folder watcher: %s", strerror(errno));
        if (W.ifd >= 0)
            close(W.ifd);
        if (W.efd >= 0)
            close(W.efd);
        W.ifd = W.efd = -1;
        return -1;
    }
    W.running = 1;
    return 0;
}

/* With W.mu held: watch `path`, link sub to it. */
static int add_dir(md_watch_sub *s, int k, const char *path)
{
    int wd = inotify_add_watch(W.ifd, path,
                               IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO | IN_DELETE_SELF | IN_MOVE_SELF);
    if (wd < 0) {
        md_log(MP_LOG_ERROR, 60702, "inotify_add_watch(%s) failed: %s", path, strerror(errno));
        return -1;
    }
    wdir *d = wdir_find(wd);
    if (!d) {
        d = calloc(1, sizeof *d);
        if (!d) {
            inotify_rm_watch(W.ifd, wd);
            return -1;
        }
        d->wd = wd;
        d->next = W.buckets[(unsigned)wd % NBUCKETS];
        W.buckets[(unsigned)wd % NBUCKETS] = d;
    }
    d->refs++;
    s->wd[k] = wd;
    s->link[k] = (link_t){s, d->subs};
    d->subs = &s->link[k];
    return 0;
}

/* With W.mu held. */
static void remove_dir(md_watch_sub *s, int k)
{
    wdir *d = s->wd[k] >= 0 ? wdir_find(s->wd[k]) : NULL;
    s->wd[k] = -1;
    if (!d)
        return;
    for (link_t **l = &d->subs; *l; l = &(*l)->next)
        if (*l == &s->link[k]) {
            *l = (*l)->next;
            break;
        }
    if (--d->refs > 0)
        return;
    inotify_rm_watch(W.ifd, d->wd); /* EINVAL when the directory went away: fine */
    for (wdir **p = &W.buckets[(unsigned)d->wd % NBUCKETS]; *p; p = &(*p)->next)
        if (*p == d) {
            *p = d->next;
            break;
        }
    free(d);
}

static void unsubscribe_locked(mp_folder *f)
{
    md_watch_sub *s = f->watch;
    if (!s)
        return;
    remove_dir(s, 0);
    remove_dir(s, 1);
    free(s);
    f->watch = NULL;
}

void md_watch_unsubscribe(mp_folder *f)
{
    if (!f->watch)
        return;
    pthread_mutex_lock(&W.mu);
    unsubscribe_locked(f);
    pthread_mutex_unlock(&W.mu);
}

int md_folder_watch(mp_folder *f, void (*notify)(void *arg), void *arg)
{
    int rv = MP_STORE_OK;
    char path[4096];
    pthread_mutex_lock(&W.mu);
    unsubscribe_locked(f);
    if (notify) {
        md_watch_sub *s = calloc(1, sizeof *s);
        if (!s || start_locked() != 0) {
            free(s);
            rv = MP_STORE_ERR;
        } else {
            s->notify = notify;
            s->arg = arg;
            s->wd[0] = s->wd[1] = -1;
            snprintf(path, sizeof path, "%s/new", f->dir);
            int ok = add_dir(s, 0, path) == 0;
            snprintf(path, sizeof path, "%s/cur", f->dir);
            ok = ok && add_dir(s, 1, path) == 0;
            f->watch = s;
            if (!ok) {
                unsubscribe_locked(f);
                rv = MP_STORE_ERR;
            }
        }
    }
    pthread_mutex_unlock(&W.mu);
    return rv;
}

void md_watch_shutdown(void)
{
    pthread_mutex_lock(&W.mu);
    int running = W.running;
    W.running = 0;
    pthread_mutex_unlock(&W.mu);
    if (!running)
        return;
    uint64_t one = 1;
    if (write(W.efd, &one, sizeof one) != sizeof one)
        md_log(MP_LOG_ERROR, 60703, "stopping the folder watcher failed: %s", strerror(errno));
    pthread_join(W.thread, NULL);
    pthread_mutex_lock(&W.mu);
    for (int b = 0; b < NBUCKETS; b++) {
        while (W.buckets[b]) { /* views left open past fini: their watches go with the instance */
            wdir *d = W.buckets[b];
            W.buckets[b] = d->next;
            free(d);
        }
    }
    close(W.ifd);
    close(W.efd);
    W.ifd = W.efd = -1;
    pthread_mutex_unlock(&W.mu);
}
