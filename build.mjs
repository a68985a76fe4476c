// One esbuild script, several entry points: the CLI, the service, the worker (host, Node), the VS Code
// extension (`vscode` external) and the guest agent (runs on the guest's own Node). Native modules stay
// external so their .node files ship.
import { build } from 'esbuild';
import { rmSync as clean } from 'node:fs';

clean('dist', { recursive: true, force: true });

const common = {
  bundle: true,
  platform: 'node',
  target: 'node20',
  format: 'cjs',
  sourcemap: 'linked',
  external: ['koffi', 'node-pty'],
  logLevel: 'warning',
};

await Promise.all([
  build({ ...common, entryPoints: { cli: 'runtime/cli/main.ts', service: 'runtime/service/main.ts', worker: 'runtime/worker/main.ts' }, outdir: 'dist' }),
  // The VS Code extension: the host's extension host provides `vscode`.
  build({ ...common, external: [...common.external, 'vscode'], entryPoints: { extension: 'extension/extension.ts' }, outdir: 'dist' }),
  build({ ...common, sourcemap: false, entryPoints: { agent: 'guest-agent/src/main.ts', 'vsock-probe': 'guest-agent/src/vsockProbe.ts', 'sync-receive': 'guest-agent/src/syncMain.ts' }, outdir: 'dist/guest-agent' }),
]);

// V8 flags for the guest agent (read by the image's agent-loop). Measured in a TCG guest, a
// Node-to-Node pipe round trip: 4.2 ms by default, 1.6 ms with --jitless --single-threaded (no
// JIT code for QEMU to retranslate, no compiler threads competing for the one vCPU).
import { mkdirSync as mkdirp, writeFileSync as writeFlags } from 'node:fs';
mkdirp('dist/guest-agent', { recursive: true });
writeFlags('dist/guest-agent/node-flags', '--jitless --single-threaded\n');

// The relay (the channel's data plane in the guest, guest-agent/native/relay.c): a static binary,
// so it runs on any guest's libc. Built with the host's gcc; the guest is x86_64 like the host.
import { execFileSync } from 'node:child_process';
mkdirp('dist/guest-agent/bin', { recursive: true });
try {
  execFileSync('gcc', ['-O2', '-Wall', '-Wextra', '-Wno-format-truncation', '-Werror', '-static', '-o', 'dist/guest-agent/bin/sandboxvm-relay', 'guest-agent/native/relay.c'], { stdio: 'inherit' });
  execFileSync('gcc', ['-O2', '-Wall', '-Wextra', '-Wno-format-truncation', '-Werror', '-static', '-pthread', '-o', 'dist/guest-agent/bin/sandboxvm-sync-write', 'guest-agent/native/syncWrite.c'], { stdio: 'inherit' });
} catch (err) {
  throw new Error(`building guest-agent/native/relay.c or syncWrite.c failed (${err.message}); it needs gcc and libc6-dev (apt-get install gcc libc6-dev)`);
}

// The guest agent's native dependency ships beside it: only what node-pty needs at run time.
import { cpSync, mkdirSync, rmSync } from 'node:fs';
const ptyOut = 'dist/guest-agent/node_modules/node-pty';
rmSync(ptyOut, { recursive: true, force: true });
mkdirSync(`${ptyOut}/build/Release`, { recursive: true });
cpSync('node_modules/node-pty/package.json', `${ptyOut}/package.json`);
cpSync('node_modules/node-pty/lib', `${ptyOut}/lib`, { recursive: true, filter: (src) => !src.endsWith('.test.js') && !src.endsWith('.map') });
cpSync('node_modules/node-pty/build/Release/pty.node', `${ptyOut}/build/Release/pty.node`);

// koffi (AF_VSOCK in the guest): the package without its docs and vendored sources, and the glibc x64 binary.
const koffiOut = 'dist/guest-agent/node_modules/koffi';
cpSync('node_modules/koffi', koffiOut, { recursive: true, filter: (src) => !/node_modules\/koffi\/(doc|vendor)(\/|$)/.test(src) });
const koffiNative = 'dist/guest-agent/node_modules/@koromix/koffi-linux-x64';
cpSync('node_modules/@koromix/koffi-linux-x64', koffiNative, { recursive: true, filter: (src) => !src.includes('/musl_x64') });

// node-pty gives a finished terminal 200 ms to deliver its last output before it destroys the
// socket; a guest under TCG with many terminals needs longer, or output of quick commands is lost.
// On Linux the socket closes by itself once drained, so the timeout is only a backstop.
import { readFileSync, writeFileSync } from 'node:fs';
const unixTerminal = `${ptyOut}/lib/unixTerminal.js`;
const source = readFileSync(unixTerminal, 'utf8');
const patched = source.replace('var DESTROY_SOCKET_TIMEOUT_MS = 200;', 'var DESTROY_SOCKET_TIMEOUT_MS = 5000;');
if (patched === source) throw new Error(`${unixTerminal}: DESTROY_SOCKET_TIMEOUT_MS not found; check the node-pty version`);
writeFileSync(unixTerminal, patched);

// koffi for the host's service (the accelerator probe, runtime/accel/probe.ts): dist/service.js
// finds it in dist/node_modules, so the packaged extension carries it. Only what loads at run time
// (no docs, C sources or vendored headers) and only the glibc linux-x64 binary: the .vsix is
// packaged per target (`vsce package --target linux-x64`).
const hostKoffi = 'dist/node_modules/koffi';
cpSync('node_modules/koffi', hostKoffi, {
  recursive: true,
  filter: (src) => !/node_modules\/koffi\/(doc|vendor|lib|cnoke\.cjs|CHANGELOG\.md|src\/koffi\/CMakeLists\.txt)(\/|$)/.test(src) && !/\.(cc|hh|inc|def|S|asm)$/.test(src),
});
cpSync('node_modules/@koromix/koffi-linux-x64', 'dist/node_modules/@koromix/koffi-linux-x64', { recursive: true, filter: (src) => !src.includes('/musl_x64') });
