/** A notification with the service's progress steps (boot, image build, save). */
import * as vscode from 'vscode';
import type { ProgressListener } from '../../runtime/client/serviceClient';

/**
 * Runs `work` under a progress notification that shows each step. With `cancellable`, the
 * notification has a Cancel button that aborts the signal handed to `work`.
 */
export function withServiceProgress<T>(title: string, work: (report: ProgressListener, signal: AbortSignal) => Promise<T>, options: { cancellable?: boolean } = {}): Thenable<T> {
  return vscode.window.withProgress({ location: vscode.ProgressLocation.Notification, title, cancellable: !!options.cancellable }, (progress, token) => {
    const controller = new AbortController();
    const cancel = token.onCancellationRequested(() => controller.abort());
    let last = 0;
    return work((step, total, message) => {
      const pct = total > 0 ? Math.min(100, (step / total) * 100) : 0;
      progress.report({ message: total > 1 ? `${message} (${step}/${total})` : message, increment: Math.max(0, pct - last) });
      last = Math.max(last, pct);
    }, controller.signal).finally(() => cancel.dispose());
  });
}
