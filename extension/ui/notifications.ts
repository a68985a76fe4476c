/**
 * Where the extension tells the user things: errors as one sentence (also logged), never awaited
 * (a toast's promise resolves only when it is dismissed). `onDidShowError` lets tests see what a
 * user would have read.
 */
import * as vscode from 'vscode';
import { isCancellation, sentence } from './messages';

export class Notifications implements vscode.Disposable {
  private readonly shown = new vscode.EventEmitter<string>();
  readonly onDidShowError = this.shown.event;

  constructor(private readonly log: vscode.LogOutputChannel) {}

  /** Shows `err` as one sentence; cancellations are not failures and show nothing. */
  error(err: unknown, context?: string): void {
    if (isCancellation(err)) return;
    const text = sentence(err);
    this.log.error(`${context ? `${context}: ` : ''}${text}`);
    this.shown.fire(text);
    void vscode.window.showErrorMessage(text);
  }

  warn(text: string): void {
    this.log.warn(text);
    void vscode.window.showWarningMessage(text);
  }

  info(text: string): void {
    this.log.info(text);
    void vscode.window.showInformationMessage(text);
  }

  dispose(): void {
    this.shown.dispose();
  }
}
