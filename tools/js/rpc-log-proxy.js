#!/usr/bin/env node
// rpc-log-proxy.js LISTEN_PORT UPSTREAM_URL — logs JSON-RPC method names (one per line, to
// stderr) while forwarding HTTP POSTs to UPSTREAM_URL. Binds 127.0.0.1 only.
// Use to see which RPC methods a tool (forge/cast/scripts) needs from a node.
// Env BLOCK_METHODS=regex: answer matching methods with JSON-RPC -32601 "method not found"
// instead of forwarding (e.g. BLOCK_METHODS='^anvil_' to mimic a non-anvil node).
'use strict';
const http = require('http');
const [port, upstream] = process.argv.slice(2);
if (!port || !upstream) { console.error('usage: rpc-log-proxy.js LISTEN_PORT UPSTREAM_URL'); process.exit(2); }
const up = new URL(upstream);
const block = process.env.BLOCK_METHODS ? new RegExp(process.env.BLOCK_METHODS) : null;
http.createServer((req, res) => {
  const chunks = [];
  req.on('data', (c) => chunks.push(c)).on('end', () => {
    const body = Buffer.concat(chunks);
    let j = null;
    try {
      j = JSON.parse(body.toString('utf8'));
      for (const m of (Array.isArray(j) ? j : [j])) process.stderr.write(`${m.method}\n`);
    } catch (_) { process.stderr.write('<non-json request>\n'); }
    if (block && j && !Array.isArray(j) && block.test(j.method)) {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ jsonrpc: '2.0', id: j.id, error: { code: -32601, message: `the method ${j.method} does not exist/is not available` } }));
      return;
    }
    const p = http.request({ hostname: up.hostname, port: up.port, path: up.pathname, method: 'POST',
      headers: { 'content-type': 'application/json', 'content-length': body.length } }, (r) => {
      res.writeHead(r.statusCode, { 'content-type': r.headers['content-type'] || 'application/json' });
      r.pipe(res);
    });
    p.on('error', (e) => { res.writeHead(502); res.end(String(e)); });
    p.end(body);
  });
}).listen(Number(port), '127.0.0.1');
