#!/usr/bin/env node
// pipeline-page.js — the node's live pipeline page in a real headless Chromium.
//
// Usage: node pipeline-page.js --page URL --rpc URL --tx RAW [--tx RAW ...] [--model NAME]
//
// Opens the page, records every state each transaction row shows (a MutationObserver in the
// page, so no state is missed between two looks), sends the raw transactions over JSON-RPC,
// and waits until every one of them is shown as included. Then checks that
//   - each transaction was shown waiting for inference before it was shown included,
//   - the request queue showed a request running on a worker,
//   - the worker table shows the worker's completed runs and its latency,
//   - the blocks table shows the blocks that included them, with their build times,
//   - the price chart is drawn and the model store lists the model.
// The page is fed by server-sent events; this script never reloads it.
// Exit code 0 when every check passes. Needs Debian's chromium at /usr/bin/chromium (or
// CHROMIUM=path) and playwright-core from tools/js.
'use strict';

const { chromium } = require('playwright-core');

const args = { tx: [] };
for (let i = 2; i < process.argv.length; i += 2) {
  const k = process.argv[i].replace(/^--/, '');
  const v = process.argv[i + 1];
  if (k === 'tx') args.tx.push(v); else args[k] = v;
}
if (!args.page || !args.rpc || !args.tx.length) {
  console.error('usage: pipeline-page.js --page URL --rpc URL --tx RAW [--tx RAW ...] [--model NAME]');
  process.exit(2);
}

async function rpc(method, params) {
  const r = await fetch(args.rpc, {
    method: 'POST', headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ jsonrpc: '2.0', id: 1, method, params }),
  });
  const j = await r.json();
  if (j.error) throw new Error(`${method}: ${JSON.stringify(j.error)}`);
  return j.result;
}

let failed = 0;
function check(what, ok, detail) {
  console.log(`${ok ? 'ok  ' : 'FAIL'} ${what}${ok ? '' : `: ${detail}`}`);
  if (!ok) failed++;
}

async function main() {
  // The flags the machine needs: no sandbox as root, and no background traffic to Google
  // (the network is closed, and Chromium retries those connections).
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  try {
    const page = await browser.newPage();
    page.on('pageerror', (e) => check('no script error on the page', false, e.message));
    await page.goto(args.page);
    await page.waitForFunction(() => document.getElementById('status').textContent === 'live'
      && +(document.body.dataset.updates || 0) >= 1, null, { timeout: 15000 });
    check('the page connects and shows a first snapshot', true);

    // Every state every row shows, and whether a request row ever showed `running`.
    await page.evaluate(() => {
      window.seen = {};
      window.sawRunning = false;
      const look = () => {
        for (const tr of document.querySelectorAll('tr[data-hash]')) {
          const list = (window.seen[tr.dataset.hash] ||= []);
          if (list[list.length - 1] !== tr.dataset.status) list.push(tr.dataset.status);
        }
        for (const b of document.querySelectorAll('#requests .badge')) {
          if (b.classList.contains('running')) window.sawRunning = true;
        }
      };
      new MutationObserver(look).observe(document.body, { childList: true, subtree: true });
      look();
    });

    const hashes = [];
    for (const raw of args.tx) hashes.push(await rpc('eth_sendRawTransaction', [raw]));
    await page.waitForFunction((hs) => hs.every((h) => {
      const s = window.seen[h];
      return s && s[s.length - 1] === 'included';
    }), hashes, { timeout: 120000, polling: 100 });
    const seen = await page.evaluate(() => window.seen);
    for (const h of hashes) {
      const states = seen[h];
      const waited = states.indexOf('awaiting_inference');
      check(`${h.slice(0, 10)} shown awaiting inference, then included (${states.join(' → ')})`,
        waited >= 0 && waited < states.indexOf('included'), states.join(' → '));
    }
    check('a request was shown running on a worker', await page.evaluate(() => window.sawRunning), 'never');

    const receipts = await Promise.all(hashes.map((h) => rpc('eth_getTransactionReceipt', [h])));
    const blocks = [...new Set(receipts.map((r) => Number(r.blockNumber)))];
    await page.waitForFunction((bs) => bs.every((b) => document.querySelector(`#blocks tr[data-block="${b}"]`)),
      blocks, { timeout: 10000 }).catch(() => {});
    const view = await page.evaluate((bs) => ({
      blocks: bs.map((b) => {
        const tr = document.querySelector(`#blocks tr[data-block="${b}"]`);
        return tr && [...tr.cells].map((c) => c.textContent);
      }),
      workers: [...document.querySelectorAll('#workers tr[data-worker]')].map((tr) => [...tr.cells].map((c) => c.textContent)),
      chart: document.querySelectorAll('#chart polyline').length,
      price: document.getElementById('price').textContent,
      models: [...document.querySelectorAll('#models tbody tr')].map((tr) => tr.cells[0].textContent),
      head: Number(document.getElementById('head').textContent),
    }), blocks);
    for (const [i, b] of blocks.entries()) {
      const row = view.blocks[i];
      const included = receipts.filter((r) => Number(r.blockNumber) === b).length;
      check(`block ${b} listed with its ${included} inference transactions and a build time`,
        row && Number(row[1]) >= included && /^\d+ ms$/.test(row[4]), JSON.stringify(row));
    }
    const done = view.workers.reduce((n, w) => n + Number(w[3]), 0);
    check(`workers listed with their completed runs (${done}) and latency`,
      view.workers.length > 0 && done >= hashes.length && view.workers.some((w) => / ms$/.test(w[5])),
      JSON.stringify(view.workers));
    check(`the inference gas price is charted (now ${view.price})`, view.chart === 1 && /^\d+$/.test(view.price), JSON.stringify(view));
    if (args.model) check(`the model store lists ${args.model}`, view.models.includes(args.model), view.models.join(','));
    check('the head block is shown', view.head >= Math.max(...blocks), `${view.head}`);
    if (process.env.SCREENSHOT) await page.screenshot({ path: process.env.SCREENSHOT, fullPage: true });
  } finally {
    await browser.close();
  }
  console.log(failed ? `pipeline-page: ${failed} checks failed` : 'pipeline-page: all checks passed');
  process.exit(failed ? 1 : 0);
}

main().catch((e) => { console.error(e); process.exit(1); });
