/**
 * What the welcome views need to know about this host, asked of the service (host.status): is QEMU
 * there and new enough, is the base image built, can it be built and what is missing. Asked when
 * the connection comes up, on Refresh and after an image build; `phase` folds it into the values
 * the `sandboxvm.qemu` and `sandboxvm.image` context keys take (pure, unit-tested).
 */
import type { HostStatus } from '../../runtime/service/hostStatus';
import { Emitter } from './event';

export type QemuPhase = 'unknown' | 'ok' | 'missing' | 'tooOld';
export type ImagePhase = 'unknown' | 'ready' | 'missing' | 'unbuildable' | 'building';

export function qemuPhase(s: HostStatus | undefined): QemuPhase {
  if (!s) return 'unknown';
  if (s.qemu.ok) return 'ok';
  return s.qemu.code === 'QemuTooOld' ? 'tooOld' : 'missing';
}

export function imagePhase(s: HostStatus | undefined, building: boolean): ImagePhase {
  if (building) return 'building';
  if (!s) return 'unknown';
  if (s.image.ready) return 'ready';
  return s.image.buildable ? 'missing' : 'unbuildable';
}

export interface Requirement {
  /** One sentence, with its full stop. */
  what: string;
  /** The command that fixes it. */
  fix: string;
}

/** With its full stop; not capitalised, as a sentence may start with a command's name. */
const asSentence = (t: string) => (/[.!?]$/.test(t.trim()) ? t.trim() : `${t.trim()}.`);

/**
 * What this host lacks, for what the static welcome text cannot say (TreeView.message would hide
 * the welcome view): QEMU's own error, then each missing build prerequisite, each with its command.
 */
export function hostRequirements(s: HostStatus | undefined): Requirement[] {
  if (!s) return [];
  const out: Requirement[] = [];
  if (!s.qemu.ok) out.push({ what: asSentence(s.qemu.message.replace(/; install it with: .*$/, '')), fix: s.qemu.fix });
  if (!s.image.ready && !s.image.buildable) out.push(...s.image.missing.map((m) => ({ what: asSentence(m.what), fix: m.fix })));
  return out;
}

export class HostState {
  private value?: HostStatus;
  private buildingNow = false;
  private generation = 0;
  private readonly changed = new Emitter<void>();
  readonly onDidChange = this.changed.event;

  constructor(private readonly query: () => Promise<HostStatus>, private readonly log: (m: string) => void) {}

  get status(): HostStatus | undefined {
    return this.value;
  }
  get building(): boolean {
    return this.buildingNow;
  }
  get qemu(): QemuPhase {
    return qemuPhase(this.value);
  }
  get image(): ImagePhase {
    return imagePhase(this.value, this.buildingNow);
  }
  get requirements(): Requirement[] {
    return hostRequirements(this.value);
  }

  /** Asks the service again; a failure keeps the last answer (the connection's own state says why). */
  async refresh(): Promise<HostStatus | undefined> {
    const mine = ++this.generation;
    try {
      const s = await this.query();
      if (mine === this.generation) {
        this.value = s;
        this.changed.fire();
      }
      return s;
    } catch (err) {
      this.log(`host status: ${(err as Error).message}`);
      return undefined;
    }
  }

  setBuilding(building: boolean): void {
    if (building === this.buildingNow) return;
    this.buildingNow = building;
    this.changed.fire();
  }

  dispose(): void {
    this.changed.dispose();
  }
}
