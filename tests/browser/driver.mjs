// Drives headless Chromium (Debian `chromium`) for the real-browser e2e tests
// (tests/tests/browser_calls.rs) over the Chrome DevTools protocol on a pipe
// (--remote-debugging-pipe: no port, no extra npm package), with Node's standard library only.
//
//   node driver.mjs <config.json>
//
// config.json: { chromium, deps_dir, work_dir, timeout_ms, page: {...} } where `page` is
// handed to page.js (see there). The driver
//   1. bundles JsSIP from <deps_dir>/node_modules (CommonJS, resolved here; JsSIP's npm
//      package ships no browser build) into <work_dir>/jssip.bundle.js,
//   2. writes a looping sine tone WAV that Chromium's fake microphone plays,
//   3. starts Chromium with a fresh profile in <work_dir>, opens page.html and relays every
//      report of the page to stdout as one line `REPORT <json>` (the test reads them),
//   4. prints the page's final `result` report also flattened, one `RESULT <path> <json>`
//      line per value (local_sdp.0.sdp, stats.max_audio_level, ...), and
//   5. exits 0 after that report (1 on a page error, a Chromium crash
//      or the timeout), closing Chromium and killing it by PID if it lingers.

import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const cfg = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
const log = (...a) => process.stderr.write(`[driver ${new Date().toISOString()}] ${a.join(' ')}\n`);
const report = (obj) => process.stdout.write(`REPORT ${JSON.stringify(obj)}\n`);

// ---- 1. JsSIP bundle ---------------------------------------------------------------------
function resolveFile(p) {
  for (const c of [p, `${p}.js`, `${p}.json`, path.join(p, 'index.js')]) {
    if (fs.existsSync(c) && fs.statSync(c).isFile()) return c;
  }
  return null;
}

function resolvePackage(name, fromDir) {
  for (let dir = fromDir; ; dir = path.dirname(dir)) {
    const pkgDir = path.join(dir, 'node_modules', name);
    const pj = path.join(pkgDir, 'package.json');
    if (fs.existsSync(pj)) {
      const meta = JSON.parse(fs.readFileSync(pj, 'utf8'));
      const main = typeof meta.browser === 'string' ? meta.browser : meta.main || 'index.js';
      return resolveFile(path.join(pkgDir, main));
    }
    if (path.dirname(dir) === dir) return null;
  }
}

function bundle(entry) {
  const files = new Map();
  const mods = [];
  const add = (file) => {
    if (files.has(file)) return files.get(file);
    const id = mods.length;
    files.set(file, id);
    mods.push(null);
    const src = fs.readFileSync(file, 'utf8');
    const deps = {};
    if (file.endsWith('.json')) {
      mods[id] = { src: `module.exports = ${src};`, deps };
      return id;
    }
    for (const m of src.matchAll(/\brequire\(\s*['"]([^'"]+)['"]\s*\)/g)) {
      const spec = m[1];
      const r = spec.startsWith('.')
        ? resolveFile(path.resolve(path.dirname(file), spec))
        : resolvePackage(spec, path.dirname(file));
      // Unresolvable requires (Node-only branches) fail only if actually called.
      if (r) deps[spec] = add(r);
    }
    mods[id] = { src, deps };
    return id;
  };
  add(entry);
  const defs = mods
    .map((m) => `function (require, module, exports) {\n${m.src}\n}`)
    .join(',\n');
  const maps = JSON.stringify(mods.map((m) => m.deps));
  return `(function () {
const defs = [${defs}];
const maps = ${maps};
const cache = {};
function load(id) {
  if (cache[id]) return cache[id].exports;
  const module = { exports: {} };
  cache[id] = module;
  defs[id](function (s) {
    if (!(s in maps[id])) throw new Error('not bundled: ' + s);
    return load(maps[id][s]);
  }, module, module.exports);
  return module.exports;
}
window.JsSIP = load(0);
})();\n`;
}

// ---- 2. fake microphone: a continuous 400 Hz sine (Chromium loops the file) -------------
function writeToneWav(file) {
  const rate = 48000;
  const seconds = 2;
  const n = rate * seconds;
  const buf = Buffer.alloc(44 + 2 * n);
  buf.write('RIFF', 0);
  buf.writeUInt32LE(36 + 2 * n, 4);
  buf.write('WAVE', 8);
  buf.write('fmt ', 12);
  buf.writeUInt32LE(16, 16);
  buf.writeUInt16LE(1, 20); // PCM
  buf.writeUInt16LE(1, 22); // mono
  buf.writeUInt32LE(rate, 24);
  buf.writeUInt32LE(2 * rate, 28);
  buf.writeUInt16LE(2, 32);
  buf.writeUInt16LE(16, 34);
  buf.write('data', 36);
  buf.writeUInt32LE(2 * n, 40);
  for (let i = 0; i < n; i++) {
    buf.writeInt16LE(Math.round(12000 * Math.sin((2 * Math.PI * 400 * i) / rate)), 44 + 2 * i);
  }
  fs.writeFileSync(file, buf);
}

// ---- 3. Chromium over CDP ----------------------------------------------------------------
const work = cfg.work_dir;
const entry = resolvePackage('jssip', path.join(cfg.deps_dir, 'x'));
if (!entry) {
  log(`jssip not found under ${cfg.deps_dir}/node_modules`);
  process.exit(1);
}
fs.writeFileSync(path.join(work, 'jssip.bundle.js'), bundle(entry));
for (const f of ['page.html', 'page.js']) fs.copyFileSync(path.join(here, f), path.join(work, f));
const wav = path.join(work, 'tone.wav');
writeToneWav(wav);
const profile = path.join(work, 'chromium-profile');
fs.mkdirSync(profile, { recursive: true });

const args = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--disable-dev-shm-usage',
  `--user-data-dir=${profile}`,
  '--use-fake-device-for-media-stream',
  '--use-fake-ui-for-media-stream',
  `--use-file-for-fake-audio-capture=${wav}`,
  '--autoplay-policy=no-user-gesture-required',
  // sbcd's WSS certificate is self-signed, made for this run.
  '--ignore-certificate-errors',
  '--remote-debugging-pipe',
  'about:blank',
];
log(`starting ${cfg.chromium} ${args.join(' ')}`);
const chrome = spawn(cfg.chromium, args, { stdio: ['ignore', 'pipe', 'pipe', 'pipe', 'pipe'] });
const chromeLog = fs.createWriteStream(path.join(work, 'chromium.log'));
chrome.stdout.pipe(chromeLog);
chrome.stderr.pipe(chromeLog);
let chromeExited = false;
chrome.on('exit', (code, sig) => {
  chromeExited = true;
  log(`chromium exited code=${code} signal=${sig}`);
});

let finished = false;
function finish(code, why) {
  if (finished) return;
  finished = true;
  log(`finishing (${code}): ${why}`);
  const kill = () => {
    if (!chromeExited) {
      try {
        process.kill(chrome.pid, 'SIGKILL');
      } catch (_) {
        /* already gone */
      }
    }
    process.exit(code);
  };
  try {
    send('Browser.close');
  } catch (_) {
    /* pipe closed */
  }
  setTimeout(kill, 1500);
  chrome.on('exit', () => setTimeout(() => process.exit(code), 50));
}

const toChrome = chrome.stdio[3];
const fromChrome = chrome.stdio[4];
let nextId = 1;
const pending = new Map();
function send(method, params = {}, sessionId) {
  const id = nextId++;
  const msg = { id, method, params };
  if (sessionId) msg.sessionId = sessionId;
  toChrome.write(`${JSON.stringify(msg)}\0`);
  return new Promise((resolve, reject) => pending.set(id, { resolve, reject, method }));
}

let inbuf = '';
fromChrome.on('data', (chunk) => {
  inbuf += chunk.toString('utf8');
  let z;
  while ((z = inbuf.indexOf('\0')) >= 0) {
    const text = inbuf.slice(0, z);
    inbuf = inbuf.slice(z + 1);
    let msg;
    try {
      msg = JSON.parse(text);
    } catch (e) {
      log(`bad CDP message: ${text.slice(0, 200)}`);
      continue;
    }
    if (msg.id && pending.has(msg.id)) {
      const p = pending.get(msg.id);
      pending.delete(msg.id);
      if (msg.error) p.reject(new Error(`${p.method}: ${JSON.stringify(msg.error)}`));
      else p.resolve(msg.result);
    } else if (msg.method) {
      onEvent(msg);
    }
  }
});
fromChrome.on('end', () => finish(1, 'CDP pipe closed'));

function onEvent(msg) {
  const p = msg.params || {};
  switch (msg.method) {
    case 'Runtime.bindingCalled': {
      if (p.name !== 'portcullisReport') return;
      let obj;
      try {
        obj = JSON.parse(p.payload);
      } catch (_) {
        obj = { event: 'bad-report', payload: p.payload };
      }
      report(obj);
      if (obj.event === 'result') {
        // Flattened for the Rust test (no JSON parser there): `RESULT <path> <json value>`.
        const flat = (v, key) => {
          if (v !== null && typeof v === 'object') {
            for (const [k, x] of Object.entries(v)) flat(x, key ? `${key}.${k}` : k);
          } else {
            process.stdout.write(`RESULT ${key} ${JSON.stringify(v)}\n`);
          }
        };
        flat(obj, '');
        finish(0, 'page reported its result');
      }
      if (obj.event === 'fatal') finish(1, `page error: ${obj.error}`);
      return;
    }
    case 'Runtime.consoleAPICalled': {
      const text = (p.args || []).map((a) => (a.value !== undefined ? a.value : a.description)).join(' ');
      log(`console.${p.type}: ${text}`);
      return;
    }
    case 'Runtime.exceptionThrown':
      log(`page exception: ${JSON.stringify(p.exceptionDetails).slice(0, 2000)}`);
      report({ event: 'exception', details: p.exceptionDetails?.exception?.description || p.exceptionDetails?.text });
      return;
    case 'Inspector.targetCrashed':
      finish(1, 'page crashed');
      return;
    default:
  }
}

setTimeout(() => finish(1, `timeout after ${cfg.timeout_ms} ms`), cfg.timeout_ms);

(async () => {
  await send('Security.setIgnoreCertificateErrors', { ignore: true });
  const { targetInfos } = await send('Target.getTargets');
  const page = targetInfos.find((t) => t.type === 'page');
  if (!page) throw new Error('no page target');
  const { sessionId } = await send('Target.attachToTarget', { targetId: page.targetId, flatten: true });
  await send('Runtime.enable', {}, sessionId);
  await send('Page.enable', {}, sessionId);
  await send('Inspector.enable', {}, sessionId).catch(() => {});
  await send('Runtime.addBinding', { name: 'portcullisReport' }, sessionId);
  const url = `${pathToFileURL(path.join(work, 'page.html')).href}#${encodeURIComponent(JSON.stringify(cfg.page))}`;
  log(`navigating to ${url}`);
  const nav = await send('Page.navigate', { url }, sessionId);
  if (nav.errorText) throw new Error(`navigation failed: ${nav.errorText}`);
})().catch((e) => {
  log(`CDP error: ${e.stack || e}`);
  report({ event: 'fatal', error: String(e) });
  finish(1, String(e));
});

for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => finish(1, sig));
