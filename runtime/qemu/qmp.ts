/**
 * A QMP client over an already-connected socket (QEMU inherits the other end as an fd).
 * `ready` resolves after the greeting and qmp_capabilities; `execute` pipelines commands and matches
 * replies by id; events are delivered to `onEvent` listeners.
 */
import { EventEmitter } from 'node:events';
import type { Duplex } from 'node:stream';
import { ErrorCode, SandboxError } from '../common/errors';

export interface QmpEvent {
  event: string;
  data?: Record<string, unknown>;
  timestamp?: { seconds: number; microseconds: number };
}

export class QmpClient {
  readonly ready: Promise<void>;
  private readonly events = new EventEmitter();
  private readonly pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void; command: string }>();
  private nextId = 1;
  private buffer = '';
  private closed = false;

  constructor(private readonly socket: Duplex, private readonly log: (m: string) => void = () => undefined) {
    let greeted: () => void;
    let failed: (e: Error) => void;
    const greeting = new Promise<void>((resolve, reject) => ((greeted = resolve), (failed = reject)));
    socket.setEncoding?.('utf8');
    socket.on('data', (text: string) => this.onData(text, greeted));
    socket.on('error', () => undefined);
    socket.on('close', () => {
      this.closed = true;
      const err = new SandboxError(ErrorCode.WorkerLost, 'QEMU closed its QMP connection');
      failed(err);
      for (const p of this.pending.values()) p.reject(err);
      this.pending.clear();
      this.events.emit('close');
    });
    this.ready = greeting.then(() => this.execute('qmp_capabilities')).then(() => undefined);
  }

  onEvent(listener: (e: QmpEvent) => void): () => void {
    this.events.on('event', listener);
    return () => this.events.off('event', listener);
  }

  onClose(listener: () => void): void {
    this.events.on('close', listener);
  }

  execute<T = unknown>(command: string, args?: Record<string, unknown>): Promise<T> {
    if (this.closed) return Promise.reject(new SandboxError(ErrorCode.WorkerLost, `QMP is closed (command ${command})`));
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      this.pending.set(id, { resolve: resolve as (v: unknown) => void, reject, command });
      this.socket.write(JSON.stringify(args ? { execute: command, arguments: args, id } : { execute: command, id }) + '\n');
    });
  }

  /** Resolves with the first event named `name` (and matching `filter`), or rejects after `timeoutMs`. */
  waitEvent(name: string, timeoutMs: number, filter: (e: QmpEvent) => boolean = () => true): Promise<QmpEvent> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        off();
        reject(new SandboxError(ErrorCode.Timeout, `QEMU did not report ${name} within ${timeoutMs} ms`));
      }, timeoutMs);
      const off = this.onEvent((e) => {
        if (e.event === name && filter(e)) {
          clearTimeout(timer);
          off();
          resolve(e);
        }
      });
    });
  }

  private onData(text: string, greeted: () => void): void {
    this.buffer += text;
    if (this.buffer.length > 16 * 1024 * 1024) {
      this.log('QMP: over 16 MiB without a newline; closing');
      this.socket.destroy();
      return;
    }
    let nl: number;
    while ((nl = this.buffer.indexOf('\n')) >= 0) {
      const line = this.buffer.slice(0, nl).trim();
      this.buffer = this.buffer.slice(nl + 1);
      if (!line) continue;
      let msg: Record<string, any>;
      try {
        msg = JSON.parse(line);
      } catch {
        this.log(`QMP: unparseable line ${line.slice(0, 200)}`);
        continue;
      }
      if (msg.QMP) greeted();
      else if (msg.event) this.events.emit('event', msg as QmpEvent);
      else if (typeof msg.id === 'number' && this.pending.has(msg.id)) {
        const p = this.pending.get(msg.id)!;
        this.pending.delete(msg.id);
        if (msg.error) p.reject(new SandboxError(ErrorCode.Internal, `QMP ${p.command} failed: ${msg.error.desc ?? JSON.stringify(msg.error)}`));
        else p.resolve(msg.return);
      }
    }
  }
}
