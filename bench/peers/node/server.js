#!/usr/bin/env node
// Reference Node.js peer for the agentws wire protocol (version 1), built on
// the `ws` package. It is the "typical" Node server in the benchmarks: one
// ws.send() per event, timers for the pauses between steps.
//
// Usage:
//   npm install                       # once, in this folder
//   node server.js [--host 127.0.0.1] [--port 8000]
//
// Prints "listening on HOST:PORT" to stderr once ready (--port 0 picks a free
// port and prints it). WebSocket endpoint: /ws; GET /health -> {"ok": true}.
//
// Implements the core protocol plus the extensions: start_run "params"
// ({"steps": N, "interval_ms": M}, refused with code "invalid_params" when out
// of bounds or of the wrong type), "request_id" echo, "code" on every error,
// "reason" on run_cancelled. SIGINT/SIGTERM cancel all runs with reason
// "shutdown" and close the connections with 1001.
//
// Timestamps: Date has millisecond resolution only, so the microsecond field
// is the millisecond value padded with "000" (e.g. .123000+00:00).

'use strict';

const http = require('http');
const { WebSocketServer } = require('ws');

const DEFAULT_STEPS = 5;
const DEFAULT_INTERVAL_MS = 1000;
const MAX_STEPS = 10_000_000;
const MAX_INTERVAL_MS = 3_600_000;
const MAX_MESSAGE_BYTES = 1 << 20; // larger messages close with 1009 (done by ws)
const HIGH_WATER_BYTES = 4 << 20; // pause a run while more than this is queued
const YIELD_EVERY = 16; // with interval_ms 0, yield to the event loop this often

function parseArgs(argv) {
  const opts = { host: '127.0.0.1', port: 8000 };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === '--host') opts.host = argv[++i];
    else if (arg === '--port') opts.port = Number(argv[++i]);
    else {
      console.error(`usage: node server.js [--host HOST] [--port PORT] (unknown argument ${arg})`);
      process.exit(2);
    }
  }
  if (!opts.host || !Number.isInteger(opts.port) || opts.port < 0 || opts.port > 65535) {
    console.error('usage: node server.js [--host HOST] [--port PORT]');
    process.exit(2);
  }
  return opts;
}

function timestamp() {
  return new Date().toISOString().replace('Z', '000+00:00');
}

function send(ws, eventType, payload) {
  ws.send(JSON.stringify({ event_type: eventType, ts: timestamp(), payload }));
}

// Builds an answer payload, echoing the command's request_id when it has one.
function answer(cmd, payload) {
  if (cmd && typeof cmd.request_id === 'string') payload.request_id = cmd.request_id;
  return payload;
}

function sendError(ws, cmd, code, message, extra = {}) {
  send(ws, 'error', answer(cmd, { message, code, ...extra }));
}

const isObject = (v) => typeof v === 'object' && v !== null && !Array.isArray(v);

// Returns [steps, intervalMs], or a string describing why params are refused.
function readParams(params) {
  if (params === undefined) return [DEFAULT_STEPS, DEFAULT_INTERVAL_MS];
  if (!isObject(params)) return 'params must be an object';
  const field = (name, fallback, max) => {
    const v = params[name];
    if (v === undefined) return fallback;
    if (!Number.isInteger(v) || v < 0 || v > max) return `params.${name} must be an integer in 0..${max}`;
    return v;
  };
  const steps = field('steps', DEFAULT_STEPS, MAX_STEPS);
  if (typeof steps === 'string') return steps;
  const intervalMs = field('interval_ms', DEFAULT_INTERVAL_MS, MAX_INTERVAL_MS);
  if (typeof intervalMs === 'string') return intervalMs;
  return [steps, intervalMs];
}

// Waits `ms` (or one event-loop turn for 0) unless the run is stopped first.
// Resolves to true if the run should go on.
function pause(run, ms) {
  return new Promise((resolve) => {
    if (run.stopped) return resolve(false);
    const timer = ms > 0 ? setTimeout(done, ms) : setImmediate(done);
    function done() {
      run.wake = null;
      resolve(!run.stopped);
    }
    run.wake = () => {
      if (ms > 0) clearTimeout(timer);
      else clearImmediate(timer);
      done();
    };
  });
}

// Minimal backpressure: while the socket has more than HIGH_WATER_BYTES
// queued, poll until it drains instead of queueing more events.
async function drained(ws, run) {
  while (ws.bufferedAmount > HIGH_WATER_BYTES) {
    if (!(await pause(run, 5))) return false;
  }
  return !run.stopped;
}

// The demo agent: steps at 0, 1, ..., `interval` apart (the first at once),
// then run_done one interval after the last step.
async function runAgent(ws, runs, run) {
  const { runId, steps, intervalMs } = run;
  for (let step = 0; step < steps; step++) {
    if (step > 0) {
      const goOn = intervalMs > 0 || step % YIELD_EVERY === 0 ? await pause(run, intervalMs) : true;
      if (!goOn || !(await drained(ws, run))) return;
    }
    send(ws, 'run_event', { run_id: runId, step, text: `agent step ${step}` });
  }
  if (steps > 0 && !(await pause(run, intervalMs))) return;
  runs.delete(runId);
  send(ws, 'run_done', { run_id: runId });
}

function stopRun(runs, runId) {
  const run = runs.get(runId);
  runs.delete(runId);
  run.stopped = true;
  if (run.wake) run.wake();
}

function handleCommand(ws, runs, cmd) {
  const command = cmd.command;
  if (command !== 'start_run' && command !== 'cancel_run') {
    return sendError(ws, cmd, 'unknown_command', 'Unknown command', { received: cmd });
  }
  const runId = cmd.run_id;
  if (typeof runId !== 'string' || runId === '') {
    return sendError(ws, cmd, 'missing_run_id', 'run_id is required');
  }

  if (command === 'cancel_run') {
    if (!runs.has(runId)) {
      return sendError(ws, cmd, 'run_not_active', 'No active run to cancel', { run_id: runId });
    }
    stopRun(runs, runId);
    return send(ws, 'run_cancelled', answer(cmd, { run_id: runId, reason: 'client' }));
  }

  if (runs.has(runId)) {
    return sendError(ws, cmd, 'run_already_active', 'Run already in progress', { run_id: runId });
  }
  const params = readParams(cmd.params);
  if (typeof params === 'string') {
    return sendError(ws, cmd, 'invalid_params', params, { run_id: runId });
  }
  const [steps, intervalMs] = params;
  const run = { runId, steps, intervalMs, stopped: false, wake: null };
  runs.set(runId, run);
  send(ws, 'run_started', answer(cmd, { run_id: runId }));
  runAgent(ws, runs, run).catch((err) => console.error(`run ${runId} failed:`, err));
}

function main() {
  const { host, port } = parseArgs(process.argv.slice(2));

  const server = http.createServer((req, res) => {
    if (req.method === 'GET' && req.url === '/health') {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end('{"ok": true}');
    } else {
      res.writeHead(404, { 'content-type': 'text/plain' });
      res.end('not found\n');
    }
  });
  const wss = new WebSocketServer({ server, path: '/ws', maxPayload: MAX_MESSAGE_BYTES });
  const connections = new Map(); // ws -> Map(run_id -> run)

  wss.on('connection', (ws) => {
    const runs = new Map();
    connections.set(ws, runs);
    send(ws, 'connected', { message: 'Connected' });

    ws.on('message', (data, isBinary) => {
      if (isBinary) return sendError(ws, null, 'unsupported_frame', 'Binary frames are not supported');
      let cmd;
      try {
        cmd = JSON.parse(data.toString('utf8'));
      } catch {
        return sendError(ws, null, 'invalid_json', 'Invalid JSON');
      }
      if (!isObject(cmd)) return sendError(ws, null, 'invalid_command', 'Command must be a JSON object');
      handleCommand(ws, runs, cmd);
    });

    ws.on('close', () => {
      for (const runId of [...runs.keys()]) stopRun(runs, runId);
      connections.delete(ws);
    });
    ws.on('error', (err) => console.error('connection error:', err.message));
  });

  server.listen(port, host, () => {
    const addr = server.address();
    console.error(`listening on ${host}:${addr.port}`);
  });

  const shutdown = () => {
    for (const [ws, runs] of connections) {
      for (const runId of [...runs.keys()]) {
        stopRun(runs, runId);
        send(ws, 'run_cancelled', { run_id: runId, reason: 'shutdown' });
      }
      ws.close(1001, 'server shutting down');
    }
    wss.close();
    server.close(() => process.exit(0));
    setTimeout(() => process.exit(0), 2000).unref();
  };
  process.once('SIGINT', shutdown);
  process.once('SIGTERM', shutdown);
}

main();
