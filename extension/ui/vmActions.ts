/** The actions a VM offers in its state, in the order a user wants them (pure; unit-tested). */
import type { VmState } from '../../runtime/common/status';
import { Command, type CommandId } from '../ids';

export interface VmAction {
  label: string;
  command: CommandId;
}

export function vmActions(state: VmState | undefined): VmAction[] {
  const a = (icon: string, label: string, command: CommandId): VmAction => ({ label: `$(${icon}) ${label}`, command });
  switch (state) {
    case 'running':
      return [a('terminal', 'Open Terminal', Command.openTerminal), a('save', 'Save', Command.save), a('debug-pause', 'Pause', Command.pause), a('debug-restart', 'Restart', Command.restart), a('debug-stop', 'Stop', Command.stop), a('circle-slash', 'Turn Off', Command.turnOff), a('pulse', 'Show Details', Command.showDetails), a('plug', 'Open Serial Console', Command.openSerialConsole), a('output', 'Show Console Log', Command.showLog)];
    case 'paused':
      return [a('debug-continue', 'Resume', Command.resume), a('save', 'Save', Command.save), a('debug-stop', 'Stop', Command.stop), a('circle-slash', 'Turn Off', Command.turnOff), a('pulse', 'Show Details', Command.showDetails)];
    case 'saved':
      return [a('debug-start', 'Start (restore)', Command.start), a('output', 'Show Console Log', Command.showLog), a('trash', 'Delete...', Command.delete)];
    case 'stopped':
      return [a('debug-start', 'Start', Command.start), a('output', 'Show Console Log', Command.showLog), a('trash', 'Delete...', Command.delete)];
    case 'starting':
    case 'stopping':
    case 'saving':
      return [a('circle-slash', 'Turn Off', Command.turnOff), a('output', 'Show Console Log', Command.showLog)];
    default:
      return [a('add', 'Create VM...', Command.create)];
  }
}
