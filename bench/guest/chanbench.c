/*
 * The raw channel's ceiling, measured from inside the guest with no agent in the way: a static
 * program on a virtio-serial port of its own (the peer QEMU adds org.sandboxvm.raw). It announces
 * itself with one 'R' byte, then:
 *   chanbench PORT echo       sends every byte back at once until it reads a 'q'
 *   chanbench PORT sink N     reads N bytes, then answers 'k'
 *   chanbench PORT source N   writes N bytes
 * Reads use a 64 KiB buffer; writes are at most 32 KiB (virtio-serial's limit per write).
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int open_port(const char *name) {
  DIR *d = opendir("/sys/class/virtio-ports");
  struct dirent *e;
  while (d && (e = readdir(d))) {
    char p[PATH_MAX], n[256] = "";
    snprintf(p, sizeof p, "/sys/class/virtio-ports/%s/name", e->d_name);
    FILE *f = fopen(p, "r");
    if (!f) continue;
    if (fgets(n, sizeof n, f)) n[strcspn(n, "\n")] = 0;
    fclose(f);
    if (strcmp(n, name) == 0) {
      snprintf(p, sizeof p, "/dev/%s", e->d_name);
      closedir(d);
      return open(p, O_RDWR);
    }
  }
  if (d) closedir(d);
  return -1;
}

static int write_all(int fd, const char *buf, size_t n) {
  while (n > 0) {
    ssize_t w = write(fd, buf, n > 32768 ? 32768 : n);
    if (w <= 0) return -1;
    buf += w;
    n -= (size_t)w;
  }
  return 0;
}

int main(int argc, char **argv) {
  if (argc < 3) return 64;
  int fd = open_port(argv[1]);
  if (fd < 0) {
    perror("open port");
    return 1;
  }
  static char buf[65536];
  if (write_all(fd, "R", 1)) return 1;
  long long n = argc > 3 ? atoll(argv[3]) : 0;
  if (strcmp(argv[2], "echo") == 0) {
    for (;;) {
      ssize_t r = read(fd, buf, sizeof buf);
      if (r <= 0) return 0;
      if (memchr(buf, 'q', (size_t)r)) return 0;
      if (write_all(fd, buf, (size_t)r)) return 1;
    }
  } else if (strcmp(argv[2], "sink") == 0) {
    while (n > 0) {
      ssize_t r = read(fd, buf, sizeof buf);
      if (r <= 0) return 1;
      n -= r;
    }
    return write_all(fd, "k", 1) ? 1 : 0;
  } else if (strcmp(argv[2], "source") == 0) {
    memset(buf, 's', sizeof buf);
    while (n > 0) {
      size_t k = n > 32768 ? 32768 : (size_t)n;
      if (write_all(fd, buf, k)) return 1;
      n -= (long long)k;
    }
    return 0;
  }
  return 64;
}
