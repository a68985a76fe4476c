/**
 * The tree's live figures (CPU % in descriptions, guest info in tooltips, ports as children):
 * while the view is visible, every VM that runs is watched in the metrics store; when the view is
 * hidden, none is (the service then samples nothing for the tree).
 */
import type * as vscode from 'vscode';
import type { MetricsStore } from '../model/metricsStore';
import type { VmModel } from '../model/vmModel';

const LIVE = new Set(['starting', 'running', 'paused']);

export function bindTreeMetrics(view: vscode.TreeView<unknown>, model: VmModel, metrics: MetricsStore): vscode.Disposable {
  const watches = new Map<string, vscode.Disposable>();
  const sync = () => {
    const wanted = new Set(view.visible ? model.list().filter((i) => LIVE.has(i.state)).map((i) => i.name) : []);
    for (const [name, w] of watches) {
      if (wanted.has(name)) continue;
      w.dispose();
      watches.delete(name);
    }
    for (const name of wanted) if (!watches.has(name)) watches.set(name, metrics.watch(name));
  };
  const subs = [view.onDidChangeVisibility(sync), model.onDidChange(sync)];
  sync();
  return {
    dispose: () => {
      for (const s of subs) s.dispose();
      for (const w of watches.values()) w.dispose();
      watches.clear();
    },
  };
}
