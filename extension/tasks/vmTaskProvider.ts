/**
 * The `sandboxvm` task provider: tasks.json entries `{ "type": "sandboxvm", "vm": "dev",
 * "command": "make test", "undoPoint": true }` run in the VM (vmTaskTerminal.ts). Provides no tasks
 * of its own; resolves those the user writes. Remembers the last run of this window for "Undo
 * Last Task Run". The undo point carries the `sandboxvm.undoPoints.*` limits when they are set.
 */
import * as vscode from 'vscode';
import type { ServiceClient } from '../../runtime/client/serviceClient';
import type { CreatedCheckpoint } from '../../runtime/service/checkpoints';
import { Setting } from '../ids';
import type { ServiceConnection } from '../model/serviceConnection';
import type { VmModel } from '../model/vmModel';
import { TASK_TYPE, checkTaskDefinition, undoLimits, type VmTaskDefinition } from './vmTaskDefinition';
import { VmTaskTerminal } from './vmTaskTerminal';

export interface TaskRun {
  vm: string;
  command: string;
  exitCode: number;
  undoPoint?: CreatedCheckpoint;
  /** The end of what the command printed. */
  output: string;
}

export class VmTasks implements vscode.TaskProvider, vscode.Disposable {
  private last?: TaskRun;
  private readonly finishedEmitter = new vscode.EventEmitter<TaskRun>();
  /** A run ended (tests wait on it). */
  readonly onDidFinish = this.finishedEmitter.event;
  private readonly registration: vscode.Disposable;

  constructor(
    private readonly connection: ServiceConnection<ServiceClient>,
    private readonly model: VmModel,
    private readonly settings: () => vscode.WorkspaceConfiguration,
    private readonly log: (m: string) => void,
  ) {
    this.registration = vscode.tasks.registerTaskProvider(TASK_TYPE, this);
  }

  provideTasks(): vscode.Task[] {
    return [];
  }

  resolveTask(task: vscode.Task): vscode.Task | undefined {
    const def = checkTaskDefinition(task.definition);
    if (typeof def === 'string') {
      this.log(`task ${task.name}: ${def}`);
      return undefined;
    }
    return this.task(def, task.name, task.scope);
  }

  /** A runnable task for `def` (the tests and resolveTask make them here). */
  task(def: VmTaskDefinition, name = def.command, scope: vscode.TaskScope | vscode.WorkspaceFolder = vscode.TaskScope.Workspace): vscode.Task {
    const t = new vscode.Task(def, scope, name, TASK_TYPE, new vscode.CustomExecution(async () => new VmTaskTerminal(def, {
      undoPoint: (vm) => this.undoPoint(vm),
      connect: async (vm) => (await this.connection.client()).attach(vm),
      state: (vm) => this.model.get(vm)?.state,
      finished: (run) => {
        if (run.undoPoint) this.last = run;
        this.log(`task "${name}" in ${run.vm} exited with ${run.exitCode}`);
        this.finishedEmitter.fire(run);
      },
    })));
    t.detail = `in ${def.vm}${def.undoPoint === false ? '' : ', with an undo point'}`;
    return t;
  }

  private async undoPoint(vm: string): Promise<CreatedCheckpoint> {
    const s = this.settings();
    const limits = undoLimits(s.get(Setting.undoMaxCount), s.get(Setting.undoMaxDiskMiB));
    const client = await this.connection.client();
    // Older services ignore the limits (they prune by their own count).
    return client.createCheckpoint(vm, undefined, { undo: true, ...limits });
  }

  /** The last run of this window that took an undo point. */
  lastRun(): TaskRun | undefined {
    return this.last;
  }

  dispose(): void {
    this.registration.dispose();
    this.finishedEmitter.dispose();
  }
}
