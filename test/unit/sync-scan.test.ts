/** The host scan (runtime/sync/scan.ts) on a real folder: links, ignores, nested .gitignore. */
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { test } from 'node:test';
import { baseRules } from '../../runtime/sync/ignore';
import { scanTree } from '../../runtime/sync/scan';

test('links inside are kept, links leading out skipped with a warning; ignored folders are not entered', async () => {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'sync-scan-'));
  try {
    fs.mkdirSync(path.join(root, 'src/lib'), { recursive: true });
    fs.writeFileSync(path.join(root, 'src/lib/a.ts'), 'a');
    fs.writeFileSync(path.join(root, 'src/b.log'), 'b');
    fs.symlinkSync('lib/a.ts', path.join(root, 'src/inside'));
    fs.symlinkSync('../../etc/passwd', path.join(root, 'src/climbs-out'));
    fs.symlinkSync('/etc/passwd', path.join(root, 'absolute'));
    fs.mkdirSync(path.join(root, 'node_modules/x'), { recursive: true });
    fs.writeFileSync(path.join(root, 'node_modules/x/i.js'), 'i');
    fs.writeFileSync(path.join(root, '.gitignore'), 'node_modules/\n');
    fs.writeFileSync(path.join(root, 'src/.gitignore'), '*.log\n');
    fs.writeFileSync(path.join(root, 'top.log'), 'kept: the *.log rule is src/’s');
    const scan = await scanTree(root, baseRules(), { gitignore: true });
    assert.deepEqual([...scan.entries.keys()].sort(), ['.gitignore', 'src', 'src/.gitignore', 'src/inside', 'src/lib', 'src/lib/a.ts', 'top.log']);
    assert.equal(scan.entries.get('src/inside')!.target, 'lib/a.ts');
    assert.equal(scan.warnings.length, 2);
    assert.ok(scan.warnings.every((w) => /outside the folder: skipped/.test(w)));
    assert.ok(!scan.dirs.includes('node_modules'), 'an ignored folder is not walked or watched');
    const all = await scanTree(root, baseRules(), { gitignore: false });
    assert.ok(all.entries.has('node_modules/x/i.js') && all.entries.has('src/b.log'));
  } finally {
    fs.rmSync(root, { recursive: true, force: true });
  }
});
