/*
 * demix web page: upload a song to `demix serve`, follow the job, audition
 * and download the stems. Plain JS against the HTTP API (docs/API.md):
 * GET /models, POST /separate, GET /jobs, GET|DELETE /jobs/{id},
 * GET /jobs/{id}/stems/{stem}, GET /jobs/{id}/zip.
 *
 * Player: one hidden <audio> per stem (blob URLs of the fetched stems);
 * the first is the clock, the others are started together with it and
 * nudged back when they drift. Mute/solo only change `muted`, so every
 * combination plays in sync. Waveforms come from decodeAudioData.
 */
'use strict';

(function () {
  const $ = (id) => document.getElementById(id);
  const el = {
    form: $('form'), file: $('file'), drop: $('drop'), fileName: $('file-name'),
    model: $('model'), modelDesc: $('model-desc'), stems: $('stems'), format: $('format'),
    shifts: $('shifts'), apikey: $('apikey'), more: $('more'),
    submit: $('submit'), cancel: $('cancel'), error: $('error'),
    progress: $('progress'), phase: $('phase'), pct: $('pct'), bar: $('bar'), detail: $('detail'),
    status: $('status'),
    result: $('result'), resultH: $('result-h'), resultMeta: $('result-meta'),
    play: $('play'), time: $('time'), seek: $('seek'), stemList: $('stems-list'),
    zip: $('zip'), zipNote: $('zip-note'),
    recent: $('recent'), recentEmpty: $('recent-empty'), refresh: $('refresh'),
  };

  /* ---- models: GET /models gives each model's name, sources, family, size ---- */
  let models = [];

  /* The stems a model writes: its `sources` as the server reports them (from
   * the registry or the checkpoint itself), never guessed from the name. */
  function stemsOf(m) {
    return m && Array.isArray(m.sources) ? m.sources.filter((s) => typeof s === 'string') : [];
  }

  /* ---- helpers ---- */
  function fmtTime(s) {
    if (!isFinite(s) || s < 0) s = 0;
    s = Math.round(s);
    const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), ss = s % 60;
    return (h ? h + ':' + String(m).padStart(2, '0') : m) + ':' + String(ss).padStart(2, '0');
  }
  function fmtBytes(n) {
    if (!(n >= 0)) return '';
    if (n < 1024) return n + ' B';
    if (n < 1024 * 1024) return (n / 1024).toFixed(0) + ' KB';
    if (n < 1024 * 1024 * 1024) return (n / 1048576).toFixed(n < 10 * 1048576 ? 1 : 0) + ' MB';
    return (n / 1073741824).toFixed(1) + ' GB';
  }
  function fmtWhen(iso) {
    const t = Date.parse(iso);
    if (!t) return '';
    const d = (Date.now() - t) / 1000;
    if (d < 60) return 'just now';
    if (d < 3600) return Math.round(d / 60) + ' min ago';
    if (d < 86400) return Math.round(d / 3600) + ' h ago';
    return new Date(t).toLocaleString();
  }
  function make(tag, props, ...kids) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(props || {})) {
      if (k === 'class') e.className = v;
      else if (k === 'text') e.textContent = v;
      else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
      else if (v !== undefined && v !== null && v !== false) e.setAttribute(k, v === true ? '' : v);
    }
    for (const c of kids) if (c) e.append(c);
    return e;
  }
  function announce(msg) { el.status.textContent = msg; }

  /* ---- API access: optional bearer key, JSON errors ---- */
  const KEY_STORE = 'demix.apiKey';
  function apiKey() { return el.apikey.value.trim(); }
  function authHeaders() {
    const k = apiKey();
    return k ? { Authorization: 'Bearer ' + k } : {};
  }

  class ApiError extends Error {
    constructor(status, code, message, retryAfter) {
      super(message);
      this.status = status; this.code = code; this.retryAfter = retryAfter;
    }
  }

  function retryAfterSeconds(v) {
    if (!v) return null;
    const n = Number(v);
    if (isFinite(n)) return Math.max(0, Math.ceil(n));
    const t = Date.parse(v);
    return t ? Math.max(0, Math.ceil((t - Date.now()) / 1000)) : null;
  }

  async function errorFrom(status, text, retryAfter) {
    let code = '', message = '';
    try {
      const j = JSON.parse(text);
      if (j && j.error) { code = j.error.code || ''; message = j.error.message || ''; }
    } catch (e) { /* not JSON: a proxy's page */ }
    return new ApiError(status, code, message, retryAfterSeconds(retryAfter));
  }

  async function api(path, opts = {}) {
    let r;
    try {
      r = await fetch(path, { ...opts, headers: { Accept: 'application/json', ...authHeaders(), ...(opts.headers || {}) } });
    } catch (e) {
      throw new ApiError(0, 'network', 'The server cannot be reached.', null);
    }
    if (!r.ok) throw await errorFrom(r.status, await r.text(), r.headers.get('Retry-After'));
    return opts.raw ? r : r.json();
  }

  function sentence(m) {
    m = String(m).trim();
    return m ? m[0].toUpperCase() + m.slice(1) + (/[.!?]$/.test(m) ? '' : '.') : '';
  }

  /* Turns any API failure into a sentence a person can act on. */
  function explain(err, context) {
    const s = err.status, code = err.code || '', msg = err.message || '';
    const retry = err.retryAfter != null ? ' Try again in ' + err.retryAfter + ' s.' : ' Try again in a moment.';
    if (s === 0) return ['The server cannot be reached.', 'Check that demix serve is still running and your network connection, then try again.'];
    if (s === 413) return ['This file is too large for the server.', (msg ? msg.replace(/(\d{6,}) bytes/, (m, b) => fmtBytes(Number(b))) + '. ' : '') + 'Try a shorter excerpt or a compressed format such as MP3 or FLAC.'];
    if (s === 415) return ['This kind of file is not supported.', msg || 'Upload an audio file (WAV, FLAC, MP3, OGG, M4A…).'];
    if (s === 422) {
      if (/long|duration/i.test(code + msg)) return ['This recording is too long for the server.', msg];
      const why = msg.replace(/^the upload is not audio:\s*/i, '');
      return ['This file could not be read as audio.', (why ? sentence(why) + ' ' : '') + 'Is it really a sound file? Try WAV, FLAC or MP3.'];
    }
    if (s === 429) return ['Too many requests from you right now.', 'The server limits how often one address can submit songs.' + retry];
    if (s === 503) {
      if (/queue/i.test(code + msg)) return ['The server is busy: its job queue is full.', (msg ? msg + '.' : '') + retry];
      if (/model|breaker|circuit/i.test(code + msg)) return ['This model is unavailable at the moment.', (msg ? msg + '. ' : '') + 'It failed to load; the server will try again shortly, or pick another model.' + retry];
      if (/shutting/i.test(code)) return ['The server is restarting.', 'It is not taking new songs right now.' + retry];
      return ['The server is not ready.', (msg ? sentence(msg) : '') + retry];
    }
    if (s === 401 || s === 403) return ['This server needs an API key.', 'Enter it under “Server access” below the options, then try again.'];
    if (s === 404 && context === 'job') return ['This job no longer exists.', 'Results are kept for a limited time, or the job was deleted. Separate the song again.'];
    if (s === 400 && code === 'unknown_model') return ['This model is not available on the server.', msg];
    if (s === 400) return ['The server refused the request.', msg];
    if (s >= 500) return ['The server failed (' + s + ').', (msg || 'Internal error') + '. Try again; if it keeps happening, check the server log.'];
    return ['Request failed (' + s + ').', msg];
  }

  let retryTimer = null;
  function showError(title, detail, retrySeconds) {
    clearInterval(retryTimer);
    el.error.replaceChildren(make('strong', { text: title }), detail ? make('span', { class: 'error-detail', text: detail }) : null);
    el.error.hidden = false;
    if (retrySeconds > 0) {
      // A rate limit: keep the button disabled and count down the wait.
      let left = retrySeconds;
      el.submit.disabled = true;
      const base = el.submit.textContent = 'Separate';
      const tick = () => {
        if (left <= 0) { clearInterval(retryTimer); el.submit.disabled = busy; el.submit.textContent = base; return; }
        el.submit.textContent = 'Wait ' + left + ' s';
        left--;
      };
      tick();
      retryTimer = setInterval(tick, 1000);
    }
  }
  function showApiError(err, context) {
    const [title, detail] = explain(err, context);
    showError(title, detail, err.status === 429 || err.status === 503 ? err.retryAfter : 0);
    if (err.status === 401 || err.status === 403) { el.more.open = true; el.apikey.focus(); }
  }
  function clearError() { el.error.hidden = true; el.error.replaceChildren(); }

  /* ---- models ---- */
  async function loadModels() {
    try {
      const j = await api('/models');
      models = Array.isArray(j) ? j : (j.models || []);
    } catch (e) {
      models = [];
      showApiError(e, 'models');
    }
    el.model.replaceChildren();
    if (!models.length) {
      el.model.append(make('option', { value: '', text: 'No model available' }));
      el.modelDesc.textContent = 'The server has no model. Start it with --repo DIR or fetch one with “demix models fetch”.';
      return;
    }
    const saved = localStorage.getItem('demix.model');
    const pick = models.find((m) => m.name === saved) || models.find((m) => m.name === 'htdemucs') || models[0];
    for (const m of models) {
      const n = stemsOf(m).length;
      const bits = [m.name, n ? n + ' stems' : 'stems unknown'];
      if (m.size_bytes > 0) bits.push(fmtBytes(m.size_bytes));
      el.model.append(make('option', { value: m.name, text: bits.join(' · '), selected: m === pick }));
    }
    onModelChange();
  }
  function onModelChange() {
    const m = models.find((x) => x.name === el.model.value);
    if (!m) return;
    localStorage.setItem('demix.model', m.name);
    const stems = stemsOf(m);
    const family = m.family && m.family !== 'unknown' ? ' ' + m.family : '';
    const note = m.description || (m.kind === 'bag' ? 'A bag of' + family + ' models (averaged).' : 'A single' + family + ' model.');
    el.modelDesc.textContent = note + (stems.length ? ' Stems: ' + stems.join(', ') : ' Its stems are not known (the file could not be read).') +
      (m.loaded ? ' (loaded).' : '.');
    const keep = el.stems.value;
    el.stems.replaceChildren(make('option', { value: '', text: stems.length ? 'All ' + stems.length + ' stems' : 'All stems' }));
    for (const s of stems) el.stems.append(make('option', { value: s, text: s + ' + no_' + s, selected: s === keep }));
    /* A RoFormer runs MSST's chunking: shifts do not apply (the server refuses them). */
    el.shifts.disabled = isRoformer(m);
  }
  function isRoformer(m) { return !!m && /Roformer$/.test(m.family || ''); }

  /* ---- file picking, drag and drop ---- */
  let chosen = null;
  function setFile(f) {
    chosen = f || null;
    el.fileName.textContent = f ? f.name + ' (' + fmtBytes(f.size) + ')' : '';
    if (f) clearError();
  }
  el.file.addEventListener('change', () => setFile(el.file.files[0]));
  for (const ev of ['dragenter', 'dragover']) {
    el.drop.addEventListener(ev, (e) => { e.preventDefault(); el.drop.classList.add('over'); });
  }
  for (const ev of ['dragleave', 'drop']) {
    el.drop.addEventListener(ev, (e) => { e.preventDefault(); el.drop.classList.remove('over'); });
  }
  el.drop.addEventListener('drop', (e) => {
    const f = e.dataTransfer && e.dataTransfer.files[0];
    if (f) setFile(f);
  });
  // Dropping a file anywhere else must not navigate away from the page.
  window.addEventListener('dragover', (e) => e.preventDefault());
  window.addEventListener('drop', (e) => {
    e.preventDefault();
    const f = e.dataTransfer && e.dataTransfer.files[0];
    if (f) setFile(f);
  });

  /* ---- progress display ---- */
  function setProgress(phase, pct, detail) {
    el.progress.hidden = false;
    el.phase.textContent = phase;
    const p = Math.max(0, Math.min(100, Math.round(pct)));
    el.pct.textContent = p + '%';
    el.bar.value = p;
    el.bar.setAttribute('aria-valuetext', phase + ' ' + p + '%');
    el.detail.textContent = detail || '';
  }

  /* ---- submitting ---- */
  let busy = false, currentJob = null, pollTimer = null, xhr = null;
  function setBusy(b) {
    busy = b;
    el.submit.disabled = b;
    el.cancel.hidden = !b;
  }

  el.form.addEventListener('submit', (e) => {
    e.preventDefault();
    if (busy) return;
    clearError();
    if (!chosen) { showError('Choose an audio file first.', 'Use the file picker or drop a file on the box.'); el.file.focus(); return; }
    if (!el.model.value) { showError('No model to run.', el.modelDesc.textContent); return; }
    const rf = isRoformer(models.find((x) => x.name === el.model.value));
    const shifts = Number(el.shifts.value);
    if (!rf && (!Number.isInteger(shifts) || shifts < 0 || shifts > 20)) { showError('Shifts must be a whole number from 0 to 20.'); el.shifts.focus(); return; }
    const fd = new FormData();
    fd.append('model_name', el.model.value);
    if (el.stems.value) fd.append('two_stems', el.stems.value);
    fd.append('format', el.format.value);
    if (!rf) fd.append('shifts', String(shifts));
    fd.append('file', chosen, chosen.name);
    upload(fd, chosen.size);
  });

  function upload(fd, size) {
    stopPlayer();
    el.result.hidden = true;
    setBusy(true);
    const t0 = performance.now();
    setProgress('Uploading', 0, '0 of ' + fmtBytes(size));
    announce('Uploading');
    xhr = new XMLHttpRequest();
    xhr.open('POST', '/separate');
    xhr.setRequestHeader('Accept', 'application/json');
    const k = apiKey();
    if (k) xhr.setRequestHeader('Authorization', 'Bearer ' + k);
    xhr.upload.addEventListener('progress', (e) => {
      if (!e.lengthComputable) return;
      const dt = (performance.now() - t0) / 1000;
      const rate = dt > 0.3 ? e.loaded / dt : 0;
      const eta = rate > 0 ? (e.total - e.loaded) / rate : NaN;
      setProgress('Uploading', (100 * e.loaded) / e.total,
        fmtBytes(e.loaded) + ' of ' + fmtBytes(e.total) + (isFinite(eta) && e.loaded < e.total ? ' · about ' + fmtTime(eta) + ' left' : ''));
    });
    xhr.upload.addEventListener('load', () => setProgress('Checking the file', 100, 'Uploaded; the server is reading it…'));
    xhr.addEventListener('load', async () => {
      const x = xhr; xhr = null;
      if (x.status === 202 || x.status === 200) {
        let job;
        try { job = JSON.parse(x.responseText); } catch (e) { job = null; }
        if (!job || !job.id) { setBusy(false); el.progress.hidden = true; showError('Unexpected answer from the server.', x.responseText.slice(0, 200)); return; }
        openJob(job.id, job);
        loadRecent();
        return;
      }
      setBusy(false);
      el.progress.hidden = true;
      showApiError(await errorFrom(x.status, x.responseText, x.getResponseHeader('Retry-After')), 'upload');
      announce('Upload failed');
    });
    xhr.addEventListener('error', () => {
      xhr = null;
      setBusy(false);
      el.progress.hidden = true;
      // A server that refuses a too-large body closes the connection early.
      showError('The upload failed.', 'The connection was closed before the server answered. The file may be too large for this server, or the server stopped.');
    });
    xhr.addEventListener('abort', () => { xhr = null; setBusy(false); el.progress.hidden = true; announce('Upload cancelled'); });
    xhr.send(fd);
  }

  el.cancel.addEventListener('click', async () => {
    if (xhr) { xhr.abort(); return; }
    if (!currentJob) return;
    const id = currentJob;
    stopPolling();
    try { await api('/jobs/' + id, { method: 'DELETE' }); } catch (e) { /* gone already */ }
    currentJob = null;
    setBusy(false);
    el.progress.hidden = true;
    if (location.hash) history.replaceState(null, '', location.pathname + location.search);
    showError('Job cancelled.', 'Its files were deleted.');
    loadRecent();
  });

  /* ---- following a job (its id is in the URL: #job=ID) ---- */
  function jobFromHash() {
    const m = /^#job=([0-9a-fA-F]{8,64})$/.exec(location.hash);
    return m ? m[1] : null;
  }
  function stopPolling() { clearTimeout(pollTimer); pollTimer = null; }

  function openJob(id, job) {
    stopPolling();
    currentJob = id;
    if (jobFromHash() !== id) history.pushState(null, '', '#job=' + id);
    if (job) onJob(job); else poll();
  }

  async function poll() {
    const id = currentJob;
    if (!id) return;
    try {
      const job = await api('/jobs/' + id);
      if (id === currentJob) onJob(job);
    } catch (e) {
      if (id !== currentJob) return;
      if (e.status === 0 || e.status === 429 || e.status === 503) {
        // Transient: keep following, a little slower.
        setProgress(el.phase.textContent, el.bar.value, 'Lost contact with the server, retrying…');
        pollTimer = setTimeout(poll, Math.max(2000, (e.retryAfter || 0) * 1000));
        return;
      }
      currentJob = null;
      setBusy(false);
      el.progress.hidden = true;
      showApiError(e, 'job');
    }
  }

  function elapsedOf(job) {
    const t0 = Date.parse(job.started_at || job.created_at);
    const t1 = job.finished_at ? Date.parse(job.finished_at) : Date.now();
    return t0 ? Math.max(0, (t1 - t0) / 1000) : NaN;
  }

  function onJob(job) {
    const st = job.status;
    if (st === 'queued' || st === 'running') {
      setBusy(true);
      el.result.hidden = true;
      const pct = 100 * (job.progress || 0);
      const parts = [];
      if (st === 'queued') parts.push('Waiting for a free worker' + (job.queue_position ? ' (position ' + job.queue_position + ')' : ''));
      else {
        parts.push('Elapsed ' + fmtTime(elapsedOf(job)));
        parts.push(job.eta_seconds != null ? 'about ' + fmtTime(job.eta_seconds) + ' left' : 'estimating time left…');
      }
      const badge = el.recent.querySelector('a[href="#job=' + job.id + '"] .badge');
      if (badge) { badge.className = 'badge ' + st; badge.textContent = st === 'running' ? 'running ' + Math.round(pct) + '%' : st; }
      setProgress(st === 'queued' ? 'Queued' : 'Separating' + (job.filename ? ' ' + job.filename : ''), st === 'queued' ? 0 : pct, parts.join(' · '));
      announce(st === 'queued' ? 'Queued' : 'Separating, ' + Math.round(pct) + ' percent');
      pollTimer = setTimeout(poll, 700);
      return;
    }
    setBusy(false);
    el.progress.hidden = true;
    if (st === 'done') {
      announce('Done: ' + (job.stems || []).length + ' stems ready');
      showResult(job);
    } else {
      const e = job.error || {};
      const title = st === 'cancelled' ? 'The job was cancelled.' : e.code === 'timeout' ? 'The job took too long and was stopped.' : 'The separation failed.';
      showError(title, e.message && e.message !== 'cancelled' ? e.message : '');
      announce(title);
    }
    loadRecent();
  }

  /* ---- results: stems, waveforms, synced player ---- */
  let player = null; // {tracks: [{name, audio, muted, solo, row, wave, head}], playing, raf}

  function stopPlayer() {
    if (!player) return;
    for (const t of player.tracks) { t.audio.pause(); t.audio.removeAttribute('src'); t.audio.load(); URL.revokeObjectURL(t.url); }
    cancelAnimationFrame(player.raf);
    player = null;
    el.stemList.replaceChildren();
    el.play.disabled = true;
    el.play.setAttribute('aria-pressed', 'false');
  }

  async function showResult(job) {
    stopPlayer();
    const p = { tracks: [], playing: false, raf: 0, job: job.id };
    player = p;
    el.result.hidden = false;
    el.resultMeta.textContent = [job.filename, job.model, job.format && job.format.toUpperCase(),
      job.finished_at ? 'took ' + fmtTime(elapsedOf(job)) : ''].filter(Boolean).join(' · ');
    const ext = job.format || 'wav';
    const base = (job.filename || 'song').replace(/\.[^.]*$/, '');
    for (const s of job.stems || []) {
      const audio = make('audio', { preload: 'auto', 'data-stem': s.name });
      const canvas = make('canvas', { role: 'img', 'aria-label': 'Waveform of ' + s.name + ' (loading)' });
      const head = make('div', { class: 'playhead', 'aria-hidden': 'true' });
      const wave = make('div', { class: 'wave', title: 'Click to seek' }, canvas, head);
      const mute = make('button', { type: 'button', class: 'mute', 'aria-pressed': 'false', 'aria-label': 'Mute ' + s.name, title: 'Mute', text: 'M' });
      const solo = make('button', { type: 'button', class: 'solo', 'aria-pressed': 'false', 'aria-label': 'Solo ' + s.name, title: 'Solo', text: 'S' });
      const dl = make('a', { class: 'button', href: s.url, download: base + '_' + s.name + '.' + ext, 'aria-label': 'Download ' + s.name, text: 'Download' });
      const row = make('li', { class: 'stem', 'data-stem': s.name },
        make('span', { class: 'stem-name', text: s.name }), make('div', { class: 'stem-buttons' }, mute, solo), wave, dl, audio);
      el.stemList.append(row);
      const t = { name: s.name, url: '', audio, canvas, head, wave, muteBtn: mute, soloBtn: solo, dl, muted: false, solo: false, peaks: null };
      p.tracks.push(t);
      mute.addEventListener('click', () => { t.muted = !t.muted; applyMix(); });
      solo.addEventListener('click', () => { t.solo = !t.solo; applyMix(); });
      wave.addEventListener('click', (e) => {
        const r = wave.getBoundingClientRect();
        seekTo(((e.clientX - r.left) / r.width) * duration());
      });
    }
    setupZip(job);
    el.resultH.focus();
    // Fetch, decode and draw every stem (in parallel).
    await Promise.all(p.tracks.map((t) => loadTrack(p, t)));
    if (player !== p) return;
    const ready = p.tracks.filter((t) => t.url);
    el.play.disabled = !ready.length;
    el.seek.disabled = !ready.length;
    el.seek.max = String(duration());
    updateTime();
  }

  async function loadTrack(p, t) {
    try {
      const r = await api(t.dl.getAttribute('href'), { raw: true, headers: { Accept: '*/*' } });
      const bytes = await r.arrayBuffer();
      if (player !== p) return;
      const blob = new Blob([bytes], { type: r.headers.get('Content-Type') || 'audio/wav' });
      t.url = URL.createObjectURL(blob);
      t.audio.src = t.url;
      t.dl.href = t.url;
      t.dl.setAttribute('download', filenameFrom(r, t.dl.getAttribute('download')));
      t.audio.addEventListener('ended', () => { if (t === p.tracks[0]) pause(true); });
      await drawWave(t, bytes);
    } catch (e) {
      t.canvas.setAttribute('aria-label', 'Waveform of ' + t.name + ' unavailable');
      if (e instanceof ApiError) showApiError(e, 'job');
    }
  }

  let actx = null;
  async function drawWave(t, bytes) {
    try {
      actx = actx || new (window.AudioContext || window.webkitAudioContext)();
      const buf = await actx.decodeAudioData(bytes.slice(0));
      const n = 1200, peaks = new Float32Array(n * 2);
      const chans = [];
      for (let c = 0; c < buf.numberOfChannels; c++) chans.push(buf.getChannelData(c));
      const per = Math.max(1, Math.floor(buf.length / n));
      for (let i = 0; i < n; i++) {
        let lo = 0, hi = 0;
        const a = i * per, b = Math.min(buf.length, a + per);
        for (const d of chans) for (let k = a; k < b; k++) { const v = d[k]; if (v < lo) lo = v; else if (v > hi) hi = v; }
        peaks[2 * i] = lo; peaks[2 * i + 1] = hi;
      }
      t.peaks = peaks;
      t.duration = buf.duration;
      t.canvas.setAttribute('aria-label', 'Waveform of ' + t.name + ', ' + fmtTime(buf.duration));
      paint(t);
    } catch (e) {
      t.canvas.setAttribute('aria-label', 'Waveform of ' + t.name + ' unavailable (cannot decode)');
    }
  }

  function paint(t) {
    if (!t.peaks) return;
    const c = t.canvas, dpr = window.devicePixelRatio || 1;
    const w = Math.max(1, Math.round(c.clientWidth * dpr)), h = Math.max(1, Math.round(c.clientHeight * dpr));
    if (c.width !== w) c.width = w;
    if (c.height !== h) c.height = h;
    const g = c.getContext('2d');
    const css = getComputedStyle(document.documentElement);
    const pos = duration() ? currentTime() / duration() : 0;
    g.clearRect(0, 0, w, h);
    const n = t.peaks.length / 2, mid = h / 2;
    let max = 0.01;
    for (let i = 0; i < t.peaks.length; i++) max = Math.max(max, Math.abs(t.peaks[i]));
    const scale = (mid * 0.95) / max;
    const bar = Math.max(1, Math.round(2 * dpr));
    for (let x = 0; x < w; x += bar + 1) {
      const i = Math.min(n - 1, Math.floor((x / w) * n));
      const i2 = Math.min(n, Math.max(i + 1, Math.floor(((x + bar) / w) * n)));
      let lo = 0, hi = 0;
      for (let k = i; k < i2; k++) { lo = Math.min(lo, t.peaks[2 * k]); hi = Math.max(hi, t.peaks[2 * k + 1]); }
      const y0 = mid - Math.max(hi * scale, 0.5), y1 = mid - Math.min(lo * scale, -0.5);
      g.fillStyle = x / w < pos ? css.getPropertyValue('--wave').trim() : css.getPropertyValue('--wave-dim').trim();
      g.fillRect(x, y0, bar, y1 - y0);
    }
  }

  function duration() {
    if (!player || !player.tracks.length) return 0;
    const a = player.tracks[0].audio;
    return isFinite(a.duration) ? a.duration : player.tracks[0].duration || 0;
  }
  function currentTime() { return player && player.tracks.length ? player.tracks[0].audio.currentTime : 0; }

  function applyMix() {
    if (!player) return;
    const anySolo = player.tracks.some((t) => t.solo);
    for (const t of player.tracks) {
      const audible = !t.muted && (!anySolo || t.solo);
      t.audio.muted = !audible;
      t.muteBtn.setAttribute('aria-pressed', String(t.muted));
      t.soloBtn.setAttribute('aria-pressed', String(t.solo));
      t.wave.classList.toggle('muted', !audible);
    }
  }

  async function play() {
    if (!player) return;
    const tracks = player.tracks.filter((t) => t.url);
    const at = currentTime();
    for (const t of tracks) t.audio.currentTime = at;
    try {
      await Promise.all(tracks.map((t) => t.audio.play()));
    } catch (e) {
      pause();
      showError('The browser refused to play.', String(e.message || e));
      return;
    }
    player.playing = true;
    el.play.setAttribute('aria-pressed', 'true');
    el.play.setAttribute('aria-label', 'Pause');
    tick();
  }
  function pause(ended) {
    if (!player) return;
    for (const t of player.tracks) t.audio.pause();
    if (ended) for (const t of player.tracks) t.audio.currentTime = 0;
    player.playing = false;
    el.play.setAttribute('aria-pressed', 'false');
    el.play.setAttribute('aria-label', 'Play all stems');
    cancelAnimationFrame(player.raf);
    redraw();
  }
  function seekTo(s) {
    if (!player) return;
    s = Math.max(0, Math.min(duration(), s));
    for (const t of player.tracks) if (t.url) t.audio.currentTime = s;
    redraw();
  }
  // Keeps every track on the first one's clock while playing.
  function tick() {
    if (!player || !player.playing) return;
    const lead = player.tracks[0].audio.currentTime;
    for (const t of player.tracks.slice(1)) {
      if (t.url && Math.abs(t.audio.currentTime - lead) > 0.04) t.audio.currentTime = lead;
    }
    redraw();
    player.raf = requestAnimationFrame(tick);
  }
  let lastPaint = 0;
  function redraw() {
    updateTime();
    const now = performance.now();
    const pos = duration() ? currentTime() / duration() : 0;
    for (const t of player.tracks) t.head.style.left = (pos * 100).toFixed(3) + '%';
    if (now - lastPaint > 120 || !player.playing) { lastPaint = now; player.tracks.forEach(paint); }
  }
  function updateTime() {
    el.time.textContent = fmtTime(currentTime()) + ' / ' + fmtTime(duration());
    el.seek.value = String(currentTime());
    el.seek.setAttribute('aria-valuetext', fmtTime(currentTime()) + ' of ' + fmtTime(duration()));
  }
  el.play.addEventListener('click', () => (player && player.playing ? pause() : play()));
  el.seek.addEventListener('input', () => seekTo(Number(el.seek.value)));
  document.addEventListener('keydown', (e) => {
    // Space toggles play when focus is not on a control that uses it.
    if (e.key !== ' ' || !player || el.result.hidden) return;
    const tag = (e.target.tagName || '').toLowerCase();
    if (['input', 'select', 'textarea', 'button', 'a', 'summary'].includes(tag)) return;
    e.preventDefault();
    el.play.click();
  });
  window.addEventListener('resize', () => { if (player) player.tracks.forEach(paint); });

  /* The file name the server gives a download (Content-Disposition, RFC 6266:
   * filename* in UTF-8 first, then filename), else the fallback. */
  function filenameFrom(r, fallback) {
    const cd = r.headers.get('Content-Disposition') || '';
    const star = cd.match(/filename\*\s*=\s*UTF-8''([^;]+)/i);
    if (star) { try { return decodeURIComponent(star[1].trim()); } catch (e) { /* malformed: next */ } }
    const plain = cd.match(/filename\s*=\s*"([^"]*)"/i);
    return plain ? plain[1] : fallback;
  }

  /* "Download all": GET /jobs/{id}/zip, only when clicked: the server builds
   * the zip on the first request and keeps it beside the stems, so asking
   * for it ahead (to see whether it exists) would double the job's disk for
   * every job shown. The server names the file (<track>_stems.zip). */
  function setupZip(job) {
    el.zip.href = '/jobs/' + job.id + '/zip';
    el.zip.setAttribute('download', '');
    el.zip.removeAttribute('aria-disabled');
    el.zipNote.textContent = '';
  }
  el.zip.addEventListener('click', async (e) => {
    if (el.zip.getAttribute('aria-disabled') === 'true') { e.preventDefault(); return; }
    if (!apiKey()) return; // a plain link downloads it
    // With an API key the request needs the header: fetch it, then save the blob.
    e.preventDefault();
    try {
      const r = await api(el.zip.getAttribute('href'), { raw: true, headers: { Accept: 'application/zip' } });
      const u = URL.createObjectURL(await r.blob());
      const a = make('a', { href: u, download: filenameFrom(r, 'stems.zip') });
      document.body.append(a); a.click(); a.remove();
      setTimeout(() => URL.revokeObjectURL(u), 60000);
    } catch (err) { showApiError(err, 'job'); }
  });

  /* ---- recent jobs ---- */
  async function loadRecent() {
    let list;
    try {
      const j = await api('/jobs?limit=10');
      list = j.jobs || [];
    } catch (e) {
      el.recent.replaceChildren();
      el.recentEmpty.hidden = false;
      el.recentEmpty.textContent = e.status === 401 || e.status === 403 ? 'Enter the API key to see recent jobs.' : 'Recent jobs are unavailable: ' + explain(e).join(' ');
      return;
    }
    el.recentEmpty.hidden = list.length > 0;
    el.recentEmpty.textContent = 'No jobs yet.';
    el.recent.replaceChildren(...list.map((j) => {
      const sub = [j.model, (j.stems || []).length ? j.stems.length + ' stems' : '', fmtWhen(j.created_at)].filter(Boolean).join(' · ');
      const status = j.status === 'running' ? 'running ' + Math.round(100 * (j.progress || 0)) + '%' : j.status;
      return make('li', {}, make('a', { href: '#job=' + j.id, 'aria-current': j.id === currentJob ? 'true' : null },
        make('span', { class: 'r-name', text: j.filename || j.id }),
        make('span', { class: 'r-sub', text: sub }),
        make('span', { class: 'badge ' + j.status, text: status })));
    }));
  }
  el.refresh.addEventListener('click', loadRecent);

  window.addEventListener('hashchange', () => {
    const id = jobFromHash();
    if (id && id !== currentJob) { clearError(); openJob(id); }
  });

  /* ---- start ---- */
  el.apikey.value = localStorage.getItem(KEY_STORE) || '';
  el.apikey.addEventListener('change', () => {
    localStorage.setItem(KEY_STORE, apiKey());
    loadModels(); loadRecent();
  });
  el.model.addEventListener('change', onModelChange);
  loadModels();
  loadRecent();
  const id = jobFromHash();
  if (id) openJob(id); // a reload resumes the job
})();
