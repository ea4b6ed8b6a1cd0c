/* floor_required: the anchors' floor (posix_spawn, one epoll loop, lines
 * tagged and written once per read) plus the least of the per-turn work that
 * codex-runner's protocol requires and the floor leaves out. It answers one
 * question: how close to the floor can any runner get that does that work?
 *
 *   floor_required FAKE_CODEX K      (output to stdout: run it into a pipe)
 *
 * Each part is on unless its variable is set to 0:
 *   REQ_HOME=1      a private home per turn: a kept directory (made once per
 *                   slot, as codex-runner keeps its homes), config.toml
 *                   written into it before the spawn and unlinked after the
 *                   exit, CODEX_HOME in the child's own environment
 *   REQ_STDERR=1    codex's stderr on a third pipe, watched and drained
 *   REQ_PGROUP=1    codex in a process group of its own, killed at its exit
 *                   (no descendant outlives its turn)
 *   REQ_VALIDATE=1  every line checked to be one JSON object before it is
 *                   forwarded (the scanner of codex-runner's src/events.rs,
 *                   SSE2 string scan included), and its `type` found
 *   REQ_END=1       an `end` line per turn
 *   REQ_CONTAIN=1   (x86-64) a cgroup per turn, as codex-runner contains
 *                   turns by default: one per slot, made and opened before
 *                   the first batch (codex-runner prefills a pool of them),
 *                   codex born in it (clone3 with CLONE_VM | CLONE_VFORK |
 *                   CLONE_INTO_CGROUP instead of posix_spawn) with a
 *                   parent-death signal, its cgroup.events read at the exit
 *                   to see that nothing of the turn is left. Off, with a
 *                   note, where no cgroup can be made here.
 * Left out, so that this stays a lower bound: request parsing, the real
 * config's rendering, per-turn timers, cancellation, what a turn learns
 * from its lines, the checks that a kept home is still as made.
 *
 * ROUNDS=R (>1): one uncounted batch, then R-1 counted. One JSON result line
 * on stderr, in the anchors' format. Build: gcc -O2 -o floor_required
 * floor_required.c
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <emmintrin.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

typedef struct {
    pid_t pid;
    int out, err, open_fds;
    double t0, tfirst, tlast;
    char *carry;
    size_t clen, ccap;
    char id[24];
    int idlen;
    int slot;
    int home;  /* directory fd of its home, or -1 */
    char home_var[96]; /* CODEX_HOME=... */
} Run;

static int req_home, req_stderr, req_pgroup, req_validate, req_end, req_contain;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}
static double cpu_self(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_stime.tv_sec + (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1e-6;
}
static void write_all(const char *p, size_t n) {
    while (n) {
        ssize_t w = write(1, p, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            perror("write");
            exit(1);
        }
        p += w;
        n -= (size_t)w;
    }
}
static int cmpd(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}
static double pct(double *v, int n, double q) {
    int i = (int)(q * n + 0.999999) - 1;
    return v[i < 0 ? 0 : i];
}

/* ---- one JSON value per line, as src/events.rs scans it ---------------- */

static size_t ws(const uint8_t *b, size_t n, size_t i) {
    while (i < n && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r')) i++;
    return i;
}
static size_t special(const uint8_t *b, size_t n, size_t i) {
    const __m128i quote = _mm_set1_epi8('"'), backslash = _mm_set1_epi8('\\');
    const __m128i flip = _mm_set1_epi8((char)0x80), below = _mm_set1_epi8((char)(0x20 ^ 0x80));
    while (i + 16 <= n) {
        __m128i x = _mm_loadu_si128((const __m128i *)(b + i));
        __m128i hits = _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(x, quote), _mm_cmpeq_epi8(x, backslash)),
                                    _mm_cmplt_epi8(_mm_xor_si128(x, flip), below));
        unsigned mask = (unsigned)_mm_movemask_epi8(hits);
        if (mask) return i + (size_t)__builtin_ctz(mask);
        i += 16;
    }
    while (i < n && b[i] != '"' && b[i] != '\\' && b[i] >= 0x20) i++;
    return i;
}
static int is_hex(uint8_t c) { return (c >= '0' && c <= '9') || ((c | 0x20) >= 'a' && (c | 0x20) <= 'f'); }
/* After the opening quote at i - 1: index after the closing quote, or 0. */
static size_t string(const uint8_t *b, size_t n, size_t i) {
    for (;;) {
        i = special(b, n, i);
        if (i >= n) return 0;
        if (b[i] == '"') return i + 1;
        if (b[i] != '\\' || i + 1 >= n) return 0;
        switch (b[i + 1]) {
        case '"': case '\\': case '/': case 'b': case 'f': case 'n': case 'r': case 't':
            i += 2;
            break;
        case 'u':
            if (i + 6 > n || !is_hex(b[i + 2]) || !is_hex(b[i + 3]) || !is_hex(b[i + 4]) || !is_hex(b[i + 5]))
                return 0;
            i += 6;
            break;
        default:
            return 0;
        }
    }
}
static size_t digits(const uint8_t *b, size_t n, size_t i) {
    size_t s = i;
    while (i < n && b[i] >= '0' && b[i] <= '9') i++;
    return i > s ? i : 0;
}
static size_t number(const uint8_t *b, size_t n, size_t i) {
    if (i < n && b[i] == '-') i++;
    if (i >= n) return 0;
    if (b[i] == '0') {
        i++;
        if (i < n && b[i] >= '0' && b[i] <= '9') return 0;
    } else if (b[i] >= '1' && b[i] <= '9') {
        i = digits(b, n, i);
    } else
        return 0;
    if (i < n && b[i] == '.' && !(i = digits(b, n, i + 1))) return 0;
    if (i < n && (b[i] == 'e' || b[i] == 'E')) {
        i++;
        if (i < n && (b[i] == '+' || b[i] == '-')) i++;
        if (!(i = digits(b, n, i))) return 0;
    }
    return i;
}
/* 1 if the line is one JSON object; its top-level "type" value in *kind. */
static int json_object(const uint8_t *b, size_t n, const uint8_t **kind, size_t *kind_len) {
    uint8_t stack[129];
    int depth = 0, is_type = 0;
    enum { VALUE, KEY, AFTER } step = VALUE;
    size_t i = ws(b, n, 0);
    if (i >= n || b[i] != '{') return 0;
    *kind = NULL;
    for (;;) {
        if (step == VALUE) {
            i = ws(b, n, i);
            int this_is_type = is_type;
            is_type = 0;
            if (i >= n) return 0;
            uint8_t c = b[i];
            if (c == '{' || c == '[') {
                if (++depth > 128) return 1; /* codex-runner parses it fully */
                stack[depth] = c;
                i = ws(b, n, i + 1);
                uint8_t close = c == '{' ? '}' : ']';
                if (i < n && b[i] == close) {
                    depth--;
                    i++;
                    step = AFTER;
                } else
                    step = c == '{' ? KEY : VALUE;
                continue;
            } else if (c == '"') {
                size_t end = string(b, n, i + 1);
                if (!end) return 0;
                if (this_is_type && !*kind) {
                    *kind = b + i + 1;
                    *kind_len = end - i - 2;
                }
                i = end;
            } else if (c == 't' && n - i >= 4 && !memcmp(b + i, "true", 4)) i += 4;
            else if (c == 'f' && n - i >= 5 && !memcmp(b + i, "false", 5)) i += 5;
            else if (c == 'n' && n - i >= 4 && !memcmp(b + i, "null", 4)) i += 4;
            else if (c == '-' || (c >= '0' && c <= '9')) {
                if (!(i = number(b, n, i))) return 0;
            } else
                return 0;
            step = AFTER;
        } else if (step == KEY) {
            if (i >= n || b[i] != '"') return 0;
            size_t end = string(b, n, i + 1);
            if (!end) return 0;
            if (depth == 1) is_type = end - i - 2 == 4 && !memcmp(b + i + 1, "type", 4);
            i = ws(b, n, end);
            if (i >= n || b[i] != ':') return 0;
            i++;
            step = VALUE;
        } else {
            i = ws(b, n, i);
            if (depth == 0) return i == n;
            if (i >= n) return 0;
            if (b[i] == ',') {
                i++;
                if (stack[depth] == '{') {
                    i = ws(b, n, i);
                    step = KEY;
                } else
                    step = VALUE;
            } else if ((stack[depth] == '{' && b[i] == '}') || (stack[depth] == '[' && b[i] == ']')) {
                depth--;
                i++;
            } else
                return 0;
        }
    }
}

/* ---- output -------------------------------------------------------------- */

static char *obuf;
static size_t olen, ocap;
static void out_append(const char *p, size_t n) {
    if (olen + n > ocap) {
        ocap = (olen + n) * 2;
        obuf = realloc(obuf, ocap);
    }
    memcpy(obuf + olen, p, n);
    olen += n;
}
static long forwarded, rejected;
static void tag_line(Run *r, const char *line, size_t n) {
    if (req_validate) {
        const uint8_t *kind;
        size_t kind_len;
        if (!json_object((const uint8_t *)line, n, &kind, &kind_len)) {
            rejected++;
            return;
        }
    }
    forwarded++;
    out_append("{\"type\":\"event\",\"id\":\"", 22);
    out_append(r->id, (size_t)r->idlen);
    out_append("\",\"event\":", 10);
    out_append(line, n);
    out_append("}\n", 2);
}

/* ---- turns --------------------------------------------------------------- */

static const char *fake;
static long events;
static double *lat, *ttfe;
static int nlat;
static char homes_root[64];
static const char config_toml[] =
    "model = \"mock-model\"\n"
    "model_provider = \"mock\"\n"
    "\n"
    "[model_providers.mock]\n"
    "name = \"mock\"\n"
    "base_url = \"http://127.0.0.1:9/v1\"\n"
    "wire_api = \"responses\"\n"
    "\n"
    "[mcp_servers.tools]\n"
    "url = \"http://127.0.0.1:9/mcp\"\n"
    "\n"
    "[mcp_servers.tools.http_headers]\n"
    "X-Run-Id = \"RUN-ID-PLACEHOLDER-XXXXXXXX\"\n";

/* The children's environment: ours without CODEX_HOME, and one slot that
 * each spawn points at its turn's CODEX_HOME (posix_spawn is done with it
 * when it returns). */
static char **child_env;
static size_t home_slot;
static void make_child_env(void) {
    size_t n = 0;
    while (environ[n]) n++;
    child_env = malloc((n + 2) * sizeof *child_env);
    for (size_t i = 0; i < n; i++)
        if (strncmp(environ[i], "CODEX_HOME=", 11)) child_env[home_slot++] = environ[i];
    child_env[home_slot + 1] = NULL;
}

/* ---- leftovers ----------------------------------------------------------- */

/* Removes <dir>/<prefix><pid> (and the directories in it, which is all a
 * home or a cgroup of ours holds once its turns are gone) for every pid that
 * is no longer running: what a run killed mid-way (say by SIGPIPE) left. A
 * cgroup outlives its process, so this matters there most. */
static void clean_stale(const char *dir, const char *prefix) {
    DIR *d = opendir(dir);
    struct dirent *e;
    size_t plen = strlen(prefix);
    while (d && (e = readdir(d))) {
        if (strncmp(e->d_name, prefix, plen)) continue;
        int pid = atoi(e->d_name + plen);
        if (pid <= 0 || kill(pid, 0) == 0 || errno != ESRCH) continue;
        char top[320], sub[600];
        snprintf(top, sizeof top, "%s/%s", dir, e->d_name);
        DIR *t = opendir(top);
        struct dirent *s;
        while (t && (s = readdir(t))) {
            if (s->d_name[0] < '0' || s->d_name[0] > '9') continue;
            snprintf(sub, sizeof sub, "%s/%s", top, s->d_name);
            snprintf(sub + strlen(sub), sizeof sub - strlen(sub), "/config.toml");
            unlink(sub);
            sub[strlen(sub) - strlen("/config.toml")] = 0;
            rmdir(sub);
        }
        if (t) closedir(t);
        rmdir(top);
    }
    if (d) closedir(d);
}

/* ---- containment: a cgroup per slot, codex born in it ------------------- */

static char cg_root[256];
static int *cg_dirs, *cg_events;

static void remove_cgroups(int k) {
    for (int i = 0; i < k; i++) {
        char path[320];
        snprintf(path, sizeof path, "%s/%d", cg_root, i);
        if (cg_dirs[i] >= 0) close(cg_dirs[i]);
        if (cg_events[i] >= 0) close(cg_events[i]);
        rmdir(path);
    }
    rmdir(cg_root);
}
/* <cgroup2 mount>/<our cgroup>/floor-req-<pid>/<slot>, each made and opened
 * before the first batch. 0 where cgroups cannot be used here. */
static int make_cgroups(int k) {
#if defined(__x86_64__)
    char line[512], mount[128] = "", own[96] = "";
    FILE *f = fopen("/proc/self/mountinfo", "r"); /* field 5 of the cgroup2 line */
    while (f && fgets(line, sizeof line, f)) {
        char *dash = strstr(line, " - cgroup2 "), *p = line;
        if (!dash) continue;
        for (int field = 0; field < 4 && p; field++) p = strchr(p, ' ') ? strchr(p, ' ') + 1 : NULL;
        if (p) snprintf(mount, sizeof mount, "%.*s", (int)strcspn(p, " "), p);
    }
    if (f) fclose(f);
    f = fopen("/proc/self/cgroup", "r");
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, "0::", 3)) snprintf(own, sizeof own, "%.*s", (int)strcspn(line + 3, "\n"), line + 3);
    if (f) fclose(f);
    if (!*mount || !*own) return 0;
    snprintf(cg_root, sizeof cg_root, "%s%s", mount, strcmp(own, "/") ? own : "");
    clean_stale(cg_root, "floor-req-");
    snprintf(cg_root + strlen(cg_root), sizeof cg_root - strlen(cg_root), "/floor-req-%d", (int)getpid());
    if (mkdir(cg_root, 0755)) return 0;
    cg_dirs = malloc(sizeof *cg_dirs * (size_t)k);
    cg_events = malloc(sizeof *cg_events * (size_t)k);
    for (int i = 0; i < k; i++) {
        char path[320];
        snprintf(path, sizeof path, "%s/%d", cg_root, i);
        cg_dirs[i] = cg_events[i] = -1;
        if (!mkdir(path, 0755)) {
            cg_dirs[i] = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
            snprintf(path, sizeof path, "%s/%d/cgroup.events", cg_root, i);
            cg_events[i] = open(path, O_RDONLY | O_CLOEXEC);
        }
        if (cg_dirs[i] < 0 || cg_events[i] < 0) {
            perror(path);
            remove_cgroups(i + 1);
            return 0;
        }
    }
    return 1;
#else
    (void)k;
    return 0;
#endif
}
/* Whether the slot's cgroup still holds a process. */
static int cg_populated(int i) {
    char b[128];
    ssize_t n = pread(cg_events[i], b, sizeof b - 1, 0);
    if (n <= 0) return 1;
    b[n] = 0;
    return strstr(b, "populated 1") != NULL;
}

struct child_args {
    int in, out, err;
    pid_t parent;
    char **argv, **envp;
};
/* Between clone and exec, on its own stack in our memory: syscalls only. */
static int child_main(void *p) {
    struct child_args *c = p;
    if (req_pgroup) setpgid(0, 0);
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != c->parent) return 127; /* we died before the prctl */
    dup2(c->in, 0);
    dup2(c->out, 1);
    if (c->err >= 0) dup2(c->err, 2);
    execve(fake, c->argv, c->envp);
    return 127;
}

#if defined(__x86_64__)
struct clone_args_v2 {
    uint64_t flags, pidfd, child_tid, parent_tid, exit_signal, stack, stack_size, tls, set_tid, set_tid_size,
        cgroup;
};
static char child_stack[64 * 1024] __attribute__((aligned(16)));
/* clone3(CLONE_VM | CLONE_VFORK | CLONE_INTO_CGROUP): returns once the child
 * has exec'd (or exited). The child's side is in assembly, as in libcs: a
 * raw syscall() would return into our frame on the new stack. */
static pid_t spawn_into(int cgroup, struct child_args *c) {
    struct clone_args_v2 ca = {
        .flags = CLONE_VM | CLONE_VFORK | 0x200000000ULL /* CLONE_INTO_CGROUP */,
        .exit_signal = SIGCHLD,
        .stack = (uint64_t)(uintptr_t)child_stack,
        .stack_size = sizeof child_stack,
        .cgroup = (uint64_t)cgroup,
    };
    long ret;
    register long entry __asm__("r12") = (long)(uintptr_t)child_main;
    register long arg __asm__("r13") = (long)(uintptr_t)c;
    __asm__ volatile("syscall\n\t"
                     "test %%rax, %%rax\n\t"
                     "jnz 1f\n\t"
                     "xor %%ebp, %%ebp\n\t"
                     "mov %%r13, %%rdi\n\t"
                     "call *%%r12\n\t"
                     "mov %%eax, %%edi\n\t"
                     "mov $60, %%eax\n\t"
                     "syscall\n\t"
                     "ud2\n"
                     "1:"
                     : "=a"(ret)
                     : "0"(435L), "D"(&ca), "S"(sizeof ca), "r"(entry), "r"(arg)
                     : "rcx", "r11", "memory");
    if (ret < 0) {
        errno = (int)-ret;
        perror("clone3");
        exit(1);
    }
    return (pid_t)ret;
}
#else
static pid_t spawn_into(int cgroup, struct child_args *c) {
    (void)cgroup;
    (void)c;
    abort();
}
#endif

/* A home per slot, made by the first turn in it and kept open. */
static int *home_fds;
static int home_dir(int i) {
    if (home_fds[i] < 0) {
        char home[128];
        snprintf(home, sizeof home, "%s/%d", homes_root, i);
        if (mkdir(home, 0700)) { perror("mkdir"); exit(1); }
        home_fds[i] = open(home, O_DIRECTORY | O_CLOEXEC);
    }
    return home_fds[i];
}

static void start(Run *r, int i, int ep) {
    char *cargv[] = {(char *)fake, "exec", "--experimental-json", "--skip-git-repo-check", NULL};
    static const char prompt[] = "say hello";
    r->idlen = snprintf(r->id, sizeof r->id, "run-%d", i);
    char **envp = environ;
    r->home = -1;
    if (req_home) {
        r->home = home_dir(i);
        int fd = openat(r->home, "config.toml", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (fd < 0) { perror("config.toml"); exit(1); }
        if (write(fd, config_toml, sizeof config_toml - 1) != (ssize_t)(sizeof config_toml - 1)) {
            perror("config.toml");
            exit(1);
        }
        close(fd);
        snprintf(r->home_var, sizeof r->home_var, "CODEX_HOME=%s/%d", homes_root, i);
        child_env[home_slot] = r->home_var;
        envp = child_env;
    }
    int in[2], out[2], err[2];
    if (pipe2(in, O_CLOEXEC) || pipe2(out, O_CLOEXEC)) { perror("pipe"); exit(1); }
    if (req_stderr && pipe2(err, O_CLOEXEC)) { perror("pipe"); exit(1); }
    /* The prompt fits the pipe: written before the spawn, as codex-runner does. */
    if (write(in[1], prompt, sizeof prompt - 1) < 0) perror("write prompt");
    close(in[1]);
    r->slot = i;
    if (req_contain) {
        struct child_args c = {in[0], out[1], req_stderr ? err[1] : -1, getpid(), cargv, envp};
        r->t0 = now();
        r->pid = spawn_into(cg_dirs[i], &c);
    } else {
        posix_spawn_file_actions_t fa;
        posix_spawn_file_actions_init(&fa);
        posix_spawn_file_actions_adddup2(&fa, in[0], 0);
        posix_spawn_file_actions_adddup2(&fa, out[1], 1);
        if (req_stderr) posix_spawn_file_actions_adddup2(&fa, err[1], 2);
        posix_spawnattr_t at;
        posix_spawnattr_init(&at);
        if (req_pgroup) {
            posix_spawnattr_setflags(&at, POSIX_SPAWN_SETPGROUP);
            posix_spawnattr_setpgroup(&at, 0);
        }
        r->t0 = now();
        if (posix_spawn(&r->pid, fake, &fa, &at, cargv, envp)) { perror("posix_spawn"); exit(1); }
        posix_spawn_file_actions_destroy(&fa);
        posix_spawnattr_destroy(&at);
    }
    close(in[0]);
    close(out[1]);
    r->out = out[0];
    fcntl(r->out, F_SETFL, O_NONBLOCK);
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = (uint64_t)i << 1};
    epoll_ctl(ep, EPOLL_CTL_ADD, r->out, &ev);
    r->open_fds = 1;
    r->err = -1;
    if (req_stderr) {
        close(err[1]);
        r->err = err[0];
        fcntl(r->err, F_SETFL, O_NONBLOCK);
        ev.data.u64 = (uint64_t)i << 1 | 1;
        epoll_ctl(ep, EPOLL_CTL_ADD, r->err, &ev);
        r->open_fds = 2;
    }
}

/* Both pipes at EOF: reap, kill what is left of its group, empty its home. */
static void finish(Run *r) {
    int st;
    waitpid(r->pid, &st, 0);
    if (!WIFEXITED(st) || WEXITSTATUS(st)) fprintf(stderr, "child failed\n");
    if (req_contain && cg_populated(r->slot)) fprintf(stderr, "a turn left a process behind\n");
    if (req_pgroup) kill(-r->pid, SIGKILL);
    if (req_home) {
        unlinkat(r->home, "config.toml", 0);
    }
    if (req_end) {
        out_append("{\"type\":\"end\",\"id\":\"", 20);
        out_append(r->id, (size_t)r->idlen);
        out_append("\",\"status\":\"ok\"}\n", 17);
    }
}

/* Appends to the turn's partial line. */
static void carry(Run *r, const char *p, size_t m) {
    if (r->clen + m > r->ccap) {
        r->ccap = (r->clen + m) * 2;
        r->carry = realloc(r->carry, r->ccap);
    }
    memcpy(r->carry + r->clen, p, m);
    r->clen += m;
}

static void batch(int k, int count) {
    Run *runs = calloc((size_t)k, sizeof *runs);
    int ep = epoll_create1(EPOLL_CLOEXEC);
    for (int i = 0; i < k; i++) start(&runs[i], i, ep);

    static char buf[1 << 16];
    struct epoll_event evs[64];
    for (int live = k; live > 0;) {
        int n = epoll_wait(ep, evs, 64, -1);
        if (n < 0) {
            if (errno == EINTR) continue;
            perror("epoll_wait");
            exit(1);
        }
        for (int e = 0; e < n; e++) {
            Run *r = &runs[evs[e].data.u64 >> 1];
            int is_err = evs[e].data.u64 & 1;
            int fd = is_err ? r->err : r->out;
            for (;;) {
                ssize_t got = read(fd, buf, sizeof buf);
                if (got < 0) {
                    if (errno == EINTR) continue;
                    break; /* EAGAIN */
                }
                if (got == 0) {
                    epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL);
                    close(fd);
                    if (--r->open_fds == 0) {
                        finish(r);
                        live--;
                    }
                    break;
                }
                if (is_err) continue; /* codex-runner would tag these as diag lines */
                double t = now();
                if (r->tfirst == 0) r->tfirst = t;
                r->tlast = t;
                const char *p = buf, *end = buf + got, *nl;
                while ((nl = memchr(p, '\n', (size_t)(end - p)))) {
                    if (count) events++;
                    if (r->clen) { /* finish the line the last read began */
                        carry(r, p, (size_t)(nl - p));
                        tag_line(r, r->carry, r->clen);
                        r->clen = 0;
                    } else
                        tag_line(r, p, (size_t)(nl - p));
                    p = nl + 1;
                }
                if (p < end) carry(r, p, (size_t)(end - p));
            }
            write_all(obuf, olen);
            olen = 0;
        }
    }
    for (int i = 0; i < k; i++) {
        if (count) {
            lat[nlat] = runs[i].tlast - runs[0].t0;
            ttfe[nlat++] = runs[i].tfirst - runs[0].t0;
        }
        free(runs[i].carry);
    }
    free(runs);
    close(ep);
}

static int on(const char *name) {
    const char *v = getenv(name);
    return !v || strcmp(v, "0") != 0;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s FAKE_CODEX K\n", argv[0]);
        return 2;
    }
    fake = argv[1];
    int k = atoi(argv[2]);
    req_home = on("REQ_HOME");
    req_stderr = on("REQ_STDERR");
    req_pgroup = on("REQ_PGROUP");
    req_validate = on("REQ_VALIDATE");
    req_end = on("REQ_END");
    struct rlimit nofile; /* K homes, cgroups and pipes: more than 1024 at K=1000 */
    if (!getrlimit(RLIMIT_NOFILE, &nofile)) {
        nofile.rlim_cur = nofile.rlim_max;
        setrlimit(RLIMIT_NOFILE, &nofile);
    }
    req_contain = on("REQ_CONTAIN") && make_cgroups(k);
    if (on("REQ_CONTAIN") && !req_contain) fprintf(stderr, "floor_required: no cgroup here; REQ_CONTAIN is off\n");
    const char *rv = getenv("ROUNDS");
    int rounds = rv && *rv ? atoi(rv) : 1, counted = rounds > 1 ? rounds - 1 : 1;
    lat = malloc(sizeof(double) * (size_t)k * (size_t)counted);
    ttfe = malloc(sizeof(double) * (size_t)k * (size_t)counted);
    if (req_home) {
        const char *base = getenv("REQ_HOMES");
        clean_stale(base ? base : "/dev/shm", "floor-required-");
        snprintf(homes_root, sizeof homes_root, "%s/floor-required-%d", base ? base : "/dev/shm", (int)getpid());
        if (mkdir(homes_root, 0700)) {
            perror(homes_root);
            return 1;
        }
        home_fds = malloc(sizeof *home_fds * (size_t)k);
        for (int i = 0; i < k; i++) home_fds[i] = -1;
        make_child_env();
    }

    if (rounds > 1) batch(k, 0);
    double c0 = cpu_self(), t0 = now();
    for (int r = 0; r < counted; r++) batch(k, 1);
    double wall = now() - t0, cpu = cpu_self() - c0;

    if (req_home) { /* the kept homes, made by the first batch */
        char home[128];
        for (int i = 0; i < k; i++) {
            snprintf(home, sizeof home, "%s/%d", homes_root, i);
            close(home_fds[i]);
            rmdir(home);
        }
        rmdir(homes_root);
    }
    if (req_contain) remove_cgroups(k);
    if (rejected) fprintf(stderr, "%ld lines were not JSON objects\n", rejected);
    qsort(lat, (size_t)nlat, sizeof *lat, cmpd);
    qsort(ttfe, (size_t)nlat, sizeof *ttfe, cmpd);
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    const char *ne = getenv("FAKE_EVENTS"), *np = getenv("FAKE_PAYLOAD"), *nd = getenv("FAKE_DELAY_US");
    fprintf(stderr,
            "{\"anchor\":\"floor-req\",\"k\":%d,\"rounds\":%d,\"n\":%s,\"p\":%s,\"delay_us\":%s,"
            "\"events\":%ld,\"wall_s\":%.4f,\"turns_per_s\":%.1f,\"events_per_s\":%.0f,\"lat_p50_ms\":%.3f,"
            "\"lat_p99_ms\":%.3f,\"ttfe_p50_ms\":%.3f,\"cpu_s\":%.4f,\"rss_mb\":%.1f,"
            "\"req\":\"home=%d stderr=%d pgroup=%d validate=%d end=%d contain=%d\"}\n",
            k, rounds, ne ? ne : "10", np ? np : "64", nd ? nd : "0", events, wall, nlat / wall, events / wall,
            pct(lat, nlat, .5) * 1e3, pct(lat, nlat, .99) * 1e3, pct(ttfe, nlat, .5) * 1e3, cpu,
            ru.ru_maxrss / 1024.0, req_home, req_stderr, req_pgroup, req_validate, req_end, req_contain);
    return 0;
}
