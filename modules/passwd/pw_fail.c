/*
 * Failed logins per client address (failed() / succeeded() of the auth interface), Dovecot's auth penalty
 * in spirit: the n-th failure in a row from an address costs 250 ms * 2^(n-1), at most 15 s; an address
 * is forgotten 15 minutes after its last failure, and at once after a successful login.
 *
 * IPv6 clients are counted per /64 (one customer usually has a whole /64, so counting single addresses
 * would let them walk away from the penalty); IPv4-mapped IPv6 counts as IPv4. A string that is not an IP
 * address is counted by its own text.
 *
 * The table is bounded: an open-addressing hash of PW_FAIL_SLOTS slots holding at most PW_FAIL_MAX
 * addresses, allocated at the first failure. When it is full, the least recently failed address among a
 * short run of slots is evicted, so one insertion never costs more than a bounded scan. The hash is keyed
 * with a random seed, so clients cannot aim for collisions.
 */
#include "pw_internal.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <arpa/inet.h>
#include <netinet/in.h>

#include <openssl/rand.h>
#include <openssl/sha.h>

#define KEY_LEN 17          /* family byte + up to 16 address bytes */
#define EVICT_SCAN 64       /* slots looked at to choose a victim when the table is full */

typedef struct pw_fail_slot {
    unsigned char key[KEY_LEN];
    unsigned char used;
    uint16_t count;
    uint32_t hash;
    apr_time_t last;
} pw_fail_slot;

struct pw_fails {
    pthread_mutex_t lock;
    pw_fail_slot *slots;
    unsigned n;
    uint64_t seed;
};

static apr_status_t fails_cleanup(void *data)
{
    pw_fails *f = data;
    free(f->slots);
    f->slots = NULL;
    pthread_mutex_destroy(&f->lock);
    return APR_SUCCESS;
}

pw_fails *pw_fails_create(apr_pool_t *pool)
{
    pw_fails *f = apr_pcalloc(pool, sizeof *f);
    pthread_mutex_init(&f->lock, NULL);
    if (RAND_bytes((unsigned char *)&f->seed, sizeof f->seed) != 1)
        f->seed = (uint64_t)apr_time_now() * 0x9e3779b97f4a7c15ull; /* still unknown to clients */
    apr_pool_cleanup_register(pool, f, fails_cleanup, apr_pool_cleanup_null);
    return f;
}

static void fail_key(const char *addr, unsigned char key[KEY_LEN])
{
    unsigned char a[16];
    memset(key, 0, KEY_LEN);
    if (addr && inet_pton(AF_INET, addr, a) == 1) {
        key[0] = 4;
        memcpy(key + 1, a, 4);
    } else if (addr && inet_pton(AF_INET6, addr, a) == 1) {
        static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
        if (memcmp(a, mapped, 12) == 0) {
            key[0] = 4;
            memcpy(key + 1, a + 12, 4);
        } else {
            key[0] = 6;
            memcpy(key + 1, a, 8); /* the /64 */
        }
    } else {
        unsigned char d[SHA256_DIGEST_LENGTH];
        const char *s = addr ? addr : "";
        SHA256((const unsigned char *)s, strlen(s), d);
        key[0] = 0;
        memcpy(key + 1, d, 16);
    }
}

static uint32_t fail_hash(const pw_fails *f, const unsigned char key[KEY_LEN])
{
    uint64_t h = f->seed ^ 0xcbf29ce484222325ull; /* FNV-1a, seeded, with a final mix */
    for (int i = 0; i < KEY_LEN; i++) {
        h ^= key[i];
        h *= 0x100000001b3ull;
    }
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    return (uint32_t)h;
}

#define MASK (PW_FAIL_SLOTS - 1)

/* The slot holding key, or -1 with *free_r the empty slot where it would go. */
static long fail_find(const pw_fails *f, const unsigned char key[KEY_LEN], uint32_t h, unsigned *free_r)
{
    unsigned i = h & MASK;
    while (f->slots[i].used) {
        if (f->slots[i].hash == h && memcmp(f->slots[i].key, key, KEY_LEN) == 0)
            return (long)i;
        i = (i + 1) & MASK;
    }
    *free_r = i;
    return -1;
}

/* Linear-probing deletion by backward shift: no tombstones, so lookups stay short. */
static void fail_delete(pw_fails *f, unsigned i)
{
    unsigned j = i;
    f->slots[i].used = 0;
    f->n--;
    for (;;) {
        j = (j + 1) & MASK;
        if (!f->slots[j].used)
            return;
        unsigned k = f->slots[j].hash & MASK; /* where slots[j] would like to be */
        int stays = i <= j ? (i < k && k <= j) : (i < k || k <= j);
        if (stays)
            continue;
        f->slots[i] = f->slots[j];
        f->slots[j].used = 0;
        i = j;
    }
}

/* Makes room when the table is full: an expired or the least recently failed address near `from`. */
static void fail_evict(pw_fails *f, unsigned from, apr_time_t now)
{
    unsigned i = from, seen = 0, victim = 0;
    int have = 0;
    for (unsigned step = 0; step < PW_FAIL_SLOTS && seen < EVICT_SCAN; step++, i = (i + 1) & MASK) {
        if (!f->slots[i].used)
            continue;
        seen++;
        if (now - f->slots[i].last > PW_FAIL_EXPIRE) {
            victim = i, have = 1;
            break;
        }
        if (!have || f->slots[i].last < f->slots[victim].last)
            victim = i, have = 1;
    }
    if (have)
        fail_delete(f, victim);
}

static apr_interval_time_t fail_delay(unsigned count)
{
    if (count == 0)
        return 0;
    if (count - 1 >= 6) /* 250 ms << 6 = 16 s: over the cap */
        return PW_FAIL_CAP;
    apr_interval_time_t d = PW_FAIL_BASE << (count - 1);
    return d > PW_FAIL_CAP ? PW_FAIL_CAP : d;
}

apr_interval_time_t pw_fails_failed(pw_fails *f, const char *client_addr)
{
    unsigned char key[KEY_LEN];
    fail_key(client_addr, key);
    uint32_t h = fail_hash(f, key);
    apr_time_t now = pw_now();
    apr_interval_time_t delay = PW_FAIL_BASE;

    pthread_mutex_lock(&f->lock);
    if (!f->slots) {
        f->slots = calloc(PW_FAIL_SLOTS, sizeof *f->slots);
        if (!f->slots) {
            pthread_mutex_unlock(&f->lock);
            return PW_FAIL_CAP; /* cannot count: be careful */
        }
    }
    unsigned free_slot = 0;
    long at = fail_find(f, key, h, &free_slot);
    if (at < 0) {
        if (f->n >= PW_FAIL_MAX) {
            fail_evict(f, h & MASK, now);
            at = fail_find(f, key, h, &free_slot);
        }
        pw_fail_slot *s = &f->slots[free_slot];
        memcpy(s->key, key, KEY_LEN);
        s->hash = h;
        s->used = 1;
        s->count = 0;
        f->n++;
        at = (long)free_slot;
    }
    pw_fail_slot *s = &f->slots[at];
    if (s->count && now - s->last > PW_FAIL_EXPIRE)
        s->count = 0; /* quiet long enough: start over */
    if (s->count < UINT16_MAX)
        s->count++;
    s->last = now;
    delay = fail_delay(s->count);
    pthread_mutex_unlock(&f->lock);
    return delay;
}

void pw_fails_succeeded(pw_fails *f, const char *client_addr)
{
    unsigned char key[KEY_LEN];
    fail_key(client_addr, key);
    uint32_t h = fail_hash(f, key);
    pthread_mutex_lock(&f->lock);
    unsigned free_slot;
    long at = f->slots ? fail_find(f, key, h, &free_slot) : -1;
    if (at >= 0)
        fail_delete(f, (unsigned)at);
    pthread_mutex_unlock(&f->lock);
}

unsigned pw_fails_size(pw_fails *f)
{
    pthread_mutex_lock(&f->lock);
    unsigned n = f->n;
    pthread_mutex_unlock(&f->lock);
    return n;
}
