/** Bundles the mocha suites of test/vscode/suite (vscode and mocha external) into dist/test-vscode; returns the index. */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { build } from 'esbuild';

export async function buildSuites(): Promise<string> {
  const repo = path.resolve(__dirname, '..', '..');
  const out = path.join(repo, 'dist', 'test-vscode');
  fs.rmSync(out, { recursive: true, force: true });
  const dir = path.join(__dirname, 'suite');
  const entries = fs.readdirSync(dir).filter((f) => f.endsWith('.ts')).map((f) => path.join(dir, f));
  await build({ entryPoints: entries, bundle: true, platform: 'node', target: 'node20', format: 'cjs', outdir: out, external: ['vscode', 'mocha', 'koffi', 'node-pty'], sourcemap: 'inline', logLevel: 'warning' });
  return path.join(out, 'index.js');
}
