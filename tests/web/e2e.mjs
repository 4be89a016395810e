// e2e.mjs - end-to-end test of the web page (web/, served by `demix serve`)
// in headless Chromium driven by playwright-core (tests/web.cmake, label "web").
//
// Starts the real server on a free loopback port with the golden tiny models,
// uploads mix_12s.wav through the page, waits for the job, then checks: one
// playable <audio> per stem with the input's duration, waveforms drawn, the
// stems play in sync with mute/solo, a reload resumes the job from the URL,
// the recent jobs list, the "download all" zip; then uploads a text file and
// checks the error message. Screenshots of each state go to $OUT.
//
// Environment: DEMIX (binary), GOLDEN (golden fixtures), OUT (output folder),
// CHROMIUM (default /usr/bin/chromium), MODEL (default tiny4s),
// DOCS_SCREENSHOT (optional: also write the README's screenshot there).
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

const DEMIX = process.env.DEMIX, GOLDEN = process.env.GOLDEN, OUT = process.env.OUT;
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const MODEL = process.env.MODEL || 'tiny4s';
if (!DEMIX || !GOLDEN || !OUT) { console.error('set DEMIX, GOLDEN and OUT'); process.exit(2); }
for (const k of ['http_proxy', 'https_proxy', 'HTTP_PROXY', 'HTTPS_PROXY', 'ALL_PROXY', 'all_proxy']) delete process.env[k];

let chromium;
try {
  ({ chromium } = await import('playwright-core'));
} catch (e) {
  console.error('FAIL: playwright-core is not installed: run `npm ci` in tests/web (scripts/setup.sh does)');
  process.exit(1);
}
if (!fs.existsSync(CHROMIUM)) {
  console.error(`FAIL: no Chromium at ${CHROMIUM} (Debian package "chromium"; scripts/setup.sh installs it)`);
  process.exit(1);
}

fs.rmSync(OUT, { recursive: true, force: true });
fs.mkdirSync(OUT, { recursive: true });
let passed = 0, failed = 0;
const ok = (what) => { passed++; console.log('ok: ' + what); };
const fail = (what) => { failed++; console.error('FAIL: ' + what); };
const check = (cond, what, detail) => (cond ? ok(what) : fail(what + (detail !== undefined ? ' (' + detail + ')' : '')));

// Duration of a WAV from its header (fmt + data chunks).
function wavSeconds(file) {
  const b = fs.readFileSync(file);
  let off = 12, rate = 0, blockAlign = 0;
  while (off + 8 <= b.length) {
    const id = b.toString('ascii', off, off + 4), size = b.readUInt32LE(off + 4);
    if (id === 'fmt ') { rate = b.readUInt32LE(off + 12); blockAlign = b.readUInt16LE(off + 20); }
    if (id === 'data') return size / blockAlign / rate;
    off += 8 + size + (size & 1);
  }
  throw new Error('no data chunk in ' + file);
}

// ---- the server ----
const input = path.join(GOLDEN, 'inputs', 'mix_12s.wav');
const wantSeconds = wavSeconds(input);
const logPath = path.join(OUT, 'server.log');
const log = fs.openSync(logPath, 'w');
// The model folder: the golden Demucs models plus a RoFormer (an MSST config
// and its checkpoint), as links.
const repo = path.join(OUT, 'repo');
fs.rmSync(repo, { recursive: true, force: true });
fs.mkdirSync(repo, { recursive: true });
for (const f of fs.readdirSync(path.join(GOLDEN, 'models')))
  if (/\.(th|yaml)$/.test(f)) fs.symlinkSync(path.join(GOLDEN, 'models', f), path.join(repo, f));
for (const f of ['bs_roformer_tiny.yaml', 'bs_roformer_tiny.ckpt'])
  fs.symlinkSync(path.join(GOLDEN, 'roformer', 'models', f), path.join(repo, f));
const server = spawn(DEMIX, ['serve', '--host', '127.0.0.1', '--port', '0', '--repo', repo,
  '--data-dir', path.join(OUT, 'data'), '--workers', '1'], { stdio: ['ignore', 'ignore', log] });
const stopServer = () => { try { server.kill('SIGTERM'); } catch (e) { /* gone */ } };
process.on('exit', stopServer);
let port = 0;
for (let i = 0; i < 100 && !port; i++) {
  await new Promise((r) => setTimeout(r, 100));
  const m = /"event_type":"startup".*?"port":(\d+)/.exec(fs.readFileSync(logPath, 'utf8'));
  if (m) port = Number(m[1]);
  if (server.exitCode !== null) break;
}
if (!port) { console.error('FAIL: server did not start:\n' + fs.readFileSync(logPath, 'utf8')); process.exit(1); }
const base = `http://127.0.0.1:${port}`;
ok('server listening on ' + base);

// ---- the browser ----
const browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox', '--autoplay-policy=no-user-gesture-required'] });
const context = await browser.newContext({ viewport: { width: 1100, height: 900 }, acceptDownloads: true });
const page = await context.newPage();
const pageErrors = [];
// Requests for a zip: the page must not fetch one before the user asks
// (the server builds and keeps it: a probe doubles every job's disk).
const zipRequests = [];
page.on('request', (req) => { if (/\/jobs\/[^/]+\/zip$/.test(new URL(req.url()).pathname)) zipRequests.push(req.url()); });
page.on('pageerror', (e) => pageErrors.push(String(e)));
// Failed requests are expected here (404, 422): only script errors count.
page.on('console', (m) => { if (m.type() === 'error' && !/Failed to load resource/.test(m.text())) pageErrors.push('console: ' + m.text()); });
page.setDefaultTimeout(30000);

async function stemState() {
  return page.$$eval('#stems-list li.stem', (rows) => rows.map((li) => {
    const a = li.querySelector('audio'), c = li.querySelector('canvas');
    let ink = 0;
    if (c && c.width && c.height) {
      const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
      for (let i = 3; i < d.length; i += 4) if (d[i] > 0) ink++;
    }
    return {
      name: li.dataset.stem, hasAudio: !!a, src: a ? a.currentSrc : '', readyState: a ? a.readyState : -1,
      duration: a ? a.duration : NaN, error: a && a.error ? a.error.code : 0,
      canPlay: a ? a.canPlayType('audio/wav') : '', ink, pixels: c ? c.width * c.height : 0,
      download: li.querySelector('a[download]') ? li.querySelector('a[download]').getAttribute('download') : null,
    };
  }));
}
// Waits until every stem's <audio> knows its duration and its waveform is drawn.
async function waitStemsReady(n) {
  await page.waitForFunction((n) => {
    const rows = document.querySelectorAll('#stems-list li.stem');
    if (rows.length !== n) return false;
    return [...rows].every((li) => {
      const a = li.querySelector('audio'), c = li.querySelector('canvas');
      return a && a.readyState >= 1 && isFinite(a.duration) && /, \d+:\d\d$/.test(c.getAttribute('aria-label') || '');
    });
  }, n, { timeout: 60000 });
}

try {
  await page.goto(base + '/');
  check((await page.title()).includes('demix'), 'GET / serves the page');
  await page.waitForFunction(() => document.querySelectorAll('#model option[value]:not([value=""])').length > 0);
  const models = await page.$$eval('#model option', (o) => o.map((x) => x.value));
  check(models.includes(MODEL), 'model picker filled from GET /models', models.join(','));
  // The stems picker follows each model's `sources` from GET /models (tiny6s: 6, with guitar and piano).
  await page.selectOption('#model', 'tiny6s');
  const six = await page.$$eval('#stems option', (o) => o.map((x) => x.value).filter(Boolean));
  check(six.length === 6 && six.includes('guitar') && six.includes('piano'), 'stems of tiny6s from its sources', six.join(','));
  // A RoFormer runs MSST's chunking: shifts do not apply, the field is disabled.
  await page.selectOption('#model', 'bs_roformer_tiny');
  check(await page.isDisabled('#shifts'), 'shifts disabled for a RoFormer');
  await page.selectOption('#model', MODEL);
  check(!(await page.isDisabled('#shifts')), 'shifts enabled for a Demucs model');
  check((await page.textContent('#model-desc')).length > 10, 'model description shown');
  const stemOptions = await page.$$eval('#stems option', (o) => o.map((x) => x.value).filter(Boolean));
  check(stemOptions.length === 4 && stemOptions.includes('vocals'), 'two-stems picker lists the model\'s stems', stemOptions.join(','));

  // ---- drag and drop picks the file too ----
  await page.evaluate(() => {
    const dt = new DataTransfer();
    dt.items.add(new File(['RIFF'], 'dropped.wav', { type: 'audio/wav' }));
    document.getElementById('drop').dispatchEvent(new DragEvent('drop', { dataTransfer: dt, bubbles: true, cancelable: true }));
  });
  check((await page.textContent('#file-name')).includes('dropped.wav'), 'a dropped file is picked');

  // ---- upload and follow the job ----
  await page.setInputFiles('#file', input);
  check((await page.textContent('#file-name')).includes('mix_12s.wav'), 'chosen file shown');
  await page.selectOption('#format', 'wav');
  await page.fill('#shifts', '1');
  const phases = new Set();
  const watch = setInterval(async () => {
    try { if (await page.isVisible('#progress')) phases.add((await page.textContent('#phase')).split(' ')[0]); } catch (e) { /* navigating */ }
  }, 50);
  await page.click('#submit');
  try {
    await page.waitForFunction(() => !document.getElementById('progress').hidden &&
      /Separating/.test(document.getElementById('phase').textContent) && document.getElementById('bar').value > 0, null, { timeout: 60000 });
    await page.screenshot({ path: path.join(OUT, 'progress.png'), fullPage: false });
    const detail = await page.textContent('#detail');
    check(/Elapsed \d+:\d\d/.test(detail), 'job progress shows elapsed time (and ETA)', detail);
  } catch (e) {
    console.log('note: the job finished before its progress could be seen');
  }
  await page.waitForSelector('#result:not([hidden])', { timeout: 120000 });
  clearInterval(watch);
  check(phases.size > 0, 'progress shown while uploading/separating', [...phases].join(','));
  const jobId = (/#job=([0-9a-f]+)/.exec(page.url()) || [])[1];
  check(!!jobId && jobId.length === 32, 'job id is in the URL', page.url());

  await waitStemsReady(4);
  let stems = await stemState();
  check(stems.length === 4, 'one row per stem', stems.map((s) => s.name).join(','));
  for (const s of stems) {
    check(s.hasAudio && s.readyState >= 1 && !s.error && s.canPlay !== '', `stem ${s.name}: playable <audio>`, JSON.stringify(s));
    check(Math.abs(s.duration - wantSeconds) < 0.05, `stem ${s.name}: duration ${s.duration?.toFixed(3)} s = input ${wantSeconds.toFixed(3)} s`);
    check(s.ink > s.pixels * 0.02, `stem ${s.name}: waveform drawn`, `${s.ink} of ${s.pixels} pixels inked`);
    check(s.download && s.download.endsWith('_' + s.name + '.wav'), `stem ${s.name}: download link`, s.download);
  }
  await page.screenshot({ path: path.join(OUT, 'result.png'), fullPage: true });
  if (process.env.DOCS_SCREENSHOT) await page.screenshot({ path: process.env.DOCS_SCREENSHOT, fullPage: true });

  // ---- play in sync, mute / solo ----
  await page.click('#play');
  // Until every stem has played 0.2 s (a loaded machine starts four media
  // pipelines late), then let the page's per-frame drift correction act.
  await page.waitForFunction(() => [...document.querySelectorAll('#stems-list audio')]
    .every((a) => !a.paused && a.currentTime > 0.2), null, { timeout: 15000 }).catch(() => {});
  // The drift correction gets up to 10 s to bring them together (a busy
  // machine can hold a frame back); the spread read after that must be small.
  await page.waitForFunction(() => {
    const t = [...document.querySelectorAll('#stems-list audio')].map((a) => a.currentTime);
    return Math.max(...t) - Math.min(...t) < 0.1;
  }, null, { timeout: 10000, polling: 100 }).catch(() => {});
  const times = await page.$$eval('#stems-list audio', (as) => as.map((a) => ({ t: a.currentTime, paused: a.paused })));
  check(times.every((x) => !x.paused && x.t > 0.2), 'play starts every stem', JSON.stringify(times));
  const spread = Math.max(...times.map((x) => x.t)) - Math.min(...times.map((x) => x.t));
  check(spread < 0.1, `stems play in sync (spread ${spread.toFixed(3)} s)`);
  await page.click('#stems-list li[data-stem="vocals"] button.solo');
  let muted = await page.$$eval('#stems-list audio', (as) => as.map((a) => [a.dataset.stem, a.muted]));
  check(muted.every(([n, m]) => m === (n !== 'vocals')), 'solo vocals mutes the others', JSON.stringify(muted));
  await page.click('#stems-list li[data-stem="drums"] button.mute');
  await page.click('#stems-list li[data-stem="vocals"] button.solo');
  muted = await page.$$eval('#stems-list audio', (as) => as.map((a) => [a.dataset.stem, a.muted]));
  check(muted.every(([n, m]) => m === (n === 'drums')), 'mute drums, unsolo vocals', JSON.stringify(muted));
  check(await page.getAttribute('#play', 'aria-pressed') === 'true', 'play button reports playing');
  await page.click('#play');
  const paused = await page.$$eval('#stems-list audio', (as) => as.every((a) => a.paused));
  check(paused, 'pause stops every stem');

  // ---- recent jobs ----
  await page.waitForFunction(() => /mix_12s\.wav/.test(document.getElementById('recent').textContent));
  ok('recent jobs list shows the upload');

  // ---- reload resumes from the URL ----
  await page.reload();
  await page.waitForSelector('#result:not([hidden])', { timeout: 30000 });
  await waitStemsReady(4);
  ok('reload shows the job again from the URL');

  // ---- light/dark/phone screenshots (looked at by people, not asserted) ----
  await page.emulateMedia({ colorScheme: 'dark' });
  await page.evaluate(() => window.dispatchEvent(new Event('resize')));
  await page.screenshot({ path: path.join(OUT, 'result-dark.png'), fullPage: true });
  await page.emulateMedia({ colorScheme: 'light' });
  await page.setViewportSize({ width: 390, height: 844 });
  await page.evaluate(() => window.dispatchEvent(new Event('resize')));
  await page.screenshot({ path: path.join(OUT, 'result-phone.png'), fullPage: true });
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  check(overflow <= 0, 'no horizontal scrolling at phone width', overflow + ' px');
  await page.setViewportSize({ width: 1100, height: 900 });

  // ---- downloads: names the server gives (<track>_<stem>.<ext>, <track>_stems.zip) ----
  const stemName = await page.getAttribute('.stem[data-stem="vocals"] a.button', 'download');
  check(stemName === 'mix_12s_vocals.wav', 'stem download named <track>_<stem>.<ext>', stemName);
  check(zipRequests.length === 0, 'the page does not fetch the zip before it is asked for', zipRequests.join(' '));

  // ---- download all (zip) ----
  const zipDisabled = await page.getAttribute('#zip', 'aria-disabled');
  if (zipDisabled === 'true') {
    fail('download all: GET /jobs/{id}/zip is not served (' + (await page.textContent('#zip-note')) + ')');
  } else {
    const [dl] = await Promise.all([page.waitForEvent('download', { timeout: 30000 }), page.click('#zip')]);
    const zipPath = path.join(OUT, 'stems.zip');
    check(dl.suggestedFilename() === 'mix_12s_stems.zip', 'zip named <track>_stems.zip', dl.suggestedFilename());
    await dl.saveAs(zipPath);
    const z = spawnSync('python3', ['-c',
      'import sys,zipfile; z=zipfile.ZipFile(sys.argv[1]); bad=z.testzip(); print(bad or "", end="|"); print(",".join(z.namelist()))', zipPath],
      { encoding: 'utf8' });
    const [bad, names] = (z.stdout || '|').trim().split('|');
    check(z.status === 0 && !bad, 'download all: a valid zip', (z.stderr || '').trim().split('\n').pop());
    check(['drums', 'bass', 'other', 'vocals'].every((s) => (names || '').includes(s)), 'zip holds every stem', names);
  }

  // ---- an error: a text file is not audio ----
  const txt = path.join(OUT, 'notes.txt');
  fs.writeFileSync(txt, 'These are my lyrics, not a song.\n'.repeat(20));
  await page.goto(base + '/');
  await page.waitForFunction(() => document.querySelectorAll('#model option[value]:not([value=""])').length > 0);
  await page.selectOption('#model', MODEL);
  await page.setInputFiles('#file', txt);
  await page.click('#submit');
  await page.waitForSelector('#error:not([hidden])', { timeout: 30000 });
  const msg = await page.textContent('#error');
  check(/could not be read as audio/i.test(msg), 'text file: error message shown', msg);
  check(await page.getAttribute('#error', 'role') === 'alert', 'error is announced (role=alert)');
  check(!(await page.isDisabled('#submit')), 'form usable again after the error');
  await page.screenshot({ path: path.join(OUT, 'error.png'), fullPage: true });

  // ---- every other error the API can answer (mocked: hard to provoke here) ----
  const cases = [
    [413, 'payload_too_large', 'upload exceeds 2097152 bytes', null, /too large.*2\.0 MB/i],
    [415, 'unsupported_media_type', 'POST /separate takes multipart/form-data', null, /not supported/i],
    [422, 'audio_too_long', 'the audio is 3600 s long; the limit is 1200 s', null, /too long/i],
    [429, 'rate_limited', 'too many requests', '17', /too many requests.*17 s/i],
    [503, 'queue_full', 'the job queue is full; retry later', '5', /queue is full.*5 s/i],
    [503, 'model_unavailable', "model 'htdemucs' is unavailable (circuit breaker open)", '30', /model is unavailable.*30 s/i],
    [401, 'unauthorized', 'missing or wrong API key', null, /API key/i],
  ];
  for (const [status, code, message, retryAfter, want] of cases) {
    await page.route('**/separate', (route) => route.fulfill({
      status, contentType: 'application/json', headers: retryAfter ? { 'Retry-After': retryAfter } : {},
      body: JSON.stringify({ error: { code, message, request_id: 'test' } }),
    }));
    await page.goto(base + '/');
    await page.waitForFunction(() => document.querySelectorAll('#model option[value]:not([value=""])').length > 0);
    await page.setInputFiles('#file', input);
    await page.click('#submit');
    await page.waitForSelector('#error:not([hidden])');
    const text = (await page.textContent('#error')).replace(/\s+/g, ' ');
    check(want.test(text), `${status} ${code}: message shown`, text);
    if (status === 429) {
      check(await page.isDisabled('#submit') && /Wait \d+ s/.test(await page.textContent('#submit')), '429: submit waits out Retry-After');
      await page.screenshot({ path: path.join(OUT, 'error-429.png'), fullPage: false });
    }
    await page.unroute('**/separate');
  }

  // ---- no file at all: said by the page itself ----
  await page.goto(base + '/');
  await page.click('#submit');
  check(/choose an audio file/i.test(await page.textContent('#error')), 'submitting without a file explains why');

  // ---- a job that does not exist ----
  await page.goto(base + '/#job=0123456789abcdef0123456789abcdef');
  await page.waitForSelector('#error:not([hidden])');
  check(/no longer exists/i.test(await page.textContent('#error')), 'unknown job id: message shown');

  check(pageErrors.length === 0, 'no script errors in the page', pageErrors.join(' | '));
} catch (e) {
  fail('unexpected: ' + (e && e.stack ? e.stack : e));
  try { await page.screenshot({ path: path.join(OUT, 'failure.png'), fullPage: true }); } catch (e2) { /* closed */ }
} finally {
  await browser.close();
  stopServer();
}
console.log(`screenshots: ${OUT}`);
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
