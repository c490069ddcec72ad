// A minimal Chrome DevTools Protocol client over --remote-debugging-pipe, for
// measurements that must not pay for DevTools instrumentation. Playwright
// enables the Network domain on every page it drives, and Chromium then
// copies each WebSocket frame into a DevTools event on the page's main
// thread, which more than halves the frames a page can take per second. This
// client enables nothing but what it is asked to.
//
//   const browser = await launchPipeBrowser('/usr/bin/chromium', { width: 1360, height: 900 });
//   const page = await browser.newPage('http://127.0.0.1:8000/');
//   await page.eval('document.title');
//   await page.click('#connect');      // a real mouse click (Input domain)
//   await browser.close();

import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

export async function launchPipeBrowser(executable, viewport, extraArgs = []) {
  const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'agentws-cdp-'));
  const proc = spawn(executable, [
    '--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
    '--disable-quic', '--no-first-run', '--disable-component-update', '--disable-sync',
    '--remote-debugging-pipe', `--user-data-dir=${userDataDir}`,
    `--window-size=${viewport.width},${viewport.height}`, ...extraArgs, 'about:blank',
  ], { stdio: ['ignore', 'ignore', 'ignore', 'pipe', 'pipe'] });
  const toBrowser = proc.stdio[3];
  const fromBrowser = proc.stdio[4];

  let nextId = 0;
  const waiting = new Map();
  const listeners = new Set();
  let pending = '';
  let exited = false;
  const onExit = () => {
    exited = true;
    for (const { reject } of waiting.values()) reject(new Error('browser exited'));
    waiting.clear();
  };
  proc.on('exit', onExit);
  proc.on('error', onExit);
  fromBrowser.setEncoding('utf8');
  fromBrowser.on('data', (chunk) => {
    pending += chunk;
    let end;
    while ((end = pending.indexOf('\0')) >= 0) {
      const message = JSON.parse(pending.slice(0, end));
      pending = pending.slice(end + 1);
      if (message.id !== undefined && waiting.has(message.id)) {
        const { resolve, reject } = waiting.get(message.id);
        waiting.delete(message.id);
        if (message.error) reject(new Error(`${message.error.message} (${message.error.code})`));
        else resolve(message.result);
      } else if (message.method) {
        for (const listener of listeners) listener(message);
      }
    }
  });

  function send(method, params = {}, sid = undefined) {
    if (exited) return Promise.reject(new Error('browser exited'));
    const id = ++nextId;
    const message = { id, method, params };
    if (sid) message.sessionId = sid;
    return new Promise((resolve, reject) => {
      waiting.set(id, { resolve, reject });
      toBrowser.write(`${JSON.stringify(message)}\0`);
    });
  }

  async function newPage(url) {
    const { targetId } = await send('Target.createTarget', { url: 'about:blank' });
    const { sessionId } = await send('Target.attachToTarget', { targetId, flatten: true });
    const pageSend = (method, params) => send(method, params, sessionId);
    await pageSend('Page.enable');
    const loaded = new Promise((resolve) => {
      const listener = (m) => {
        if (m.sessionId === sessionId && m.method === 'Page.loadEventFired') {
          listeners.delete(listener);
          resolve();
        }
      };
      listeners.add(listener);
    });
    await pageSend('Page.navigate', { url });
    await loaded;
    await pageSend('Page.disable');

    // Evaluates an expression (a promise is awaited) and returns its value.
    async function evaluate(expression) {
      const r = await pageSend('Runtime.evaluate', { expression, awaitPromise: true, returnByValue: true });
      if (r.exceptionDetails) {
        const d = r.exceptionDetails;
        throw new Error(`page: ${d.exception && d.exception.description ? d.exception.description.split('\n')[0] : d.text}`);
      }
      return r.result.value;
    }
    // Clicks the middle of the first element matching `selector`, as a mouse would.
    async function click(selector) {
      const box = await evaluate(`(() => {
        const el = document.querySelector(${JSON.stringify(selector)});
        if (!el) return null;
        el.scrollIntoView({ block: 'nearest' });
        const r = el.getBoundingClientRect();
        return { x: r.left + r.width / 2, y: r.top + r.height / 2 };
      })()`);
      if (!box) throw new Error(`no element ${selector}`);
      const mouse = { x: box.x, y: box.y, button: 'left', clickCount: 1 };
      await pageSend('Input.dispatchMouseEvent', { type: 'mousePressed', ...mouse });
      await pageSend('Input.dispatchMouseEvent', { type: 'mouseReleased', ...mouse });
    }
    return { eval: evaluate, click, send: pageSend };
  }

  async function close() {
    if (!exited) {
      send('Browser.close').catch(() => {});
      await new Promise((resolve) => {
        const timer = setTimeout(() => { proc.kill('SIGKILL'); resolve(); }, 3000);
        proc.once('exit', () => { clearTimeout(timer); resolve(); });
        if (exited) { clearTimeout(timer); resolve(); }
      });
    }
    fs.rmSync(userDataDir, { recursive: true, force: true });
  }

  // Calls listener(message) for every event; returns a function that stops it.
  function on(listener) {
    listeners.add(listener);
    return () => listeners.delete(listener);
  }

  return { newPage, close, send, on };
}
