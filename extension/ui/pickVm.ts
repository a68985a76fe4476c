/** Which VM a command acts on: the tree item it was invoked on, a name passed in, or a quick pick. */
import * as vscode from 'vscode';
import type { VmState } from '../../runtime/common/status';
import type { VmModel } from '../model/vmModel';
import type { Node } from '../tree/vmTreeProvider';
import { vmLook } from '../tree/vmPresentation';

/** A command's target as callers pass it: a tree node, a VM name (tests, other extensions), or nothing. */
export type VmTarget = Node | string | undefined;

/**
 * The VM's name, or undefined when the user dismissed the pick. With nothing given, offers the VMs
 * in `states`; when there are none, says so (`verb`: what the command does, e.g. "start").
 */
export async function pickVm(model: VmModel, target: VmTarget, states: readonly VmState[], verb: string): Promise<string | undefined> {
  if (typeof target === 'string') return target;
  if (target) return target.kind === 'vm' ? target.name : target.vm;
  const candidates = model.list().filter((i) => states.includes(i.state));
  if (candidates.length === 0) {
    void vscode.window.showInformationMessage(model.size === 0 ? 'There are no VMs yet; create one first.' : `No VM can ${verb} now (it needs one that is ${states.join(' or ')}).`);
    return undefined;
  }
  const picked = await vscode.window.showQuickPick(
    candidates.map((i) => ({ label: `$(${vmLook(i).icon.replace('~spin', '')}) ${i.name}`, description: vmLook(i).description, name: i.name })),
    { title: `Choose the VM to ${verb}`, placeHolder: 'VM name' },
  );
  return picked?.name;
}
