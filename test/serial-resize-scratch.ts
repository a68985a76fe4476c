import * as pty from 'node-pty';
const cli = process.argv[2];
const term = pty.spawn(process.execPath, [cli, 'shell', 'r1'], { cols: 100, rows: 30, env: process.env as any, name: 'xterm' });
let screen = '';
term.onData((d) => (screen += d));
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
(async () => {
  await sleep(4000);
  const out: number[] = [];
  for (let i = 0; i < 6; i++) {
    const mark = screen.length;
    const t0 = Date.now();
    term.resize(100 + i + 1, 30);
    while (!screen.slice(mark).includes('\x1b[K') && Date.now() - t0 < 5000) await sleep(5);
    out.push(Date.now() - t0);
    await sleep(300);
  }
  console.log(cli, 'resize->redraw ms', out.join(' '));
  term.kill();
  process.exit(0);
})();
