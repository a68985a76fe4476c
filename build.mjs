// One esbuild script, several entry points: the CLI, the service, the worker (host, Node) and the
// guest agent (runs on the guest's own Node). Native modules stay external so their .node files ship.
import { build } from 'esbuild';

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
  build({ ...common, entryPoints: { agent: 'guest-agent/src/main.ts' }, outdir: 'dist/guest-agent' }),
]);
