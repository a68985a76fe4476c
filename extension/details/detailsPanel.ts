/**
 * VM details (Hyper-V Manager's lower pane) as a webview panel, one per VM: opening the details of
 * a VM whose panel is open reveals it. The panel watches the VM's metrics while it is open (the
 * service samples only then) and forwards each sample and each status snapshot to the webview,
 * which draws them (media/details.js). Nothing polls. Strict CSP: nothing but the extension's own
 * script (with a nonce) and stylesheet; no remote content.
 */
import { randomBytes } from 'node:crypto';
import * as vscode from 'vscode';
import type { MetricsStore } from '../model/metricsStore';
import type { VmModel } from '../model/vmModel';
import { WebviewType } from '../ids';
import { HISTORY_MS } from '../model/metricsStore';
import { detailsSample, detailsStatus, type FromWebview, type ToWebview } from './detailsMessages';

/** How many posted messages and webview reports a panel keeps for tests to read. */
const KEPT = 400;

export class DetailsPanel implements vscode.Disposable {
  /** What was posted to the webview, newest last (bounded). */
  readonly posted: ToWebview[] = [];
  /** What the webview reported, newest last (bounded). */
  readonly reports: FromWebview[] = [];
  private readonly reported = new vscode.EventEmitter<FromWebview>();
  readonly onDidReport = this.reported.event;
  private readonly disposables: vscode.Disposable[] = [];
  private ready = false;
  private disposed = false;

  constructor(readonly vm: string, readonly panel: vscode.WebviewPanel, private readonly model: VmModel, private readonly metrics: MetricsStore, private readonly onDispose: () => void) {
    this.disposables.push(
      metrics.watch(vm),
      metrics.onDidChange((name) => {
        const latest = name === vm ? metrics.latest(vm) : undefined;
        if (latest) this.post({ type: 'sample', sample: detailsSample(latest) });
      }),
      model.onDidChange((change) => {
        if (change && change.name !== vm) return;
        const info = model.get(vm);
        if (!info) return this.panel.dispose(); // deleted
        this.post({ type: 'status', status: detailsStatus(info) });
      }),
      panel.webview.onDidReceiveMessage((m: FromWebview) => this.onMessage(m)),
      panel.onDidDispose(() => this.dispose()),
      this.reported,
    );
  }

  private onMessage(m: FromWebview): void {
    if (typeof m !== 'object' || m === null || typeof m.type !== 'string') return;
    push(this.reports, m);
    if (m.type === 'ready') {
      this.ready = true;
      const info = this.model.get(this.vm);
      if (info) this.post({ type: 'init', status: detailsStatus(info), samples: this.metrics.history(this.vm).map(detailsSample), historyMs: HISTORY_MS });
    }
    this.reported.fire(m);
  }

  private post(m: ToWebview): void {
    if (!this.ready || this.disposed) return;
    push(this.posted, m);
    void this.panel.webview.postMessage(m);
  }

  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    this.onDispose();
    for (const d of this.disposables.splice(0).reverse()) d.dispose();
    this.panel.dispose();
  }
}

function push<T>(list: T[], item: T): void {
  list.push(item);
  if (list.length > KEPT) list.splice(0, list.length - KEPT);
}

export class DetailsPanels implements vscode.Disposable {
  private readonly panels = new Map<string, DetailsPanel>();

  constructor(private readonly extensionUri: vscode.Uri, private readonly model: VmModel, private readonly metrics: MetricsStore) {}

  get(vm: string): DetailsPanel | undefined {
    return this.panels.get(vm);
  }

  /** Reveals the VM's panel, opening it when there is none. */
  show(vm: string): DetailsPanel {
    const open = this.panels.get(vm);
    if (open) {
      open.panel.reveal();
      return open;
    }
    const media = vscode.Uri.joinPath(this.extensionUri, 'media');
    const panel = vscode.window.createWebviewPanel(WebviewType.details, `${vm}: details`, vscode.ViewColumn.Active, {
      enableScripts: true,
      localResourceRoots: [media],
      retainContextWhenHidden: false,
    });
    panel.iconPath = vscode.Uri.joinPath(media, 'sandbox-vms.svg');
    const details = new DetailsPanel(vm, panel, this.model, this.metrics, () => this.panels.delete(vm));
    this.panels.set(vm, details);
    panel.webview.html = detailsHtml(panel.webview, media, vm);
    return details;
  }

  dispose(): void {
    for (const p of [...this.panels.values()]) p.dispose();
  }
}

function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

/** The page: CSP with a nonce, the extension's stylesheet and script, nothing else. */
export function detailsHtml(webview: vscode.Webview, media: vscode.Uri, vm: string): string {
  const nonce = randomBytes(16).toString('base64');
  const css = webview.asWebviewUri(vscode.Uri.joinPath(media, 'details.css'));
  const js = webview.asWebviewUri(vscode.Uri.joinPath(media, 'details.js'));
  const csp = `default-src 'none'; style-src ${webview.cspSource}; img-src ${webview.cspSource}; font-src ${webview.cspSource}; script-src 'nonce-${nonce}';`;
  return `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="${csp}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="stylesheet" href="${css}">
<title>${escapeHtml(vm)}: details</title>
</head>
<body>
<main id="root" aria-live="polite"><h1>${escapeHtml(vm)}</h1><p class="muted">Loading...</p></main>
<script nonce="${nonce}" src="${js}"></script>
</body>
</html>`;
}
