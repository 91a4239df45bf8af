/*
 * journal: the lab guest's durable append-only journal service (coserver).
 *
 * TCP, one request line -> one reply line:
 *   APPEND <text>  -> OK <seq>           only after the record is written AND fsync'ed
 *   COUNT          -> COUNT <n>
 *   GET <seq>      -> LINE <seq> <text>  or  ERR <reason>
 *   INFO           -> INFO <json>        DMI ids, boot_id, uptime, count
 *   REBOOT         -> OK rebooting       then the guest reboots itself (reboot(2), after sync)
 *   POWEROFF       -> OK powering off    then the guest powers itself off (the same, RB_POWER_OFF):
 *                                        what a server's own shutdown looks like to its hypervisor
 *   MEMLOAD <MiB> [<MiB/s>]
 *                  -> OK memload <MiB> <MiB/s>
 *                                        a child process fills MiB of RAM with non-zero data (RAM
 *                                        in use, as a database's cache: not zero pages migration
 *                                        skips) and then keeps dirtying it, page by page, at MiB/s
 *                                        (default 32); replaces an earlier load; MEMLOAD 0 ends it
 *   MEMSTAT        -> MEMSTAT <MiB> <filled MiB> <MiB/s> <pages dirtied>
 *   anything else  -> ERR <reason>       and the connection stays usable
 *
 * Usage: journal [-p PORT] [-a IPV4] [-f FILE] [-P]   (defaults 7777, 0.0.0.0, /data/journal.log)
 * -P: honour REBOOT, POWEROFF and MEMLOAD (the guest's /init passes it; without it they are refused,
 * so the same binary run on a host by a test can never reboot that host or fill its memory).
 * -p 0 picks a free port; the first stderr line says which ("journal: listening on A:P ...").
 *
 * Storage: FILE holds one record per line, "<seq> <crc32 8 hex> <text>\n", appended only.
 * At start the file is scanned into an in-memory index (seq -> offset); the scan stops at the
 * first record that is incomplete, out of sequence or fails its CRC (a write torn by a crash),
 * and the file is truncated there, so a torn tail never counts and never glues onto the next
 * record. Acked records were fsync'ed before their OK, so a torn tail holds only unacked ones.
 *
 * One thread, one poll() loop, no timers (deterministic under COLO lock-stepping). Each loop
 * turn handles every complete request line it has, writes the appends, fsyncs once (group
 * commit), and only then lets replies out: no reply can overtake the fsync of an append that
 * preceded it. If fsync fails the process exits (state unknown; the restart rescans the file).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/reboot.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_TEXT 4096                   /* bytes of text in one record */
#define MAX_REQ (MAX_TEXT + 16)         /* bytes of one request line, without '\n' */
#define MAX_CLIENTS 64
#define OUT_HIGH (256 * 1024)           /* stop reading a client whose replies pile up */

static const char *prog = "journal";

static void logmsg(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "%s: ", prog);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

static void die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "%s: fatal: ", prog);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(1);
}

/* ---------- CRC-32 (IEEE, as zlib's crc32) ---------- */
static uint32_t crc_table[256];

static void crc_init(void) {
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        crc_table[i] = c;
    }
}

static uint32_t crc32_of(const char *p, size_t n) {
    uint32_t c = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++)
        c = crc_table[(c ^ (unsigned char)p[i]) & 0xFF] ^ (c >> 8);
    return c ^ 0xFFFFFFFFu;
}

/* ---------- the journal file and its index ---------- */
struct journal {
    int fd;
    const char *path;
    off_t size;           /* end of the last good record */
    uint64_t n;           /* records */
    off_t *text_off;      /* per record: where its text starts */
    uint32_t *text_len;
    size_t cap;
    int dirty;            /* written since the last fsync */
};

static struct journal J;

static void index_add(off_t off, uint32_t len) {
    if (J.n == J.cap) {
        size_t cap = J.cap ? J.cap * 2 : 1024;
        off_t *o = realloc(J.text_off, cap * sizeof *o);
        if (!o) die("out of memory for %zu records", cap);
        J.text_off = o;
        uint32_t *l = realloc(J.text_len, cap * sizeof *l);
        if (!l) die("out of memory for %zu records", cap);
        J.text_len = l;
        J.cap = cap;
    }
    J.text_off[J.n] = off;
    J.text_len[J.n] = len;
    J.n++;
}

/* Parse one record line (without its '\n'); 1 if it is record number `want`. */
static int parse_record(const char *line, size_t len, uint64_t want, size_t *text_at) {
    size_t i = 0;
    uint64_t seq = 0;
    if (len == 0 || line[0] < '1' || line[0] > '9') return 0;
    while (i < len && line[i] >= '0' && line[i] <= '9') {
        if (seq > (UINT64_MAX - 9) / 10) return 0;
        seq = seq * 10 + (uint64_t)(line[i] - '0');
        i++;
    }
    if (seq != want || i >= len || line[i] != ' ') return 0;
    i++;
    if (len - i < 9) return 0;
    uint32_t crc = 0;
    for (int k = 0; k < 8; k++, i++) {
        char c = line[i];
        int v;
        if (c >= '0' && c <= '9') v = c - '0';
        else if (c >= 'a' && c <= 'f') v = c - 'a' + 10;
        else return 0;
        crc = (crc << 4) | (uint32_t)v;
    }
    if (line[i] != ' ') return 0;
    i++;
    if (len - i > MAX_TEXT) return 0;
    if (memchr(line + i, '\0', len - i)) return 0;
    if (crc32_of(line + i, len - i) != crc) return 0;
    *text_at = i;
    return 1;
}

static void journal_open(const char *path) {
    J.path = path;
    J.fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (J.fd < 0) die("cannot open %s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(J.fd, &st) < 0) die("cannot stat %s: %s", path, strerror(errno));

    /* scan: records are at most ~MAX_TEXT+32 bytes, so a sliding buffer of 2x that suffices */
    size_t bufcap = 4 * (MAX_TEXT + 64), have = 0;
    char *buf = malloc(bufcap);
    if (!buf) die("out of memory");
    off_t base = 0;          /* file offset of buf[0] */
    off_t good = 0;          /* end of the last good record */
    int eof = 0, bad = 0;
    while (!bad) {
        if (!eof && have < bufcap) {
            ssize_t r = pread(J.fd, buf + have, bufcap - have, base + (off_t)have);
            if (r < 0) {
                if (errno == EINTR) continue;
                die("cannot read %s: %s", path, strerror(errno));
            }
            if (r == 0) eof = 1;
            have += (size_t)r;
        }
        size_t start = 0;
        for (;;) {
            char *nl = memchr(buf + start, '\n', have - start);
            if (!nl) break;
            size_t len = (size_t)(nl - (buf + start)), text_at;
            if (!parse_record(buf + start, len, J.n + 1, &text_at)) { bad = 1; break; }
            index_add(base + (off_t)(start + text_at), (uint32_t)(len - text_at));
            start += len + 1;
            good = base + (off_t)start;
        }
        if (bad) break;
        /* keep the unfinished line at the front of the buffer */
        memmove(buf, buf + start, have - start);
        have -= start;
        base += (off_t)start;
        if (eof) {
            if (have) bad = 1;   /* a last line without '\n': torn */
            break;
        }
        if (have == bufcap) { bad = 1; break; }   /* a line longer than any record */
    }
    free(buf);
    if (good < st.st_size) {
        logmsg("%s: dropping %lld bytes after record %llu at offset %lld (torn or invalid tail)",
               path, (long long)(st.st_size - good), (unsigned long long)J.n, (long long)good);
        if (ftruncate(J.fd, good) < 0) die("cannot truncate %s: %s", path, strerror(errno));
        if (fsync(J.fd) < 0) die("cannot fsync %s: %s", path, strerror(errno));
    }
    J.size = good;
}

/* Append one record; returns its seq, or 0 with *err set. Not yet durable: see journal_sync. */
static uint64_t journal_append(const char *text, size_t len, const char **err) {
    char head[48];
    uint64_t seq = J.n + 1;
    int hl = snprintf(head, sizeof head, "%llu %08x ", (unsigned long long)seq,
                      (unsigned)crc32_of(text, len));
    struct { const char *p; size_t n; } parts[3] = {{head, (size_t)hl}, {text, len}, {"\n", 1}};
    off_t at = J.size;
    for (int i = 0; i < 3; i++) {
        size_t done = 0;
        while (done < parts[i].n) {
            ssize_t w = pwrite(J.fd, parts[i].p + done, parts[i].n - done, at);
            if (w < 0) {
                if (errno == EINTR) continue;
                *err = strerror(errno);
                if (ftruncate(J.fd, J.size) < 0)
                    die("cannot undo a failed write to %s: %s", J.path, strerror(errno));
                return 0;
            }
            done += (size_t)w;
            at += w;
        }
    }
    index_add(J.size + hl, (uint32_t)len);
    J.size = at;
    J.dirty = 1;
    return seq;
}

static void journal_sync(void) {
    if (!J.dirty) return;
    if (fsync(J.fd) < 0) die("fsync %s failed: %s (unacked appends are not durable)", J.path,
                             strerror(errno));
    J.dirty = 0;
}

/* ---------- clients ---------- */
struct client {
    int fd;
    char in[MAX_REQ + 1];   /* one request line of up to MAX_REQ bytes, and its '\n' */
    size_t inlen;
    int discarding;       /* inside an over-long line: drop bytes until '\n' */
    int eof;              /* peer finished sending */
    char *out;
    size_t outlen, outoff, outcap;
};

static struct client *clients[MAX_CLIENTS];
static int nclients;

static void client_close(int i) {
    struct client *c = clients[i];
    close(c->fd);
    free(c->out);
    free(c);
    clients[i] = clients[--nclients];
}

static void out_append(struct client *c, const char *p, size_t n) {
    if (c->outoff && c->outoff == c->outlen) c->outoff = c->outlen = 0;
    if (c->outlen + n > c->outcap) {
        if (c->outoff) {
            memmove(c->out, c->out + c->outoff, c->outlen - c->outoff);
            c->outlen -= c->outoff;
            c->outoff = 0;
        }
        if (c->outlen + n > c->outcap) {
            size_t cap = c->outcap ? c->outcap : 8192;
            while (cap < c->outlen + n) cap *= 2;
            char *o = realloc(c->out, cap);
            if (!o) die("out of memory for replies");
            c->out = o;
            c->outcap = cap;
        }
    }
    memcpy(c->out + c->outlen, p, n);
    c->outlen += n;
}

static void reply(struct client *c, const char *fmt, ...) {
    char line[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line - 1, fmt, ap);
    va_end(ap);
    if (n < 0) n = 0;
    if ((size_t)n > sizeof line - 2) n = (int)sizeof line - 2;
    line[n++] = '\n';
    out_append(c, line, (size_t)n);
}

/* ---------- INFO ---------- */
static int read_small(const char *path, char *buf, size_t cap) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    ssize_t n = read(fd, buf, cap - 1);
    close(fd);
    if (n < 0) return -1;
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == ' ' || buf[n - 1] == '\0')) n--;
    buf[n] = '\0';
    return 0;
}

static void json_str(char *dst, size_t cap, size_t *at, const char *s) {
    size_t i = *at;
#define PUT(ch) do { if (i + 1 < cap) dst[i++] = (ch); } while (0)
    PUT('"');
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\') { PUT('\\'); PUT((char)*p); }
        else if (*p < 0x20 || *p == 0x7f) {
            char esc[8];
            snprintf(esc, sizeof esc, "\\u%04x", *p);
            for (char *e = esc; *e; e++) PUT(*e);
        } else PUT((char)*p);
    }
    PUT('"');
#undef PUT
    dst[i] = '\0';
    *at = i;
}

static void json_raw(char *dst, size_t cap, size_t *at, const char *s) {
    size_t n = strlen(s);
    if (*at >= cap) return;
    if (n > cap - *at - 1) n = cap - *at - 1;
    memcpy(dst + *at, s, n);
    *at += n;
    dst[*at] = '\0';
}

static void do_info(struct client *c) {
    static const struct { const char *key, *path; } fields[] = {
        {"sys_vendor", "/sys/class/dmi/id/sys_vendor"},
        {"product_name", "/sys/class/dmi/id/product_name"},
        {"product_serial", "/sys/class/dmi/id/product_serial"},
        {"product_uuid", "/sys/class/dmi/id/product_uuid"},
        {"boot_id", "/proc/sys/kernel/random/boot_id"},
    };
    char js[8192], val[256], num[64];   /* 5 values of <= 255 bytes, escaped: < 8 KiB */
    size_t at = 0;
    js[0] = '\0';
    json_raw(js, sizeof js, &at, "{");
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
        json_str(js, sizeof js, &at, fields[i].key);
        json_raw(js, sizeof js, &at, ":");
        if (read_small(fields[i].path, val, sizeof val) == 0) json_str(js, sizeof js, &at, val);
        else json_raw(js, sizeof js, &at, "null");
        json_raw(js, sizeof js, &at, ",");
    }
    json_str(js, sizeof js, &at, "uptime");
    json_raw(js, sizeof js, &at, ":");
    if (read_small("/proc/uptime", val, sizeof val) == 0) {
        size_t k = 0;
        while (val[k] && ((val[k] >= '0' && val[k] <= '9') || val[k] == '.')) k++;
        val[k] = '\0';
        json_raw(js, sizeof js, &at, k && val[0] != '.' ? val : "null");
    } else {
        json_raw(js, sizeof js, &at, "null");
    }
    snprintf(num, sizeof num, ",\"count\":%llu}", (unsigned long long)J.n);
    json_raw(js, sizeof js, &at, num);
    out_append(c, "INFO ", 5);
    out_append(c, js, at);
    out_append(c, "\n", 1);
}

/* ---------- requests ---------- */
static int parse_seq(const char *s, size_t n, uint64_t *out) {
    uint64_t v = 0;
    if (n == 0 || n > 19) return 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') return 0;
        v = v * 10 + (uint64_t)(s[i] - '0');
    }
    *out = v;
    return 1;
}

static void do_get(struct client *c, uint64_t seq) {
    if (seq == 0 || seq > J.n) {
        reply(c, "ERR no record %llu (count %llu)", (unsigned long long)seq,
              (unsigned long long)J.n);
        return;
    }
    uint32_t len = J.text_len[seq - 1];
    char *text = malloc(len ? len : 1);
    if (!text) die("out of memory");
    size_t done = 0;
    while (done < len) {
        ssize_t r = pread(J.fd, text + done, len - done, J.text_off[seq - 1] + (off_t)done);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) {
            reply(c, "ERR cannot read record %llu: %s", (unsigned long long)seq,
                  r < 0 ? strerror(errno) : "short file");
            free(text);
            return;
        }
        done += (size_t)r;
    }
    char head[48];
    int hl = snprintf(head, sizeof head, "LINE %llu ", (unsigned long long)seq);
    out_append(c, head, (size_t)hl);
    out_append(c, text, len);
    out_append(c, "\n", 1);
    free(text);
}

/* ---- MEMLOAD: guest RAM in use and being dirtied, what a real server costs COLO ----
 * The load runs in a child process so the journal's one poll() loop never waits on it; the two
 * share one page of counters. The child closes every inherited socket, so a journal restart can
 * bind its port again while a load runs. */
struct memload_stat {
    volatile uint64_t mib, filled_mib, rate, dirtied_pages;
};
static struct memload_stat *ML;
static pid_t memload_pid;
#define MEMLOAD_MAX_MIB (1u << 20)
#define MEMLOAD_MAX_RATE 100000u
#define PAGE 4096u

static void memload_run(uint64_t mib, uint64_t rate) {
    for (int fd = 3; fd < 1024; fd++) close(fd);
    size_t pages = (size_t)mib * (1u << 20) / PAGE;
    unsigned char *m = mmap(NULL, pages * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) _exit(1);
    for (size_t p = 0; p < pages; p++) {
        memset(m + p * PAGE, (int)(p % 251) + 1, PAGE);   /* never a zero page */
        if ((p & 255) == 255) ML->filled_mib = (p + 1) / 256;
    }
    ML->filled_mib = mib;
    /* every 10 ms, rate*256/100 pages get one new word each: the whole page is dirty to migration */
    uint64_t per_100_ticks = rate * 256, owed = 0, stamp = 1;
    size_t p = 0;
    struct timespec next;
    clock_gettime(CLOCK_MONOTONIC, &next);
    for (;;) {
        owed += per_100_ticks;
        for (; owed >= 100; owed -= 100) {
            ((volatile uint64_t *)(m + p * PAGE))[stamp & 511] = stamp;
            stamp++;
            p = (p + 1) % pages;
            ML->dirtied_pages++;
        }
        next.tv_nsec += 10000000;
        if (next.tv_nsec >= 1000000000) { next.tv_sec++; next.tv_nsec -= 1000000000; }
        clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &next, NULL);
    }
}

static void memload_stop(void) {
    if (memload_pid > 0) {
        kill(memload_pid, SIGKILL);
        waitpid(memload_pid, NULL, 0);
    }
    memload_pid = 0;
    if (ML) ML->mib = ML->filled_mib = ML->rate = ML->dirtied_pages = 0;
}

static void do_memload(struct client *c, const char *arg, size_t len) {
    char buf[64];
    if (len >= sizeof buf) { reply(c, "ERR usage: MEMLOAD <MiB> [<MiB/s>]"); return; }
    memcpy(buf, arg, len);
    buf[len] = '\0';
    char *end;
    errno = 0;
    unsigned long long mib = strtoull(buf, &end, 10), rate = 32;
    if (end == buf || errno) { reply(c, "ERR usage: MEMLOAD <MiB> [<MiB/s>]"); return; }
    if (*end == ' ') {
        char *r = end + 1;
        rate = strtoull(r, &end, 10);
        if (end == r || errno) { reply(c, "ERR usage: MEMLOAD <MiB> [<MiB/s>]"); return; }
    }
    if (*end) { reply(c, "ERR usage: MEMLOAD <MiB> [<MiB/s>]"); return; }
    if (mib > MEMLOAD_MAX_MIB || rate > MEMLOAD_MAX_RATE) {
        reply(c, "ERR MEMLOAD takes at most %u MiB at %u MiB/s", MEMLOAD_MAX_MIB, MEMLOAD_MAX_RATE);
        return;
    }
    if (!ML) {
        ML = mmap(NULL, sizeof *ML, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        if (ML == MAP_FAILED) { ML = NULL; reply(c, "ERR mmap: %s", strerror(errno)); return; }
    }
    memload_stop();
    if (mib == 0) { reply(c, "OK memload 0 0"); return; }
    ML->mib = mib;
    ML->rate = rate;
    pid_t pid = fork();
    if (pid < 0) { reply(c, "ERR fork: %s", strerror(errno)); return; }
    if (pid == 0) memload_run(mib, rate);
    memload_pid = pid;
    logmsg("memload: %llu MiB, dirtied at %llu MiB/s (pid %d)", mib, rate, (int)pid);
    reply(c, "OK memload %llu %llu", mib, rate);
}

static void do_memstat(struct client *c) {
    if (memload_pid > 0 && waitpid(memload_pid, NULL, WNOHANG) == memload_pid) {
        logmsg("memload: the load process ended (out of memory?)");
        memload_pid = 0;
        memload_stop();
    }
    if (!ML) { reply(c, "MEMSTAT 0 0 0 0"); return; }
    reply(c, "MEMSTAT %llu %llu %llu %llu", (unsigned long long)ML->mib, (unsigned long long)ML->filled_mib,
          (unsigned long long)ML->rate, (unsigned long long)ML->dirtied_pages);
}

/* REBOOT/POWEROFF asked: done once this turn's replies are out (0: none, else a reboot(2) command). */
static int power_request;
static int power_allowed;   /* -P */

static void handle(struct client *c, char *line, size_t len) {
    if (len && line[len - 1] == '\r') len--;   /* tolerate CRLF clients */
    if (memchr(line, '\0', len)) { reply(c, "ERR NUL byte in request"); return; }
    if (len >= 7 && memcmp(line, "APPEND ", 7) == 0) {
        const char *err = NULL;
        if (len - 7 > MAX_TEXT) { reply(c, "ERR text longer than %d bytes", MAX_TEXT); return; }
        uint64_t seq = journal_append(line + 7, len - 7, &err);
        if (seq) reply(c, "OK %llu", (unsigned long long)seq);
        else reply(c, "ERR write failed: %s", err);
        return;
    }
    if (len == 6 && memcmp(line, "APPEND", 6) == 0) { reply(c, "ERR usage: APPEND <text>"); return; }
    if (len == 5 && memcmp(line, "COUNT", 5) == 0) {
        reply(c, "COUNT %llu", (unsigned long long)J.n);
        return;
    }
    if (len >= 3 && memcmp(line, "GET", 3) == 0 && (len == 3 || line[3] == ' ')) {
        uint64_t seq;
        if (len == 3 || !parse_seq(line + 4, len - 4, &seq)) {
            reply(c, "ERR usage: GET <seq> (a positive decimal number)");
            return;
        }
        do_get(c, seq);
        return;
    }
    if (len == 4 && memcmp(line, "INFO", 4) == 0) { do_info(c); return; }
    if (((len == 6 && memcmp(line, "REBOOT", 6) == 0) || (len == 8 && memcmp(line, "POWEROFF", 8) == 0))
            && !power_allowed) {
        reply(c, "ERR power requests are off (journal -P enables them)");
        return;
    }
    if (len == 7 && memcmp(line, "MEMSTAT", 7) == 0) { do_memstat(c); return; }
    if (len >= 7 && memcmp(line, "MEMLOAD", 7) == 0 && (len == 7 || line[7] == ' ')) {
        if (!power_allowed) { reply(c, "ERR MEMLOAD is off (journal -P enables it)"); return; }
        do_memload(c, len > 8 ? line + 8 : "", len > 8 ? len - 8 : 0);
        return;
    }
    if (len == 6 && memcmp(line, "REBOOT", 6) == 0) {
        reply(c, "OK rebooting");
        power_request = RB_AUTOBOOT;
        return;
    }
    if (len == 8 && memcmp(line, "POWEROFF", 8) == 0) {
        reply(c, "OK powering off");
        power_request = RB_POWER_OFF;
        return;
    }
    if (len == 0) { reply(c, "ERR empty request"); return; }
    reply(c, "ERR unknown request (APPEND <text>, COUNT, GET <seq>, INFO, REBOOT, POWEROFF, MEMLOAD, MEMSTAT)");
}

/* Handle complete lines in c->in while its replies do not pile up. */
static void process(struct client *c) {
    size_t start = 0;
    while (c->outlen - c->outoff < OUT_HIGH) {
        char *nl = memchr(c->in + start, '\n', c->inlen - start);
        if (!nl) break;
        size_t len = (size_t)(nl - (c->in + start));
        if (c->discarding) c->discarding = 0;   /* the end of an over-long line */
        else handle(c, c->in + start, len);
        start += len + 1;
    }
    if (start) {
        memmove(c->in, c->in + start, c->inlen - start);
        c->inlen -= start;
    }
    if (c->inlen == sizeof c->in && !memchr(c->in, '\n', c->inlen)) {
        /* over-long line: answer once, then drop bytes up to its '\n' */
        if (!c->discarding) reply(c, "ERR line longer than %d bytes", MAX_REQ);
        c->discarding = 1;
        c->inlen = 0;
    }
}

static int has_line(const struct client *c) {
    return memchr(c->in, '\n', c->inlen) != NULL;
}

static int flush_out(struct client *c) {
    while (c->outoff < c->outlen) {
        ssize_t w = send(c->fd, c->out + c->outoff, c->outlen - c->outoff, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
            return -1;
        }
        c->outoff += (size_t)w;
    }
    c->outoff = c->outlen = 0;
    return 0;
}

static void accept_clients(int lfd) {
    for (;;) {
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED) continue;
            return;   /* EAGAIN, or out of fds: try again at the next turn */
        }
        if (nclients == MAX_CLIENTS) {
            static const char busy[] = "ERR too many clients\n";
            ssize_t ignored = send(fd, busy, sizeof busy - 1, MSG_NOSIGNAL | MSG_DONTWAIT);
            (void)ignored;
            close(fd);
            continue;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        struct client *c = calloc(1, sizeof *c);
        if (!c) die("out of memory for a client");
        c->fd = fd;
        clients[nclients++] = c;
    }
}

static void usage(void) {
    fprintf(stderr, "usage: %s [-p PORT] [-a IPV4] [-f FILE] [-P]\n", prog);
    exit(2);
}

int main(int argc, char **argv) {
    const char *path = "/data/journal.log", *addr = "0.0.0.0";
    long port = 7777;
    int opt;
    while ((opt = getopt(argc, argv, "p:a:f:hP")) != -1) {
        char *end;
        switch (opt) {
        case 'p':
            port = strtol(optarg, &end, 10);
            if (*optarg == '\0' || *end || port < 0 || port > 65535) usage();
            break;
        case 'a': addr = optarg; break;
        case 'f': path = optarg; break;
        case 'P': power_allowed = 1; break;
        default: usage();
        }
    }
    if (optind != argc) usage();
    signal(SIGPIPE, SIG_IGN);
    crc_init();
    journal_open(path);

    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (lfd < 0) die("socket: %s", strerror(errno));
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (inet_pton(AF_INET, addr, &sa.sin_addr) != 1) die("bad IPv4 address %s", addr);
    if (bind(lfd, (struct sockaddr *)&sa, sizeof sa) < 0)
        die("bind %s:%ld: %s", addr, port, strerror(errno));
    if (listen(lfd, 64) < 0) die("listen: %s", strerror(errno));
    socklen_t sl = sizeof sa;
    getsockname(lfd, (struct sockaddr *)&sa, &sl);
    logmsg("listening on %s:%u, %s holds %llu records", addr, ntohs(sa.sin_port), path,
           (unsigned long long)J.n);

    struct pollfd pfd[MAX_CLIENTS + 1];
    for (;;) {
        /* 1. requests already received (also those held back while replies piled up) */
        for (int i = 0; i < nclients; i++) process(clients[i]);
        /* 2. group commit: every append of this turn is durable before any reply leaves */
        journal_sync();
        /* 3. replies out; drop dead clients and finished ones */
        for (int i = 0; i < nclients;) {
            struct client *c = clients[i];
            if (flush_out(c) < 0 || (c->eof && c->outlen == 0 && !has_line(c))) {
                client_close(i);
                continue;
            }
            i++;
        }
        if (power_request) {   /* every append is fsync'ed already; sync(2) for the file system too */
            logmsg("%s asked by a client", power_request == RB_AUTOBOOT ? "reboot" : "power off");
            sync();
            /* Let the reply leave the guest before the NIC is reset: reboot(2) does not wait for the
             * TX queue, so without this the client would not learn that its request was taken. */
            sleep(1);
            reboot(power_request);
            die("reboot(2): %s", strerror(errno));
        }
        /* 4. wait */
        int n = 0;
        pfd[n].fd = lfd;
        pfd[n].events = POLLIN;
        pfd[n].revents = 0;
        n++;
        for (int i = 0; i < nclients; i++) {
            struct client *c = clients[i];
            short ev = 0;
            if (!c->eof && c->outlen - c->outoff < OUT_HIGH && c->inlen < sizeof c->in)
                ev |= POLLIN;
            if (c->outlen > c->outoff) ev |= POLLOUT;
            pfd[n].fd = c->fd;
            pfd[n].events = ev;
            pfd[n].revents = 0;
            n++;
        }
        if (poll(pfd, (nfds_t)n, -1) < 0) {
            if (errno == EINTR) continue;
            die("poll: %s", strerror(errno));
        }
        /* 5. read what arrived; at most the free room of each client's line buffer */
        for (int i = nclients - 1; i >= 0; i--) {
            struct client *c = clients[i];
            short re = pfd[i + 1].revents;
            if (pfd[i + 1].fd != c->fd) continue;
            if (re & POLLNVAL) { client_close(i); continue; }
            if (!(re & (POLLIN | POLLERR | POLLHUP))) continue;
            if (c->eof) continue;
            size_t room = sizeof c->in - c->inlen;
            if (room == 0) continue;
            ssize_t r = recv(c->fd, c->in + c->inlen, room, 0);
            if (r < 0) {
                if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK) continue;
                client_close(i);
                continue;
            }
            if (r == 0) { c->eof = 1; continue; }
            c->inlen += (size_t)r;
        }
        if (pfd[0].revents & POLLIN) accept_clients(lfd);
    }
}
