// VM details webview (extension/details/detailsPanel.ts): draws what the extension posts
// (detailsMessages.ts: init, status, sample) as SVG plots and a list of facts. Everything from the
// guest is set as text, never as markup. Reports `ready` once, and `drawn` after each draw.
// @ts-check
(function () {
  // @ts-ignore acquireVsCodeApi is provided by the webview host
  const vscode = acquireVsCodeApi();
  const SVG = 'http://www.w3.org/2000/svg';
  const W = 600;
  const H = 150;
  const PAD = { left: 40, right: 8, top: 8, bottom: 18 };
  /** @type {any} */ let status;
  /** @type {any[]} */ let samples = [];
  let historyMs = 5 * 60_000;

  const root = /** @type {HTMLElement} */ (document.getElementById('root'));

  /** @param {string} tag @param {string} [cls] @param {string} [text] */
  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }
  /** @param {string} tag @param {Record<string, string|number>} attrs */
  function svgEl(tag, attrs) {
    const e = document.createElementNS(SVG, tag);
    for (const k of Object.keys(attrs)) e.setAttribute(k, String(attrs[k]));
    return e;
  }
  /** @param {number} b */
  function bytes(b) {
    if (b === 0) return '0';
    if (b >= 2 ** 30) return (b / 2 ** 30).toFixed(b >= 10 * 2 ** 30 ? 0 : 1) + ' GiB';
    if (b >= 2 ** 20) return Math.round(b / 2 ** 20) + ' MiB';
    return Math.round(b / 1024) + ' KiB';
  }
  /** @param {number} ms */
  function duration(ms) {
    const s = Math.max(0, Math.floor(ms / 1000));
    if (s < 60) return s + ' s';
    const m = Math.floor(s / 60);
    if (m < 60) return m + ' min ' + (s % 60) + ' s';
    const h = Math.floor(m / 60);
    return h < 48 ? h + ' h ' + (m % 60) + ' min' : Math.floor(h / 24) + ' days';
  }
  /** A nice upper bound for an axis. @param {number} v */
  function ceilNice(v) {
    const steps = [1, 2, 2.5, 5, 10];
    const p = Math.pow(10, Math.floor(Math.log10(Math.max(v, 1e-9))));
    for (const s of steps) if (v <= s * p) return s * p;
    return 10 * p;
  }

  /**
   * One plot: lines of `series` ({cls, values: [at, v][]}) over the last historyMs, y from 0 to max.
   * @param {{cls: string, values: [number, number][], area?: boolean}[]} series
   * @param {number} max @param {(v: number) => string} label
   */
  function plot(series, max, label) {
    const svg = svgEl('svg', { class: 'plot', viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: 'none', role: 'img' });
    const now = Date.now();
    const x = (/** @type {number} */ at) => PAD.left + ((at - (now - historyMs)) / historyMs) * (W - PAD.left - PAD.right);
    const y = (/** @type {number} */ v) => PAD.top + (1 - Math.min(v, max) / max) * (H - PAD.top - PAD.bottom);
    for (let i = 0; i <= 4; i++) {
      const v = (max * i) / 4;
      svg.appendChild(svgEl('line', { class: 'grid', x1: PAD.left, x2: W - PAD.right, y1: y(v), y2: y(v) }));
      const t = svgEl('text', { class: 'axis', x: PAD.left - 5, y: y(v) + 3, 'text-anchor': 'end' });
      t.textContent = label(v);
      svg.appendChild(t);
    }
    const minutes = Math.round(historyMs / 60_000);
    for (let m = minutes; m >= 0; m--) {
      const at = now - m * 60_000;
      const t = svgEl('text', { class: 'axis', x: x(at), y: H - 4, 'text-anchor': m === 0 ? 'end' : m === minutes ? 'start' : 'middle' });
      t.textContent = m === 0 ? 'now' : `-${m} min`;
      svg.appendChild(t);
    }
    let points = 0;
    for (const s of series) {
      const vs = s.values.filter(([at]) => at >= now - historyMs);
      if (vs.length === 0) continue;
      points = Math.max(points, vs.length);
      const line = vs.map(([at, v]) => `${x(at).toFixed(1)},${y(v).toFixed(1)}`).join(' ');
      if (s.area && vs.length > 1) {
        const base = y(0).toFixed(1);
        svg.appendChild(svgEl('polygon', { class: `${s.cls} area`, points: `${x(vs[0][0]).toFixed(1)},${base} ${line} ${x(vs[vs.length - 1][0]).toFixed(1)},${base}` }));
      }
      svg.appendChild(svgEl('polyline', { class: `${s.cls} line`, points: line, 'vector-effect': 'non-scaling-stroke' }));
    }
    if (points === 0) {
      const t = svgEl('text', { class: 'empty', x: (W + PAD.left) / 2, y: H / 2, 'text-anchor': 'middle' });
      t.textContent = status && status.state === 'running' ? 'Waiting for the first samples...' : 'No figures while the VM is not running';
      svg.appendChild(t);
    }
    return { svg, points };
  }

  /** @param {string} title @param {string} nowCls @param {string} nowText @param {[string, string][]} keys @param {SVGElement} svg */
  function card(title, nowCls, nowText, keys, svg) {
    const c = el('section', 'card');
    const head = el('div', 'card-head');
    head.append(el('h2', '', title), el('span', `now ${nowCls}`, nowText));
    const legend = el('div', 'legend muted');
    for (const [cls, text] of keys) legend.appendChild(el('span', `key ${cls}`, text));
    c.append(head, legend, svg);
    return c;
  }

  /** @param {HTMLElement} dl @param {string} term @param {string | Node} value */
  function fact(dl, term, value) {
    dl.appendChild(el('dt', '', term));
    const dd = el('dd');
    if (typeof value === 'string') dd.textContent = value;
    else dd.appendChild(value);
    dl.appendChild(dd);
  }

  /** @param {number} used @param {number} total @param {string} text */
  function meter(used, total, text) {
    const wrap = el('div');
    wrap.appendChild(el('div', '', text));
    const frac = total > 0 ? Math.min(1, used / total) : 0;
    const m = el('div', frac > 0.85 ? 'meter high' : 'meter');
    const fill = el('div');
    fill.style.width = (frac * 100).toFixed(1) + '%';
    m.appendChild(fill);
    wrap.appendChild(m);
    return wrap;
  }

  function latestWith(/** @type {string} */ key) {
    for (let i = samples.length - 1; i >= 0; i--) if (samples[i][key] !== undefined) return samples[i];
    return undefined;
  }

  function draw() {
    if (!status) return;
    const now = Date.now();
    samples = samples.filter((s) => s.at >= now - historyMs);
    root.textContent = '';
    const h1 = el('h1');
    h1.append(el('span', '', status.name), el('span', `badge ${status.state}`, status.state));
    root.append(h1, el('div', 'muted', status.summary));
    if (status.lastError) root.appendChild(el('div', 'error', 'Last error: ' + status.lastError));

    const cpu = samples.filter((s) => typeof s.cpuPercent === 'number').map((s) => /** @type {[number, number]} */ ([s.at, s.cpuPercent]));
    // A busy vCPU reads a little over 100%: keep the 0-100% axis for that.
    const cpuPeak = Math.max(0, ...cpu.map((p) => p[1]));
    const cpuMax = cpuPeak <= 105 ? 100 : ceilNice(cpuPeak);
    const lastCpu = cpu.length ? cpu[cpu.length - 1][1] : undefined;
    const cpuPlot = plot([{ cls: 'cpu', values: cpu, area: true }], cpuMax, (v) => Math.round(v) + '%');
    // The headline figures are live ones: a VM that is not running has none (its plots keep the history).
    const live = status.state === 'running' || status.state === 'paused';
    const cpuText = lastCpu === undefined || !live ? '-' : (lastCpu < 10 ? lastCpu.toFixed(1) : String(Math.round(lastCpu))) + '%';

    const mem = samples.filter((s) => s.memory).map((s) => /** @type {[number, number]} */ ([s.at, s.memory.totalBytes - s.memory.availableBytes]));
    const rss = samples.filter((s) => typeof s.hostRssBytes === 'number').map((s) => /** @type {[number, number]} */ ([s.at, s.hostRssBytes]));
    const memSample = latestWith('memory');
    const memTotal = memSample ? memSample.memory.totalBytes : status.memoryMiB * 2 ** 20;
    const memMax = ceilNice(Math.max(memTotal, ...rss.map((p) => p[1])) / 2 ** 20) * 2 ** 20;
    const memPlot = plot([{ cls: 'memory', values: mem, area: true }, { cls: 'rss', values: rss }], memMax, (v) => bytes(v));
    const memText = memSample && live ? `${bytes(memSample.memory.totalBytes - memSample.memory.availableBytes)} of ${bytes(memSample.memory.totalBytes)}` : '-';

    const plots = el('div', 'plots');
    plots.append(
      card('CPU', 'cpu', cpuText, [['cpu', `QEMU, % of one host core (${status.cpus} vCPU${status.cpus === 1 ? '' : 's'})`]], cpuPlot.svg),
      card('Memory', 'memory', memText, [['memory', 'used in the guest'], ['rss', 'QEMU resident on the host']], memPlot.svg),
    );
    root.appendChild(plots);

    const dl = el('dl', 'facts');
    if (status.startedAt !== undefined) fact(dl, 'Uptime', duration(now - status.startedAt) + (status.boot ? ` (${status.boot})` : ''));
    if (status.lastHeartbeatAt !== undefined) {
      const age = now - status.lastHeartbeatAt;
      const within = status.agentResponding && age > status.heartbeatWithinMs ? `under ${Math.round(status.heartbeatWithinMs / 1000)} s ago` : `${duration(age)} ago`;
      fact(dl, 'Heartbeat', `${within} (agent ${status.agent})`);
    }
    else if (status.agent) fact(dl, 'Agent', status.agent);
    if (status.accelerator) fact(dl, 'Accelerator', status.accelerator);
    const g = latestWith('guest');
    if (g) fact(dl, 'Guest OS', g.guest.os);
    if (status.kernel) fact(dl, 'Kernel', status.kernel);
    if (status.hostname) fact(dl, 'Host name', status.hostname);
    if (g) {
      fact(dl, 'Addresses', g.guest.addresses.length ? g.guest.addresses.join(', ') : 'none');
      fact(dl, 'Listening ports', g.guest.listening.length ? g.guest.listening.join(', ') : 'none');
    }
    const disk = latestWith('rootfs');
    if (disk) fact(dl, 'Disk (guest /)', meter(disk.rootfs.usedBytes, disk.rootfs.totalBytes, `${bytes(disk.rootfs.usedBytes)} used of ${bytes(disk.rootfs.totalBytes)}`));
    const overlay = latestWith('overlayBytes');
    if (overlay) fact(dl, 'Disk file (host)', `${bytes(overlay.overlayBytes)} allocated (a linked clone of the base image)`);
    if (status.diskUse) fact(dl, 'Disk use (host)', status.diskUse);
    root.appendChild(dl);

    const theme = document.body.classList.contains('vscode-light') ? 'light' : document.body.classList.contains('vscode-high-contrast') ? 'high-contrast' : 'dark';
    vscode.postMessage({ type: 'drawn', cpuPoints: cpuPlot.points, memoryPoints: memPlot.points, cpuText, memoryText: memText, theme });
  }

  window.addEventListener('message', (event) => {
    const m = event.data;
    if (!m || typeof m.type !== 'string') return;
    if (m.type === 'init') {
      status = m.status;
      samples = Array.isArray(m.samples) ? m.samples : [];
      if (typeof m.historyMs === 'number') historyMs = m.historyMs;
    } else if (m.type === 'status') status = m.status;
    else if (m.type === 'sample') samples.push(m.sample);
    else return;
    draw();
  });
  // Ages (uptime, heartbeat) move on between samples, which stop when the VM does.
  setInterval(() => {
    const last = samples[samples.length - 1];
    if (status && status.startedAt !== undefined && (!last || Date.now() - last.at > 1500)) draw();
  }, 1000);
  vscode.postMessage({ type: 'ready' });
})();
