/**
 * AF_VSOCK sockets through koffi (Node has none). Shared by the guest agent (listening) and the
 * worker (connecting, only where /dev/vhost-vsock is usable). Blocking calls (accept, connect) run
 * on koffi's async path, off the event loop; an accepted or connected fd becomes a net.Socket
 * driven by libuv (see streamFromFd).
 *
 * Never open AF_VSOCK on a host without vhost-vsock: its vsock may lead somewhere else entirely.
 * Callers decide that (see runtime/accel/transport.ts); this module only does what it is told.
 */
import * as net from 'node:net';

export const AF_VSOCK = 40;
export const VMADDR_CID_ANY = 0xffffffff;
/** Loopback inside one kernel (vsock_loopback). */
export const VMADDR_CID_LOCAL = 1;
export const VMADDR_CID_HOST = 2;
/** The port the guest agent listens on. */
export const AGENT_VSOCK_PORT = 5252;

const SOCK_STREAM = 1;
const SOCK_CLOEXEC = 0o2000000;

interface Libc {
  koffi: any;
  socket: any;
  bind: any;
  listen: any;
  accept4: any;
  connect: any;
  close: any;
}

let libc: Libc | undefined;

function load(): Libc {
  if (libc) return libc;
  const koffi = require('koffi');
  const lib = koffi.load('libc.so.6');
  // struct sockaddr_vm from <linux/vm_sockets.h>: 16 bytes.
  const sockaddr_vm = koffi.struct('sockaddr_vm', {
    svm_family: 'uint16_t',
    svm_reserved1: 'uint16_t',
    svm_port: 'uint32_t',
    svm_cid: 'uint32_t',
    svm_flags: 'uint8_t',
    svm_zero: koffi.array('uint8_t', 3),
  });
  libc = {
    koffi,
    socket: lib.func('int socket(int domain, int type, int protocol)'),
    bind: lib.func('bind', 'int', ['int', koffi.pointer(sockaddr_vm), 'uint32_t']),
    listen: lib.func('int listen(int fd, int backlog)'),
    accept4: lib.func('int accept4(int fd, void *addr, void *len, int flags)'),
    connect: lib.func('connect', 'int', ['int', koffi.pointer(sockaddr_vm), 'uint32_t']),
    close: lib.func('int close(int fd)'),
  };
  return libc;
}

function address(cid: number, port: number): object {
  return { svm_family: AF_VSOCK, svm_reserved1: 0, svm_port: port >>> 0, svm_cid: cid >>> 0, svm_flags: 0, svm_zero: [0, 0, 0] };
}

function fail(what: string): never {
  const errno = load().koffi.errno();
  const err = new Error(`${what} failed (errno ${errno})`) as NodeJS.ErrnoException;
  err.errno = errno;
  throw err;
}

/** True when this kernel has AF_VSOCK at all (creates and closes a socket; no connection). */
export function vsockSupported(): boolean {
  try {
    const c = load();
    const fd = c.socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return false;
    c.close(fd);
    return true;
  } catch {
    return false;
  }
}

export class VsockListener {
  private closed = false;

  private constructor(private readonly fd: number) {}

  /** Binds and listens on `port` for connections from any CID. */
  static listen(port: number, backlog = 16): VsockListener {
    const c = load();
    const fd = c.socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) fail('socket(AF_VSOCK)');
    if (c.bind(fd, address(VMADDR_CID_ANY, port), 16) !== 0) {
      c.close(fd);
      fail(`bind(vsock port ${port})`);
    }
    if (c.listen(fd, backlog) !== 0) {
      c.close(fd);
      fail('listen(vsock)');
    }
    return new VsockListener(fd);
  }

  /** Accepts connections one after another until closed, each as a net.Socket. */
  serve(onConnection: (socket: net.Socket) => void, onError: (err: Error) => void): void {
    const c = load();
    const next = () => {
      if (this.closed) return;
      c.accept4.async(this.fd, null, null, SOCK_CLOEXEC, (err: Error | null, fd: number) => {
        if (this.closed) return;
        if (err || fd < 0) {
          onError(err ?? new Error(`accept4(vsock) failed (errno ${c.koffi.errno()})`));
          setTimeout(next, 1000);
          return;
        }
        onConnection(streamFromFd(fd));
        next();
      });
    };
    next();
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    load().close(this.fd);
  }
}

/** Connects to `cid`:`port`; resolves with a net.Socket. */
export function vsockConnect(cid: number, port: number): Promise<net.Socket> {
  const c = load();
  const fd = c.socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) fail('socket(AF_VSOCK)');
  return new Promise((resolve, reject) => {
    c.connect.async(fd, address(cid, port), 16, (err: Error | null, rc: number) => {
      if (err || rc !== 0) {
        const errno = c.koffi.errno();
        c.close(fd);
        reject(err ?? Object.assign(new Error(`connect(vsock ${cid}:${port}) failed (errno ${errno})`), { errno }));
        return;
      }
      resolve(streamFromFd(fd));
    });
  });
}

/**
 * A net.Socket over any pollable fd (a vsock socket, a virtio-serial port): libuv's pipe handle
 * (uv_pipe_open: non-blocking, epoll-driven). Node's public API refuses fds it does not recognise
 * ("Unsupported fd type"), so this goes through the pipe_wrap binding net itself uses.
 */
export function streamFromFd(fd: number, options: { allowHalfOpen?: boolean } = {}): net.Socket {
  const binding = (process as unknown as { binding(name: string): any }).binding('pipe_wrap');
  const handle = new binding.Pipe(binding.constants.SOCKET);
  const err = handle.open(fd);
  if (err) throw new Error(`uv_pipe_open(${fd}) failed (${err})`);
  return new net.Socket({ handle, readable: true, writable: true, allowHalfOpen: options.allowHalfOpen ?? false } as net.SocketConstructorOpts);
}
