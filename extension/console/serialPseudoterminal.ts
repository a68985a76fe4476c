/**
 * The serial console (Hyper-V's VMConnect) as a VS Code terminal: a Pseudoterminal over the
 * runtime's SerialClient. It shows the worker's replay first (up to the last 64 KiB: opened while
 * the VM starts, that is the boot from its first kernel line), then live output; keys go to the
 * guest's ttyS0 (a root shell there, independent of the agent). It rides out a worker takeover
 * (SerialClient reconnects from its position). When the console ends (the VM stopped or was saved)
 * one dim line says so and the next key closes the terminal.
 */
import { StringDecoder } from 'node:string_decoder';
import * as vscode from 'vscode';
import type { SerialClient } from '../../runtime/client/serialClient';

export interface SerialPtyOptions {
  vm: string;
  /** Connects to the VM's console (ServiceClient.console, waiting for a starting VM's socket). */
  connect: () => Promise<SerialClient>;
  log: (message: string) => void;
}

const dim = (text: string) => `\r\n\x1b[2m${text}\x1b[0m\r\n`;

/** What the terminal says when the console ends; `reason` is SerialClient's. */
export function serialEndMessage(vm: string, reason: string): string {
  if (reason === `${vm} stopped`) return `${vm} stopped; the serial console ended. Press any key to close the terminal.`;
  return `The serial console ended: ${reason}. Press any key to close the terminal.`;
}

export class SerialPseudoterminal implements vscode.Pseudoterminal {
  private readonly writeEmitter = new vscode.EventEmitter<string>();
  private readonly closeEmitter = new vscode.EventEmitter<number | void>();
  readonly onDidWrite = this.writeEmitter.event;
  readonly onDidClose = this.closeEmitter.event;
  private readonly endEmitter = new vscode.EventEmitter<string>();
  /** The console ended for good (why); the terminal stays open to say so until a key is pressed. */
  readonly onDidEnd = this.endEmitter.event;
  private readonly connectEmitter = new vscode.EventEmitter<void>();
  readonly onDidConnect = this.connectEmitter.event;

  private client?: SerialClient;
  private ended = false;
  private closed = false;
  private readonly decoder = new StringDecoder('utf8');

  constructor(private readonly options: SerialPtyOptions) {}

  get vm(): string {
    return this.options.vm;
  }

  get connected(): boolean {
    return !!this.client && !this.ended;
  }

  open(): void {
    void this.start();
  }

  private async start(): Promise<void> {
    const { vm } = this.options;
    this.writeEmitter.fire(`\x1b[2mSerial console of ${vm} (ttyS0). It works without the guest agent.\x1b[0m\r\n`);
    try {
      const client = await this.options.connect();
      if (this.closed) return client.close('closed');
      this.client = client;
      client.onData((d) => this.writeEmitter.fire(this.decoder.write(d)));
      client.onClose((reason) => this.finish(reason));
      this.connectEmitter.fire();
    } catch (err) {
      this.finish(`cannot open the serial console of ${vm}: ${(err as Error).message}`, true);
    }
  }

  private finish(reason: string, failedToOpen = false): void {
    if (this.ended || this.closed) return;
    this.ended = true;
    this.options.log(`serial console of ${this.options.vm}: ${reason}`);
    const text = failedToOpen ? `${reason.replace(/\.$/, '')}. Press any key to close the terminal.` : serialEndMessage(this.options.vm, reason);
    this.writeEmitter.fire(this.decoder.end() + dim(text));
    this.endEmitter.fire(reason);
  }

  handleInput(data: string): void {
    if (this.ended) return this.closeEmitter.fire();
    this.client?.write(data);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.client?.close('closed');
    this.writeEmitter.dispose();
    this.closeEmitter.dispose();
    this.endEmitter.dispose();
    this.connectEmitter.dispose();
  }
}
