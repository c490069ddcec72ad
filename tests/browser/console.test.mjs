#!/usr/bin/env node
// End-to-end test of the browser console (web/console.html) against a running
// agentws server, in Debian's headless chromium driven by playwright-core.
//
//   node tests/browser/console.test.mjs --base http://127.0.0.1:PORT [--screenshot out.png]
//                                       [--chromium /usr/bin/chromium]
//
// Prints one PASS/FAIL line per check and a final "N passed, N failed" line;
// exits non-zero on any failure. The whole run is bounded by 60 s.

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';

const OVERALL_TIMEOUT_MS = 60_000;
const WAIT_MS = 10_000;

function parseArgs(argv) {
  const opts = { base: null, screenshot: null, chromium: process.env.CHROMIUM || '/usr/bin/chromium' };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const next = () => {
      if (i + 1 >= argv.length) usage(`missing value for ${a}`);
      return argv[++i];
    };
    if (a === '--base') opts.base = next();
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
  console.error('usage: node console.test.mjs --base http://127.0.0.1:PORT [--screenshot out.png] [--chromium PATH]');
  process.exit(code);
}

const opts = parseArgs(process.argv.slice(2));

let passed = 0;
let failed = 0;
let context = null;
let userDataDir = null;
let finished = false;

function pass(name) { passed++; console.log(`PASS ${name}`); }
function fail(name, why) { failed++; console.log(`FAIL ${name}${why ? `: ${why}` : ''}`); }
function check(name, ok, why) { if (ok) pass(name); else fail(name, why); return ok; }
function eq(name, actual, expected) {
  return check(name, actual === expected, `expected ${JSON.stringify(expected)}, got ${JSON.stringify(actual)}`);
}

async function cleanup() {
  try { if (context) await context.close(); } catch { /* already gone */ }
  context = null;
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
  await Promise.race([cleanup(), new Promise((r) => setTimeout(r, 3000))]);
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

async function main() {
  userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'agentws-console-test-'));
  context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: opts.chromium,
    headless: true,
    args: [
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
      '--disable-quic', '--no-first-run', '--disable-component-update', '--disable-sync',
    ],
    viewport: { width: 1360, height: 900 },
    timeout: 20_000,
  });
  const page = context.pages()[0] || (await context.newPage());
  page.setDefaultTimeout(WAIT_MS);

  const pageErrors = [];
  const dialogs = [];
  page.on('pageerror', (e) => pageErrors.push(String(e && e.message)));
  page.on('dialog', (d) => { dialogs.push(d.message()); d.dismiss().catch(() => {}); });

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

  // --- page loads ----------------------------------------------------------
  await must('page loads at /', async () => {
    const res = await page.goto(`${opts.base}/`, { waitUntil: 'load' });
    if (!res || !res.ok()) throw new Error(`HTTP ${res ? res.status() : 'no response'}`);
    const title = await page.title();
    if (!/agentws/i.test(title)) throw new Error(`unexpected title ${JSON.stringify(title)}`);
  });
  const wsUrl = opts.base.replace(/^http/, 'ws') + '/ws';
  eq('default WebSocket URL derived from the page location', await page.inputValue('#url'), wsUrl);
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
    eq('run-002 state text', b.state, 'cancelled');
    check('run-002 stopped early', Number(b.count) >= 1 && Number(b.count) < 5, `count ${b.count}`);
    check('run-002 says why it ended', /cancel/i.test(b.note || ''), JSON.stringify(b.note));
    check('run-002 has no Cancel button', !b.cancelVisible);
    eq('two lanes shown', await page.locator('#runs .lane').count(), 2);
    check('no error shown', await page.isHidden('#errors-panel')
      && (await page.locator('#errors .error').count()) === 0);
  }

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
    const lines = await page.locator('#log .line').count();
    check('log keeps at most 500 lines', lines > 0 && lines <= 500, `${lines} lines`);
  }

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
    await page.waitForTimeout(100);
    if ((await lastLine()) !== before) throw new Error('log changed while paused');
    if (!/paused/i.test(await page.textContent('#log-info'))) throw new Error('log info does not say paused');
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

  // --- disconnect -----------------------------------------------------------
  await soft('disconnects', async () => {
    await page.click('#connect');
    await page.waitForSelector('#status[data-state="disconnected"]');
    if (!(await page.isDisabled('#start'))) throw new Error('start still enabled');
  });
  check('no error shown after a clean disconnect', await page.isHidden('#errors-panel'));
  check('no script errors on the page', pageErrors.length === 0, pageErrors.join(' | '));
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
