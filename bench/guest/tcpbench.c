/*
 * tcpbench: the guest end of `npm run bench -- ports` (static, built with the host's gcc like
 * chanbench.c). Listens on 0.0.0.0:PORT with WORKERS pre-forked processes, each serving one
 * connection at a time with blocking I/O (no fork per connection: connect latency measures the
 * forwarding path, not process creation). The first byte of a connection picks what it does:
 *   'e'  echo every byte until EOF, then close
 *   's'  sink: read until EOF, then write the byte count (8 bytes, big endian) and close
 *   'r'  source: read an 8-byte count, write that many bytes, then close
 * usage: tcpbench PORT
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define WORKERS 8
static char buf[256 * 1024];

static int write_all(int fd, const char *p, size_t n) {
  while (n > 0) {
    ssize_t w = write(fd, p, n);
    if (w <= 0) return -1;
    p += w;
    n -= (size_t)w;
  }
  return 0;
}

static int read_full(int fd, char *p, size_t n) {
  while (n > 0) {
    ssize_t r = read(fd, p, n);
    if (r <= 0) return -1;
    p += r;
    n -= (size_t)r;
  }
  return 0;
}

static void serve(int c) {
  int one = 1;
  setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  char mode;
  if (read(c, &mode, 1) != 1) return;
  if (mode == 'e') {
    ssize_t r;
    while ((r = read(c, buf, sizeof buf)) > 0)
      if (write_all(c, buf, (size_t)r) < 0) return;
  } else if (mode == 's') {
    uint64_t total = 0;
    ssize_t r;
    while ((r = read(c, buf, sizeof buf)) > 0) total += (uint64_t)r;
    unsigned char out[8];
    for (int i = 0; i < 8; i++) out[i] = (unsigned char)(total >> (56 - 8 * i));
    write_all(c, (char *)out, 8);
  } else if (mode == 'r') {
    unsigned char in[8];
    if (read_full(c, (char *)in, 8) < 0) return;
    uint64_t left = 0;
    for (int i = 0; i < 8; i++) left = left << 8 | in[i];
    memset(buf, 'x', sizeof buf);
    while (left > 0) {
      size_t n = left < sizeof buf ? (size_t)left : sizeof buf;
      if (write_all(c, buf, n) < 0) return;
      left -= n;
    }
  }
}

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: tcpbench PORT\n");
    return 64;
  }
  signal(SIGPIPE, SIG_IGN);
  signal(SIGCHLD, SIG_IGN);
  int s = socket(AF_INET, SOCK_STREAM, 0);
  int one = 1;
  setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[1])), .sin_addr.s_addr = htonl(INADDR_ANY)};
  if (bind(s, (struct sockaddr *)&a, sizeof a) < 0 || listen(s, 64) < 0) {
    perror("tcpbench: bind/listen");
    return 1;
  }
  for (int i = 0; i < WORKERS; i++) {
    if (fork() == 0) {
      for (;;) {
        int c = accept(s, NULL, NULL);
        if (c < 0) continue;
        serve(c);
        close(c);
      }
    }
  }
  for (;;) pause();
}
