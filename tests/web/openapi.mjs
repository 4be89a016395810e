// openapi.mjs - GET /openapi.json is a valid OpenAPI 3.0.3 document and tells
// the truth (tests/web.cmake, label "web"): validated by
// @apidevtools/swagger-parser (tests/web/package.json, `npm ci` in
// scripts/setup.sh), its defaults are the ones the server applies, the
// `wait` query parameter is there, every JSON answer of every route has a
// schema, and real answers of the running server match those schemas (ajv).
//
// Environment: DEMIX (binary), GOLDEN (golden fixtures), OUT (work folder).
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

const DEMIX = process.env.DEMIX, GOLDEN = process.env.GOLDEN, OUT = process.env.OUT;
if (!DEMIX || !GOLDEN || !OUT) { console.error('set DEMIX, GOLDEN and OUT'); process.exit(2); }
for (const k of ['http_proxy', 'https_proxy', 'HTTP_PROXY', 'HTTPS_PROXY', 'ALL_PROXY', 'all_proxy']) delete process.env[k];

let SwaggerParser, Ajv;
try {
  SwaggerParser = (await import('@apidevtools/swagger-parser')).default;
  Ajv = (await import('ajv')).default;
} catch (e) {
  console.error('FAIL: @apidevtools/swagger-parser or ajv is not installed: run `npm ci` in tests/web (scripts/setup.sh does)');
  process.exit(1);
}

fs.rmSync(OUT, { recursive: true, force: true });
fs.mkdirSync(OUT, { recursive: true });
let failed = 0;
const ok = (what) => console.log('ok: ' + what);
const fail = (what) => { failed++; console.error('FAIL: ' + what); };
const check = (cond, what, detail) => (cond ? ok(what) : fail(what + (detail !== undefined ? ' (' + detail + ')' : '')));

// ---- the server ----
const logPath = path.join(OUT, 'server.log');
const log = fs.openSync(logPath, 'w');
const srv = spawn(DEMIX, ['serve', '--host', '127.0.0.1', '--port', '0', '--repo', path.join(GOLDEN, 'models'),
  '--data-dir', path.join(OUT, 'data'), '--workers', '1'], { stdio: ['ignore', 'ignore', log] });
const stop = () => { try { srv.kill('SIGKILL'); } catch (e) { /* gone */ } };
process.on('exit', stop);
let base = null;
for (let i = 0; i < 300 && !base; i++) {
  const m = fs.readFileSync(logPath, 'utf8').match(/"event_type":"startup".*?"port":(\d+)/);
  if (m) base = 'http://127.0.0.1:' + m[1];
  else await new Promise((r) => setTimeout(r, 100));
}
if (!base) { console.error(fs.readFileSync(logPath, 'utf8')); fail('server did not start'); process.exit(1); }

const doc = await (await fetch(base + '/openapi.json')).json();
fs.writeFileSync(path.join(OUT, 'openapi.json'), JSON.stringify(doc, null, 2));

// ---- a real validator ----
try {
  await SwaggerParser.validate(structuredClone(doc));
  ok('swagger-parser: a valid OpenAPI ' + doc.openapi + ' document');
} catch (e) {
  fail('swagger-parser rejects /openapi.json: ' + e.message);
}
check(doc.openapi === '3.0.3', 'declares OpenAPI 3.0.3', doc.openapi);

// ---- what the document says ----
const sep = doc.paths['/separate'].post;
const form = sep.requestBody.content['multipart/form-data'].schema.properties;
check((sep.parameters || []).some((p) => p.name === 'wait' && p.in === 'query' && p.schema.type === 'boolean'),
  'POST /separate documents the wait query parameter');
check(form.overlap.maximum === 1 && form.overlap.exclusiveMaximum === true, 'overlap < 1 as OpenAPI 3.0 writes it');
// Every JSON 2xx answer has a schema; every error a JSON error schema.
for (const [p, ops] of Object.entries(doc.paths)) {
  for (const [m, op] of Object.entries(ops)) {
    for (const [code, r] of Object.entries(op.responses)) {
      if (code === '304') continue;
      const media = r.content && Object.entries(r.content);
      if (!media || !media.length) { fail(`${m.toUpperCase()} ${p} ${code}: no content`); continue; }
      for (const [type, mt] of media) {
        if (!mt.schema || (type === 'application/json' && !mt.schema.$ref && !mt.schema.type))
          fail(`${m.toUpperCase()} ${p} ${code} ${type}: no schema`);
      }
    }
  }
}
ok('every response of every route has a schema');

// ---- real answers against the schemas ----
const deref = await SwaggerParser.dereference(structuredClone(doc));
// OpenAPI 3.0's schema dialect → JSON Schema for ajv: nullable, boolean exclusiveMaximum.
function toJsonSchema(s) {
  if (Array.isArray(s)) return s.map(toJsonSchema);
  if (!s || typeof s !== 'object') return s;
  const o = {};
  for (const [k, v] of Object.entries(s)) if (k !== 'nullable') o[k] = toJsonSchema(v);
  if (s.nullable && o.type) o.type = [o.type, 'null'];
  if (s.nullable && !o.type) o.type = ['object', 'null'];
  if (s.exclusiveMaximum === true) { o.exclusiveMaximum = s.maximum; delete o.maximum; }
  if (o.format === 'binary') delete o.format;
  return o;
}
const ajv = new Ajv({ strict: false, allErrors: true });
async function conforms(what, method, tmpl, url, init = {}) {
  const r = await fetch(base + url, { method, ...init });
  const op = deref.paths[tmpl][method.toLowerCase()];
  const resp = op.responses[String(r.status)];
  if (!resp) { fail(`${what}: HTTP ${r.status} is not documented for ${method} ${tmpl}`); return null; }
  const body = await r.json();
  const schema = toJsonSchema(resp.content['application/json'].schema);
  const valid = ajv.validate(schema, body);
  check(valid, `${what}: HTTP ${r.status} matches its schema`, JSON.stringify(ajv.errors) + ' ' + JSON.stringify(body).slice(0, 300));
  return body;
}
await conforms('livez', 'GET', '/livez', '/livez');
await conforms('health', 'GET', '/health', '/health');
await conforms('readyz', 'GET', '/readyz', '/readyz');
await conforms('models', 'GET', '/models', '/models');
await conforms('job 404', 'GET', '/jobs/{id}', '/jobs/0123456789abcdef0123456789abcdef');
await conforms('alerts 400', 'POST', '/alerts', '/alerts', { headers: { 'Content-Type': 'application/json' }, body: '{}' });
await conforms('alerts', 'POST', '/alerts', '/alerts', { headers: { 'Content-Type': 'application/json' },
  body: JSON.stringify({ alerts: [{ status: 'firing', labels: { alertname: 'DemixDown', severity: 'critical' } }] }) });

// A job with no optional field: the server applies the documented defaults.
const fd = new FormData();
fd.append('file', new Blob([fs.readFileSync(path.join(GOLDEN, 'inputs', 'mix_3s.wav'))]), 'mix_3s.wav');
fd.append('model_name', 'tiny4s');
const job = await conforms('separate (wait)', 'POST', '/separate', '/separate?wait=true', { body: fd });
if (job) {
  check(job.shifts === form.shifts.default, 'shifts default is what the server applies', `doc ${form.shifts.default}, job ${job.shifts}`);
  check(job.overlap === form.overlap.default, 'overlap default is what the server applies', `doc ${form.overlap.default}, job ${job.overlap}`);
  check(job.format === form.format.default, 'format default is what the server applies', `doc ${form.format.default}, job ${job.format}`);
  check(job.status === 'done', 'the job finished', job.status);
  await conforms('job', 'GET', '/jobs/{id}', '/jobs/' + job.id);
  const list = await conforms('jobs', 'GET', '/jobs', '/jobs');
  const lim = doc.paths['/jobs'].get.parameters.find((p) => p.name === 'limit').schema;
  if (list) check(list.limit === lim.default, 'limit default is what the server applies', `doc ${lim.default}, list ${list.limit}`);
  await conforms('jobs 400', 'GET', '/jobs', '/jobs?limit=' + (lim.maximum + 1));
  await conforms('delete', 'DELETE', '/jobs/{id}', '/jobs/' + job.id);
}

stop();
console.log(failed ? `${failed} check(s) failed` : 'all checks passed');
process.exit(failed ? 1 : 0);
