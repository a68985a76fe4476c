/**
 * How workspace syncs look in the status bar: a pure function of their status snapshots
 * (runtime/sync/types.ts), so it is tested without VS Code. The syncs of the window's folders
 * come first; errors win over syncing, syncing over in sync.
 */
import type { SyncStatus } from '../../runtime/sync/types';

export interface SyncLook {
  text: string;
  tooltip: string;
}

const RANK: Record<SyncStatus['state'], number> = { error: 0, syncing: 1, scanning: 2, connecting: 3, waiting: 4, 'in-sync': 5 };

/** The status bar's text and tooltip for `syncs`, or undefined when there is nothing to show. */
export function syncLook(syncs: readonly SyncStatus[], folders: readonly string[]): SyncLook | undefined {
  const mine = syncs.filter((s) => folders.some((f) => s.hostDir === f || s.hostDir.startsWith(`${f}/`)));
  const shown = mine.length > 0 ? mine : syncs;
  if (shown.length === 0) return undefined;
  const worst = [...shown].sort((a, b) => RANK[a.state] - RANK[b.state])[0];
  const icon = worst.state === 'error' ? 'warning' : worst.state === 'in-sync' ? 'check' : worst.state === 'waiting' ? 'debug-pause' : 'sync~spin';
  const progress = worst.state === 'syncing' && worst.totalFiles > 0 ? ` ${worst.files}/${worst.totalFiles}` : '';
  const word = worst.state === 'in-sync' ? 'in sync' : worst.state === 'syncing' ? `syncing${progress}` : worst.state === 'error' ? 'sync error' : worst.state;
  const more = shown.length > 1 ? ` (+${shown.length - 1})` : '';
  return {
    text: `$(${icon}) ${worst.vm}: ${word}${more}`,
    tooltip: shown.map((s) => `${s.hostDir} → ${s.vm}:${s.guestPath}: ${s.message}`).join('\n'),
  };
}
