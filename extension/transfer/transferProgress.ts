/** A cancellable notification for an export or import, showing bytes as the service reports them. */
import * as vscode from 'vscode';
import type { ProgressListener } from '../../runtime/client/serviceClient';
import { formatBytes } from '../../runtime/cli/progress';

export function withTransferProgress<T>(title: string, work: (report: ProgressListener, signal: AbortSignal) => Promise<T>): Thenable<T> {
  return vscode.window.withProgress({ location: vscode.ProgressLocation.Notification, title, cancellable: true }, (progress, token) => {
    const controller = new AbortController();
    const cancel = token.onCancellationRequested(() => controller.abort());
    let last = 0;
    return work((done, total, message) => {
      const pct = total > 0 ? Math.min(100, (done / total) * 100) : 0;
      progress.report({ message: total > 0 ? `${message}: ${formatBytes(done)} of ${formatBytes(total)}` : message, increment: Math.max(0, pct - last) });
      last = Math.max(last, pct);
    }, controller.signal).finally(() => cancel.dispose());
  });
}
