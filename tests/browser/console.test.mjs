#!/usr/bin/env node
// End-to-end test of the browser console (web/console.html) against a running
// agentws server, in Debian's headless chromium.
//
//   node tests/browser/console.test.mjs --base http://127.0.0.1:PORT [--server PATH/ws-server]
//                                       [--screenshot out.png] [--chromium /usr/bin/chromium]
//
// The page is driven by playwright-core, except the load section: Playwright
// turns on DevTools network tracking, which copies every WebSocket frame on
// the page's main thread, so the page under load runs in a second Chromium
// that only a bare DevTools pipe drives (cdp_pipe.mjs). With --server the test
// also starts servers of its own: one that needs a token (and that it stops,
// to see the page notice), and one that holds 8 events per run (a run_gap).
// Resume is checked through a reload, and through drops that are real: the
// page goes through a TCP proxy of the test's own that it cuts
// (net_peers.mjs, which also has a version 1 server). Prints one PASS/FAIL
// line per check, the load measurements as "measure:" lines (reported, never
// asserted: timing depends on the machine), and a final "N passed, N failed"
// line; exits non-zero on any failure. The whole run is bounded by 110 s.

import { spawn } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { launchPipeBrowser } from './cdp_pipe.mjs';
import { startProxy, startVersion1Server } from './net_peers.mjs';

const OVERALL_TIMEOUT_MS = 110_000;
const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const WAIT_MS = 10_000;
const DESKTOP = { width: 1360, height: 900 };
const PHONE = { width: 390, height: 844 };

function parseArgs(argv) {
  const opts = { base: null, server: null, screenshot: null, chromium: process.env.CHROMIUM || '/usr/bin/chromium' };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const next = () => {
      if (i + 1 >= argv.length) usage(`missing value for ${a}`);
      return argv[++i];
    };
    if (a === '--base') opts.base = next();
    else if (a === '--server') opts.server = next();
    else if (a === '--screenshot') opts.screenshot = next();
    else if (a === '--chromium') opts.chromium = next();
    else if (a === '--help' || a === '-h') usage(null, 0);
    else usage(`unknown argument: ${a}`);
  }
  if (!opts.base) usage('--base is required');
  opts.base = opts.base.replace(/\/+$/, '');
  return opts;
}

function usage(message, code = 2) {
  if (message) console.error(message);
  console.error('usage: node console.test.mjs --base http://127.0.0.1:PORT [--server PATH] [--screenshot out.png] [--chromium PATH]');
  process.exit(code);
}

const opts = parseArgs(process.argv.slice(2));

let passed = 0;
let failed = 0;
let context = null;
let pipeBrowser = null;
let userDataDir = null;
let finished = false;
const servers = new Set();
const peers = new Set();  // proxies and the version 1 server (net_peers.mjs)

function pass(name) { passed++; console.log(`PASS ${name}`); }
function fail(name, why) { failed++; console.log(`FAIL ${name}${why ? `: ${why}` : ''}`); }
function check(name, ok, why) { if (ok) pass(name); else fail(name, why); return ok; }
function eq(name, actual, expected) {
  return check(name, actual === expected, `expected ${JSON.stringify(expected)}, got ${JSON.stringify(actual)}`);
}
function measure(text) { console.log(`  measure: ${text}`); }
const fmt = (n, digits = 0) => Number(n).toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function cleanup() {
  try { if (context) await context.close(); } catch { /* already gone */ }
  context = null;
  try { if (pipeBrowser) await pipeBrowser.close(); } catch { /* already gone */ }
  pipeBrowser = null;
  for (const s of servers) s.kill();
  for (const p of peers) await Promise.race([p.close(), sleep(1000)]);
  try { if (userDataDir) fs.rmSync(userDataDir, { recursive: true, force: true }); } catch { /* best effort */ }
}

function finish(code) {
  if (finished) return;
  finished = true;
  console.log(`${passed} passed, ${failed} failed`);
  process.exit(code);
}

const watchdog = setTimeout(async () => {
  fail('overall timeout', `test did not finish within ${OVERALL_TIMEOUT_MS / 1000} s`);
  await Promise.race([cleanup(), sleep(3000)]);
  finish(1);
}, OVERALL_TIMEOUT_MS);

// A step that must succeed for the rest to make sense; throws to abort.
class Abort extends Error {}
async function must(name, fn) {
  try {
    await fn();
    pass(name);
  } catch (e) {
    fail(name, String(e && e.message ? e.message.split('\n')[0] : e));
    throw new Abort(name);
  }
}
// A step whose failure is reported but does not stop the test.
async function soft(name, fn) {
  try {
    await fn();
    pass(name);
    return true;
  } catch (e) {
    fail(name, String(e && e.message ? e.message.split('\n')[0] : e));
    return false;
  }
}

// Starts `ws-server --port 0 ARGS` (in directory cwd, if given) and resolves
// with { port, stop() } once it logs the port it listens on.
function startServer(args, cwd = undefined) {
  return new Promise((resolve, reject) => {
    const proc = spawn(opts.server, ['--port', '0', ...args], { stdio: ['ignore', 'pipe', 'pipe'], cwd });
    let log = '';
    let done = false;
    const exited = new Promise((r) => proc.once('exit', r));
    const server = {
      port: null,
      log: () => log,
      kill: () => { if (proc.exitCode === null) proc.kill('SIGKILL'); },
      // SIGTERM: the server cancels its runs, closes every WebSocket with 1001 and exits.
      stop: async () => {
        if (proc.exitCode === null) proc.kill('SIGTERM');
        await Promise.race([exited, sleep(5000)]);
        servers.delete(server);
      },
    };
    servers.add(server);
    const onData = (chunk) => {
      log += chunk;
      const m = log.match(/listening on ws:\/\/[^\s]*:(\d+)\/ws/);
      if (m && !done) {
        done = true;
        server.port = Number(m[1]);
        resolve(server);
      }
    };
    proc.stdout.setEncoding('utf8').on('data', onData);
    proc.stderr.setEncoding('utf8').on('data', onData);
    proc.once('exit', (code) => { if (!done) { done = true; reject(new Error(`ws-server exited (${code}): ${log.trim()}`)); } });
    setTimeout(() => { if (!done) { done = true; reject(new Error('ws-server did not start within 10 s')); } }, 10_000);
  });
}

// Starts `count` runs through the page's own form, in one task.
const START_RUNS = ([prefix, count, steps, interval]) => {
  const set = (id, v) => { document.getElementById(id).value = v; };
  for (let i = 0; i < count; i++) {
    set('run-id', `${prefix}${String(i).padStart(2, '0')}`);
    set('steps', String(steps));
    set('interval', String(interval));
    document.getElementById('start').click();
  }
};

async function main() {
  userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'agentws-console-test-'));
  context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: opts.chromium,
    headless: true,
    args: [
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
      '--disable-quic', '--no-first-run', '--disable-component-update', '--disable-sync',
    ],
    viewport: DESKTOP,
    timeout: 20_000,
  });
  const page = context.pages()[0] || (await context.newPage());
  page.setDefaultTimeout(WAIT_MS);

  const pageErrors = [];
  const dialogs = [];
  const consoleLines = [];
  const sent = [];  // commands the page sent, parsed
  page.on('pageerror', (e) => pageErrors.push(String(e && e.message)));
  page.on('dialog', (d) => { dialogs.push(d.message()); d.dismiss().catch(() => {}); });
  page.on('console', (m) => consoleLines.push(m.text()));
  const wsUrls = [];  // the URL of every WebSocket the page opened
  page.on('websocket', (ws) => {
    wsUrls.push(ws.url());
    ws.on('framesent', (f) => {
      try { sent.push(JSON.parse(f.payload)); } catch { /* not ours to judge here */ }
    });
  });

  // Helpers that find a lane by its run id without building a CSS selector
  // from it (run ids may hold any characters).
  const lane = (id) => page.evaluate((id) => {
    const el = [...document.querySelectorAll('#runs .lane')].find((l) => l.dataset.runId === id);
    if (!el) return null;
    const q = (s) => el.querySelector(s);
    const cancel = q('.cancel');
    return {
      dataState: el.dataset.state,
      state: q('.state')?.textContent,
      count: q('.count')?.textContent,
      step: q('.step')?.textContent,
      runIdText: q('.run-id')?.textContent,
      note: q('.note')?.textContent,
      cancelVisible: !!cancel && !cancel.hidden && cancel.offsetParent !== null,
      progress: q('.progress') && !q('.progress-row')?.hidden
        ? { value: q('.progress').value, max: q('.progress').max } : null,
    };
  }, id);
  const waitLane = (id, states, extra = 0, timeout = WAIT_MS) => page.waitForFunction(
    ([id, states, minCount]) => {
      const el = [...document.querySelectorAll('#runs .lane')].find((l) => l.dataset.runId === id);
      return !!el && states.includes(el.dataset.state)
        && Number(el.querySelector('.count')?.textContent) >= minCount;
    },
    [id, states, extra], { timeout },
  );
  const clickCancel = (id) => page.evaluate((id) => {
    const el = [...document.querySelectorAll('#runs .lane')].find((l) => l.dataset.runId === id);
    el.querySelector('.cancel').click();
  }, id);
  async function startRun(id, steps, interval) {
    if (id !== null) await page.fill('#run-id', id);
    await page.fill('#steps', steps === null ? '' : String(steps));
    await page.fill('#interval', interval === null ? '' : String(interval));
    await page.click('#start');
  }
  const logLines = () => page.evaluate(() => [...document.querySelectorAll('#log .line')].map((n) => ({
    run: n.dataset.runId ?? null, type: n.dataset.type ?? null, kind: n.classList.contains('out') ? 'out' : n.classList.contains('sys') ? 'sys' : 'in', text: n.textContent,
  })));

  // --- page loads ----------------------------------------------------------
  await must('page loads at /', async () => {
    const res = await page.goto(`${opts.base}/`, { waitUntil: 'load' });
    if (!res || !res.ok()) throw new Error(`HTTP ${res ? res.status() : 'no response'}`);
    const title = await page.title();
    if (!/agentws/i.test(title)) throw new Error(`unexpected title ${JSON.stringify(title)}`);
  });
  const wsUrl = opts.base.replace(/^http/, 'ws') + '/ws';
  eq('default WebSocket URL derived from the page location', await page.inputValue('#url'), wsUrl);
  eq('token field empty without ?token=', await page.inputValue('#token'), '');
  eq('run id prefilled', await page.inputValue('#run-id'), 'run-001');
  check('start disabled while disconnected', await page.isDisabled('#start'));
  eq('status shows disconnected', await page.getAttribute('#status', 'data-state'), 'disconnected');

  // --- connect -------------------------------------------------------------
  await must('connects', async () => {
    await page.click('#connect');
    await page.waitForSelector('#status[data-state="connected"]');
  });
  check('status text says Connected', /connected/i.test(await page.textContent('#status')));
  eq('connect button turns into Disconnect', (await page.textContent('#connect')).trim(), 'Disconnect');
  check('server info shown', /agentws/.test(await page.textContent('#server-info')));
  await soft('the session key is shown, and kept in this tab by server', async () => {
    await page.waitForSelector('#session:not([hidden])');
    const shown = await page.evaluate(() => ({
      key: document.querySelector('#session .session-key').textContent,
      state: document.querySelector('#session').dataset.state,
      stored: sessionStorage.getItem(`agentws.session ${new URL(document.querySelector('#url').value).origin}`),
    }));
    if (!/^[0-9a-f]{32}$/.test(shown.key)) throw new Error(`key shown: ${JSON.stringify(shown.key)}`);
    if (shown.state !== 'new') throw new Error(`state ${shown.state}`);
    if (!shown.stored || JSON.parse(shown.stored).key !== shown.key) throw new Error(`stored: ${shown.stored}`);
  });
  await page.waitForFunction(() => !document.querySelector('#start').disabled);

  // --- two runs, one cancelled ---------------------------------------------
  await must('starts run-001 and run-002 (steps 5, interval_ms 200)', async () => {
    await startRun(null, 5, 200);
    const next = await page.inputValue('#run-id');
    if (next !== 'run-002') throw new Error(`run id did not advance to run-002 (got ${next})`);
    await startRun(null, 5, 200);
    await waitLane('run-001', ['running', 'done'], 1);
    await waitLane('run-002', ['running'], 1);
  });
  eq('run id advances to run-003', await page.inputValue('#run-id'), 'run-003');
  {
    const start = sent.find((c) => c.command === 'start_run' && c.run_id === 'run-001');
    eq('a server that resumes: start_run asks for a grace of 60 s', start && start.detach_grace_ms, 60000);
  }
  {
    const l = await lane('run-002');
    check('running lane shows a Cancel button', l && l.cancelVisible, JSON.stringify(l));
    check('running lane shows progress out of 5', l && l.progress && l.progress.max === 5, JSON.stringify(l && l.progress));
  }
  await must('cancels run-002', async () => {
    await clickCancel('run-002');
    await waitLane('run-002', ['cancelled']);
  });
  await must('run-001 finishes', () => waitLane('run-001', ['done'], 5));
  {
    const a = await lane('run-001');
    const b = await lane('run-002');
    eq('run-001 state text', a.state, 'done');
    eq('run-001 event count', a.count, '5');
    eq('run-001 last step', a.step, '4');
    check('run-001 progress full', a.progress && a.progress.value === 5 && a.progress.max === 5, JSON.stringify(a.progress));
    check('run-001 has no Cancel button', !a.cancelVisible);
    check('a demo run has no transcript and no input box', await page.evaluate(() => {
      const el = [...document.querySelectorAll('#runs .lane')].find((l) => l.dataset.runId === 'run-001');
      return el.querySelector('.transcript').hidden && el.querySelector('.lane-input').hidden
        && el.querySelector('.last-text').textContent === 'agent step 4';
    }));
    eq('run-002 state text', b.state, 'cancelled');
    check('run-002 stopped early', Number(b.count) >= 1 && Number(b.count) < 5, `count ${b.count}`);
    check('run-002 says why it ended', /cancel/i.test(b.note || ''), JSON.stringify(b.note));
    check('run-002 has no Cancel button', !b.cancelVisible);
    eq('two lanes shown', await page.locator('#runs .lane').count(), 2);
    check('no error shown', await page.isHidden('#errors-panel')
      && (await page.locator('#errors .error').count()) === 0);
  }

  // --- the log filtered by run ----------------------------------------------
  await soft('log filter shows only run-002\'s lines, ending with its run_cancelled', async () => {
    await page.selectOption('#log-filter', 'run-002');
    await page.waitForFunction(() => [...document.querySelectorAll('#log .line')].every((n) => n.dataset.runId === 'run-002'));
    const lines = await logLines();
    if (lines.length < 4) throw new Error(`only ${lines.length} lines`);
    const others = lines.filter((l) => l.run !== 'run-002');
    if (others.length) throw new Error(`lines of other runs: ${JSON.stringify(others[0])}`);
    if (!lines.some((l) => l.kind === 'out' && /cancel_run/.test(l.text))) throw new Error('no cancel_run line');
    const last = lines[lines.length - 1];
    if (last.type !== 'run_cancelled') throw new Error(`last line is ${last.type}`);
    if (!/of one run/.test(await page.textContent('#log-info'))) throw new Error('log info does not say it is filtered');
  });
  await soft('a lane\'s run id button filters the log by that run, and again shows all', async () => {
    await page.evaluate(() => [...document.querySelectorAll('#runs .lane')].find((l) => l.dataset.runId === 'run-001')
      .querySelector('.run-filter').click());
    await page.waitForFunction(() => document.querySelector('#log-filter').value === 'run-001'
      && [...document.querySelectorAll('#log .line')].length > 0
      && [...document.querySelectorAll('#log .line')].every((n) => n.dataset.runId === 'run-001'));
    await page.selectOption('#log-filter', '');
    await page.waitForFunction(() => new Set([...document.querySelectorAll('#log .line')].map((n) => n.dataset.runId)).size >= 3);
  });

  // --- an error: duplicate start of a running run ---------------------------
  await soft('duplicate start of a running run shows the error', async () => {
    await startRun('dup-run', 5, 200);
    await waitLane('dup-run', ['running']);
    await startRun('dup-run', 5, 200);
    await page.waitForSelector('#errors-panel:not([hidden]) #errors .error');
  });
  {
    const err = await page.evaluate(() => {
      const e = document.querySelector('#errors .error');
      return e && {
        message: e.querySelector('.error-message')?.textContent,
        code: e.querySelector('.error-code')?.textContent,
        run: e.querySelector('.error-run')?.textContent,
        visible: !!e.offsetParent,
      };
    });
    check('error is visible', err && err.visible);
    eq('error message shown', err && err.message, 'Run already in progress');
    eq('error names the run', err && err.run, 'dup-run');
    check(`error code shown (${err && err.code ? err.code : 'none'})`, err && !!err.code, 'the server sent no code or it is not shown');
    const d = await lane('dup-run');
    eq('the refused duplicate leaves the running lane alone', d && d.state, 'running');
    await soft('cancel dup-run', async () => {
      await clickCancel('dup-run');
      await waitLane('dup-run', ['cancelled']);
    });
  }

  // --- markup in a run id is shown as text ----------------------------------
  const evil = '<img src=x onerror=alert(1)>';
  await soft('run id with markup runs', async () => {
    await startRun(evil, 1, 0);
    await waitLane(evil, ['done'], 1);
  });
  {
    const l = await lane(evil);
    eq('markup run id shown as text', l && l.runIdText, evil);
    eq('markup run id lane state', l && l.state, 'done');
    eq('no <img> element created', await page.locator('img').count(), 0);
    check('log shows the markup as text', await page.evaluate((evil) =>
      [...document.querySelectorAll('#log .line')].some((n) => n.textContent.includes(evil)), evil));
    eq('no alert dialog', dialogs.length, 0);
  }

  // --- a fast run: the log stays bounded ------------------------------------
  {
    const maxAttr = await page.getAttribute('#steps', 'max');
    const n = Math.min(2000, maxAttr ? Number(maxAttr) : 2000);
    const t0 = Date.now();
    const ok = await soft(`fast run of ${n} steps with interval_ms 0 completes`, async () => {
      await startRun('burst', n, 0);
      await waitLane('burst', ['done'], n, 20_000);
    });
    if (ok) {
      const l = await lane('burst');
      eq('burst event count', l.count, String(n));
      eq('burst last step', l.step, String(n - 1));
      console.log(`  (burst of ${n} events shown in ${Date.now() - t0} ms)`);
    }
    await page.waitForFunction(() => /run_done/.test(document.querySelector('#log')?.lastElementChild?.textContent || ''));
    const lines = await page.locator('#log .line').count();
    check('log keeps at most 500 lines', lines > 0 && lines <= 500, `${lines} lines`);
  }

  // --- long lines wrap instead of being clipped ------------------------------
  await soft('log lines wrap (nothing cut off at the right edge); Wrap off scrolls sideways', async () => {
    const wide = () => page.evaluate(() => {
      const log = document.querySelector('#log');
      return { scroll: log.scrollWidth, client: log.clientWidth, tall: [...log.querySelectorAll('.line')].some((n) => n.offsetHeight > 30) };
    });
    const wrapped = await wide();
    if (wrapped.scroll > wrapped.client) throw new Error(`wrapped log overflows: ${wrapped.scroll} > ${wrapped.client}`);
    if (!wrapped.tall) throw new Error('no line wraps onto a second row');
    await page.click('#log-wrap');
    const unwrapped = await wide();
    if (!(unwrapped.scroll > unwrapped.client)) throw new Error('unwrapped lines do not scroll sideways');
    await page.click('#log-wrap');
    if ((await page.getAttribute('#log-wrap', 'aria-pressed')) !== 'true') throw new Error('Wrap not back on');
  });

  if (opts.screenshot) {
    await soft(`screenshot saved to ${opts.screenshot}`, async () => {
      await page.evaluate(() => window.scrollTo(0, 0));
      await page.screenshot({ path: opts.screenshot, fullPage: true });
    });
  }

  // --- log pause / resume / clear -------------------------------------------
  await soft('log pause holds new lines until resumed', async () => {
    const lastLine = () => page.evaluate(() => document.querySelector('#log')?.lastElementChild?.textContent || '');
    await page.click('#log-pause');
    if ((await page.getAttribute('#log-pause', 'aria-pressed')) !== 'true') throw new Error('not pressed');
    const before = await lastLine();
    await startRun('while-paused', 3, 0);
    await waitLane('while-paused', ['done'], 3);
    await page.waitForTimeout(150);
    if ((await lastLine()) !== before) throw new Error('log changed while paused');
    if (!/paused, [1-9]\d* new/i.test(await page.textContent('#log-info'))) throw new Error('log info does not count the held lines');
    await page.click('#log-pause');
    await page.waitForFunction(() => /while-paused/.test(document.querySelector('#log')?.lastElementChild?.textContent || ''));
  });
  await soft('log clear empties the log', async () => {
    await page.click('#log-clear');
    await page.waitForFunction(() => document.querySelectorAll('#log .line').length === 0);
  });
  await soft('errors can be dismissed', async () => {
    await page.click('#errors-clear');
    await page.waitForSelector('#errors-panel', { state: 'hidden' });
  });

  // --- many runs: bounded page, log in reach, Cancel all --------------------
  await soft('Clear finished removes the finished lanes', async () => {
    await page.click('#runs-clear');
    await page.waitForFunction(() => document.querySelectorAll('#runs .lane').length === 0);
  });
  const MANY = 51;
  const manyOk = await soft(`${MANY} long runs start`, async () => {
    await page.evaluate(START_RUNS, ['many-', MANY, 1000, 1000]);
    await page.waitForFunction((n) => document.querySelectorAll('#runs .lane[data-state="running"]').length === n, MANY);
  });
  if (manyOk) {
    const layout = () => page.evaluate(() => {
      const log = document.querySelector('#log-panel').getBoundingClientRect();
      const runs = document.querySelector('#runs');
      return {
        height: document.documentElement.scrollHeight,
        logTop: Math.round(log.top + window.scrollY),
        runsScroll: runs.scrollHeight, runsClient: runs.clientHeight, density: runs.dataset.density,
      };
    });
    const desk = await layout();
    measure(`${MANY} runs at ${DESKTOP.width}x${DESKTOP.height}: page ${desk.height} px high, lanes ${desk.runsScroll} px scrolled inside ${desk.runsClient} px`);
    eq(`${MANY} runs are shown as compact rows`, desk.density, 'rows');
    check(`${MANY} runs: page height at most 1300 px at ${DESKTOP.width} px wide`, desk.height <= 1300, `${desk.height} px`);
    check('the lanes scroll inside their own box', desk.runsScroll > desk.runsClient, JSON.stringify(desk));
    await page.setViewportSize(PHONE);
    await page.evaluate(() => window.scrollTo(0, 0));
    const phone = await layout();
    measure(`${MANY} runs at ${PHONE.width}x${PHONE.height}: page ${phone.height} px high, log panel at y=${phone.logTop}`);
    check(`at ${PHONE.width} px wide the log starts on the first screen (y < ${PHONE.height})`, phone.logTop < PHONE.height, `log at ${phone.logTop} px`);
    check(`at ${PHONE.width} px the page is at most 2 screens high`, phone.height <= 2 * PHONE.height, `${phone.height} px`);
    check(`at ${PHONE.width} px nothing overflows sideways`, await page.evaluate(() => document.documentElement.scrollWidth <= window.innerWidth + 1));
    await page.setViewportSize(DESKTOP);

    const cancelsBefore = sent.filter((c) => c.command === 'cancel_run').length;
    await soft(`Cancel all sends cancel_run for each of the ${MANY} runs and they all end`, async () => {
      await page.click('#runs-cancel-all');
      await page.waitForFunction((n) => document.querySelectorAll('#runs .lane[data-state="cancelled"]').length === n, MANY);
      const cancels = sent.slice().filter((c) => c.command === 'cancel_run').slice(cancelsBefore);
      const ids = new Set(cancels.map((c) => c.run_id));
      if (cancels.length !== MANY || ids.size !== MANY) throw new Error(`${cancels.length} cancel_run for ${ids.size} runs`);
      const notes = await page.evaluate(() => [...document.querySelectorAll('#runs .lane .note')].map((n) => n.textContent));
      if (!notes.every((n) => /cancelled by client/.test(n))) throw new Error(`notes: ${notes[0]}`);
      if (!(await page.isDisabled('#runs-cancel-all'))) throw new Error('Cancel all still enabled with no active run');
    });
    await page.click('#runs-clear');
  }

  // --- disconnect -----------------------------------------------------------
  await soft('disconnects', async () => {
    await page.click('#connect');
    await page.waitForSelector('#status[data-state="disconnected"]');
    if (!(await page.isDisabled('#start'))) throw new Error('start still enabled');
    if (await page.textContent('#server-info')) throw new Error('server info still shown');
  });
  check('no error shown after a clean disconnect', await page.isHidden('#errors-panel'));

  // --- a server that needs a token, and one that goes away -------------------
  if (!opts.server) {
    console.log('SKIP token, refusal and server-stop checks: no --server given');
  } else {
    const token = `tok-${crypto.randomBytes(12).toString('hex')}`;
    const tokenFile = path.join(userDataDir, 'token');
    fs.writeFileSync(tokenFile, `${token}\n`, { mode: 0o600 });
    const guarded = await startServer(['--token-file', tokenFile, '--interval-ms', '200']);
    const gBase = `http://127.0.0.1:${guarded.port}`;
    const dismissErrors = async () => {
      await page.click('#errors-clear');
      await page.waitForSelector('#errors-panel', { state: 'hidden' });
    };
    const errorWith = (code) => page.waitForFunction((code) =>
      [...document.querySelectorAll('#errors .error')].find((e) => e.dataset.code === code), code)
      .then(() => page.evaluate((code) => [...document.querySelectorAll('#errors .error')]
        .find((e) => e.dataset.code === code).querySelector('.error-message').textContent, code));

    // The main server's page pointed at the guarded one: another origin.
    await soft('a failed connection to another origin names --allow-origin and the token', async () => {
      await page.fill('#url', `ws://127.0.0.1:${guarded.port}/ws`);
      await page.click('#connect');
      const message = await errorWith('client_connect_failed_cross_origin');
      if (!message.includes(`--allow-origin ${opts.base}`) || !/401/.test(message)) throw new Error(message);
    });

    await soft('without a token: "401: a token is required", status 401, focus on the token field', async () => {
      await page.goto(`${gBase}/`);
      await page.click('#connect');
      const message = await errorWith('http_401');
      if (!/^401: a token is required — enter it/.test(message)) throw new Error(message);
      const status = await page.evaluate(() => ({ refused: document.querySelector('#status').dataset.refused, text: document.querySelector('#status').textContent }));
      if (status.refused !== '401' || !/401/.test(status.text)) throw new Error(JSON.stringify(status));
      if (await page.evaluate(() => document.activeElement?.id) !== 'token') throw new Error('token field not focused');
    });
    await soft('a wrong token: "401: the token was not accepted"', async () => {
      await dismissErrors();
      await page.fill('#token', 'not-the-token');
      await page.click('#connect');
      const message = await errorWith('http_401');
      if (!/^401: the token was not accepted/.test(message)) throw new Error(message);
    });
    await soft('with ?token= in the page URL: connects, and the token leaves the address bar', async () => {
      await page.goto(`${gBase}/?token=${token}`);
      if ((await page.inputValue('#token')) !== token) throw new Error('token field not filled from ?token=');
      if (page.url().includes(token)) throw new Error(`token still in the address bar: ${page.url()}`);
      await page.click('#connect');
      await page.waitForSelector('#status[data-state="connected"]');
    });
    await soft('the token is kept for this tab: a reload connects again', async () => {
      await page.reload();
      await page.click('#connect');
      await page.waitForSelector('#status[data-state="connected"]');
    });
    await soft('the token appears nowhere in the page or its console', async () => {
      const text = await page.evaluate(() => {
        const all = [...document.querySelectorAll('*')].flatMap((n) => [...n.attributes].map((a) => a.value));
        return document.documentElement.outerHTML + all.join(' ');
      });
      if (text.includes(token)) throw new Error('token found in the DOM');
      if (consoleLines.some((l) => l.includes(token))) throw new Error('token found in the console');
      if (!/with token/.test(await page.evaluate(() => document.querySelector('#log').textContent))) throw new Error('log does not say a token was used');
    });

    await soft('the server stops: runs end, status disconnected, server info cleared', async () => {
      await startRun('until-stop', 100, 1000);
      await waitLane('until-stop', ['running'], 1);
      if (!(await page.textContent('#server-info'))) throw new Error('no server info while connected');
      await guarded.stop();
      await page.waitForSelector('#status[data-state="disconnected"]');
      await waitLane('until-stop', ['cancelled']);
      const after = await page.evaluate(() => ({ info: document.querySelector('#server-info').textContent, limits: document.querySelector('#limits').textContent }));
      if (after.info !== '' || after.limits !== '') throw new Error(`still shown: ${JSON.stringify(after)}`);
      if (!(await page.isDisabled('#start'))) throw new Error('start still enabled');
      await errorWith('close_1001');
    });
    await soft('a server that is not there: "Could not reach"', async () => {
      await dismissErrors();
      await page.click('#connect');
      const message = await errorWith('client_connect_failed');
      if (!/^Could not reach 127\.0\.0\.1:\d+/.test(message)) throw new Error(message);
    });
  }

  await resumeSection({ page, lane, waitLane, startRun, sent, wsUrls });
  await agentsSection({ page, lane, waitLane, sent });

  check('no script errors on the page', pageErrors.length === 0, pageErrors.join(' | '));
  await context.close();
  context = null;

  await loadSection();
}

// Polls a condition of the test's own (not the page's) until it holds.
async function until(name, fn, timeout = WAIT_MS) {
  const t0 = Date.now();
  while (Date.now() - t0 < timeout) {
    if (await fn()) return;
    await sleep(20);
  }
  throw new Error(`timed out waiting for ${name}`);
}

// Records every state the status line goes through (data-state|text).
const RECORD_STATUS = () => {
  const status = document.querySelector('#status');
  window.__states = [];
  new MutationObserver(() => window.__states.push(`${status.dataset.state}|${status.textContent}`))
    .observe(status, { attributes: true, attributeFilter: ['data-state'], childList: true, characterData: true, subtree: true });
  return true;
};

// The steps of a run as its lines in the page's log show them, with each
// attach_run sent and each run_gap received where they fall.
function parseRunLines(lines) {
  const num = (text, re) => { const m = text.match(re); return m ? Number(m[1]) : null; };
  return lines.map((l) => ({
    ...l,
    step: num(l.text, /"step":\s*(\d+)/),
    seq: num(l.text, /"seq":\s*(\d+)/),
    afterSeq: l.out && /"attach_run"/.test(l.text) ? num(l.text, /"after_seq":\s*(-?\d+)/) : null,
  }));
}
// Every step from `from` to `to`, exactly once, in order; or why not.
function stepsProblem(steps, from, to) {
  const want = [];
  for (let i = from; i <= to; i++) want.push(i);
  if (steps.length === want.length && steps.every((s, i) => s === want[i])) return null;
  const seen = new Set();
  let dup;
  for (const s of steps) {
    if (seen.has(s) && dup === undefined) dup = s;
    seen.add(s);
  }
  const missing = want.filter((s) => !seen.has(s));
  return `${steps.length} steps shown for ${want.length}`
    + (dup !== undefined ? `, step ${dup} twice` : '')
    + (missing.length ? `, missing ${missing.slice(0, 5).join(' ')}${missing.length > 5 ? ' …' : ''}` : '')
    + (dup === undefined && !missing.length ? ', out of order' : '');
}

// --- resume: a reload, a dropped connection, a gap, a lost session ------------
//
// The page keeps its session key in the tab and follows its runs again. A
// drop is real: the page is loaded through a TCP proxy of the test's own,
// which it cuts (the page sees the connection reset, the server sees its
// socket close), or which refuses the page's attempts for a while.
async function resumeSection({ page, lane, waitLane, startRun, sent, wsUrls }) {
  const basePort = Number(new URL(opts.base).port);
  const sessionKey = () => page.evaluate(() => document.querySelector('#session .session-key').textContent);
  const connectPage = async (url) => {
    await page.goto(url);
    await page.evaluate(RECORD_STATUS);
    await page.click('#connect');
    await page.waitForSelector('#status[data-state="connected"]');
    await page.waitForSelector('#session:not([hidden])');
  };
  // The run's lines in the log, read through the log's filter.
  const runLines = async (id) => {
    await page.selectOption('#log-filter', id);
    await page.waitForFunction((id) => {
      const lines = [...document.querySelectorAll('#log .line')];
      return document.querySelector('#log-filter').value === id && lines.length > 0
        && lines.every((n) => n.dataset.runId === id) && lines[lines.length - 1].dataset.type === 'run_done';
    }, id);
    const lines = await page.evaluate(() => [...document.querySelectorAll('#log .line')].map((n) => ({
      type: n.dataset.type || null, out: n.classList.contains('out'), text: n.textContent,
    })));
    await page.selectOption('#log-filter', '');
    return parseRunLines(lines);
  };
  const gapsOf = (id) => page.evaluate((id) => {
    const el = [...document.querySelectorAll('#runs .lane')].find((l) => l.dataset.runId === id);
    return [...el.querySelectorAll('.gaps .gap')].map((g) => ({
      from: Number(g.dataset.from), to: Number(g.dataset.to), text: g.textContent, visible: !!g.offsetParent,
    }));
  }, id);

  // (b) a reload mid-run
  {
    const N = 200;
    let key = null;
    let urlsBefore = 0;
    let sentBefore = 0;
    const ok = await soft(`reload mid-run: the lane comes back and the run ends with all ${N} steps`, async () => {
      await connectPage(`${opts.base}/`);
      key = await sessionKey();
      await startRun('reload-run', N, 20);
      await waitLane('reload-run', ['running'], 20);
      urlsBefore = wsUrls.length;
      sentBefore = sent.length;
      await page.reload();
      await waitLane('reload-run', ['running', 'done'], 0);
      await waitLane('reload-run', ['done'], N, 15_000);
    });
    if (ok) {
      const l = await lane('reload-run');
      eq('reload: the lane counts every event once', l.count, String(N));
      eq('reload: the lane\'s last step', l.step, String(N - 1));
      check('reload: the lane knows the run\'s length (progress out of 200)', l.progress && l.progress.max === N, JSON.stringify(l.progress));
      const lines = await runLines('reload-run');
      const problem = stepsProblem(lines.filter((x) => x.type === 'run_event').map((x) => x.step), 0, N - 1);
      check(`reload: the log shows steps 0..${N - 1} exactly once, in order`, problem === null, problem);
      const url = wsUrls.slice(urlsBefore)[0] || '';
      check('reload: the page presents its session (/ws?session=KEY)', url.includes(`session=${key}`), url.replace(/session=[0-9a-f]+/, 'session=…'));
      eq('reload: the server resumed the session, same key', await page.evaluate(() => document.querySelector('#session').dataset.state), 'resumed');
      eq('reload: the key is the same', await sessionKey(), key);
      const after = sent.slice(sentBefore).map((c) => `${c.command}${c.run_id !== undefined ? ` ${c.run_id}` : ''}${c.after_seq !== undefined ? ` after ${c.after_seq}` : ''}`);
      eq('reload: sends list_runs, then attach_run from the start', after.slice(0, 2).join(', '), 'list_runs, attach_run reload-run after -1');
    }
  }

  // (c) a drop mid-run: the proxy cuts the connection
  {
    const N = 150;
    const proxy = await startProxy(basePort);
    peers.add(proxy);
    const ok = await soft(`drop mid-run: reconnecting… then the run ends with all ${N} steps`, async () => {
      await connectPage(`http://127.0.0.1:${proxy.port}/`);
      await startRun('drop-run', N, 20);
      await waitLane('drop-run', ['running'], 30);
      proxy.cut();
      await page.waitForFunction(() => window.__states.some((s) => s.startsWith('reconnecting|Reconnecting…'))
        && document.querySelector('#status').dataset.state === 'connected');
      await waitLane('drop-run', ['done'], N, 15_000);
    });
    if (ok) {
      const l = await lane('drop-run');
      eq('drop: the lane counts every event once', l.count, String(N));
      const lines = await runLines('drop-run');
      const at = lines.findIndex((x) => x.afterSeq !== null);
      const seen = lines.slice(0, at).filter((x) => x.seq !== null && !x.out).pop();
      check('drop: attach_run asks for the events after the last one the lane showed',
        at > 0 && seen && lines[at].afterSeq === seen.seq, `after_seq ${at >= 0 ? lines[at].afterSeq : 'none sent'}, last seq shown ${seen && seen.seq}`);
      const problem = stepsProblem(lines.filter((x) => x.type === 'run_event').map((x) => x.step), 0, N - 1);
      check(`drop: the log shows steps 0..${N - 1} exactly once, in order`, problem === null, problem);
      eq('drop: no gap marker', (await gapsOf('drop-run')).length, 0);
    }
    await proxy.close();
    peers.delete(proxy);
  }

  if (!opts.server) {
    console.log('SKIP run_gap, lost session and version 1 checks: no --server given');
    return;
  }

  // (d) a run_gap: the history holds 8 events, and the page is kept away
  const small = await startServer(['--history-events', '8']);
  const proxy = await startProxy(small.port);
  peers.add(proxy);
  {
    const N = 100;
    const ok = await soft('gap: kept away while the run goes on, the page shows the gap and the rest of the run', async () => {
      await connectPage(`http://127.0.0.1:${proxy.port}/`);
      await startRun('gap-run', N, 20);
      await waitLane('gap-run', ['running'], 10);
      proxy.cut({ refuse: true });
      // Two attempts refused: 200 ms and 400 ms at least, 30 events of the
      // run or so, far more than the 8 the server holds.
      await until('two refused reconnects', () => proxy.refused >= 2);
      proxy.allow();
      await waitLane('gap-run', ['done'], 0, 15_000);
    });
    if (ok) {
      const gaps = await gapsOf('gap-run');
      check('gap: one gap marker, shown in the lane', gaps.length === 1 && gaps[0].visible, JSON.stringify(gaps));
      const g = gaps[0] || { from: 0, to: 0, text: '' };
      check('gap: the marker says which events are no longer held',
        new RegExp(`^gap: events ${g.from}–${g.to} \\(steps ${g.from - 1}–${g.to - 1}\\) no longer held`).test(g.text), g.text);
      console.log(`  (gap marker: "${g.text}")`);
      const lines = await runLines('gap-run');
      const at = lines.findIndex((x) => x.afterSeq !== null);
      const before = lines.slice(0, at).filter((x) => x.type === 'run_event').map((x) => x.step);
      const after = lines.slice(at).filter((x) => x.type === 'run_event').map((x) => x.step);
      const last = before[before.length - 1];
      const first = after[0];
      check('gap: a run_gap line in the log after the attach', lines.slice(at).some((x) => x.type === 'run_gap'));
      check('gap: the steps before the drop are all there, in order', at > 0 && stepsProblem(before, 0, last) === null, stepsProblem(before, 0, last));
      check('gap: after the gap the run continues to its last step, in order', first !== undefined && stepsProblem(after, first, N - 1) === null, stepsProblem(after, first, N - 1));
      check('gap: the marker is exactly the hole', g.from === last + 2 && g.to === first, `marker ${g.from}–${g.to}, steps ${last} then ${first}`);
      eq('gap: the lane counts what it showed', (await lane('gap-run')).count, String(before.length + after.length));
    }
  }

  // (e) the session is not known: the proxy now leads to another server
  await soft('lost session: the page says so, starts afresh with the new key, ends the lost run', async () => {
    const oldKey = await sessionKey();
    await startRun('lost-run', 100, 20);
    await waitLane('lost-run', ['running'], 2);
    proxy.retarget(basePort);
    proxy.cut();
    await waitLane('lost-run', ['cancelled']);
    const note = (await lane('lost-run')).note;
    if (!/no longer knew this tab's session/.test(note)) throw new Error(`note: ${note}`);
    await page.waitForFunction(() => [...document.querySelectorAll('#errors .error')].some((e) => e.dataset.code === 'client_session_lost'));
    const s = await page.evaluate(() => ({ state: document.querySelector('#session').dataset.state, note: document.querySelector('#session .session-note').textContent }));
    if (s.state !== 'replaced' || !/no longer knew/.test(s.note)) throw new Error(JSON.stringify(s));
    const key = await sessionKey();
    if (key === oldKey || !/^[0-9a-f]{32}$/.test(key)) throw new Error('the key did not change');
    if (await page.isDisabled('#start')) throw new Error('cannot start a run in the new session');
  });
  await proxy.close();
  peers.delete(proxy);
  await small.stop();

  // (f) a version 1 server: nothing new is sent, and a drop ends the runs
  const v1 = await startVersion1Server({ steps: 5, intervalMs: 50 });
  peers.add(v1);
  await soft('version 1 server: no session, no new field, a drop ends the run as before', async () => {
    await page.goto(`${opts.base}/?url=ws://127.0.0.1:${v1.port}/ws`);
    await page.evaluate(RECORD_STATUS);
    await page.click('#connect');
    await page.waitForSelector('#status[data-state="connected"]');
    const sentBefore = sent.length;
    await startRun('v1-run', 1000, 50);
    await waitLane('v1-run', ['running'], 2);
    if (!(await page.isHidden('#session'))) throw new Error('a session is shown');
    for (const id of ['#agent-field', '#input-field', '#more-options']) {
      if (!(await page.isHidden(id))) throw new Error(`${id} is shown`);
    }
    const start = sent.slice(sentBefore).find((c) => c.command === 'start_run');
    if (!start || Object.keys(start).sort().join(',') !== 'command,params,request_id,run_id') throw new Error(`start_run: ${JSON.stringify(start)}`);
    if (v1.urls.some((u) => u.includes('session='))) throw new Error(`URL: ${v1.urls.join(' ')}`);
    v1.drop();
    await waitLane('v1-run', ['cancelled']);
    await page.waitForSelector('#status[data-state="disconnected"]');
    const states = await page.evaluate(() => window.__states);
    if (states.some((x) => x.startsWith('reconnecting'))) throw new Error('it tried to reconnect');
    const note = (await lane('v1-run')).note;
    if (note !== 'connection closed') throw new Error(`note: ${note}`);
    const commands = v1.commands.map((c) => c.command);
    if (commands.join(',') !== 'start_run') throw new Error(`commands: ${commands.join(',')}`);
  });
  await v1.close();
  peers.delete(v1);
}

// --- agents: the example agents of examples/agents.conf ----------------------
//
// `assistant` (examples/python_agent.py) streams its answer as text_delta
// events, asks input_required "Send this answer?" and waits for send_input;
// `count` (examples/count.sh, text framing) takes no input. The server runs
// in the repository root, where the config's program paths lead.
async function agentsSection({ page, lane, waitLane, sent }) {
  if (!opts.server) {
    console.log('SKIP agent checks: no --server given');
    return;
  }
  const server = await startServer(['--config', 'examples/agents.conf'], REPO_ROOT);
  // Runs `body` (JavaScript, with `el` the lane of run `id`) in the page.
  const inLane = (id, body) => `(() => {
    const el = [...document.querySelectorAll('#runs .lane')].find((l) => l.dataset.runId === ${JSON.stringify(id)});
    if (!el) return null;
    ${body}
  })()`;
  const laneDom = (id, body) => page.evaluate(inLane(id, body));
  // Polled from here: the page's Content-Security-Policy forbids the eval a
  // string predicate of waitForFunction needs.
  const waitDom = (id, body, timeout = WAIT_MS) => until(`run ${id}: ${body}`, () => laneDom(id, body), timeout);
  const startsOf = (id) => sent.filter((c) => c.command === 'start_run' && c.run_id === id);
  const start = async ({ id, agent, input, params = '', timeout = '' }) => {
    await page.fill('#run-id', id);
    await page.selectOption('#agent', agent);
    await page.fill('#input', input);
    await page.evaluate(() => { document.querySelector('#more-options').open = true; });
    await page.fill('#params', params);
    await page.fill('#timeout', timeout);
    await page.click('#start');
  };
  const transcript = (id) => laneDom(id, `return [...el.querySelectorAll('.transcript > *')].map((n) => ({
      cls: n.className, kind: n.dataset.kind || null, state: n.dataset.state || null, text: n.textContent }));`);

  await must('agents: the page connects to a server with program agents', async () => {
    await page.goto(`http://127.0.0.1:${server.port}/`);
    await page.click('#connect');
    await page.waitForSelector('#status[data-state="connected"]');
  });
  await soft('agents: the chooser lists the server\'s agents, its default first, with descriptions', async () => {
    const c = await page.evaluate(() => ({
      visible: !document.querySelector('#agent-field').hidden,
      options: [...document.querySelectorAll('#agent option')].map((o) => `${o.value}|${o.textContent}|${o.title}`),
      value: document.querySelector('#agent').value,
      desc: document.querySelector('#agent-desc').textContent,
      inputShown: !document.querySelector('#input-field').hidden,
      timeoutShown: !document.querySelector('#more-options').hidden && !document.querySelector('#timeout-field').hidden,
    }));
    if (!c.visible || !c.inputShown || !c.timeoutShown) throw new Error(JSON.stringify(c));
    const want = ['assistant|assistant (default)|Answers a prompt, asks before sending', 'demo|demo|', 'count|count|Counts to its input, a line every 0.2 s'];
    if (c.options.length !== 3 || c.options[0] !== want[0] || !c.options[1].startsWith('demo|demo|Streams') || c.options[2] !== want[2]) {
      throw new Error(`options: ${JSON.stringify(c.options)}`);
    }
    if (c.value !== 'assistant' || c.desc !== 'Answers a prompt, asks before sending · takes input while it runs') throw new Error(JSON.stringify(c));
    await page.selectOption('#agent', 'count');
    const desc = await page.textContent('#agent-desc');
    if (desc !== 'Counts to its input, a line every 0.2 s') throw new Error(`count: ${desc}`);
  });
  await soft('agents: the input box says how it sends its text, and refuses broken JSON inline', async () => {
    const hint = async (text) => {
      await page.fill('#input', text);
      return page.evaluate(() => `${document.querySelector('#input-hint').dataset.state}|${document.querySelector('#input-hint').textContent}`);
    };
    const seen = [await hint(''), await hint('hello there'), await hint('3'), await hint('{"prompt": "x"}')];
    const want = ['empty|no input sent', 'string|sent as a string', 'json|sent as JSON (number)', 'json|sent as JSON (object)'];
    if (seen.join('\n') !== want.join('\n')) throw new Error(JSON.stringify(seen));
    const broken = await hint('{"prompt": ');
    if (!/^error\|Input is not valid JSON/.test(broken)) throw new Error(broken);
    const before = sent.length;
    await page.fill('#run-id', 'broken-input');
    await page.click('#start');
    await page.waitForTimeout(100);
    if (sent.slice(before).some((c) => c.command === 'start_run')) throw new Error('a start_run was sent');
    if (await lane('broken-input')) throw new Error('a lane was made');
  });

  // count: text framing, no input; a chosen agent other than the default is named
  await soft('agents: count (chosen, input 3) streams 1 2 3 and shows no input box', async () => {
    await start({ id: 'count-3', agent: 'count', input: '3' });
    await waitLane('count-3', ['running', 'done'], 1);
    const box = await laneDom('count-3', `return el.querySelector('.lane-input').hidden;`);
    if (!box) throw new Error('an input box is shown for an agent that takes no input');
    await waitLane('count-3', ['done'], 3);
    const s = startsOf('count-3')[0];
    if (!s || s.agent !== 'count' || s.input !== 3 || 'timeout_ms' in s) throw new Error(`start_run: ${JSON.stringify(s)}`);
  });

  // assistant: the default, so no agent field; the answer flows, it asks, we answer
  const id = 'ask-1';
  const prompt = 'what is the answer';
  await soft('agents: assistant (the default) starts with the prompt as a string and no agent field', async () => {
    await start({ id, agent: 'assistant', input: prompt, params: '{"delay_ms": 0}' });
    await waitLane(id, ['running']);
    const s = startsOf(id)[0];
    if (!s || 'agent' in s || s.input !== prompt || !s.params || s.params.delay_ms !== 0) throw new Error(`start_run: ${JSON.stringify(s)}`);
  });
  await soft('agents: the answer flows as one paragraph, then the question with its options', async () => {
    await waitDom(id, `return !!el.querySelector('.transcript .prompt[data-state="open"]');`);
    const t = await transcript(id);
    const flows = t.filter((x) => x.cls === 'tx-flow');
    if (flows.length !== 1 || flows[0].text !== `You asked: ${prompt} `) throw new Error(JSON.stringify(t));
    const q = await laneDom(id, `const p = el.querySelector('.prompt');
      return { text: p.querySelector('.prompt-text').textContent, options: [...p.querySelectorAll('.prompt-option')].map((b) => b.textContent + (b.disabled ? '(disabled)' : '')) };`);
    if (q.text !== 'Send this answer?' || q.options.join(',') !== 'yes,no') throw new Error(JSON.stringify(q));
    const count = Number((await lane(id)).count);
    if (count !== 7) throw new Error(`${count} events counted (6 words and the question)`);
  });
  await soft('agents: the lane\'s box sends input; the run shows input_received, and asks again on a non-answer', async () => {
    const before = sent.length;
    await laneDom(id, `el.querySelector('.lane-input .input-text').value = 'maybe';
      el.querySelector('.lane-input .input-text').dispatchEvent(new Event('input'));
      el.querySelector('.lane-input .send').click(); return true;`);
    await waitDom(id, `return [...el.querySelectorAll('.transcript .prompt')].length === 2;`);
    const cmd = sent.slice(before).find((c) => c.command === 'send_input');
    if (!cmd || cmd.run_id !== id || cmd.input !== 'maybe' || typeof cmd.request_id !== 'string') throw new Error(`send_input: ${JSON.stringify(cmd)}`);
    const t = await transcript(id);
    const inputs = t.filter((x) => x.cls === 'tx-input').map((x) => x.text);
    if (inputs.join('|') !== 'input received: maybe') throw new Error(JSON.stringify(t));
    const prompts = t.filter((x) => x.cls === 'prompt').map((x) => x.state);
    if (prompts.join(',') !== 'answered,open') throw new Error(`prompt states: ${prompts}`);
    const again = await laneDom(id, `const p = [...el.querySelectorAll('.prompt')].pop();
      return p.querySelector('.prompt-agent-error')?.textContent;`);
    if (!/answer "yes", "no"/.test(again || '')) throw new Error(`the agent's complaint: ${again}`);
    const old = await laneDom(id, `return [...el.querySelector('.prompt').querySelectorAll('button')].every((b) => b.disabled);`);
    if (!old) throw new Error('the answered prompt still has enabled buttons');
  });
  await soft('agents: clicking "yes" sends it, the run says "Sent." and ends; the prompt is disabled', async () => {
    const before = sent.length;
    await laneDom(id, `[...[...el.querySelectorAll('.prompt')].pop().querySelectorAll('.prompt-option')].find((b) => b.textContent === 'yes').click(); return true;`);
    await waitLane(id, ['done']);
    const cmd = sent.slice(before).find((c) => c.command === 'send_input');
    if (!cmd || cmd.input !== 'yes') throw new Error(`send_input: ${JSON.stringify(cmd)}`);
    const t = await transcript(id);
    const tail = t.slice(-3).map((x) => `${x.cls}${x.state ? `[${x.state}]` : ''}:${x.text}`);
    if (!/^prompt\[answered\]:Send this answer\?/.test(tail[0]) || !tail[0].includes('answered: yes')
      || tail[1] !== 'tx-input:input received: yes' || tail[2] !== 'tx-event:textSent.') {
      throw new Error(JSON.stringify(tail));
    }
    const after = await laneDom(id, `return { buttons: [...el.querySelectorAll('.prompt button, .prompt input')].every((b) => b.disabled),
      box: el.querySelector('.lane-input').hidden, note: el.querySelector('.note').textContent };`);
    if (!after.buttons || !after.box || after.note !== '') throw new Error(JSON.stringify(after));
  });
  await soft('agents: a free-text answer ({"approve": false}) from the prompt; the run says "Discarded."', async () => {
    const id2 = 'ask-2';
    await start({ id: id2, agent: 'assistant', input: '{"prompt": "second"}', params: '{"delay_ms": 0}' });
    await waitDom(id2, `return !!el.querySelector('.transcript .prompt[data-state="open"]');`);
    const flow = await laneDom(id2, `return el.querySelector('.tx-flow').textContent;`);
    if (flow !== 'You asked: second ') throw new Error(flow);
    await laneDom(id2, `const p = el.querySelector('.prompt'); p.querySelector('.prompt-answer').value = '{"approve": false}';
      p.querySelector('.prompt-send').click(); return true;`);
    await waitLane(id2, ['done']);
    const t = await transcript(id2);
    const last = t[t.length - 1];
    if (last.text !== 'textDiscarded.' || !t.some((x) => x.text === 'input received: {"approve":false}')) throw new Error(JSON.stringify(t.slice(-3)));
    if (startsOf(id2)[0].input.prompt !== 'second') throw new Error('the input was not sent as JSON');
  });
  await soft('agents: a program that fails shows as failed, with its error and exit code', async () => {
    await start({ id: 'no-prompt', agent: 'assistant', input: '' });
    await waitLane('no-prompt', ['failed']);
    const s = startsOf('no-prompt')[0];
    if ('input' in s) throw new Error(`start_run: ${JSON.stringify(s)}`);
    const l = await lane('no-prompt');
    const exits = l.note.match(/exit code 1\b/g) || [];
    if (l.state !== 'failed' || !/^failed: agent assistant: /.test(l.note) || exits.length !== 1) throw new Error(JSON.stringify(l));
    const t = await transcript('no-prompt');
    if (!t.some((x) => x.kind === 'error' && /input must be a prompt/.test(x.text))) throw new Error(JSON.stringify(t));
  });
  await soft('agents: timeout_ms is sent and the run is cancelled at it', async () => {
    await start({ id: 'slow-count', agent: 'count', input: '100', timeout: '300' });
    await waitLane('slow-count', ['cancelled']);
    if (startsOf('slow-count')[0].timeout_ms !== 300) throw new Error(JSON.stringify(startsOf('slow-count')[0]));
    const note = (await lane('slow-count')).note;
    if (!/timeout/.test(note)) throw new Error(`note: ${note}`);
  });
  await server.stop();
}

// --- under load: 50 runs streaming as fast as the page takes them -----------
//
// Runs in a Chromium without DevTools network tracking (see the top). Every
// number is printed; what is asserted is functional: the page acts on clicks
// during the burst, a cancelled run shows as cancelled with no event after its
// run_cancelled, Pause freezes the log while events keep being counted, Cancel
// all ends every run.
async function loadSection() {
  const RUNS = 50;
  const WINDOW_MS = 3000;
  pipeBrowser = await launchPipeBrowser(opts.chromium, DESKTOP);
  const p = await pipeBrowser.newPage(`${opts.base}/`);
  const waitFor = async (name, expr, timeout = WAIT_MS) => {
    const t0 = Date.now();
    while (Date.now() - t0 < timeout) {
      if (await p.eval(expr)) return;
      await sleep(20);
    }
    throw new Error(`timed out waiting for ${name}`);
  };
  const total = `[...document.querySelectorAll('#runs .lane .count')].reduce((a, e) => a + Number(e.textContent), 0)`;
  const laneEl = (id) => `[...document.querySelectorAll('#runs .lane')].find((l) => l.dataset.runId === ${JSON.stringify(id)})`;

  // Recorders: animation frame gaps, how long after the input event each
  // click handler ran, and every change to the log.
  await p.eval(`(() => {
    const m = window.__m = { frames: [], recording: false, clicks: [], logChanges: [] };
    let last = 0;
    const loop = (t) => { if (m.recording && last) m.frames.push(t - last); last = t; requestAnimationFrame(loop); };
    requestAnimationFrame(loop);
    document.addEventListener('click', (e) => m.clicks.push({ target: e.target.id || e.target.getAttribute('aria-label') || '', delay: performance.now() - e.timeStamp, at: performance.now() }), true);
    new MutationObserver(() => m.logChanges.push(performance.now())).observe(document.querySelector('#log'), { childList: true, subtree: true, characterData: true });
    return true;
  })()`);
  const lastClick = async (target) => p.eval(`window.__m.clicks.filter((c) => c.target === ${JSON.stringify(target)}).pop() || null`);

  await must('load: connects', async () => {
    await p.click('#connect');
    await waitFor('connected', `document.querySelector('#status').dataset.state === 'connected'`);
  });
  await must(`load: ${RUNS} runs with interval_ms 0 stream`, async () => {
    await p.eval(`(${START_RUNS.toString()})(${JSON.stringify(['flood-', RUNS, 10_000_000, 0])})`);
    await waitFor('every run streaming', `[...document.querySelectorAll('#runs .lane')].filter((l) => l.dataset.state === 'running' && Number(l.querySelector('.count').textContent) > 0).length === ${RUNS}`);
  });
  await sleep(1000);  // into the steady state: the server's and the sockets' buffers are full

  // (b) frames and a click during the burst
  const c0 = await p.eval(total);
  const t0 = Date.now();
  await p.eval(`window.__m.recording = true`);
  await sleep(WINDOW_MS / 2);
  await soft('load: a click handler runs during the burst (Wrap toggles)', async () => {
    await p.click('#log-wrap');
    await waitFor('Wrap off', `document.querySelector('#log-wrap').getAttribute('aria-pressed') === 'false'`);
    const c = await lastClick('log-wrap');
    measure(`a click (Wrap) during the burst ran its handler ${fmt(c.delay, 1)} ms after the input event`);
    await p.click('#log-wrap');
    await waitFor('Wrap on', `document.querySelector('#log-wrap').getAttribute('aria-pressed') === 'true'`);
  });
  await sleep(WINDOW_MS / 2);
  const frames = await p.eval(`(() => { const m = window.__m; m.recording = false; return m.frames.slice(); })()`);
  const c1 = await p.eval(total);
  const seconds = (Date.now() - t0) / 1000;
  frames.sort((a, b) => a - b);
  const q = (x) => frames[Math.min(frames.length - 1, Math.floor(x * frames.length))];
  measure(`${RUNS} runs, interval_ms 0: ${fmt((c1 - c0) / seconds)} events/s counted in the lanes over ${fmt(seconds, 1)} s`);
  if (frames.length) {
    measure(`frame time (requestAnimationFrame gaps) during the burst: p50 ${fmt(q(0.5), 1)} ms, p99 ${fmt(q(0.99), 1)} ms, max ${fmt(frames[frames.length - 1], 1)} ms over ${frames.length} frames`);
  }
  check('load: frames keep coming during the burst', frames.length >= 5, `${frames.length} frames in ${seconds} s`);

  // (a) Cancel one run
  const victim = 'flood-07';
  await soft(`load: Cancel on ${victim} shows it cancelled, with no event of it after its run_cancelled`, async () => {
    await p.eval(`(() => {
      const el = ${laneEl(victim)};
      const m = window.__m;
      m.cancel = { requested: null, cancelled: null };
      new MutationObserver(() => {
        const now = performance.now();
        if (m.cancel.requested === null && /Cancelling/.test(el.querySelector('.cancel').textContent)) m.cancel.requested = now;
        if (m.cancel.cancelled === null && el.dataset.state === 'cancelled') { m.cancel.cancelled = now; m.cancel.count = el.querySelector('.count').textContent; }
      }).observe(el, { attributes: true, childList: true, subtree: true, characterData: true });
      return true;
    })()`);
    await p.click(`[aria-label="Cancel run ${victim}"]`);
    await waitFor('the lane to show cancelled', `window.__m.cancel.cancelled !== null`, 30_000);
    const c = await lastClick(`Cancel run ${victim}`);
    const r = await p.eval(`window.__m.cancel`);
    const clickedAt = c.at - c.delay;
    measure(`Cancel ${victim} during the burst: handler after ${fmt(c.delay, 1)} ms, "Cancelling…" shown after ${fmt(r.requested - clickedAt)} ms, lane cancelled after ${fmt(r.cancelled - clickedAt)} ms (the run_cancelled waits behind the events the server had already queued)`);
    const note = await p.eval(`${laneEl(victim)}.querySelector('.note').textContent`);
    if (!/cancelled by client/.test(note)) throw new Error(`note: ${note}`);
    await sleep(300);
    const later = await p.eval(`${laneEl(victim)}.querySelector('.count').textContent`);
    if (later !== r.count) throw new Error(`event count went on after the cancel: ${r.count} -> ${later}`);
    // The run's own log (kept per run, so the other 49 do not push it out).
    await p.eval(`(() => { const s = document.querySelector('#log-filter'); s.value = ${JSON.stringify(victim)}; s.dispatchEvent(new Event('change')); return true; })()`);
    await waitFor('the filtered log', `[...document.querySelectorAll('#log .line')].length > 0 && [...document.querySelectorAll('#log .line')].every((n) => n.dataset.runId === ${JSON.stringify(victim)})`);
    const types = await p.eval(`[...document.querySelectorAll('#log .line')].map((n) => n.dataset.type || (n.classList.contains('out') ? 'command' : ''))`);
    const at = types.lastIndexOf('run_cancelled');
    if (at < 0) throw new Error(`no run_cancelled line among ${types.length} lines`);
    if (at !== types.length - 1) throw new Error(`lines after run_cancelled: ${types.slice(at + 1).join(', ')}`);
    if (!types.includes('run_event')) throw new Error('no run_event lines kept for the run');
    await p.eval(`(() => { const s = document.querySelector('#log-filter'); s.value = ''; s.dispatchEvent(new Event('change')); return true; })()`);
    await waitFor('the whole log again', `new Set([...document.querySelectorAll('#log .line')].map((n) => n.dataset.runId)).size > 2`);
  });

  // (c) Pause freezes the log at once; events keep being read and counted
  await soft('load: after Pause the log shows no new line, while the runs keep counting', async () => {
    await p.click('#log-pause');
    await waitFor('Pause pressed', `document.querySelector('#log-pause').getAttribute('aria-pressed') === 'true'`);
    const c = await lastClick('log-pause');
    const before = await p.eval(`({ last: document.querySelector('#log').lastElementChild?.textContent, n: document.querySelectorAll('#log .line').length, counted: ${total} })`);
    await sleep(700);
    const after = await p.eval(`({ last: document.querySelector('#log').lastElementChild?.textContent, n: document.querySelectorAll('#log .line').length, counted: ${total},
      changes: window.__m.logChanges.filter((t) => t > ${c.at}).length, info: document.querySelector('#log-info').textContent })`);
    measure(`Pause during the burst: handler after ${fmt(c.delay, 1)} ms; ${after.changes} log changes in the next 700 ms while ${fmt(after.counted - before.counted)} events were counted`);
    if (after.changes !== 0 || after.last !== before.last || after.n !== before.n) throw new Error(`the log changed: ${after.changes} mutations`);
    if (!(after.counted > before.counted)) throw new Error('the runs stopped counting while paused');
    if (!/paused, [\d,]*[1-9][\d,]* new/.test(after.info)) throw new Error(`log info: ${after.info}`);
    await p.click('#log-pause');
    await waitFor('the log moving again', `window.__m.logChanges.some((t) => t > performance.now() - 300) && document.querySelector('#log-pause').getAttribute('aria-pressed') === 'false'`);
  });

  // Cancel all ends the burst
  await soft(`load: Cancel all ends all ${RUNS} runs`, async () => {
    await p.click('#runs-cancel-all');
    const c = await lastClick('runs-cancel-all');
    await waitFor('every run ended', `[...document.querySelectorAll('#runs .lane')].every((l) => l.dataset.state === 'cancelled')`, 30_000);
    const at = await p.eval('performance.now()');
    measure(`Cancel all during the burst: all ${RUNS} runs shown cancelled within ${fmt(at - (c.at - c.delay))} ms of the click`);
  });
  await pipeBrowser.close();
  pipeBrowser = null;
}

main()
  .catch((e) => {
    if (!(e instanceof Abort)) fail('unexpected exception', String(e && e.stack ? e.stack.split('\n').slice(0, 3).join(' ') : e));
  })
  .finally(async () => {
    clearTimeout(watchdog);
    await cleanup();
    finish(failed > 0 || passed === 0 ? 1 : 0);
  });
