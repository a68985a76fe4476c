/**
 * The Create VM wizard: four input steps (name, CPUs, memory, disk) with Back, each validated as it
 * is typed, prefilled from the settings. Resolves with the answers, or undefined when dismissed.
 */
import * as os from 'node:os';
import * as vscode from 'vscode';
import { cpusError, diskError, memoryError, nameError, parseDiskGiB, parseMemoryMiB } from './createValidation';

export interface CreateAnswers {
  name: string;
  cpus: number;
  memoryMiB: number;
  diskGiB: number;
}

export interface WizardDefaults {
  cpus: number;
  memory: string;
  disk: string;
}

interface Step {
  key: 'name' | 'cpus' | 'memory' | 'disk';
  prompt: string;
  placeholder: string;
  validate: (v: string) => string | undefined;
}

const BACK = Symbol('back');

function ask(step: Step, index: number, total: number, value: string): Promise<string | typeof BACK | undefined> {
  return new Promise((resolve) => {
    const box = vscode.window.createInputBox();
    box.title = 'Create VM';
    box.step = index + 1;
    box.totalSteps = total;
    box.prompt = step.prompt;
    box.placeholder = step.placeholder;
    // Later steps start with their default, selected: Enter keeps it, typing replaces it.
    box.value = value || (index > 0 ? step.placeholder : '');
    box.valueSelection = [0, box.value.length];
    box.ignoreFocusOut = true;
    box.buttons = index > 0 ? [vscode.QuickInputButtons.Back] : [];
    const check = () => (box.validationMessage = box.value === '' && index > 0 ? undefined : step.validate(box.value));
    check();
    let settled = false;
    const done = (r: string | typeof BACK | undefined) => {
      if (settled) return;
      settled = true;
      resolve(r);
      box.dispose();
    };
    box.onDidChangeValue(check);
    box.onDidTriggerButton((b) => b === vscode.QuickInputButtons.Back && done(BACK));
    box.onDidAccept(() => {
      const v = box.value === '' && index > 0 ? step.placeholder : box.value;
      const error = step.validate(v);
      if (error) box.validationMessage = error;
      else done(v);
    });
    box.onDidHide(() => done(undefined));
    box.show();
  });
}

export async function createWizard(defaults: WizardDefaults, exists: (name: string) => boolean): Promise<CreateAnswers | undefined> {
  const hostCpus = os.cpus().length;
  const hostMiB = Math.floor(os.totalmem() / 1024 / 1024);
  const steps: Step[] = [
    { key: 'name', prompt: 'Name of the VM: lowercase letters, digits and dashes', placeholder: 'dev', validate: (v) => nameError(v, exists) },
    { key: 'cpus', prompt: `Virtual CPUs (this machine has ${hostCpus})`, placeholder: String(defaults.cpus), validate: (v) => cpusError(v, hostCpus) },
    { key: 'memory', prompt: 'Memory, like 512M or 2G', placeholder: defaults.memory, validate: (v) => memoryError(v, hostMiB) },
    { key: 'disk', prompt: 'Disk size in GiB; it takes space only as it is written', placeholder: defaults.disk, validate: diskError },
  ];
  const values: Record<Step['key'], string> = { name: '', cpus: '', memory: '', disk: '' };
  for (let i = 0; i < steps.length; ) {
    const r = await ask(steps[i], i, steps.length, values[steps[i].key]);
    if (r === undefined) return undefined;
    if (r === BACK) {
      i = Math.max(0, i - 1);
      continue;
    }
    values[steps[i].key] = r;
    i++;
  }
  return { name: values.name, cpus: Number(values.cpus), memoryMiB: parseMemoryMiB(values.memory)!, diskGiB: parseDiskGiB(values.disk)! };
}
