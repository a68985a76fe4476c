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

/**
 * The one-paragraph detail shown above an empty view (TreeView.message) for what the static
 * welcome text cannot say: QEMU's own error, or each missing build prerequisite with its command.
 */
export function hostMessage(s: HostStatus | undefined, building: boolean): string | undefined {
  if (!s) return undefined;
  if (!s.qemu.ok) return s.qemu.message.charAt(0).toUpperCase() + s.qemu.message.slice(1);
  if (!building && !s.image.ready && !s.image.buildable && s.image.missing.length) {
    return `To build the base image this host needs: ${s.image.missing.map((m) => `${m.what} (run: ${m.fix})`).join('; ')}.`;
  }
  return undefined;
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
  get message(): string | undefined {
    return hostMessage(this.value, this.buildingNow);
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
