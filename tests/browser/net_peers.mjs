// Network peers the console test controls: a TCP proxy it can cut, and a
// server that speaks protocol version 1 only. Both listen on 127.0.0.1 on a
// port of the kernel's choosing, and close() stops them and every socket.

import crypto from 'node:crypto';
import http from 'node:http';
import net from 'node:net';

// A TCP proxy to 127.0.0.1:targetPort. The page is loaded through it too, so
// that the page and its WebSocket have one origin (the server's Origin and
// Host checks pass as they do for the server's own address).
//   cut({ refuse })  drops every connection at once, without a close frame
//                    (the peers see the TCP connection reset); with refuse,
//                    new connections are dropped as they come (counted in
//                    `refused`) until allow()
//   retarget(port)   later connections go to another server
export function startProxy(targetPort) {
  return new Promise((resolve, reject) => {
    const pairs = new Set();
    const proxy = { port: null, target: targetPort, refusing: false, refused: 0, accepted: 0 };
    const server = net.createServer((client) => {
      if (proxy.refusing) {
        proxy.refused++;
        client.resetAndDestroy();
        return;
      }
      proxy.accepted++;
      const upstream = net.connect(proxy.target, '127.0.0.1');
      const pair = { client, upstream };
      pairs.add(pair);
      const drop = () => {
        if (!pairs.delete(pair)) return;
        client.destroy();
        upstream.destroy();
      };
      for (const s of [client, upstream]) {
        s.setNoDelay(true);
        s.on('error', drop);
        s.on('close', drop);
      }
      client.pipe(upstream);
      upstream.pipe(client);
    });
    proxy.cut = ({ refuse = false } = {}) => {
      proxy.refusing = refuse;
      for (const pair of [...pairs]) {
        pairs.delete(pair);
        pair.client.resetAndDestroy();
        pair.upstream.destroy();
      }
    };
    proxy.allow = () => { proxy.refusing = false; };
    proxy.retarget = (port) => { proxy.target = port; };
    proxy.close = () => new Promise((r) => {
      proxy.cut();
      server.close(() => r());
    });
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      proxy.port = server.address().port;
      resolve(proxy);
    });
  });
}

// A server of protocol version 1, in the style of the original module: one
// `connected` with a message only, start_run / cancel_run, events without seq,
// no extension fields. It records the request URL of every WebSocket and every
// command received; drop() ends every connection without a close frame.
export function startVersion1Server({ steps = 5, intervalMs = 50 } = {}) {
  return new Promise((resolve, reject) => {
    const sockets = new Set();
    const peer = { port: null, urls: [], commands: [] };
    const server = http.createServer((req, res) => {
      res.writeHead(404, { 'content-type': 'text/plain' });
      res.end('not found\n');
    });
    const ts = () => new Date().toISOString().replace('Z', '000+00:00');
    const frame = (opcode, body) => {
      const len = body.length;
      const head = len < 126 ? Buffer.from([0x80 | opcode, len])
        : len < 65536 ? Buffer.from([0x80 | opcode, 126, len >> 8, len & 255])
          : Buffer.concat([Buffer.from([0x80 | opcode, 127]), (() => { const b = Buffer.alloc(8); b.writeBigUInt64BE(BigInt(len)); return b; })()]);
      return Buffer.concat([head, body]);
    };
    server.on('upgrade', (req, socket) => {
      peer.urls.push(req.url);
      const accept = crypto.createHash('sha1')
        .update(`${req.headers['sec-websocket-key']}258EAFA5-E914-47DA-95CA-C5AB0DC85B11`).digest('base64');
      socket.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n'
        + `Sec-WebSocket-Accept: ${accept}\r\n\r\n`);
      sockets.add(socket);
      const runs = new Map();  // run_id -> timer
      const send = (eventType, payload) => {
        if (!socket.destroyed) socket.write(frame(1, Buffer.from(JSON.stringify({ event_type: eventType, ts: ts(), payload }))));
      };
      const stop = () => {
        for (const t of runs.values()) clearTimeout(t);
        runs.clear();
        sockets.delete(socket);
      };
      socket.on('close', stop);
      socket.on('error', () => socket.destroy());
      send('connected', { message: 'Connected' });

      const onCommand = (text) => {
        let cmd;
        try { cmd = JSON.parse(text); } catch { send('error', { message: 'Invalid JSON' }); return; }
        peer.commands.push(cmd);
        const id = cmd.run_id;
        if (cmd.command === 'start_run') {
          if (runs.has(id)) { send('error', { message: 'Run already in progress', run_id: id }); return; }
          const n = cmd.params && Number.isInteger(cmd.params.steps) ? cmd.params.steps : steps;
          const every = cmd.params && Number.isInteger(cmd.params.interval_ms) ? cmd.params.interval_ms : intervalMs;
          send('run_started', { run_id: id });
          let step = 0;
          const tick = () => {
            if (step < n) {
              send('run_event', { run_id: id, step, text: `agent step ${step}` });
              step++;
              runs.set(id, setTimeout(tick, every));
            } else {
              runs.delete(id);
              send('run_done', { run_id: id });
            }
          };
          tick();
        } else if (cmd.command === 'cancel_run') {
          if (!runs.has(id)) { send('error', { message: 'No active run to cancel', run_id: id }); return; }
          clearTimeout(runs.get(id));
          runs.delete(id);
          send('run_cancelled', { run_id: id });
        } else {
          send('error', { message: 'Unknown command', received: cmd });
        }
      };

      let buf = Buffer.alloc(0);
      socket.on('data', (chunk) => {
        buf = Buffer.concat([buf, chunk]);
        for (;;) {
          if (buf.length < 2) return;
          const opcode = buf[0] & 15;
          let len = buf[1] & 127;
          let at = 2;
          if (len === 126) { if (buf.length < 4) return; len = buf.readUInt16BE(2); at = 4; }
          else if (len === 127) { if (buf.length < 10) return; len = Number(buf.readBigUInt64BE(2)); at = 10; }
          const masked = (buf[1] & 128) !== 0;
          const mask = masked ? buf.subarray(at, at + 4) : null;
          if (masked) at += 4;
          if (buf.length < at + len) return;
          const body = Buffer.from(buf.subarray(at, at + len));
          if (mask) for (let i = 0; i < body.length; i++) body[i] ^= mask[i & 3];
          buf = buf.subarray(at + len);
          if (opcode === 1) onCommand(body.toString('utf8'));
          else if (opcode === 8) { socket.end(frame(8, body.subarray(0, 2))); stop(); return; }
          else if (opcode === 9) socket.write(frame(10, body));
        }
      });
    });
    peer.drop = () => { for (const s of [...sockets]) s.resetAndDestroy(); };
    peer.close = () => new Promise((r) => {
      peer.drop();
      server.close(() => r());
      server.closeAllConnections();
    });
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      peer.port = server.address().port;
      resolve(peer);
    });
  });
}
