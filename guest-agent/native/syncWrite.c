/*
 * sandboxvm-sync-write: the guest end of a sync's bulk copy (a first sync, or a catch-up with many
 * files), beside the Node receiver (guest-agent/src/syncReceiver.ts), which keeps the manifest,
 * removals, links and the changes that follow. Usage: sandboxvm-sync-write <folder> [writers].
 *
 * Stdin carries records of runtime/sync/wire.ts, of three kinds only:
 *   {op:'dir', path, mode}                     made (with its parents) if missing, mode set
 *   {op:'file', path, size, mode, mtimeMs}+bytes  written as the Node receiver writes it
 *   {op:'flush', seq}                          answered {"t":"ack","seq":N} once all before it is applied
 * Stdout: ack lines, and {"t":"fail","path":P,"message":M} for a record that could not be applied.
 * A malformed record or any other op is one line on stderr and exit code 2.
 *
 * Why C and threads: under TCG each syscall of a small file (open, write, futimens, close, and
 * mkdir) is emulated kernel code; a Node receiver adds ~3 s of its own to a 5,000-file tree and
 * one writer keeps one vCPU busy. Here the main thread parses records and hands each complete
 * small file to one of `writers` threads (default: one per vCPU, at most 4; none with one vCPU,
 * where the main thread writes everything itself) (QEMU's MTTCG runs each vCPU on a host thread); files
 * above INLINE_BYTES are written by the main thread as they stream in, so memory stays bounded
 * (QUEUE_BYTES of queued bodies at most).
 *
 * The promises are the Node receiver's: a file that exists is replaced atomically (a temporary
 * beside it, `.<name>.sandboxvm-<pid>-<n>.partial`, renamed over it); a new file is created at its
 * name with O_EXCL|O_NOFOLLOW and written in place; mode, then mtime (futimens on the open fd) are
 * set last, so a file cut off by a crash differs from the host's and the next comparison rewrites
 * it; a file cut off by the end of stdin is removed. Paths are checked as isRelPath does (relative,
 * no empty, `.` or `..` component) and never leave the folder. A flush is acknowledged once
 * every record before it is applied (the pipeline does not stop for it), so failures are
 * reported before the ack that covers them; two records for one path between
 * flushes are applied in order (the second waits for the writers).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#define MAX_HEADER (4u * 1024 * 1024)
#define MAX_REL 4096
#define MAX_COMPONENT 255
#define MAX_WRITERS 16
/** Files up to this size are queued whole to a writer thread; larger ones are written inline. */
#define INLINE_BYTES (4u * 1024 * 1024)
/** Queued file bodies wait in memory up to this many bytes. */
#define QUEUE_BYTES (32u * 1024 * 1024)
#define QUEUE_JOBS 4096
#define READ_BYTES (256 * 1024)

static const char *root;
static size_t root_len;
static mode_t umask_now;
static pid_t self_pid;

static void fatal(const char *fmt, ...) {
  char buf[1024];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(buf, sizeof buf - 1, fmt, ap);
  va_end(ap);
  if (n < 0) n = 0;
  if (n > (int)sizeof buf - 2) n = sizeof buf - 2;
  buf[n++] = '\n';
  if (write(2, buf, n) < 0) _exit(2);
  _exit(2);
}

/* ---- output: whole lines, one writer at a time */

static pthread_mutex_t out_lock = PTHREAD_MUTEX_INITIALIZER;

static void write_all(int fd, const char *p, size_t n) {
  while (n > 0) {
    ssize_t w = write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) {
        struct pollfd pfd = {.fd = fd, .events = POLLOUT};
        poll(&pfd, 1, -1);
        continue;
      }
      _exit(3); /* the host end is gone */
    }
    p += w;
    n -= (size_t)w;
  }
}

/** Appends `s` as a JSON string (quotes included). */
static size_t json_string(char *out, size_t cap, const char *s) {
  size_t o = 0;
  if (o < cap) out[o++] = '"';
  for (const unsigned char *p = (const unsigned char *)s; *p && o + 8 < cap; p++) {
    if (*p == '"' || *p == '\\') {
      out[o++] = '\\';
      out[o++] = (char)*p;
    } else if (*p < 0x20 || *p == 0x7f) {
      o += (size_t)snprintf(out + o, cap - o, "\\u%04x", *p);
    } else {
      out[o++] = (char)*p;
    }
  }
  if (o < cap) out[o++] = '"';
  return o;
}

static void report_fail(const char *rel, const char *message) {
  char line[3 * MAX_REL * 2 + 1024];
  size_t o = 0;
  o += (size_t)snprintf(line + o, sizeof line - o, "{\"t\":\"fail\",\"path\":");
  o += json_string(line + o, sizeof line - o - 64, rel);
  o += (size_t)snprintf(line + o, sizeof line - o, ",\"message\":");
  o += json_string(line + o, sizeof line - o - 4, message);
  line[o++] = '}';
  line[o++] = '\n';
  pthread_mutex_lock(&out_lock);
  write_all(1, line, o);
  pthread_mutex_unlock(&out_lock);
}

/** As describeFsError (guest-agent/src/fileTarget.ts) says it, so both writers read alike. */
static const char *describe_errno(int err) {
  switch (err) {
    case ENOENT: return "no such file or directory";
    case EACCES: return "permission denied";
    case EPERM: return "operation not permitted";
    case ENOSPC: return "no space left on the guest disk";
    case EDQUOT: return "disk quota exceeded";
    case EROFS: return "read-only file system";
    case EISDIR: return "is a directory";
    case ENOTDIR: return "a component of the path is not a directory";
    case ENAMETOOLONG: return "the name is too long";
    case EEXIST: return "already exists";
    case EXDEV: return "crosses file systems";
    case EIO: return "input/output error";
    case ELOOP: return "too many levels of symbolic links";
    default: return strerror(err);
  }
}

static void report_errno(const char *rel, int err) {
  report_fail(rel, describe_errno(err));
}

/* ---- directories known to exist (made or seen here); forgotten whenever anything is removed */

#define DIR_SLOTS 65536
static uint64_t dir_hashes[DIR_SLOTS];
static size_t dir_count;
static pthread_mutex_t dir_lock = PTHREAD_MUTEX_INITIALIZER;

static uint64_t hash_bytes(const char *p, size_t n) {
  uint64_t h = 1469598103934665603ull;
  for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)p[i]) * 1099511628211ull;
  return h | 1; /* 0 marks an empty slot */
}

static bool dir_known(uint64_t h) {
  pthread_mutex_lock(&dir_lock);
  bool found = false;
  for (size_t i = h % DIR_SLOTS; dir_hashes[i]; i = (i + 1) % DIR_SLOTS)
    if (dir_hashes[i] == h) {
      found = true;
      break;
    }
  pthread_mutex_unlock(&dir_lock);
  return found;
}

static void dir_add(uint64_t h) {
  pthread_mutex_lock(&dir_lock);
  if (dir_count > DIR_SLOTS / 2) {
    memset(dir_hashes, 0, sizeof dir_hashes);
    dir_count = 0;
  }
  size_t i = h % DIR_SLOTS;
  while (dir_hashes[i] && dir_hashes[i] != h) i = (i + 1) % DIR_SLOTS;
  if (!dir_hashes[i]) dir_count++;
  dir_hashes[i] = h;
  pthread_mutex_unlock(&dir_lock);
}

static void dir_forget_all(void) {
  pthread_mutex_lock(&dir_lock);
  memset(dir_hashes, 0, sizeof dir_hashes);
  dir_count = 0;
  pthread_mutex_unlock(&dir_lock);
}

static int rm_one(const char *p, const struct stat *st, int type, struct FTW *ftw) {
  (void)st;
  (void)ftw;
  if (type == FTW_DP) rmdir(p);
  else unlink(p);
  return 0;
}

/** Removes `full` whatever it is (recursively, never following links). */
static void clear_path(const char *full) {
  if (unlink(full) != 0 && (errno == EISDIR || errno == EPERM)) nftw(full, rm_one, 16, FTW_DEPTH | FTW_PHYS);
  dir_forget_all();
}

/** mkdir -p with the default mode (0777 less the umask), as Node's recursive mkdir. */
static int make_dirs(char *full) {
  if (mkdir(full, 0777) == 0 || errno == EEXIST) return 0;
  if (errno != ENOENT) return -1;
  char *slash = strrchr(full, '/');
  if (!slash || slash == full) return -1;
  *slash = 0;
  int r = make_dirs(full);
  *slash = '/';
  if (r != 0) return -1;
  return mkdir(full, 0777) == 0 || errno == EEXIST ? 0 : -1;
}

/** The parent of `full` exists as a directory (something else in its place is removed). */
static int ensure_parent(char *full) {
  char *slash = strrchr(full, '/');
  if (!slash || (size_t)(slash - full) <= root_len) return 0;
  uint64_t h = hash_bytes(full, (size_t)(slash - full));
  if (dir_known(h)) return 0;
  *slash = 0;
  struct stat st;
  int r = 0;
  if (lstat(full, &st) == 0) {
    if (!S_ISDIR(st.st_mode)) {
      unlink(full);
      r = make_dirs(full);
    }
  } else {
    r = make_dirs(full);
  }
  *slash = '/';
  if (r == 0) dir_add(h);
  return r;
}

/* ---- records */

enum op { OP_NONE, OP_DIR, OP_FILE, OP_FLUSH };

struct record {
  enum op op;
  char path[3 * MAX_REL + 1];
  bool has_path, has_size, has_mode, has_mtime, has_seq;
  int64_t size, mode, mtime_ms, seq;
};

/** isRelPath's rules on the decoded bytes. */
static bool rel_ok(const char *p) {
  size_t n = strlen(p);
  if (n == 0 || n > 3 * MAX_REL) return false;
  const char *s = p;
  for (;;) {
    const char *e = strchr(s, '/');
    size_t len = e ? (size_t)(e - s) : strlen(s);
    if (len == 0 || len > 3 * MAX_COMPONENT) return false;
    if (len == 1 && s[0] == '.') return false;
    if (len == 2 && s[0] == '.' && s[1] == '.') return false;
    if (!e) return true;
    s = e + 1;
  }
}

static void put_utf8(char **o, char *end, uint32_t c) {
  char *p = *o;
  if (c < 0x80 && p < end) *p++ = (char)c;
  else if (c < 0x800 && p + 1 < end) {
    *p++ = (char)(0xc0 | (c >> 6));
    *p++ = (char)(0x80 | (c & 0x3f));
  } else if (c < 0x10000 && p + 2 < end) {
    *p++ = (char)(0xe0 | (c >> 12));
    *p++ = (char)(0x80 | ((c >> 6) & 0x3f));
    *p++ = (char)(0x80 | (c & 0x3f));
  } else if (p + 3 < end) {
    *p++ = (char)(0xf0 | (c >> 18));
    *p++ = (char)(0x80 | ((c >> 12) & 0x3f));
    *p++ = (char)(0x80 | ((c >> 6) & 0x3f));
    *p++ = (char)(0x80 | (c & 0x3f));
  }
  *o = p;
}

static int hex4(const char *s, const char *end, uint32_t *v) {
  if (end - s < 4) return -1;
  *v = 0;
  for (int i = 0; i < 4; i++) {
    char c = s[i];
    *v <<= 4;
    if (c >= '0' && c <= '9') *v |= (uint32_t)(c - '0');
    else if (c >= 'a' && c <= 'f') *v |= (uint32_t)(c - 'a' + 10);
    else if (c >= 'A' && c <= 'F') *v |= (uint32_t)(c - 'A' + 10);
    else return -1;
  }
  return 0;
}

/** A JSON string at *s (after its opening quote) into out; NUL in it is refused. */
static int parse_string(const char **s, const char *end, char *out, size_t cap) {
  const char *p = *s;
  char *o = out, *oend = out + cap - 1;
  while (p < end && *p != '"') {
    if (o >= oend) return -1;
    if (*p != '\\') {
      *o++ = *p++;
      continue;
    }
    if (++p >= end) return -1;
    char c = *p++;
    switch (c) {
      case '"': case '\\': case '/': *o++ = c; break;
      case 'b': *o++ = '\b'; break;
      case 'f': *o++ = '\f'; break;
      case 'n': *o++ = '\n'; break;
      case 'r': *o++ = '\r'; break;
      case 't': *o++ = '\t'; break;
      case 'u': {
        uint32_t u;
        if (hex4(p, end, &u) != 0) return -1;
        p += 4;
        if (u >= 0xd800 && u < 0xdc00 && end - p >= 6 && p[0] == '\\' && p[1] == 'u') {
          uint32_t lo;
          if (hex4(p + 2, end, &lo) == 0 && lo >= 0xdc00 && lo < 0xe000) {
            u = 0x10000 + ((u - 0xd800) << 10) + (lo - 0xdc00);
            p += 6;
          }
        }
        if (u == 0) return -1;
        put_utf8(&o, oend, u);
        break;
      }
      default: return -1;
    }
  }
  if (p >= end) return -1;
  *o = 0;
  *s = p + 1;
  return 0;
}

static int parse_int(const char **s, const char *end, int64_t *v) {
  const char *p = *s;
  bool neg = false;
  if (p < end && *p == '-') {
    neg = true;
    p++;
  }
  if (p >= end || *p < '0' || *p > '9') return -1;
  int64_t n = 0;
  while (p < end && *p >= '0' && *p <= '9') {
    if (n > (INT64_MAX - 9) / 10) return -1;
    n = n * 10 + (*p++ - '0');
  }
  if (p < end && (*p == '.' || *p == 'e' || *p == 'E')) return -1;
  *v = neg ? -n : n;
  *s = p;
  return 0;
}

/** A flat JSON object of string and integer values, as JSON.stringify writes a record. */
static int parse_record(const char *s, const char *end, struct record *r) {
  r->op = OP_NONE;
  r->size = r->mode = r->mtime_ms = r->seq = 0;
  r->has_path = r->has_size = r->has_mode = r->has_mtime = r->has_seq = false;
  char key[16], val[16];
  if (s >= end || *s++ != '{') return -1;
  if (s < end && *s == '}') return -1;
  for (;;) {
    if (s >= end || *s++ != '"') return -1;
    if (parse_string(&s, end, key, sizeof key) != 0) return -1;
    if (s >= end || *s++ != ':') return -1;
    if (s < end && *s == '"') {
      s++;
      if (strcmp(key, "op") == 0) {
        if (parse_string(&s, end, val, sizeof val) != 0) return -1;
        r->op = strcmp(val, "dir") == 0 ? OP_DIR : strcmp(val, "file") == 0 ? OP_FILE : strcmp(val, "flush") == 0 ? OP_FLUSH : OP_NONE;
        if (r->op == OP_NONE) return -2;
      } else if (strcmp(key, "path") == 0) {
        if (parse_string(&s, end, r->path, sizeof r->path) != 0) return -1;
        r->has_path = true;
      } else {
        return -1;
      }
    } else {
      int64_t v;
      if (parse_int(&s, end, &v) != 0) return -1;
      if (strcmp(key, "size") == 0) r->size = v, r->has_size = true;
      else if (strcmp(key, "mode") == 0) r->mode = v, r->has_mode = true;
      else if (strcmp(key, "mtimeMs") == 0) r->mtime_ms = v, r->has_mtime = true;
      else if (strcmp(key, "seq") == 0) r->seq = v, r->has_seq = true;
      else return -1;
    }
    if (s >= end) return -1;
    if (*s == '}') return s + 1 == end ? 0 : -1;
    if (*s++ != ',') return -1;
  }
}

/* ---- one file */

struct target {
  int fd;
  bool temporary; /* bytes go to `tmp`, renamed over `full` when complete */
  bool failed;
  char full[PATH_MAX];
  char tmp[PATH_MAX];
  const char *rel;
};

static int full_path(char *out, const char *rel) {
  int n = snprintf(out, PATH_MAX, "%s/%s", root, rel);
  return n > 0 && n < PATH_MAX ? 0 : -1;
}

static int open_at(struct target *t, int mode, int writer) {
  const int flags = O_WRONLY | O_CREAT | O_NOFOLLOW | O_CLOEXEC;
  t->temporary = false;
  t->fd = open(t->full, flags | O_EXCL, mode & 0777);
  if (t->fd >= 0 || errno != EEXIST) return t->fd;
  /* Something is there (a file to replace atomically, a link, a directory): a temporary. */
  char *slash = strrchr(t->full, '/');
  char base[201];
  snprintf(base, sizeof base, "%s", slash + 1);
  int n = snprintf(t->tmp, PATH_MAX, "%.*s/.%s.sandboxvm-%d-%d.partial", (int)(slash - t->full), t->full, base, (int)self_pid, writer + 1);
  if (n <= 0 || n >= PATH_MAX) {
    errno = ENAMETOOLONG;
    return -1;
  }
  t->temporary = true;
  t->fd = open(t->tmp, flags | O_TRUNC, mode & 0777);
  return t->fd;
}

/** Opens the file a record names; false (reported) when it cannot be. */
static bool file_open(struct target *t, const char *rel, int mode, int writer) {
  t->rel = rel;
  t->failed = false;
  t->fd = -1;
  if (full_path(t->full, rel) != 0) {
    report_fail(rel, "the path is too long");
    return false;
  }
  if (ensure_parent(t->full) != 0) {
    report_errno(rel, errno);
    return false;
  }
  if (open_at(t, mode, writer) < 0 && errno == ENOENT) {
    /* Its folder went away behind our back (removed in the guest): made again. */
    dir_forget_all();
    if (ensure_parent(t->full) == 0) open_at(t, mode, writer);
  }
  if (t->fd < 0) {
    report_errno(rel, errno);
    return false;
  }
  return true;
}

static void file_write(struct target *t, const char *p, size_t n) {
  if (t->failed || t->fd < 0) return;
  while (n > 0) {
    ssize_t w = write(t->fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      t->failed = true;
      report_errno(t->rel, errno);
      return;
    }
    p += w;
    n -= (size_t)w;
  }
}

/** Drops a file in progress (the bytes never arrived whole, or it failed). */
static void file_drop(struct target *t) {
  if (t->fd >= 0) close(t->fd);
  t->fd = -1;
  unlink(t->temporary ? t->tmp : t->full);
}

static void file_finish(struct target *t, int mode, int64_t mtime_ms) {
  if (t->fd < 0) return;
  if (t->failed) return file_drop(t);
  int err = 0;
  if (((mode_t)mode & ~umask_now) != (mode_t)mode && fchmod(t->fd, (mode_t)mode) != 0) err = errno;
  /* Half a millisecond in: the guest's nanoseconds floor to the host's whole milliseconds. */
  int64_t sec = mtime_ms >= 0 ? mtime_ms / 1000 : -((-mtime_ms + 999) / 1000);
  int64_t ms = mtime_ms - sec * 1000;
  struct timespec ts[2] = {{.tv_sec = sec, .tv_nsec = ms * 1000000 + 500000}, {.tv_sec = sec, .tv_nsec = ms * 1000000 + 500000}};
  if (!err && futimens(t->fd, ts) != 0) err = errno;
  if (!err && close(t->fd) != 0) err = errno;
  else if (err) close(t->fd);
  t->fd = -1;
  if (!err && t->temporary && rename(t->tmp, t->full) != 0) {
    /* A directory where the file goes (rename cannot replace it): removed, then once more. */
    if (errno == EISDIR || errno == ENOTEMPTY || errno == EEXIST) {
      clear_path(t->full);
      if (rename(t->tmp, t->full) != 0) err = errno;
    } else {
      err = errno;
    }
  }
  if (err) {
    unlink(t->temporary ? t->tmp : t->full);
    report_errno(t->rel, err);
  }
}

/* ---- directories */

static void apply_dir(const char *rel, int mode) {
  char full[PATH_MAX];
  mode &= 07777;
  if (full_path(full, rel) != 0) return report_fail(rel, "the path is too long");
  if (mkdir(full, (mode_t)mode) == 0) {
    if (((mode_t)mode & ~umask_now) != (mode_t)mode) chmod(full, (mode_t)mode);
    dir_add(hash_bytes(full, strlen(full)));
    return;
  }
  int made = errno;
  struct stat st;
  bool exists = lstat(full, &st) == 0;
  bool is_dir = exists && S_ISDIR(st.st_mode);
  if (exists && !is_dir) clear_path(full);
  if (!is_dir && made != EEXIST && ensure_parent(full) != 0) return report_errno(rel, errno);
  if (!is_dir && mkdir(full, (mode_t)mode) != 0 && errno != EEXIST) return report_errno(rel, errno);
  if ((!is_dir || (st.st_mode & 07777) != (mode_t)mode) && chmod(full, (mode_t)mode) != 0) return report_errno(rel, errno);
  dir_add(hash_bytes(full, strlen(full)));
}

/* ---- writer threads */

struct job {
  /** The flush epoch it belongs to (acks wait for every job of their epoch and those before). */
  size_t epoch;
  char *rel;
  int mode;
  int64_t mtime_ms;
  char *body;
  size_t size;
};

static struct job queue[QUEUE_JOBS];
static size_t q_head, q_len, q_bytes, busy;
static pthread_mutex_t q_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t q_ready = PTHREAD_COND_INITIALIZER, q_space = PTHREAD_COND_INITIALIZER, q_idle = PTHREAD_COND_INITIALIZER;

static void run_job(struct job *j, int writer) {
  struct target t;
  if (file_open(&t, j->rel, j->mode, writer)) {
    file_write(&t, j->body, j->size);
    file_finish(&t, j->mode & 07777, j->mtime_ms);
  }
  free(j->rel);
  free(j->body);
}

/*
 * Flushes do not stop the pipeline: the records between two flushes form an epoch, and a flush's
 * ack is written once every job of its epoch and of all earlier ones is done (by whichever
 * thread finishes last). Epochs live in a ring; the main thread waits only when it is full.
 */
#define EPOCHS 256
static struct {
  size_t pending;
  bool closed;
  int64_t seq;
} epochs[EPOCHS];
/** Guarded by q_lock: the oldest epoch not acknowledged yet, and the one records go to now. */
static size_t epoch_oldest, epoch_now;

static void write_ack(int64_t seq) {
  char line[64];
  int n = snprintf(line, sizeof line, "{\"t\":\"ack\",\"seq\":%lld}\n", (long long)seq);
  pthread_mutex_lock(&out_lock);
  write_all(1, line, (size_t)n);
  pthread_mutex_unlock(&out_lock);
}

/** Acknowledges the finished epochs in order (q_lock held). */
static void ack_done_epochs(void) {
  while (epoch_oldest < epoch_now && epochs[epoch_oldest % EPOCHS].closed && epochs[epoch_oldest % EPOCHS].pending == 0) {
    write_ack(epochs[epoch_oldest % EPOCHS].seq);
    epochs[epoch_oldest % EPOCHS].closed = false;
    epoch_oldest++;
  }
}

static void *writer_main(void *arg) {
  int writer = (int)(intptr_t)arg;
  pthread_mutex_lock(&q_lock);
  for (;;) {
    while (q_len == 0) pthread_cond_wait(&q_ready, &q_lock);
    struct job j = queue[q_head];
    q_head = (q_head + 1) % QUEUE_JOBS;
    q_len--;
    busy++;
    pthread_mutex_unlock(&q_lock);
    run_job(&j, writer);
    pthread_mutex_lock(&q_lock);
    busy--;
    q_bytes -= j.size;
    epochs[j.epoch % EPOCHS].pending--;
    ack_done_epochs();
    pthread_cond_signal(&q_space);
    if (q_len == 0 && busy == 0) pthread_cond_broadcast(&q_idle);
  }
  return NULL;
}

static int writers;

static void enqueue(struct job *j) {
  if (writers == 0) return run_job(j, 0);
  pthread_mutex_lock(&q_lock);
  while (q_len == QUEUE_JOBS || (q_len > 0 && q_bytes + j->size > QUEUE_BYTES)) pthread_cond_wait(&q_space, &q_lock);
  j->epoch = epoch_now;
  epochs[epoch_now % EPOCHS].pending++;
  queue[(q_head + q_len) % QUEUE_JOBS] = *j;
  q_len++;
  q_bytes += j->size;
  pthread_cond_signal(&q_ready);
  pthread_mutex_unlock(&q_lock);
}

/* Paths queued since the last barrier: a second record for one of them waits for the writers. */
#define SEEN_SLOTS 16384
static uint64_t seen[SEEN_SLOTS];
static size_t seen_count;

/** A flush: its epoch ends; the ack is written now if nothing of it (or before it) is left. */
static void close_epoch(int64_t seq) {
  pthread_mutex_lock(&q_lock);
  while (epoch_now - epoch_oldest >= EPOCHS - 1) pthread_cond_wait(&q_space, &q_lock);
  epochs[epoch_now % EPOCHS].closed = true;
  epochs[epoch_now % EPOCHS].seq = seq;
  epoch_now++;
  epochs[epoch_now % EPOCHS].pending = 0;
  epochs[epoch_now % EPOCHS].closed = false;
  ack_done_epochs();
  pthread_mutex_unlock(&q_lock);
}

static void barrier(void) {
  if (writers > 0) {
    pthread_mutex_lock(&q_lock);
    while (q_len > 0 || busy > 0) pthread_cond_wait(&q_idle, &q_lock);
    pthread_mutex_unlock(&q_lock);
  }
  if (seen_count > 0) memset(seen, 0, sizeof seen);
  seen_count = 0;
}

static void note_path(const char *rel) {
  if (seen_count >= SEEN_SLOTS / 2) barrier();
  uint64_t h = hash_bytes(rel, strlen(rel));
  size_t i = h % SEEN_SLOTS;
  for (; seen[i]; i = (i + 1) % SEEN_SLOTS)
    if (seen[i] == h) {
      barrier();
      i = h % SEEN_SLOTS;
      break;
    }
  seen[i] = h;
  seen_count++;
}

/* ---- input */

static char *in_buf;
static size_t in_at, in_len;
static const size_t in_cap = MAX_HEADER + 4 + READ_BYTES;

/** Reads more input; false at the end of stdin. */
static bool fill(void) {
  if (in_at > 0) {
    memmove(in_buf, in_buf + in_at, in_len - in_at);
    in_len -= in_at;
    in_at = 0;
  }
  for (;;) {
    ssize_t n = read(0, in_buf + in_len, in_cap - in_len < READ_BYTES ? in_cap - in_len : READ_BYTES);
    if (n > 0) {
      in_len += (size_t)n;
      return true;
    }
    if (n == 0) return false;
    if (errno == EINTR) continue;
    if (errno == EAGAIN) {
      struct pollfd pfd = {.fd = 0, .events = POLLIN};
      poll(&pfd, 1, -1);
      continue;
    }
    return false;
  }
}

int main(int argc, char **argv) {
  if (argc < 2 || argv[1][0] != '/') fatal("usage: sandboxvm-sync-write <absolute guest folder> [writers]");
  root = argv[1];
  root_len = strlen(root);
  while (root_len > 1 && root[root_len - 1] == '/') root_len--;
  ((char *)root)[root_len] = 0;
  long cpus = sysconf(_SC_NPROCESSORS_ONLN);
  /* Measured in TCG guests: with one vCPU, handing files to a thread only adds switches (the main
   * thread alone is ~1.5x faster); with two, one writer per vCPU. */
  writers = argc > 2 ? atoi(argv[2]) : cpus > 1 ? (int)(cpus > 4 ? 4 : cpus) : 0;
  if (writers < 0 || writers > MAX_WRITERS) fatal("writers: 0 to %d", MAX_WRITERS);
  umask_now = umask(0);
  umask(umask_now);
  self_pid = getpid();
  struct stat st;
  if (stat(root, &st) != 0) {
    char copy[PATH_MAX];
    snprintf(copy, sizeof copy, "%s", root);
    if (make_dirs(copy) != 0) fatal("cannot sync into %s: %s", root, strerror(errno));
  } else if (!S_ISDIR(st.st_mode)) {
    fatal("%s is not a directory", root);
  }
  for (int i = 0; i < writers; i++) {
    pthread_t t;
    pthread_attr_t a;
    pthread_attr_init(&a);
    pthread_attr_setstacksize(&a, 256 * 1024);
    if (pthread_create(&t, &a, writer_main, (void *)(intptr_t)i) != 0) fatal("cannot start a writer thread");
    pthread_attr_destroy(&a);
  }
  in_buf = malloc(in_cap);
  if (!in_buf) fatal("out of memory");
  static struct record r;
  for (;;) {
    while (in_len - in_at < 4)
      if (!fill()) goto done;
    const unsigned char *h = (const unsigned char *)in_buf + in_at;
    uint32_t len = (uint32_t)h[0] << 24 | (uint32_t)h[1] << 16 | (uint32_t)h[2] << 8 | h[3];
    if (len > MAX_HEADER) fatal("a sync record header of %u bytes", len);
    while (in_len - in_at < 4 + (size_t)len)
      if (!fill()) goto done;
    int pr = parse_record(in_buf + in_at + 4, in_buf + in_at + 4 + len, &r);
    if (pr == -2) fatal("this writer takes only dir, file and flush records");
    if (pr != 0) fatal("a sync record header that is not a record");
    in_at += 4 + len;
    if (r.op == OP_FLUSH) {
      if (!r.has_seq || r.seq < 0) fatal("a flush without its number");
      close_epoch(r.seq);
      continue;
    }
    if (!r.has_path || !rel_ok(r.path)) fatal("a sync record with a path outside the folder");
    if (!r.has_mode) fatal("a sync record for %s without its mode", r.path);
    if (r.op == OP_DIR) {
      /* In order, by this thread, after every file before it: a directory replaces whatever
       * stood at its path (a link to elsewhere, a file) before anything is made through it. */
      barrier();
      apply_dir(r.path, (int)(r.mode & 07777));
      continue;
    }
    note_path(r.path);
    if (!r.has_size || !r.has_mtime || r.size < 0) fatal("a file record for %s with a bad size", r.path);
    size_t size = (size_t)r.size;
    if (size <= INLINE_BYTES && writers > 0) {
      struct job j = {.rel = strdup(r.path), .mode = (int)(r.mode & 07777), .mtime_ms = r.mtime_ms, .body = malloc(size ? size : 1), .size = size};
      if (!j.rel || !j.body) fatal("out of memory");
      size_t got = 0;
      while (got < size) {
        if (in_len == in_at && !fill()) {
          free(j.rel);
          free(j.body);
          goto done;
        }
        size_t n = in_len - in_at < size - got ? in_len - in_at : size - got;
        memcpy(j.body + got, in_buf + in_at, n);
        in_at += n;
        got += n;
      }
      enqueue(&j);
      continue;
    }
    /* Large: written here as it streams in (the writers go on with theirs). */
    struct target t;
    bool open = file_open(&t, r.path, (int)(r.mode & 07777), writers);
    size_t left = size;
    while (left > 0) {
      if (in_len == in_at && !fill()) {
        if (open) file_drop(&t);
        goto done;
      }
      size_t n = in_len - in_at < left ? in_len - in_at : left;
      if (open) file_write(&t, in_buf + in_at, n);
      in_at += n;
      left -= n;
    }
    if (open) file_finish(&t, (int)(r.mode & 07777), r.mtime_ms);
  }
done:
  barrier();
  return 0;
}
