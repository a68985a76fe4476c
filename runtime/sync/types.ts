/** A sync's definition (persisted with its VM) and its status (published as whole snapshots). */

export interface SyncSpec {
  /** Short, stable id (unique per VM). */
  id: string;
  vm: string;
  /** Absolute host folder. */
  hostDir: string;
  /** Absolute guest folder. */
  guestPath: string;
  /** Extra ignore patterns (.gitignore syntax) on top of the defaults (ignore.ts). */
  ignore: string[];
  /** Honour the folder's .gitignore files (default true). */
  gitignore: boolean;
}

export type SyncState = 'waiting' | 'connecting' | 'scanning' | 'syncing' | 'in-sync' | 'error';

export interface SyncStatus {
  id: string;
  vm: string;
  hostDir: string;
  guestPath: string;
  state: SyncState;
  /** One plain sentence: 'in sync', 'syncing 12 file(s)', or what went wrong. */
  message: string;
  /** The pass under way (or the last): files and bytes applied of the totals. */
  files: number;
  totalFiles: number;
  bytes: number;
  totalBytes: number;
  /** Files found equal by the last comparison (not sent). */
  equal?: number;
  /** When the guest last matched (ms since the epoch). */
  lastSyncAt?: number;
  /** How long the last full comparison and copy took. */
  firstSyncMs?: number;
  /**
   * Where the last full comparison and copy spent its time (ms): connecting to the guest and
   * scanning the host folder (side by side), the guest's manifest, the copy (until the guest
   * applied the last record), and which guest writer applied it.
   */
  phases?: { connectMs: number; scanMs: number; manifestMs: number; pushMs: number; writer: 'node' | 'native' };
  /** What the last scan skipped (links leading out of the folder, unreadable folders). */
  warnings: string[];
}
