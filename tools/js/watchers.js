#!/usr/bin/env node
// watchers.js — the event and block watchers of ethers v6 and viem, against a pipe node.
//
// Usage: node watchers.js --rpc http://127.0.0.1:8545
//
// The node must be a fresh `pipe node --dev` (funded dev accounts, chain id 31337), sealing on
// demand. With pipe as it was, ethers' `contract.on(...)` crashed the process with an unhandled
// rejection (pipe answered eth_newFilter with jsonrpsee's "Method not found", not geth's words),
// and viem's WebSocket `watchBlocks` received nothing (subscription ids were numbers). Here:
//   1. ethers: JsonRpcProvider + contract.on('Incremented') hears an increment (polled filters);
//   2. viem, HTTP: watchContractEvent hears it too (eth_newFilter / eth_getFilterChanges);
//   3. viem, WebSocket: watchBlocks gets the block (eth_subscribe newHeads, hex ids), and
//      watchPendingTransactions the hash (eth_subscribe newPendingTransactions);
//   4. ethers: provider.getSigner(1).sendTransaction is signed by the node's unlocked dev
//      account (eth_sendTransaction).
// Any unhandled rejection fails the run. Exit code 0 = every watcher heard what it should.
'use strict';

const fs = require('fs');
const path = require('path');
const ethers = require('ethers');
const {
  createPublicClient, createWalletClient, http, webSocket, parseAbi,
} = require('viem');
const { privateKeyToAccount } = require('viem/accounts');

const args = process.argv.slice(2);
const rpc = args[args.indexOf('--rpc') + 1];
if (!rpc || !rpc.startsWith('http')) {
  console.error('usage: node watchers.js --rpc http://HOST:PORT');
  process.exit(2);
}
const wsUrl = rpc.replace(/^http/, 'ws');
const KEY = '0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80';
const artifact = JSON.parse(fs.readFileSync(
  path.join(__dirname, '..', '..', 'contracts', 'out', 'Counter.json'), 'utf8'));

let failed = false;
process.on('unhandledRejection', (e) => {
  console.error('unhandled rejection:', e);
  failed = true;
});

const chain = {
  id: 31337, name: 'pipe dev', nativeCurrency: { name: 'Ether', symbol: 'ETH', decimals: 18 },
  rpcUrls: { default: { http: [rpc], webSocket: [wsUrl] } },
};

/** Resolves with the first value `register(resolve)` delivers, or rejects after 20 s. */
function heard(what, register) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${what}: nothing within 20 s`)), 20000);
    register((v) => { clearTimeout(timer); resolve(v); });
  });
}

async function main() {
  const account = privateKeyToAccount(KEY);
  const wallet = createWalletClient({ account, chain, transport: http(rpc) });
  const client = createPublicClient({ chain, transport: http(rpc), pollingInterval: 100 });
  const wsClient = createPublicClient({ chain, transport: webSocket(wsUrl) });

  const deployHash = await wallet.deployContract({ abi: artifact.abi, bytecode: artifact.bytecode });
  const deployed = await client.waitForTransactionReceipt({ hash: deployHash });
  const address = deployed.contractAddress;

  // ethers, polling filters over HTTP.
  const provider = new ethers.JsonRpcProvider(rpc, 31337, { staticNetwork: true, pollingInterval: 100 });
  provider.pollingInterval = 100;
  const counter = new ethers.Contract(address, artifact.abi, provider);
  const ethersHeard = heard('ethers contract.on(Incremented)', (done) => {
    counter.on('Incremented', (by, value) => done({ by, value: value.toString() }));
  });

  // viem over HTTP: contract events through eth_newFilter / eth_getFilterChanges.
  const viemEvent = heard('viem watchContractEvent', (done) => {
    client.watchContractEvent({
      address, abi: parseAbi(['event Incremented(address indexed by, uint256 newValue)']),
      eventName: 'Incremented', onLogs: (logs) => done(logs[0]), onError: (e) => { console.error(e); failed = true; },
    });
  });
  // viem over WebSocket: blocks and pending transactions through eth_subscribe.
  const viemBlock = heard('viem watchBlocks (WebSocket)', (done) => {
    wsClient.watchBlocks({ onBlock: (b) => done(b), onError: (e) => { console.error(e); failed = true; } });
  });
  const viemPending = heard('viem watchPendingTransactions (WebSocket)', (done) => {
    wsClient.watchPendingTransactions({ onTransactions: (h) => done(h[0]), onError: (e) => { console.error(e); failed = true; } });
  });

  // Let every watcher install its filter or subscription before the event happens.
  await new Promise((r) => setTimeout(r, 1500));
  const hash = await wallet.writeContract({ address, abi: artifact.abi, functionName: 'increment' });
  const receipt = await client.waitForTransactionReceipt({ hash });

  const [e, v, b, p] = await Promise.all([ethersHeard, viemEvent, viemBlock, viemPending]);

  // ethers' JSON-RPC signer: the node's unlocked dev account signs (eth_sendTransaction).
  const unlocked = await provider.getSigner(1);
  const sent = await unlocked.sendTransaction({ to: '0x000000000000000000000000000000000000dEaD', value: 1n });
  const mined = await sent.wait();
  const checks = [
    ['ethers contract.on', e.by.toLowerCase() === account.address.toLowerCase() && e.value === '1'],
    ['viem watchContractEvent', v.transactionHash === hash],
    ['viem watchBlocks', b.number >= receipt.blockNumber],
    ['viem watchPendingTransactions', p === hash],
    ['ethers getSigner().sendTransaction', mined.status === 1
      && mined.from.toLowerCase() === (await unlocked.getAddress()).toLowerCase()],
  ];
  for (const [what, ok] of checks) {
    console.log(`${ok ? 'ok  ' : 'FAIL'} ${what}`);
    if (!ok) failed = true;
  }
  // Exit without closing: closing the socket would be reported to the watchers as an error.
  process.exit(failed ? 1 : 0);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
