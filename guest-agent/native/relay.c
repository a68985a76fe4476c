/*
 * sandboxvm-relay: the guest end of the channel's data plane.
 *
 * Under TCG every instruction the guest runs is emulated, and a Node process costs ~2 ms per
 * wakeup there; the channel itself echoes a byte in 0.11 ms. So the bytes of sessions (terminals,
 * exec pipes, file contents) are moved by this small C program, and the agent (Node) keeps the
 * control plane: the handshake, calls, watches, guest info, and the decisions about sessions.
 *
 *   host <-- virtio-serial port --> relay <-- socketpair (fd 3 in Node) --> Node agent
 *
 * The relay owns the port and runs the agent as its child: argv[1..] is the agent's command line.
 * Frames are the channel's own (runtime/protocol/frames.ts): 12-byte header, magic 0x5356.
 * - CONTROL frames from the host go to the agent. A control frame for an unknown session id makes a
 *   *pending* session here, which holds that session's input until the agent hands it over (SPAWN
 *   or ATTACH) or lets it go (FORGET).
 * - DATA / WINDOW / EOF frames of sessions the relay owns are handled here; others are dropped.
 * - Frames of types 1..4 from the agent are written to the port as they are; LOCAL frames (type 16,
 *   never valid on the port) carry directives (agent -> relay) and notes (relay -> agent), see
 *   guest-agent/src/relayProtocol.ts.
 * The agent's file descriptors (a pty master from node-pty, an open file) are taken with
 * pidfd_getfd(2): the agent keeps its copy and closes it when the session ends.
 *
 * Port writes are at most 32 KiB (virtio-serial's limit per write) and never split a header from
 * its payload; output sources are read only while the port's queue is short, so terminal output is
 * never stuck behind a bulk transfer. When the agent exits, the relay starts it again and tells the
 * new one (NOTE_INHERIT) about the exec and pty sessions it still carries, which live on; file
 * transfers end with an error (their commit was the old agent's). Past MAX_AGENT_RESTARTS a
 * minute, the relay kills its exec sessions and exits (the image's agent-loop starts both again).
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <linux/random.h>
#include <net/if.h>
#include <net/if_arp.h>

extern char **environ;

/* ---- the channel's framing (runtime/protocol/frames.ts) ---------------------------------- */
#define MAGIC 0x5356
#define HDR 12
#define MAX_PAYLOAD (64 * 1024)
#define WRITE_MAX (32 * 1024)
#define DATA_CHUNK (WRITE_MAX - HDR)
#define T_CONTROL 1
#define T_DATA 2
#define T_WINDOW 3
#define T_EOF 4
#define T_LOCAL 16
#define INITIAL_WINDOW (1024 * 1024)
#define MAX_CREDIT (16LL * INITIAL_WINDOW)

/* ---- directives (agent -> relay) and notes (relay -> agent): relayProtocol.ts ----------- */
#define OP_SPAWN 1  /* u16 argc, u16 envc, cwd\0, argv\0 x argc, env\0 x envc */
#define OP_ATTACH 2 /* u8 kind, i32 fd_in, i32 fd_out (the agent's fd numbers, -1 for none), i32 pid */
#define OP_SIGNAL 3 /* u8 signo: to an exec session's process group */
#define OP_CLOSE 4  /* end the session now; answered with DONE(ECANCELED) if it exists */
#define OP_FORGET 5 /* drop the session without a word (kill an exec's process group) */
#define OP_RESIZE 6 /* u16 cols, u16 rows: a pty session's window size */
#define OP_RESUME 7 /* u8 has_offsets, u64 stdout, u64 stderr: replay output from there (see do_resume) */
#define OP_CONNECT 8 /* u16 port, address\0 (an IPv4 or IPv6 literal): a connect session's TCP connection */
#define NOTE_DONE 0x81 /* i32 errno (0: the session's streams completed) */
#define NOTE_INHERIT 0x82 /* u8 kind, i32 pid: a session that outlived the previous agent process */
#define NOTE_CONNECTED 0x83 /* a connect session's connection is established (its failure is DONE(errno)) */

#define KIND_PENDING 0
#define KIND_PTY 1
#define KIND_READ 2
#define KIND_WRITE 3
#define KIND_EXEC 4
#define KIND_SOCKET 5 /* a TCP connection the relay made (OP_CONNECT, port forwarding): host EOF is shutdown(SHUT_WR) */

/* ---- limits ---------------------------------------------------------------------------- */
#define PORT_QUEUE_HIGH (256 * 1024)        /* sources pause above this many queued bytes */
#define PORT_QUEUE_CLOSED_MAX (4 * 1024 * 1024) /* held while no host end is connected */
#define AGENT_QUEUE_MAX (8 * 1024 * 1024)
#define MAX_RELAY_SESSIONS 4096
#define MAX_PENDING_INPUT (2 * INITIAL_WINDOW)
#define CREDIT_FLUSH_BYTES (64 * 1024)
#define REOPEN_MS 50
#define MAX_AGENT_RESTARTS 5
/* Output kept per stream until the host acknowledges it end to end (its WINDOW grants are its
 * client's acks): a worker that dies, or a save, loses nothing that a resume cannot replay. The
 * credit invariant keeps it within one window; this bound holds whatever the host grants. */
#define RETAIN_MAX INITIAL_WINDOW
#define MAX_FINAL 4096 /* the exit or error message kept for a resume */

static const char *port_name = "org.sandboxvm.agent";

static void logf_(const char *fmt, ...) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  struct tm tm;
  gmtime_r(&ts.tv_sec, &tm);
  char line[1024];
  int n = snprintf(line, sizeof line, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ sandboxvm-relay: ", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
                   tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000);
  va_list ap;
  va_start(ap, fmt);
  n += vsnprintf(line + n, sizeof line - n - 1, fmt, ap);
  va_end(ap);
  if (n > (int)sizeof line - 2) n = sizeof line - 2;
  line[n++] = '\n';
  ssize_t ignored = write(2, line, n);
  (void)ignored;
}

static void put_header(uint8_t *h, int type, int stream, uint32_t session, uint32_t length) {
  h[0] = MAGIC >> 8;
  h[1] = MAGIC & 0xff;
  h[2] = type;
  h[3] = stream;
  h[4] = session >> 24, h[5] = session >> 16, h[6] = session >> 8, h[7] = session;
  h[8] = length >> 24, h[9] = length >> 16, h[10] = length >> 8, h[11] = length;
}
static uint32_t get_u32(const uint8_t *p) { return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]; }
static uint16_t get_u16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }

static void *xmalloc(size_t n) {
  void *p = malloc(n);
  if (!p) {
    logf_("out of memory (%zu bytes)", n);
    _exit(70);
  }
  return p;
}

/* ---- byte queues of whole frames -------------------------------------------------------- */
struct frame {
  struct frame *next;
  size_t len, off; /* bytes in data, bytes already written */
  uint8_t data[];
};
struct queue {
  struct frame *head, *tail;
  size_t bytes;
};

static struct frame *frame_new(size_t len) {
  struct frame *f = xmalloc(sizeof *f + len);
  f->next = NULL;
  f->len = len;
  f->off = 0;
  return f;
}
static void queue_push(struct queue *q, struct frame *f) {
  if (q->tail) q->tail->next = f;
  else q->head = f;
  q->tail = f;
  q->bytes += f->len;
}
static void queue_clear(struct queue *q) {
  while (q->head) {
    struct frame *f = q->head;
    q->head = f->next;
    free(f);
  }
  q->tail = NULL;
  q->bytes = 0;
}

/* Bytes sent on one output stream and not yet acknowledged: [acked, sent). */
struct ring {
  uint8_t *buf;
  size_t cap, start, len;
};

static void ring_append(struct ring *r, const uint8_t *data, size_t n) {
  if (r->start + r->len + n > r->cap) {
    if (r->len + n <= r->cap) {
      memmove(r->buf, r->buf + r->start, r->len);
    } else {
      size_t cap = r->cap ? r->cap : 64 * 1024;
      while (cap < r->len + n) cap *= 2;
      uint8_t *grown = xmalloc(cap);
      if (r->len) memcpy(grown, r->buf + r->start, r->len);
      free(r->buf);
      r->buf = grown;
      r->cap = cap;
    }
    r->start = 0;
  }
  memcpy(r->buf + r->start + r->len, data, n);
  r->len += n;
}
static void ring_drop(struct ring *r, size_t n) {
  if (n > r->len) n = r->len;
  r->start += n;
  r->len -= n;
  if (r->len == 0) {
    r->start = 0;
    if (r->cap > 64 * 1024) {
      free(r->buf);
      r->buf = NULL;
      r->cap = 0;
    }
  }
}
static void ring_free(struct ring *r) {
  free(r->buf);
  *r = (struct ring){0};
}

/* ---- state ------------------------------------------------------------------------------ */
/* An fd registered with epoll. Its key (epoll's data.u64) names it without a pointer, so an event
 * for a session freed earlier in the same batch finds nothing: session id << 32 | serial << 8 | slot,
 * or id 0 for the relay's own fds. */
enum slot { SLOT_IN = 0, SLOT_OUT = 1, SLOT_ERR = 2, SLOT_PORT = 0x10, SLOT_AGENT, SLOT_SIGNAL };
struct endpoint {
  uint64_t key;
  int fd;
  uint32_t armed; /* the events registered with epoll; 0 = not registered */
};

struct session {
  uint32_t id;
  uint32_t serial;
  int kind;
  struct session *next_in_bucket;
  struct session *prev, *next; /* the list of all sessions, for the loop's passes */
  struct endpoint in;     /* host stdin -> this fd (pipe, pty master, file) */
  struct endpoint out[3]; /* out[1] stdout, out[2] stderr -> host */
  bool in_regular, out_regular;
  bool connecting;        /* a socket whose non-blocking connect() has not completed */
  int64_t credit[3];      /* bytes the host lets us send on stdout / stderr */
  struct queue input;     /* host bytes not yet written to `in` */
  bool input_eof;         /* the host sent EOF on stdin */
  uint64_t credit_owed;   /* stdin bytes written, not yet credited back to the host */
  pid_t pid;              /* exec: the process (and its process group) */
  bool exited;
  int wstatus;
  int error;              /* first error of the session's fds */
  /* Exec and pty sessions can be resumed by a new host end (a worker that took over, a restored
   * VM): their output is kept until acknowledged, and once complete (`done`) the session stays,
   * with its end message, until the agent lets it go (FORGET: the host released it). */
  uint64_t sent[3], acked[3];
  struct ring kept[3];
  bool eof_sent[3];
  bool done;
  char *final;
  size_t final_len;
};

static int epfd = -1;
static struct endpoint port_ep = {SLOT_PORT, -1, 0};
static struct endpoint agent_ep = {SLOT_AGENT, -1, 0};
static struct endpoint signal_ep = {SLOT_SIGNAL, -1, 0};
static char port_path[PATH_MAX];
static int64_t port_reopen_at = 0; /* monotonic ms; 0 = open or opening now */
static bool port_blocked = false;   /* the last write got EAGAIN: wait for EPOLLOUT */
static struct queue port_out, agent_out;
static uint8_t port_in[256 * 1024];
static size_t port_in_len;
static uint8_t agent_in[MAX_PAYLOAD + HDR + 4096];
static size_t agent_in_len;
static pid_t agent_pid = -1;
static int agent_pidfd = -1;
static bool agent_blocked = false;

#define BUCKETS 1024
static struct session *buckets[BUCKETS];
static struct session *all_sessions;
static int session_count;
/* stdin credit owed to the host is returned in batches: at once past CREDIT_FLUSH_BYTES, else at
 * this deadline (monotonic ms; 0 = nothing owed). The host starts with a 1 MiB window, so typing
 * never waits for it, and each keystroke costs the guest one port write less. */
static int64_t credit_deadline;
#define CREDIT_DELAY_MS 20

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static struct session *find_session(uint32_t id) {
  for (struct session *s = buckets[id % BUCKETS]; s; s = s->next_in_bucket)
    if (s->id == id) return s;
  return NULL;
}

static struct session *add_session(uint32_t id) {
  if (session_count >= MAX_RELAY_SESSIONS) return NULL;
  struct session *s = calloc(1, sizeof *s);
  if (!s) return NULL;
  static uint32_t serials;
  s->id = id;
  s->serial = ++serials & 0xffffff;
  s->kind = KIND_PENDING;
  uint64_t base = (uint64_t)id << 32 | (uint64_t)s->serial << 8;
  s->in = (struct endpoint){base | SLOT_IN, -1, 0};
  s->out[0] = (struct endpoint){base | SLOT_IN, -1, 0};
  s->out[1] = (struct endpoint){base | SLOT_OUT, -1, 0};
  s->out[2] = (struct endpoint){base | SLOT_ERR, -1, 0};
  s->credit[1] = s->credit[2] = INITIAL_WINDOW;
  s->next_in_bucket = buckets[id % BUCKETS];
  buckets[id % BUCKETS] = s;
  s->next = all_sessions;
  if (all_sessions) all_sessions->prev = s;
  all_sessions = s;
  session_count++;
  return s;
}

/* ---- epoll interest ---------------------------------------------------------------------- */
static void arm(struct endpoint *ep, uint32_t events) {
  if (ep->fd < 0 || ep->armed == events) return;
  struct epoll_event ev = {.events = events, .data.u64 = ep->key};
  int rc;
  if (events == 0) rc = epoll_ctl(epfd, EPOLL_CTL_DEL, ep->fd, NULL);
  else if (ep->armed == 0) rc = epoll_ctl(epfd, EPOLL_CTL_ADD, ep->fd, &ev);
  else rc = epoll_ctl(epfd, EPOLL_CTL_MOD, ep->fd, &ev);
  if (rc < 0 && events != 0) logf_("epoll_ctl(fd %d): %s", ep->fd, strerror(errno));
  ep->armed = events;
}
static void close_endpoint(struct endpoint *ep) {
  if (ep->fd < 0) return;
  arm(ep, 0);
  close(ep->fd);
  ep->fd = -1;
}

/* ---- output to the port and to the agent -------------------------------------------------- */
static void send_port(struct frame *f) {
  if (port_ep.fd < 0 && port_out.bytes > PORT_QUEUE_CLOSED_MAX) {
    logf_("no host end for a while: dropping %zu queued bytes", port_out.bytes);
    queue_clear(&port_out);
  }
  queue_push(&port_out, f);
}
static void send_frame(int type, int stream, uint32_t session, const void *payload, size_t len) {
  struct frame *f = frame_new(HDR + len);
  put_header(f->data, type, stream, session, len);
  if (len) memcpy(f->data + HDR, payload, len);
  send_port(f);
}
static void send_window(uint32_t session, int stream, uint32_t credit) {
  uint8_t p[4] = {credit >> 24, credit >> 16, credit >> 8, credit};
  send_frame(T_WINDOW, stream, session, p, 4);
}

/* Appends `s` to `buf` as a JSON string (quoted, escaped); returns the new length. */
static size_t json_string(char *buf, size_t at, size_t cap, const char *s) {
  if (at < cap) buf[at++] = '"';
  for (; *s && at + 7 < cap; s++) {
    unsigned char c = (unsigned char)*s;
    if (c == '"' || c == '\\') at += snprintf(buf + at, cap - at, "\\%c", c);
    else if (c < 0x20) at += snprintf(buf + at, cap - at, "\\u%04x", c);
    else buf[at++] = c;
  }
  if (at < cap) buf[at++] = '"';
  return at;
}
static void send_control(uint32_t session, const char *json) { send_frame(T_CONTROL, 0, session, json, strlen(json)); }

static void send_agent(int type, uint32_t session, const void *payload, size_t len) {
  if (agent_out.bytes > AGENT_QUEUE_MAX) {
    logf_("the agent is not reading: dropping a frame for session %u", session);
    return;
  }
  struct frame *f = frame_new(HDR + len);
  put_header(f->data, type, 0, session, len);
  if (len) memcpy(f->data + HDR, payload, len);
  queue_push(&agent_out, f);
}
static void note_done(uint32_t session, int err) {
  uint8_t p[5] = {NOTE_DONE, (uint32_t)err >> 24, (uint32_t)err >> 16, (uint32_t)err >> 8, (uint32_t)err};
  send_agent(T_LOCAL, session, p, sizeof p);
}

/* Writes queued frames to the port: whole frames coalesced up to 32 KiB per write(). */
static void flush_port(void) {
  static uint8_t staging[WRITE_MAX];
  while (port_ep.fd >= 0 && port_out.head && !port_blocked) {
    struct frame *f = port_out.head;
    const uint8_t *buf;
    size_t n;
    if (f->off > 0 || f->len >= WRITE_MAX / 2 || !f->next || f->len + f->next->len > WRITE_MAX) {
      buf = f->data + f->off;
      n = f->len - f->off;
      if (n > WRITE_MAX) n = WRITE_MAX;
    } else {
      n = 0;
      for (struct frame *g = f; g && g->off == 0 && n + g->len <= WRITE_MAX; g = g->next) {
        memcpy(staging + n, g->data, g->len);
        n += g->len;
      }
      buf = staging;
    }
    ssize_t w = write(port_ep.fd, buf, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) port_blocked = true;
      else logf_("writing to the port: %s", strerror(errno));
      break;
    }
    size_t done = (size_t)w;
    port_out.bytes -= done;
    while (done > 0) {
      struct frame *h = port_out.head;
      size_t left = h->len - h->off;
      if (done >= left) {
        done -= left;
        port_out.head = h->next;
        if (!port_out.head) port_out.tail = NULL;
        free(h);
      } else {
        h->off += done;
        done = 0;
      }
    }
  }
}

static void flush_agent(void) {
  while (agent_ep.fd >= 0 && agent_out.head && !agent_blocked) {
    struct frame *f = agent_out.head;
    ssize_t w = write(agent_ep.fd, f->data + f->off, f->len - f->off);
    if (w < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) agent_blocked = true;
      else logf_("writing to the agent: %s", strerror(errno));
      break;
    }
    f->off += (size_t)w;
    agent_out.bytes -= (size_t)w;
    if (f->off == f->len) {
      agent_out.head = f->next;
      if (!agent_out.head) agent_out.tail = NULL;
      free(f);
    }
  }
}

/* ---- sessions ---------------------------------------------------------------------------- */
static void free_session(struct session *s) {
  struct session **p = &buckets[s->id % BUCKETS];
  while (*p != s) p = &(*p)->next_in_bucket;
  *p = s->next_in_bucket;
  if (s->prev) s->prev->next = s->next;
  else all_sessions = s->next;
  if (s->next) s->next->prev = s->prev;
  close_endpoint(&s->in);
  close_endpoint(&s->out[1]);
  close_endpoint(&s->out[2]);
  queue_clear(&s->input);
  for (int i = 1; i <= 2; i++) ring_free(&s->kept[i]);
  free(s->final);
  session_count--;
  free(s);
}

static void return_credit(struct session *s) {
  if (s->credit_owed == 0) return;
  send_window(s->id, 0, (uint32_t)s->credit_owed);
  s->credit_owed = 0;
}

static const char *signal_name(int sig, char *buf, size_t cap) {
  const char *abbrev = sigabbrev_np(sig);
  if (abbrev) snprintf(buf, cap, "SIG%s", abbrev);
  else snprintf(buf, cap, "SIG%d", sig);
  return buf;
}

/* A session whose work is complete: exec reports its exit; the others tell the agent. */
static void keep_final(struct session *s, const void *json, size_t len) {
  if (len > MAX_FINAL || s->final) return;
  s->final = xmalloc(len);
  memcpy(s->final, json, len);
  s->final_len = len;
}

static void maybe_finish(struct session *s) {
  if (s->done || s->out[1].fd >= 0 || s->out[2].fd >= 0) return;
  if (s->kind == KIND_EXEC) {
    if (!s->exited) return;
    return_credit(s);
    char json[128];
    if (WIFSIGNALED(s->wstatus)) {
      char name[32];
      snprintf(json, sizeof json, "{\"t\":\"exit\",\"code\":null,\"signal\":\"%s\"}", signal_name(WTERMSIG(s->wstatus), name, sizeof name));
    } else {
      snprintf(json, sizeof json, "{\"t\":\"exit\",\"code\":%d,\"signal\":null}", WEXITSTATUS(s->wstatus));
    }
    send_control(s->id, json);
    keep_final(s, json, strlen(json));
    close_endpoint(&s->in);
    queue_clear(&s->input);
    s->done = true; /* kept for a resume until the agent forgets it */
    note_done(s->id, 0);
  } else if (s->kind == KIND_PTY) {
    return_credit(s);
    close_endpoint(&s->in);
    queue_clear(&s->input);
    s->done = true; /* the agent sends the exit (it owns the terminal's process); kept as final */
    note_done(s->id, s->error);
  } else if (s->kind == KIND_READ) {
    return_credit(s);
    note_done(s->id, s->error);
    free_session(s);
  } else if (s->kind == KIND_SOCKET) {
    /* both directions ended: the peer's EOF went to the host, the host's EOF to the peer */
    if (s->in.fd >= 0) return;
    return_credit(s);
    note_done(s->id, s->error);
    free_session(s);
  }
}

static void end_output(struct session *s, int stream) {
  close_endpoint(&s->out[stream]);
  s->eof_sent[stream] = true;
  send_frame(T_EOF, stream, s->id, NULL, 0);
}

static bool resumable(const struct session *s) { return s->kind == KIND_EXEC || s->kind == KIND_PTY; }

/* Reads one chunk from an output source into a DATA frame, within credit. Returns false when
 * there is nothing to read now. */
static bool pump_output(struct session *s, int stream) {
  struct endpoint *ep = &s->out[stream];
  if (ep->fd < 0 || s->credit[stream] <= 0) return false;
  size_t want = s->credit[stream] < DATA_CHUNK ? (size_t)s->credit[stream] : DATA_CHUNK;
  if (resumable(s)) {
    uint64_t outstanding = s->sent[stream] - s->acked[stream];
    if (outstanding >= RETAIN_MAX) return false;
    if (want > RETAIN_MAX - outstanding) want = RETAIN_MAX - outstanding;
  }
  struct frame *f = frame_new(HDR + want);
  ssize_t r;
  do r = read(ep->fd, f->data + HDR, want);
  while (r < 0 && errno == EINTR);
  if (r > 0) {
    f->len = HDR + (size_t)r;
    put_header(f->data, T_DATA, stream, s->id, (uint32_t)r);
    s->credit[stream] -= r;
    if (resumable(s)) {
      ring_append(&s->kept[stream], f->data + HDR, (size_t)r);
      s->sent[stream] += (uint64_t)r;
    }
    send_port(f);
    return true;
  }
  free(f);
  if (r < 0 && errno == EAGAIN) return false;
  /* EOF, or EIO from a pty master once the terminal's last process has gone */
  if (r < 0 && errno != EIO && !s->error) s->error = errno;
  bool pty = s->kind == KIND_PTY;
  end_output(s, stream);
  if (pty && s->in.fd >= 0) close_endpoint(&s->in);
  /* a socket's EOF is a half-close (the host may still send); an error (a reset) ends both ways */
  if (s->kind == KIND_SOCKET && r < 0 && s->in.fd >= 0) {
    close_endpoint(&s->in);
    queue_clear(&s->input);
  }
  maybe_finish(s);
  return false;
}

/* Writes held host input to the session's fd; credits it back once taken. */
static void pump_input(struct session *s) {
  if (s->connecting) return; /* held until the connection is up */
  while (s->in.fd >= 0 && s->input.head) {
    struct frame *f = s->input.head;
    ssize_t w = write(s->in.fd, f->data + f->off, f->len - f->off);
    if (w < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) return;
      /* the process closed its stdin (EPIPE) or the disk is full: drop what is left */
      if (!s->error) s->error = errno;
      if (s->kind == KIND_WRITE) {
        note_done(s->id, s->error);
        free_session(s);
        return;
      }
      if (s->kind == KIND_SOCKET) {
        /* the peer is gone (EPIPE, ECONNRESET): nothing more flows either way */
        close_endpoint(&s->in);
        s->credit_owed += s->input.bytes;
        queue_clear(&s->input);
        return_credit(s);
        if (s->out[1].fd >= 0) end_output(s, 1);
        maybe_finish(s);
        return;
      }
      close_endpoint(&s->in);
      s->credit_owed += s->input.bytes; /* dropped, but the host may send more */
      queue_clear(&s->input);
      break;
    }
    f->off += (size_t)w;
    s->credit_owed += (size_t)w;
    s->input.bytes -= (size_t)w;
    if (f->off == f->len) {
      s->input.head = f->next;
      if (!s->input.head) s->input.tail = NULL;
      free(f);
    }
  }
  /* Credit goes back in batches: here past CREDIT_FLUSH_BYTES, else once per loop iteration. */
  if (s->credit_owed >= CREDIT_FLUSH_BYTES) return_credit(s);
  if (s->input.head) return;
  if (s->input_eof && s->in.fd >= 0) {
    if (s->kind == KIND_PTY) {
      ssize_t ignored = write(s->in.fd, "\x04", 1); /* EOF at the terminal's line discipline */
      (void)ignored;
      s->input_eof = false;
      return;
    }
    if (s->kind == KIND_WRITE) {
      note_done(s->id, 0);
      free_session(s);
      return;
    }
    if (s->kind == KIND_SOCKET) {
      shutdown(s->in.fd, SHUT_WR);
      close_endpoint(&s->in);
      return_credit(s);
      maybe_finish(s);
      return;
    }
    close_endpoint(&s->in);
  } else if (s->input_eof && s->in.fd < 0 && s->kind == KIND_WRITE) {
    note_done(s->id, s->error ? s->error : EIO);
    free_session(s);
  }
}

static void on_host_data(struct session *s, const uint8_t *data, size_t len) {
  if (s->input_eof) return;
  if (s->input.bytes + len > MAX_PENDING_INPUT) {
    logf_("session %u: the host sent beyond its window; dropping %zu bytes", s->id, len);
    return;
  }
  if (s->kind != KIND_PENDING && s->in.fd < 0) {
    s->credit_owed += len; /* stdin is closed: dropped, as a write to a closed pipe */
    return;
  }
  /* The fast path: nothing queued and a destination: write straight from the port buffer. */
  if (s->kind != KIND_PENDING && s->in.fd >= 0 && !s->input.head && !s->connecting) {
    ssize_t w;
    do w = write(s->in.fd, data, len);
    while (w < 0 && errno == EINTR);
    if (w > 0) {
      s->credit_owed += (size_t)w;
      data += w;
      len -= (size_t)w;
    } else if (w < 0 && errno != EAGAIN) {
      if (!s->error) s->error = errno;
    }
    if (len == 0) return;
  }
  struct frame *f = frame_new(len);
  memcpy(f->data, data, len);
  queue_push(&s->input, f);
}

/* ---- directives from the agent ------------------------------------------------------------ */
static int take_fd(int agent_fd) {
  if (agent_fd < 0) return -1;
  int fd = (int)syscall(SYS_pidfd_getfd, agent_pidfd, agent_fd, 0);
  if (fd < 0) logf_("pidfd_getfd(%d): %s", agent_fd, strerror(errno));
  return fd;
}

/* Regular files and some devices cannot be watched by epoll: they are always ready. */
static bool pollable(int fd) {
  struct epoll_event ev = {.events = 0, .data.u64 = 0};
  if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) < 0) return false;
  epoll_ctl(epfd, EPOLL_CTL_DEL, fd, NULL);
  return true;
}

/* PATH lookup with the session's own PATH (posix_spawnp would use the relay's). */
static bool resolve_command(const char *cmd, const char *path, char *out, size_t cap) {
  if (strchr(cmd, '/')) {
    snprintf(out, cap, "%s", cmd);
    return true;
  }
  if (!path) path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
  for (const char *p = path; *p;) {
    const char *end = strchr(p, ':');
    size_t n = end ? (size_t)(end - p) : strlen(p);
    if (n > 0 && n + strlen(cmd) + 2 <= cap) {
      snprintf(out, cap, "%.*s/%s", (int)n, p, cmd);
      if (access(out, X_OK) == 0) return true;
    }
    if (!end) break;
    p = end + 1;
  }
  return false;
}

static void spawn_failed(struct session *s, const char *cmd, const char *why) {
  char msg[1024], json[1400];
  snprintf(msg, sizeof msg, "cannot start %s: %s", cmd, why);
  size_t n = (size_t)snprintf(json, sizeof json, "{\"t\":\"error\",\"message\":");
  n = json_string(json, n, sizeof json - 2, msg);
  json[n++] = '}';
  json[n] = 0;
  send_control(s->id, json);
  note_done(s->id, ENOENT);
  free_session(s);
}

static void set_nonblock(int fd) { fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK); }

static void do_spawn(struct session *s, const uint8_t *p, size_t len) {
  if (len < 4) return spawn_failed(s, "?", "malformed spawn directive");
  unsigned argc = get_u16(p), envc = get_u16(p + 2);
  static const char *strings[MAX_PAYLOAD + 1]; /* every string takes at least its NUL */
  size_t count = 0, at = 4;
  while (at < len && count < 1 + argc + envc) {
    const char *z = memchr(p + at, 0, len - at);
    if (!z) break;
    strings[count++] = (const char *)p + at;
    at = (size_t)((const uint8_t *)z - p) + 1;
  }
  if (argc == 0 || count != 1 + argc + envc) return spawn_failed(s, "?", "malformed spawn directive");
  const char *cwd = strings[0];
  char **argv = xmalloc(sizeof(char *) * (argc + 1));
  char **envp = xmalloc(sizeof(char *) * (envc + 1));
  for (unsigned i = 0; i < argc; i++) argv[i] = (char *)strings[1 + i];
  argv[argc] = NULL;
  const char *path_env = NULL;
  for (unsigned i = 0; i < envc; i++) {
    envp[i] = (char *)strings[1 + argc + i];
    if (strncmp(envp[i], "PATH=", 5) == 0) path_env = envp[i] + 5;
  }
  envp[envc] = NULL;

  char file[PATH_MAX];
  struct stat st;
  int pin[2] = {-1, -1}, pout[2] = {-1, -1}, perr[2] = {-1, -1};
  if (stat(cwd, &st) != 0 || !S_ISDIR(st.st_mode)) {
    char why[PATH_MAX + 64];
    snprintf(why, sizeof why, "the working directory %s does not exist", cwd);
    spawn_failed(s, argv[0], why);
  } else if (!resolve_command(argv[0], path_env, file, sizeof file)) {
    spawn_failed(s, argv[0], "not found on PATH");
  } else if (pipe2(pin, O_CLOEXEC) || pipe2(pout, O_CLOEXEC) || pipe2(perr, O_CLOEXEC)) {
    spawn_failed(s, argv[0], strerror(errno));
  } else {
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t attr;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, pin[0], 0);
    posix_spawn_file_actions_adddup2(&fa, pout[1], 1);
    posix_spawn_file_actions_adddup2(&fa, perr[1], 2);
    posix_spawn_file_actions_addchdir_np(&fa, cwd);
    posix_spawnattr_init(&attr);
    sigset_t none, all;
    sigemptyset(&none);
    sigfillset(&all);
    posix_spawnattr_setsigmask(&attr, &none);
    posix_spawnattr_setsigdefault(&attr, &all);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSID | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
    pid_t pid;
    int rc = posix_spawn(&pid, file, &fa, &attr, argv, envp);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&attr);
    if (rc != 0) {
      spawn_failed(s, argv[0], strerror(rc));
    } else {
      s->kind = KIND_EXEC;
      s->pid = pid;
      s->in.fd = pin[1];
      s->out[1].fd = pout[0];
      s->out[2].fd = perr[0];
      pin[1] = pout[0] = perr[0] = -1;
      set_nonblock(s->in.fd);
      set_nonblock(s->out[1].fd);
      set_nonblock(s->out[2].fd);
      char json[64];
      snprintf(json, sizeof json, "{\"t\":\"started\",\"pid\":%d}", pid);
      send_control(s->id, json);
      pump_input(s);
    }
  }
  int fds[] = {pin[0], pin[1], pout[0], pout[1], perr[0], perr[1]};
  for (unsigned i = 0; i < 6; i++)
    if (fds[i] >= 0) close(fds[i]);
  free(argv);
  free(envp);
}

/* The connection of a connect session is up: the agent reports `started`; held input goes out. */
static void connected(struct session *s) {
  s->connecting = false;
  uint8_t note = NOTE_CONNECTED;
  send_agent(T_LOCAL, s->id, &note, 1);
  pump_input(s);
}

/* A socket's non-blocking connect() completed (its fd became writable or failed). */
static void finish_connect(struct session *s) {
  int err = 0;
  socklen_t n = sizeof err;
  if (getsockopt(s->in.fd, SOL_SOCKET, SO_ERROR, &err, &n) < 0) err = errno;
  if (err != 0) {
    note_done(s->id, err);
    free_session(s);
    return;
  }
  connected(s);
}

/* CONNECT: a TCP connection inside the guest for port forwarding, made here so that no Node
 * process sits in its path. Failures go to the agent as DONE(errno); it words them for the host. */
static void do_connect(struct session *s, const uint8_t *p, size_t len) {
  struct sockaddr_storage ss;
  memset(&ss, 0, sizeof ss);
  socklen_t sl = 0;
  const char *text = len >= 3 ? memchr(p + 2, 0, len - 2) : NULL;
  uint16_t port = len >= 2 ? get_u16(p) : 0;
  if (text && port) {
    struct sockaddr_in *a4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, (const char *)p + 2, &a4->sin_addr) == 1) {
      a4->sin_family = AF_INET;
      a4->sin_port = htons(port);
      sl = sizeof *a4;
    } else if (inet_pton(AF_INET6, (const char *)p + 2, &a6->sin6_addr) == 1) {
      a6->sin6_family = AF_INET6;
      a6->sin6_port = htons(port);
      sl = sizeof *a6;
    }
  }
  if (!sl) {
    note_done(s->id, EINVAL);
    free_session(s);
    return;
  }
  int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  int out = fd >= 0 ? fcntl(fd, F_DUPFD_CLOEXEC, 3) : -1;
  if (fd < 0 || out < 0) {
    int e = errno;
    if (fd >= 0) close(fd);
    note_done(s->id, e);
    free_session(s);
    return;
  }
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  s->kind = KIND_SOCKET;
  s->in.fd = fd;
  s->out[1].fd = out;
  if (connect(fd, (struct sockaddr *)&ss, sl) == 0) return connected(s);
  if (errno != EINPROGRESS) {
    note_done(s->id, errno);
    free_session(s);
    return;
  }
  s->connecting = true;
}

static void do_attach(struct session *s, const uint8_t *p, size_t len) {
  if (len < 9) {
    note_done(s->id, EINVAL);
    free_session(s);
    return;
  }
  int kind = p[0];
  int in = take_fd((int32_t)get_u32(p + 1));
  int out = kind == KIND_PTY ? (in >= 0 ? fcntl(in, F_DUPFD_CLOEXEC, 3) : -1) : take_fd((int32_t)get_u32(p + 5));
  bool needs_in = kind == KIND_PTY || kind == KIND_WRITE, needs_out = kind == KIND_PTY || kind == KIND_READ;
  if ((needs_in && in < 0) || (needs_out && out < 0) || (kind != KIND_PTY && kind != KIND_READ && kind != KIND_WRITE)) {
    if (in >= 0) close(in);
    if (out >= 0) close(out);
    note_done(s->id, EBADF);
    free_session(s);
    return;
  }
  s->kind = kind;
  s->in.fd = needs_in ? in : -1;
  s->out[1].fd = needs_out ? out : -1;
  if (!needs_in && in >= 0) close(in);
  if (!needs_out && out >= 0) close(out);
  s->in_regular = s->in.fd >= 0 && !pollable(s->in.fd);
  s->out_regular = s->out[1].fd >= 0 && !pollable(s->out[1].fd);
  if (s->kind == KIND_PTY) set_nonblock(s->out[1].fd);
  if (len >= 13) s->pid = (pid_t)(int32_t)get_u32(p + 9);
  pump_input(s);
}

static uint64_t get_u64(const uint8_t *p) { return (uint64_t)get_u32(p) << 32 | get_u32(p + 4); }

/* A new host end takes the session over from the client's position: `resumed` marks where (the
 * host drops what came before it), then each output stream is replayed from the offset the client
 * has (or from what it acknowledged, without offsets), then the EOFs and the end message that were
 * sent already. The credit restarts from one window, less what is replayed. */
static void do_resume(struct session *s, const uint8_t *p, size_t len) {
  bool has_offsets = len >= 17 && p[0] == 1;
  for (int i = 1; i <= 2; i++) {
    uint64_t from = s->acked[i];
    if (has_offsets) {
      uint64_t want = get_u64(p + 1 + 8 * (i - 1));
      from = want < s->acked[i] ? s->acked[i] : want > s->sent[i] ? s->sent[i] : want;
    }
    ring_drop(&s->kept[i], (size_t)(from - s->acked[i]));
    s->acked[i] = from;
  }
  /* where each stream resumes, as offsets from the session's start: the new client counts from there */
  char json[128];
  snprintf(json, sizeof json, "{\"t\":\"resumed\",\"stdout\":%llu,\"stderr\":%llu}", (unsigned long long)s->acked[1], (unsigned long long)s->acked[2]);
  send_control(s->id, json);
  for (int i = 1; i <= 2; i++) {
    const struct ring *r = &s->kept[i];
    for (size_t at = 0; at < r->len; at += DATA_CHUNK) {
      size_t n = r->len - at < DATA_CHUNK ? r->len - at : DATA_CHUNK;
      send_frame(T_DATA, i, s->id, r->buf + r->start + at, n);
    }
    s->credit[i] = (int64_t)INITIAL_WINDOW - (int64_t)r->len;
    if (s->eof_sent[i]) send_frame(T_EOF, i, s->id, NULL, 0);
  }
  if (s->final) send_frame(T_CONTROL, 0, s->id, s->final, s->final_len);
}

static void on_directive(uint32_t id, const uint8_t *p, size_t len) {
  if (len < 1 || id == 0) return;
  struct session *s = find_session(id);
  /* An open the relay did not recognise as one still gets its session when the agent hands it over. */
  if (!s && (p[0] == OP_SPAWN || p[0] == OP_ATTACH)) s = add_session(id);
  if (!s) return; /* already finished: its DONE note is on its way to the agent */
  switch (p[0]) {
    case OP_SPAWN:
      if (s->kind == KIND_PENDING) do_spawn(s, p + 1, len - 1);
      break;
    case OP_ATTACH:
      if (s->kind == KIND_PENDING) do_attach(s, p + 1, len - 1);
      break;
    case OP_CONNECT:
      /* already connecting when the relay recognised the open itself (see fast_connect) */
      if (s->kind == KIND_PENDING) do_connect(s, p + 1, len - 1);
      break;
    case OP_SIGNAL:
      if (s->kind == KIND_EXEC && !s->exited && len >= 2 && kill(-s->pid, p[1]) < 0) kill(s->pid, p[1]);
      break;
    case OP_CLOSE:
      if (s->kind == KIND_EXEC && !s->done) {
        if (!s->exited) kill(-s->pid, SIGKILL);
        /* its output is not wanted any more: it must not keep the session alive for want of credit */
        for (int i = 1; i <= 2; i++)
          if (s->out[i].fd >= 0) end_output(s, i);
        maybe_finish(s);
      } else if (s->kind == KIND_PTY && !s->done) {
        /* a terminal whose last output never came (a background process holds it): it ends here,
         * kept for a resume like any ended pty; the agent sends its exit */
        if (s->out[1].fd >= 0) end_output(s, 1);
        close_endpoint(&s->in);
        queue_clear(&s->input);
        s->done = true;
        note_done(s->id, ECANCELED);
      } else if (s->kind != KIND_EXEC && !s->done) {
        /* output already read goes out first, then EOF */
        for (int i = 1; i <= 2; i++)
          if (s->out[i].fd >= 0) end_output(s, i);
        note_done(s->id, ECANCELED);
        free_session(s);
      }
      break;
    case OP_FORGET:
      if (s->kind == KIND_EXEC && !s->exited) kill(-s->pid, SIGKILL);
      free_session(s);
      break;
    case OP_RESUME:
      if (resumable(s)) do_resume(s, p + 1, len - 1);
      break;
    case OP_RESIZE:
      if (s->kind == KIND_PTY && s->in.fd >= 0 && len >= 5) {
        struct winsize ws = {.ws_row = get_u16(p + 3), .ws_col = get_u16(p + 1)};
        if (ioctl(s->in.fd, TIOCSWINSZ, &ws) < 0) logf_("session %u: resize: %s", s->id, strerror(errno));
      }
      break;
  }
}

/* ---- frames from the host ------------------------------------------------------------------ */
/* A forwarded port's connection is on the path of every new client connection, and a Node wakeup
 * under TCG costs milliseconds: when an open has the exact shape the host's port forwarder writes,
 * {"t":"open","kind":"connect","address":"<ip>","port":<n>}, the relay starts connecting at once,
 * while the agent reads the same open. The agent still decides: its CONNECT finds the session
 * connecting and changes nothing; its FORGET (a refusal) drops it; it reports started and the end. */
static void fast_connect(struct session *s, const uint8_t *payload, uint32_t len) {
  static const char prefix[] = "{\"t\":\"open\",\"kind\":\"connect\",\"address\":\"";
  static const char middle[] = "\",\"port\":";
  size_t at = sizeof prefix - 1;
  if (len <= at || memcmp(payload, prefix, at) != 0) return;
  uint8_t directive[2 + 48];
  size_t n = 0;
  while (at < len && payload[at] != '"' && n < 46) {
    uint8_t c = payload[at++];
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F') || c == '.' || c == ':')) return;
    directive[2 + n++] = c;
  }
  if (n == 0 || len - at < sizeof middle - 1 || memcmp(payload + at, middle, sizeof middle - 1) != 0) return;
  at += sizeof middle - 1;
  unsigned port = 0;
  size_t digits = 0;
  while (at < len && payload[at] >= '0' && payload[at] <= '9' && digits < 6) port = port * 10 + (payload[at++] - '0'), digits++;
  if (digits == 0 || port == 0 || port > 65535 || at + 1 != len || payload[at] != '}') return;
  directive[0] = port >> 8;
  directive[1] = port & 0xff;
  directive[2 + n] = 0;
  do_connect(s, directive, 3 + n);
}

static bool header_ok(const uint8_t *h) {
  if (get_u16(h) != MAGIC) return false;
  if (h[2] < T_CONTROL || h[2] > T_EOF || h[3] > 2) return false;
  uint32_t len = get_u32(h + 8);
  if (len > MAX_PAYLOAD) return false;
  if (h[2] == T_WINDOW && len != 4) return false;
  if (h[2] == T_EOF && len != 0) return false;
  return true;
}

static void on_host_frame(const uint8_t *h, const uint8_t *payload, uint32_t len) {
  uint32_t id = get_u32(h + 4);
  int type = h[2], stream = h[3];
  if (type == T_CONTROL) {
    /* An open gets a pending session at once, so input sent right behind it is kept. The host
     * writes `t` first (JSON.stringify of {t:'open', ...}); any other control frame (calls,
     * resizes, closes of finished sessions) must not leave an entry behind. */
    static const char open_prefix[] = "{\"t\":\"open\"";
    bool is_open = len >= sizeof open_prefix - 1 && memcmp(payload, open_prefix, sizeof open_prefix - 1) == 0;
    struct session *opened = NULL;
    if (id != 0 && is_open && !find_session(id) && !(opened = add_session(id))) logf_("too many sessions: not tracking session %u", id);
    send_agent(T_CONTROL, id, payload, len);
    /* after the open is on its way to the agent: any note about the session follows it */
    if (opened) fast_connect(opened, payload, len);
    return;
  }
  struct session *s = find_session(id);
  if (!s) return;
  if (type == T_DATA && stream == 0) on_host_data(s, payload, len);
  else if (type == T_WINDOW && (stream == 1 || stream == 2)) {
    uint32_t n = get_u32(payload);
    s->credit[stream] += n;
    if (s->credit[stream] > MAX_CREDIT) s->credit[stream] = MAX_CREDIT;
    /* a grant is the host's client taking that many bytes: they need not be kept any more */
    uint64_t unacked = s->sent[stream] - s->acked[stream];
    uint64_t taken = n < unacked ? n : unacked;
    s->acked[stream] += taken;
    ring_drop(&s->kept[stream], (size_t)taken);
  } else if (type == T_EOF && stream == 0) {
    s->input_eof = true;
  } else {
    return;
  }
  if (s->kind != KIND_PENDING) pump_input(s);
}

/* Splits port_in into frames. A restored VM may read the tail of a frame an earlier host end sent:
 * a bad header is skipped up to the next magic, as the agent always did. */
static void parse_port_input(void) {
  size_t at = 0;
  while (port_in_len - at >= HDR) {
    const uint8_t *h = port_in + at;
    if (!header_ok(h)) {
      size_t skip = 1;
      while (at + skip + 1 < port_in_len && !(port_in[at + skip] == (MAGIC >> 8) && port_in[at + skip + 1] == (MAGIC & 0xff))) skip++;
      at += skip;
      continue;
    }
    uint32_t len = get_u32(h + 8);
    if (port_in_len - at < HDR + len) break;
    on_host_frame(h, h + HDR, len);
    at += HDR + len;
  }
  memmove(port_in, port_in + at, port_in_len - at);
  port_in_len -= at;
}

/* ---- the port ---------------------------------------------------------------------------- */
static bool find_port(void) {
  DIR *d = opendir("/sys/class/virtio-ports");
  if (!d) return false;
  struct dirent *e;
  bool found = false;
  while (!found && (e = readdir(d))) {
    if (e->d_name[0] == '.') continue;
    char p[PATH_MAX], name[256];
    snprintf(p, sizeof p, "/sys/class/virtio-ports/%s/name", e->d_name);
    FILE *f = fopen(p, "r");
    if (!f) continue;
    if (fgets(name, sizeof name, f)) {
      name[strcspn(name, "\n")] = 0;
      if (strcmp(name, port_name) == 0) {
        snprintf(port_path, sizeof port_path, "/dev/%s", e->d_name);
        found = true;
      }
    }
    fclose(f);
  }
  closedir(d);
  return found;
}

static void open_port(void) {
  port_reopen_at = 0;
  if (!port_path[0] && !find_port()) {
    static int64_t last_log;
    if (now_ms() - last_log > 10000) logf_("no virtio-serial port named %s yet; retrying", port_name), last_log = now_ms();
    port_reopen_at = now_ms() + 1000;
    return;
  }
  int fd = open(port_path, O_RDWR | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) {
    logf_("cannot open %s: %s; retrying", port_path, strerror(errno));
    port_reopen_at = now_ms() + 1000;
    return;
  }
  port_ep.fd = fd;
  port_blocked = false;
  port_in_len = 0;
  arm(&port_ep, EPOLLIN | EPOLLOUT);
}

/* read() returns 0 while no host end is connected (before QEMU listens, between a save and a
 * restore): close and open again shortly, never "done". */
static void port_gone(void) {
  close_endpoint(&port_ep);
  port_reopen_at = now_ms() + REOPEN_MS;
}

static void on_port(uint32_t events) {
  if (events & EPOLLOUT) port_blocked = false;
  if (events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
    for (int i = 0; i < 64; i++) {
      ssize_t r = read(port_ep.fd, port_in + port_in_len, sizeof port_in - port_in_len);
      if (r < 0 && errno == EINTR) continue;
      if (r < 0 && errno == EAGAIN) break;
      if (r <= 0) {
        port_gone();
        return;
      }
      port_in_len += (size_t)r;
      parse_port_input();
      if (port_ep.fd < 0) return;
    }
  }
}

/* ---- the agent's socket -------------------------------------------------------------------- */
/* The agent's end message for a resumable session (a terminal's exit) is kept for a resume. */
static void keep_agent_final(uint32_t id, const uint8_t *payload, size_t len) {
  static const char exit_prefix[] = "{\"t\":\"exit\"", error_prefix[] = "{\"t\":\"error\"";
  bool is_end = (len >= sizeof exit_prefix - 1 && memcmp(payload, exit_prefix, sizeof exit_prefix - 1) == 0) ||
                (len >= sizeof error_prefix - 1 && memcmp(payload, error_prefix, sizeof error_prefix - 1) == 0);
  if (!is_end || id == 0) return;
  struct session *s = find_session(id);
  if (s && resumable(s)) keep_final(s, payload, len);
}

static void on_agent(uint32_t events) {
  if (events & EPOLLOUT) agent_blocked = false;
  if (!(events & (EPOLLIN | EPOLLHUP | EPOLLERR))) return;
  for (;;) {
    ssize_t r = read(agent_ep.fd, agent_in + agent_in_len, sizeof agent_in - agent_in_len);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0 && errno == EAGAIN) return;
    if (r <= 0) {
      /* the agent is gone; its exit status arrives through SIGCHLD */
      close_endpoint(&agent_ep);
      return;
    }
    agent_in_len += (size_t)r;
    size_t at = 0;
    while (agent_in_len - at >= HDR) {
      const uint8_t *h = agent_in + at;
      uint32_t len = get_u32(h + 8);
      if (get_u16(h) != MAGIC || len > MAX_PAYLOAD || !((h[2] >= T_CONTROL && h[2] <= T_EOF) || h[2] == T_LOCAL)) {
        logf_("the agent sent a malformed frame; exiting");
        exit(70);
      }
      if (agent_in_len - at < HDR + len) break;
      if (h[2] == T_LOCAL) on_directive(get_u32(h + 4), h + HDR, len);
      else {
        if (h[2] == T_CONTROL) keep_agent_final(get_u32(h + 4), h + HDR, len);
        struct frame *f = frame_new(HDR + len);
        memcpy(f->data, h, HDR + len);
        send_port(f);
      }
      at += HDR + len;
    }
    memmove(agent_in, agent_in + at, agent_in_len - at);
    agent_in_len -= at;
  }
}

/* ---- children ------------------------------------------------------------------------------ */
static void kill_exec_sessions(void) {
  for (struct session *s = all_sessions; s; s = s->next)
      if (s->kind == KIND_EXEC && !s->exited) kill(-s->pid, SIGKILL);
}

static void agent_exited(int status);

static void on_sigchld(void) {
  struct signalfd_siginfo si;
  while (read(signal_ep.fd, &si, sizeof si) == (ssize_t)sizeof si) {
    if (si.ssi_signo == SIGTERM || si.ssi_signo == SIGINT) {
      logf_("signal %d: stopping the agent", si.ssi_signo);
      if (agent_pid > 0) kill(agent_pid, SIGTERM);
    }
  }
  int status;
  pid_t pid;
  while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
    if (pid == agent_pid) {
      agent_exited(status);
      continue;
    }
    for (struct session *s = all_sessions; s; s = s->next)
        if (s->kind == KIND_EXEC && s->pid == pid && !s->exited) {
          s->exited = true;
          s->wstatus = status;
          /* output still in the pipes is read before the exit is reported */
          maybe_finish(s);
          goto next;
        }
  next:;
  }
}

static void start_agent(char **argv) {
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
    logf_("socketpair: %s", strerror(errno));
    exit(71);
  }
  posix_spawn_file_actions_t fa;
  posix_spawnattr_t attr;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, sv[1], 3);
  posix_spawnattr_init(&attr);
  sigset_t none, defaults;
  sigemptyset(&none);
  sigemptyset(&defaults);
  sigaddset(&defaults, SIGPIPE);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setsigdefault(&attr, &defaults);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  setenv("SANDBOXVM_RELAY_FD", "3", 1);
  int rc = posix_spawnp(&agent_pid, argv[0], &fa, &attr, argv, environ);
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&attr);
  close(sv[1]);
  if (rc != 0) {
    logf_("cannot start the agent %s: %s", argv[0], strerror(rc));
    exit(71);
  }
  agent_pidfd = (int)syscall(SYS_pidfd_open, agent_pid, 0);
  if (agent_pidfd < 0) {
    logf_("pidfd_open: %s (the kernel needs 5.6 or later)", strerror(errno));
    kill(agent_pid, SIGKILL);
    exit(71);
  }
  agent_ep.fd = sv[0];
  set_nonblock(agent_ep.fd);
  arm(&agent_ep, EPOLLIN | EPOLLOUT);
}

static char **agent_argv;

/* The agent process ended. Exec and pty sessions are the relay's to keep: a new agent is started
 * and told about them. Pending opens and file transfers end (the old agent owned their decisions). */
static void agent_exited(int status) {
  int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  static int64_t window_start;
  static int restarts;
  if (now_ms() - window_start > 60000) window_start = now_ms(), restarts = 0;
  if (++restarts > MAX_AGENT_RESTARTS) {
    kill_exec_sessions();
    logf_("the agent exited (status %d), %d times within a minute; exiting", code, restarts);
    exit(code ? code : 70);
  }
  logf_("the agent exited (status %d); starting it again, keeping the sessions that can live on", code);
  close_endpoint(&agent_ep);
  if (agent_pidfd >= 0) close(agent_pidfd);
  agent_pidfd = -1;
  queue_clear(&agent_out);
  agent_in_len = 0;
  agent_blocked = false;
  for (struct session *s = all_sessions, *next; s; s = next) {
    next = s->next;
    if ((s->kind == KIND_PTY || s->kind == KIND_EXEC) && !s->done) continue;
    if (s->done) {
      free_session(s); /* its end was reported; the old agent was keeping it for a resume */
      continue;
    }
    send_control(s->id, "{\"t\":\"error\",\"message\":\"the guest agent restarted before this session could carry on; retry\"}");
    free_session(s);
  }
  start_agent(agent_argv);
  for (struct session *s = all_sessions; s; s = s->next) {
    uint8_t p[6] = {NOTE_INHERIT, (uint8_t)s->kind, (uint32_t)s->pid >> 24, (uint32_t)s->pid >> 16, (uint32_t)s->pid >> 8, (uint32_t)s->pid};
    send_agent(T_LOCAL, s->id, p, sizeof p);
  }
}

/* ---- the loop ------------------------------------------------------------------------------ */
/* Sources are read only while the port's queue is short and the host has granted credit. */
static void update_interest(bool *regular_ready) {
  bool room = port_out.bytes < PORT_QUEUE_HIGH;
  *regular_ready = false;
  for (struct session *s = all_sessions; s; s = s->next) {
      for (int i = 1; i <= 2; i++) {
        if (s->out[i].fd < 0) continue;
        bool want = room && s->credit[i] > 0 && !s->connecting;
        if (s->out_regular) *regular_ready |= want;
        else arm(&s->out[i], want ? EPOLLIN : 0);
      }
      if (s->in.fd >= 0 && !s->in_regular) arm(&s->in, s->input.head || s->connecting ? EPOLLOUT : 0);
    }
}

static void pump_regular_files(void) {
  for (struct session *s = all_sessions, *next; s; s = next) {
    next = s->next; /* s may be freed */
    if (s->out_regular && s->out[1].fd >= 0 && port_out.bytes < PORT_QUEUE_HIGH) pump_output(s, 1);
  }
}

/* Returns owed stdin credit once its deadline has passed; arms the deadline when some is owed. */
static void return_due_credit(void) {
  bool owed = false;
  bool due = credit_deadline && now_ms() >= credit_deadline;
  for (struct session *s = all_sessions; s; s = s->next) {
    if (due) return_credit(s);
    owed |= s->credit_owed > 0;
  }
  if (!owed) credit_deadline = 0;
  else if (due || !credit_deadline) credit_deadline = now_ms() + CREDIT_DELAY_MS;
}

/*
 * `sandboxvm-relay --reseed`: the agent's identity call (guest-agent/src/identity.ts). Credits the
 * bytes on stdin (at most 256) to the kernel's input pool and reseeds the CRNG, so guests restored
 * from one memory state stop sharing /dev/urandom's output at once. Needs CAP_SYS_ADMIN (root).
 */
static int reseed_from_stdin(void) {
  struct { struct rand_pool_info info; uint8_t buf[256]; } req;
  size_t n = 0;
  while (n < sizeof req.buf) {
    ssize_t r = read(0, req.buf + n, sizeof req.buf - n);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break;
    n += (size_t)r;
  }
  if (n < 32) return 65;
  int fd = open("/dev/urandom", O_RDWR | O_CLOEXEC);
  if (fd < 0) return 70;
  req.info.entropy_count = (int)(n * 8);
  req.info.buf_size = (int)n;
  int rc = ioctl(fd, RNDADDENTROPY, &req) == 0 && ioctl(fd, RNDRESEEDCRNG) == 0 ? 0 : 71;
  close(fd);
  return rc;
}

/* Writes `text` to `path` through a temporary and a rename (mode `mode`). */
static int replace_file(const char *path, const char *text, mode_t mode) {
  char tmp[PATH_MAX];
  snprintf(tmp, sizeof tmp, "%s.sandboxvm-%d", path, (int)getpid());
  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
  if (fd < 0) return -1;
  size_t len = strlen(text);
  bool ok = write(fd, text, len) == (ssize_t)len;
  ok = close(fd) == 0 && ok;
  if (!ok || rename(tmp, path) != 0) {
    unlink(tmp);
    return -1;
  }
  return 0;
}

/*
 * `sandboxvm-relay --identity HOSTNAME MACHINE_ID [MAC]`, the seed on stdin: the whole identity
 * call (guest-agent/src/identity.ts) in one short process: RNG reseeded, hostname (kernel,
 * /etc/hostname, /etc/hosts), /etc/machine-id, and eth0's MAC (SIOCSIFHWADDR: virtio-net tells
 * QEMU through its control queue). The agent validated the arguments. Exit 0, or the step that failed.
 */
static int identity(int argc, char **argv) {
  if (argc < 4) return 64;
  const char *host = argv[2], *machine_id = argv[3], *mac = argc > 4 ? argv[4] : NULL;
  if (reseed_from_stdin() != 0) return 71;
  if (sethostname(host, strlen(host)) != 0) return 72;
  char text[4096];
  snprintf(text, sizeof text, "%s\n", host);
  if (replace_file("/etc/hostname", text, 0644) != 0) return 73;
  snprintf(text, sizeof text, "%s\n", machine_id);
  if (replace_file("/etc/machine-id", text, 0444) != 0) return 74;
  /* /etc/hosts: its first line, then 127.0.1.1 <host>, then the rest without older 127.0.1.1 lines. */
  char hosts[8192] = "";
  FILE *f = fopen("/etc/hosts", "re");
  size_t n = f ? fread(hosts, 1, sizeof hosts - 1, f) : 0;
  if (f) fclose(f);
  hosts[n] = 0;
  size_t used = 0;
  text[0] = 0;
  bool first = true;
  for (char *line = strtok(hosts, "\n"); line; line = strtok(NULL, "\n")) {
    if (strncmp(line, "127.0.1.1", 9) == 0) continue;
    used += snprintf(text + used, used < sizeof text ? sizeof text - used : 0, "%s\n", line);
    if (first) used += snprintf(text + used, used < sizeof text ? sizeof text - used : 0, "127.0.1.1 %s\n", host);
    first = false;
  }
  if (first) used += snprintf(text + used, used < sizeof text ? sizeof text - used : 0, "127.0.0.1 localhost\n127.0.1.1 %s\n", host);
  if (used < sizeof text && replace_file("/etc/hosts", text, 0644) != 0) return 75;
  if (mac) {
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    strncpy(ifr.ifr_name, "eth0", IFNAMSIZ - 1);
    unsigned b[6];
    if (sscanf(mac, "%2x:%2x:%2x:%2x:%2x:%2x", &b[0], &b[1], &b[2], &b[3], &b[4], &b[5]) != 6) return 64;
    ifr.ifr_hwaddr.sa_family = ARPHRD_ETHER;
    for (int i = 0; i < 6; i++) ifr.ifr_hwaddr.sa_data[i] = (char)b[i];
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (s < 0 || ioctl(s, SIOCSIFHWADDR, &ifr) != 0) return 76;
    close(s);
  }
  return 0;
}

int main(int argc, char **argv) {
  if (argc == 2 && strcmp(argv[1], "--reseed") == 0) return reseed_from_stdin();
  if (argc >= 2 && strcmp(argv[1], "--identity") == 0) return identity(argc, argv);
  if (argc < 2) {
    fprintf(stderr, "usage: sandboxvm-relay <agent command line...>\n");
    return 64;
  }
  const char *name = getenv("SANDBOXVM_PORT_NAME");
  if (name && *name) port_name = name;
  signal(SIGPIPE, SIG_IGN);
  sigset_t mask;
  sigemptyset(&mask);
  sigaddset(&mask, SIGCHLD);
  sigaddset(&mask, SIGTERM);
  sigaddset(&mask, SIGINT);
  sigprocmask(SIG_BLOCK, &mask, NULL);
  epfd = epoll_create1(EPOLL_CLOEXEC);
  signal_ep.fd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
  arm(&signal_ep, EPOLLIN);
  agent_argv = argv + 1;
  start_agent(agent_argv);
  open_port();

  struct epoll_event events[64];
  for (;;) {
    flush_port();
    flush_agent();
    return_due_credit();
    flush_port();
    bool regular_ready;
    update_interest(&regular_ready);
    arm(&port_ep, EPOLLIN | (port_out.head && port_blocked ? EPOLLOUT : 0));
    arm(&agent_ep, EPOLLIN | (agent_out.head && agent_blocked ? EPOLLOUT : 0));
    int timeout = -1;
    if (regular_ready) timeout = 0;
    else {
      int64_t deadline = port_reopen_at;
      if (credit_deadline && (!deadline || credit_deadline < deadline)) deadline = credit_deadline;
      if (deadline) {
        int64_t wait = deadline - now_ms();
        timeout = wait < 0 ? 0 : (int)wait;
      }
    }
    int n = epoll_wait(epfd, events, 64, timeout);
    if (n < 0 && errno != EINTR) {
      logf_("epoll_wait: %s", strerror(errno));
      return 70;
    }
    if (port_reopen_at && now_ms() >= port_reopen_at) open_port();
    for (int i = 0; i < n; i++) {
      uint64_t key = events[i].data.u64;
      uint32_t ev = events[i].events;
      uint32_t id = (uint32_t)(key >> 32);
      int slot = (int)(key & 0xff);
      if (id == 0) {
        if (slot == SLOT_PORT && port_ep.fd >= 0) on_port(ev);
        else if (slot == SLOT_AGENT && agent_ep.fd >= 0) on_agent(ev);
        else if (slot == SLOT_SIGNAL) on_sigchld();
        continue;
      }
      struct session *s = find_session(id);
      if (!s || s->serial != ((key >> 8) & 0xffffff)) continue; /* freed earlier in this batch */
      if (slot == SLOT_IN) {
        if (s->connecting) finish_connect(s);
        else pump_input(s);
      }
      else if (slot == SLOT_OUT || slot == SLOT_ERR) {
        /* a few chunks per wakeup, so one busy source does not starve the others */
        for (int k = 0; k < 4 && find_session(id) == s && port_out.bytes < PORT_QUEUE_HIGH; k++)
          if (!pump_output(s, slot)) break;
      }
    }
    if (regular_ready) pump_regular_files();
  }
}
