/** A notification with the service's progress steps (boot, image build, save). */
import * as vscode from 'vscode';
import type { ProgressListener } from '../../runtime/client/serviceClient';

export function withServiceProgress<T>(title: string, work: (report: ProgressListener) => Promise<T>): Thenable<T> {
  return vscode.window.withProgress({ location: vscode.ProgressLocation.Notification, title, cancellable: false }, (progress) => {
    let last = 0;
    return work((step, total, message) => {
      const pct = total > 0 ? Math.min(100, (step / total) * 100) : 0;
      progress.report({ message: total > 1 ? `${message} (${step}/${total})` : message, increment: Math.max(0, pct - last) });
      last = Math.max(last, pct);
    });
  });
}
