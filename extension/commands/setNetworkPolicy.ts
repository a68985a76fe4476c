/** Set Network Policy: a quick pick of the three policies for a stopped VM; used from its next start. */
import * as vscode from 'vscode';
import { NETWORK_POLICIES, NETWORK_POLICY_DESCRIPTIONS, parseNetworkPolicy, type NetworkPolicy } from '../../runtime/common/config';
import { pickVm, type VmTarget } from '../ui/pickVm';
import type { CommandDeps } from './deps';

/**
 * Sets the policy of a stopped VM (the service refuses any other state, with the sentence that says
 * why). `policy` given (tests, other extensions) skips the pick. Resolves with the policy set, or
 * undefined when the user dismissed a pick.
 */
export async function setNetworkPolicy(deps: CommandDeps, target?: VmTarget, policy?: string): Promise<NetworkPolicy | undefined> {
  const name = await pickVm(deps.model, target, ['stopped'], 'change the network policy of');
  if (!name) return undefined;
  let chosen = policy === undefined ? undefined : parseNetworkPolicy(policy);
  if (!chosen) {
    const current = deps.model.get(name)?.config.network;
    const picked = await vscode.window.showQuickPick(
      NETWORK_POLICIES.map((p) => ({ label: p, description: p === current ? '(current)' : undefined, detail: NETWORK_POLICY_DESCRIPTIONS[p], policy: p })),
      { title: `Network policy of ${name} (from its next start)`, placeHolder: 'isolated, internet or host' },
    );
    chosen = picked?.policy;
  }
  if (!chosen) return undefined;
  await (await deps.connection.client()).set({ name, network: chosen });
  deps.log.info(`${name}: network policy ${chosen}`);
  return chosen;
}
