/**
 * The mocha entry VS Code's test runner loads inside the real extension host
 * (`extensionTestsPath`): runs every compiled `*.test.js` beside it with the tdd UI. Results go to
 * the console (the driver captures it) and, when SANDBOXVM_VSCODE_RESULTS names a file, as JSON,
 * rewritten after every test (a window reload ends the run midway).
 *
 * With SANDBOXVM_VSCODE_HANDOFF (a file path) the run has two phases: the first runs the suites
 * and then `reload.before.js`, which writes the handoff file and reloads the window; the reloaded
 * window's extension host loads this entry again, finds the handoff and runs `reload.after.js`
 * alone, appending its results.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import Mocha from 'mocha';

interface Result {
  title: string;
  state: string;
  ms?: number;
  error?: string;
}

export function run(): Promise<void> {
  const mocha = new Mocha({ ui: 'tdd', color: false, timeout: 120_000, reporter: 'spec' });
  const out = process.env.SANDBOXVM_VSCODE_RESULTS;
  const handoff = process.env.SANDBOXVM_VSCODE_HANDOFF;
  const afterReload = !!handoff && fs.existsSync(handoff);
  const results: Result[] = [];
  if (afterReload) {
    if (out && fs.existsSync(out)) results.push(...(JSON.parse(fs.readFileSync(out, 'utf8')) as { results: Result[] }).results);
    mocha.addFile(path.join(__dirname, 'reload.after.js'));
  } else {
    // SANDBOXVM_VSCODE_ONLY=<prefix>: only the suites whose file starts with it, and no reload phase.
    const only = process.env.SANDBOXVM_VSCODE_ONLY;
    for (const f of fs.readdirSync(__dirname).sort()) if (f.endsWith('.test.js') && (!only || f.startsWith(only))) mocha.addFile(path.join(__dirname, f));
    if (handoff && !only) mocha.addFile(path.join(__dirname, 'reload.before.js'));
  }
  const save = () => {
    if (out) fs.writeFileSync(out, JSON.stringify({ failures: results.filter((r) => r.state === 'failed').length, results }, null, 2));
  };
  return new Promise((resolve, reject) => {
    const runner = mocha.run(() => {
      save();
      const failures = results.filter((r) => r.state === 'failed').length;
      failures > 0 ? reject(new Error(`${failures} test(s) failed`)) : resolve();
    });
    runner.on('pass', (t) => {
      results.push({ title: t.fullTitle(), state: 'passed', ms: t.duration });
      save();
    });
    runner.on('fail', (t, err) => {
      results.push({ title: t.fullTitle(), state: 'failed', error: String((err as Error)?.stack ?? err) });
      save();
    });
  });
}
