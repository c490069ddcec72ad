#!/usr/bin/env node
// Interop test: a Node.js client (the `ws` package) against an agentws server
// speaking the wire protocol, version 1, including its extensions (params,
// request_id, error codes, cancel reason).
//
// Usage, from the repository root:
//   (cd bench/peers/node && npm ci)      # installs ws, once
//   node tests/interop/node_client.js --url ws://127.0.0.1:PORT/ws
//
// `ws` is loaded from bench/peers/node/node_modules, located relative to this
// file, so the working directory does not matter; if it is not installed
// there, a plain require('ws') is tried (e.g. with NODE_PATH set).
//
// Prints "PASS name" / "FAIL name: why" per check and a final line
// "N passed, N failed"; exits 0 only if every check passed. The whole run is
// bounded by a 20 s timeout.

'use strict';

const path = require('path');
const { isDeepStrictEqual, inspect } = require('util');

function loadWs() {
  try {
    return require(path.join(__dirname, '../../bench/peers/node/node_modules/ws'));
  } catch {
    return require('ws');
  }
}
const WebSocket = loadWs();

const OVERALL_TIMEOUT_MS = 20_000;
const WAIT_MS = 3_000;
const TS_RE = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+00:00$/;

let passed = 0;
let failed = 0;

function report(name, error) {
  if (error) {
    failed++;
    console.log(`FAIL ${name}: ${error}`);
  } else {
    passed++;
    console.log(`PASS ${name}`);
  }
}

function finish() {
  console.log(`${passed} passed, ${failed} failed`);
  process.exit(failed === 0 ? 0 : 1);
}

async function check(name, fn) {
  try {
    await fn();
    report(name);
  } catch (err) {
    report(name, err.message);
  }
}

const show = (v) => inspect(v, { breakLength: Infinity, depth: 5 });

function expect(cond, why) {
  if (!cond) throw new Error(why);
}

function expectEqual(actual, expected, what) {
  expect(isDeepStrictEqual(actual, expected), `${what}: expected ${show(expected)}, got ${show(actual)}`);
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// One connection. Every received frame is validated (text, JSON object with
// event_type, ts and payload) and appended to `frames`; take() consumes the
// first not-yet-taken frame matching a predicate, waiting for it if needed.
class Peer {
  static open(url) {
    return new Promise((resolve, reject) => {
      const peer = new Peer(url);
      peer.ws.once('open', () => resolve(peer));
      peer.ws.once('error', reject);
    });
  }

  constructor(url) {
    this.frames = [];
    this.pending = [];
    this.problems = []; // malformed frames and bad timestamps
    this.waiters = [];
    this.closed = null;
    this.ws = new WebSocket(url);
    this.ws.on('message', (data, isBinary) => this.onFrame(data, isBinary));
    this.ws.on('close', (code) => {
      this.closed = `connection closed (code ${code})`;
      this.notify();
    });
    this.ws.on('error', () => {});
  }

  onFrame(data, isBinary) {
    let frame;
    try {
      expect(!isBinary, 'binary frame from server');
      frame = JSON.parse(data.toString('utf8'));
      expect(typeof frame === 'object' && frame !== null && !Array.isArray(frame), 'frame is not an object');
      expect(typeof frame.event_type === 'string', 'event_type is not a string');
      expect(typeof frame.payload === 'object' && frame.payload !== null, 'payload is not an object');
      if (!TS_RE.test(frame.ts)) this.problems.push(`bad ts ${show(frame.ts)} in ${frame.event_type}`);
    } catch (err) {
      this.problems.push(`${err.message}: ${show(data.toString('utf8'))}`);
      return;
    }
    this.frames.push(frame);
    this.pending.push(frame);
    this.notify();
  }

  notify() {
    for (const waiter of [...this.waiters]) waiter();
  }

  send(value) {
    this.ws.send(typeof value === 'string' || Buffer.isBuffer(value) ? value : JSON.stringify(value));
  }

  take(pred, what, timeoutMs = WAIT_MS) {
    return new Promise((resolve, reject) => {
      const waiter = () => {
        const i = this.pending.findIndex(pred);
        if (i >= 0) {
          done();
          resolve(this.pending.splice(i, 1)[0]);
        } else if (this.closed) {
          done();
          reject(new Error(`${this.closed} while waiting for ${what}`));
        }
      };
      const timer = setTimeout(() => {
        done();
        reject(new Error(`timed out waiting for ${what}`));
      }, timeoutMs);
      const done = () => {
        clearTimeout(timer);
        this.waiters = this.waiters.filter((w) => w !== waiter);
      };
      this.waiters.push(waiter);
      waiter();
    });
  }

  takeEvent(type, runId, what = `${type} for ${runId}`) {
    return this.take((f) => f.event_type === type && f.payload.run_id === runId, what);
  }

  takeError(what) {
    return this.take((f) => f.event_type === 'error', what);
  }

  close() {
    this.ws.close();
  }
}

// Checks one run's frames: run_started, run_events with steps 0,1,... and
// text "agent step N", then exactly one terminal event and nothing after it.
// Returns { steps, terminal } (terminal is the terminal frame).
function lifecycle(frames, runId) {
  const own = frames.filter((f) => f.payload.run_id === runId);
  const types = own.map((f) => (f.event_type === 'run_event' ? `step ${f.payload.step}` : f.event_type));
  expect(own.length >= 2, `too few frames: ${show(types)}`);
  expect(own[0].event_type === 'run_started', `first frame is not run_started: ${show(types)}`);
  let steps = 0;
  while (own[1 + steps] && own[1 + steps].event_type === 'run_event') {
    const { step, text } = own[1 + steps].payload;
    expectEqual(step, steps, `step order (${show(types)})`);
    expectEqual(text, `agent step ${steps}`, `text of step ${steps}`);
    steps++;
  }
  const terminal = own[1 + steps];
  expect(terminal && ['run_done', 'run_cancelled'].includes(terminal.event_type), `no terminal event: ${show(types)}`);
  expect(own.length === steps + 2, `frames after the terminal event: ${show(types)}`);
  return { steps, terminal };
}

// Scenario (a): two parallel runs on one connection, the second cancelled.
async function scenarioRuns(url) {
  const peer = await Peer.open(url);
  await check('connected is the first frame', async () => {
    const first = await peer.take(() => true, 'first frame');
    expectEqual(first.event_type, 'connected', 'first event_type');
    expectEqual(first.payload.message, 'Connected', 'connected message');
  });

  const params = { steps: 5, interval_ms: 100 };
  peer.send({ command: 'start_run', run_id: 'run-001', params });
  peer.send({ command: 'start_run', run_id: 'run-002', params });
  await sleep(250);
  peer.send({ command: 'cancel_run', run_id: 'run-002' });
  await Promise.allSettled([
    peer.takeEvent('run_done', 'run-001'),
    peer.takeEvent('run_cancelled', 'run-002'),
  ]);
  await sleep(300); // anything arriving late still counts against "nothing after terminals"

  await check('run-001 streams steps 0..4 then run_done', async () => {
    const { steps, terminal } = lifecycle(peer.frames, 'run-001');
    expectEqual(steps, 5, 'run-001 step count');
    expectEqual(terminal.event_type, 'run_done', 'run-001 terminal');
  });
  await check('run-002 streams ordered steps then run_cancelled', async () => {
    const { steps, terminal } = lifecycle(peer.frames, 'run-002');
    expect(steps >= 1 && steps < 5, `run-002 got ${steps} steps, expected 1..4`);
    expectEqual(terminal.event_type, 'run_cancelled', 'run-002 terminal');
    expectEqual(terminal.payload.reason, 'client', 'run_cancelled reason');
  });
  await check('no unexpected frames in the run scenario', async () => {
    const extra = peer.frames.filter((f, i) => i > 0 && !['run-001', 'run-002'].includes(f.payload.run_id));
    expectEqual(extra, [], 'frames for other runs or errors');
  });
  peer.close();
  return peer;
}

// Scenario (b): refused commands, each followed by a check that the
// connection still serves runs.
async function scenarioErrors(url) {
  const peer = await Peer.open(url);
  await peer.takeEvent('connected', undefined, 'connected');
  let probe = 0;

  const stillWorks = async () => {
    const runId = `probe-${++probe}`;
    peer.send({ command: 'start_run', run_id: runId, params: { steps: 1, interval_ms: 0 } });
    await peer.takeEvent('run_started', runId, `run_started for ${runId} (connection still usable?)`);
    await peer.takeEvent('run_event', runId);
    await peer.takeEvent('run_done', runId);
  };
  const errorCase = (name, send, expected) =>
    check(name, async () => {
      send();
      const err = await peer.takeError(`error for ${name}`);
      for (const [key, value] of Object.entries(expected)) expectEqual(err.payload[key], value, `payload.${key}`);
      await stillWorks();
    });

  await check('duplicate start_run is refused', async () => {
    peer.send({ command: 'start_run', run_id: 'dup', params: { steps: 5, interval_ms: 1000 } });
    await peer.takeEvent('run_started', 'dup');
    peer.send({ command: 'start_run', run_id: 'dup' });
    const err = await peer.takeError('error for the second start_run');
    expectEqual(err.payload.message, 'Run already in progress', 'message');
    expectEqual(err.payload.code, 'run_already_active', 'code');
    expectEqual(err.payload.run_id, 'dup', 'run_id');
    peer.send({ command: 'cancel_run', run_id: 'dup' });
    const cancelled = await peer.takeEvent('run_cancelled', 'dup');
    expectEqual(cancelled.payload.reason, 'client', 'run_cancelled reason');
    await stillWorks();
  });

  await errorCase('cancel of an unknown run is refused', () => peer.send({ command: 'cancel_run', run_id: 'nope' }), {
    message: 'No active run to cancel',
    code: 'run_not_active',
    run_id: 'nope',
  });

  await errorCase('start_run without run_id is refused', () => peer.send({ command: 'start_run' }), {
    message: 'run_id is required',
    code: 'missing_run_id',
  });
  await errorCase('cancel_run with an empty run_id is refused', () => peer.send({ command: 'cancel_run', run_id: '' }), {
    message: 'run_id is required',
    code: 'missing_run_id',
  });

  const unknown = { command: 'explode', run_id: 'x', extra: [1, { nested: null }, 'two'] };
  await errorCase('unknown command is refused with received', () => peer.send(unknown), {
    message: 'Unknown command',
    code: 'unknown_command',
    received: unknown,
  });

  await errorCase('invalid JSON is refused', () => peer.send('{"command": "start_run", '), { code: 'invalid_json' });
  await errorCase('JSON array is refused', () => peer.send('["start_run", "run-001"]'), { code: 'invalid_command' });
  await errorCase('binary frame is refused', () => peer.send(Buffer.from('{"command": "start_run", "run_id": "b"}')), {
    code: 'unsupported_frame',
  });

  await check('params steps -1 is refused', async () => {
    peer.send({ command: 'start_run', run_id: 'bad-params', params: { steps: -1, interval_ms: 0 } });
    const err = await peer.takeError('error for steps -1');
    expectEqual(err.payload.code, 'invalid_params', 'code');
    // The refused run must not exist: starting it again with valid params works.
    peer.send({ command: 'start_run', run_id: 'bad-params', params: { steps: 1, interval_ms: 0 } });
    await peer.takeEvent('run_started', 'bad-params', 'run_started after the refused params');
    await peer.takeEvent('run_done', 'bad-params');
    await stillWorks();
  });

  await check('request_id is echoed on run_started', async () => {
    peer.send({ command: 'start_run', run_id: 'req', request_id: 'req-1', params: { steps: 1, interval_ms: 0 } });
    const started = await peer.takeEvent('run_started', 'req');
    expectEqual(started.payload.request_id, 'req-1', 'run_started request_id');
    await peer.takeEvent('run_done', 'req');
  });
  await errorCase(
    'request_id is echoed on an error',
    () => peer.send({ command: 'cancel_run', run_id: 'nope', request_id: 'req-2' }),
    { message: 'No active run to cancel', request_id: 'req-2' },
  );

  await check('no unanswered errors on the error connection', async () => {
    const left = peer.pending.filter((f) => f.event_type === 'error');
    expectEqual(left, [], 'extra error frames');
  });
  peer.close();
  return peer;
}

async function main() {
  const args = process.argv.slice(2);
  const i = args.indexOf('--url');
  if (i < 0 || !args[i + 1]) {
    console.error('usage: node tests/interop/node_client.js --url ws://127.0.0.1:PORT/ws');
    process.exit(2);
  }
  const url = args[i + 1];

  setTimeout(() => {
    report('overall', `not finished within ${OVERALL_TIMEOUT_MS / 1000} s`);
    finish();
  }, OVERALL_TIMEOUT_MS);

  const peers = [];
  for (const [name, scenario] of [['run scenario', scenarioRuns], ['error scenario', scenarioErrors]]) {
    try {
      peers.push(await scenario(url));
    } catch (err) {
      report(name, `could not connect: ${err.message}`);
    }
  }
  await check('every frame is a valid event with a microsecond +00:00 ts', async () => {
    expect(peers.some((p) => p.frames.length > 0), 'no frames received');
    const problems = peers.flatMap((p) => p.problems);
    expect(problems.length === 0, problems.slice(0, 3).join('; '));
  });
  finish();
}

main();
