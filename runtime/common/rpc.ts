/**
 * JSON-RPC over local sockets (vscode-jsonrpc, as VS Code's language servers use), shared by the
 * service's API and the workers' sockets. Handlers are one flat table of method -> function.
 * SandboxErrors cross as ResponseErrors whose `data` keeps the stable code.
 */
import * as net from 'node:net';
import { ResponseError, createMessageConnection, SocketMessageReader, SocketMessageWriter, type MessageConnection } from 'vscode-jsonrpc/node';
import { ErrorCode, SandboxError, asSandboxError, type WireError } from './errors';
import { connectUnix } from './unixSocket';

export type Handler = (params: any, peer: RpcPeer) => Promise<unknown> | unknown;
export type HandlerTable = Record<string, Handler>;

/** One connected client, as seen by a server: to send it notifications and learn when it leaves. */
export interface RpcPeer {
  readonly connection: MessageConnection;
  notify(method: string, params: unknown): void;
  onClose(listener: () => void): void;
}

const SANDBOX_ERROR = -32000;

export function toResponseError(err: unknown): ResponseError<WireError> {
  const e = asSandboxError(err);
  return new ResponseError(SANDBOX_ERROR, e.message, e.toWire());
}

export function fromRpcError(err: unknown, what: string): SandboxError {
  if (err instanceof ResponseError && err.data && typeof err.data.code === 'string') return SandboxError.fromWire(err.data as WireError);
  if (err instanceof SandboxError) return err;
  return new SandboxError(ErrorCode.ServiceUnavailable, `${what}: ${(err as Error)?.message ?? err}`);
}

export function serveSocket(socket: net.Socket, handlers: HandlerTable, log: (m: string) => void): RpcPeer {
  const connection = createMessageConnection(new SocketMessageReader(socket), new SocketMessageWriter(socket));
  const closeListeners: (() => void)[] = [];
  let closed = false;
  const peer: RpcPeer = {
    connection,
    notify(method, params) {
      if (!closed) connection.sendNotification(method, params).catch(() => undefined);
    },
    onClose(listener) {
      closeListeners.push(listener);
    },
  };
  for (const [method, handler] of Object.entries(handlers)) {
    // The same table answers notifications (fire-and-forget calls such as session.ack).
    connection.onNotification(method, (params: unknown) => {
      Promise.resolve()
        .then(() => handler(params ?? {}, peer))
        .catch((err) => log(`${method} (notification) failed: ${(err as Error)?.message ?? err}`));
    });
    connection.onRequest(method, async (params: unknown) => {
      try {
        return (await handler(params ?? {}, peer)) ?? null;
      } catch (err) {
        const e = asSandboxError(err);
        if (e.code === ErrorCode.Internal) log(`${method} failed: ${(err as Error)?.stack ?? err}`);
        return toResponseError(e);
      }
    });
  }
  const close = () => {
    if (closed) return;
    closed = true;
    for (const l of closeListeners) {
      try {
        l();
      } catch (err) {
        log(`close listener failed: ${(err as Error).message}`);
      }
    }
    connection.dispose();
  };
  connection.onClose(close);
  socket.on('close', close);
  socket.on('error', () => undefined);
  connection.listen();
  return peer;
}

/** Connects to a JSON-RPC socket; rejects if nothing accepts within `timeoutMs`. */
export async function connectSocket(socketPath: string, timeoutMs = 5000): Promise<MessageConnection> {
  const socket = await connectUnix(socketPath, timeoutMs);
  const connection = createMessageConnection(new SocketMessageReader(socket), new SocketMessageWriter(socket));
  connection.onClose(() => socket.destroy());
  socket.on('close', () => connection.dispose());
  connection.listen();
  return connection;
}

/** Sends a request and turns a ResponseError back into the SandboxError it was. */
export async function call<T>(connection: MessageConnection, method: string, params?: unknown): Promise<T> {
  try {
    return (await connection.sendRequest(method, params ?? {})) as T;
  } catch (err) {
    throw fromRpcError(err, method);
  }
}
