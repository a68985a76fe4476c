/**
 * The mocha entry VS Code's test runner loads inside the real extension host
 * (`extensionTestsPath`): runs every compiled `*.test.js` beside it with the tdd UI. Results go to
 * the console (the driver captures it) and, when SANDBOXVM_VSCODE_RESULTS names a file, as JSON.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import Mocha from 'mocha';

export function run(): Promise<void> {
  const mocha = new Mocha({ ui: 'tdd', color: false, timeout: 120_000, reporter: 'spec' });
  for (const f of fs.readdirSync(__dirname).sort()) if (f.endsWith('.test.js')) mocha.addFile(path.join(__dirname, f));
  const results: { title: string; state: string; ms?: number; error?: string }[] = [];
  return new Promise((resolve, reject) => {
    const runner = mocha.run((failures) => {
      const out = process.env.SANDBOXVM_VSCODE_RESULTS;
      if (out) fs.writeFileSync(out, JSON.stringify({ failures, results }, null, 2));
      failures > 0 ? reject(new Error(`${failures} test(s) failed`)) : resolve();
    });
    runner.on('pass', (t) => results.push({ title: t.fullTitle(), state: 'passed', ms: t.duration }));
    runner.on('fail', (t, err) => results.push({ title: t.fullTitle(), state: 'failed', error: String((err as Error)?.stack ?? err) }));
  });
}
