#!/usr/bin/env node
// Offline Solidity compiler for pipe, built on solcjs (npm `solc`, no native download).
//
// Usage: node compile.js [SRC_DIR] [OUT_DIR]
//   SRC_DIR defaults to <repo>/contracts, OUT_DIR to <repo>/contracts/out.
//   Every *.sol under SRC_DIR (recursively; skipping node_modules, out, cache, lib,
//   forge-out, forge-cache and dot-dirs) is compiled in one standard-JSON job with
//   evmVersion "osaka" and the optimizer on (200 runs).
//   Writes OUT_DIR/<ContractName>.json = {contractName, sourceName, abi, bytecode,
//   deployedBytecode} (hex with 0x prefix). If two contracts share a name, both are
//   written as <path_to_File.sol>.<ContractName>.json instead.
// Exit codes: 0 ok, 1 compile errors, 2 usage / I/O errors.
'use strict';

const fs = require('fs');
const path = require('path');
const solc = require('solc');

const REPO = path.resolve(__dirname, '..', '..');
const srcDir = path.resolve(process.argv[2] || path.join(REPO, 'contracts'));
const outDir = path.resolve(process.argv[3] || path.join(REPO, 'contracts', 'out'));
const SKIP_DIRS = new Set(['node_modules', 'out', 'cache', 'lib', 'forge-out', 'forge-cache']);

function die(msg, code) {
  process.stderr.write(`compile.js: ${msg}\n`);
  process.exit(code);
}

function findSol(dir, acc) {
  for (const ent of fs.readdirSync(dir, { withFileTypes: true })) {
    const full = path.join(dir, ent.name);
    if (ent.isDirectory()) {
      if (ent.name.startsWith('.') || SKIP_DIRS.has(ent.name)) continue;
      if (path.resolve(full) === outDir) continue;
      findSol(full, acc);
    } else if (ent.isFile() && ent.name.endsWith('.sol')) {
      acc.push(full);
    }
  }
  return acc;
}

if (!fs.existsSync(srcDir) || !fs.statSync(srcDir).isDirectory()) {
  die(`source directory not found: ${srcDir}`, 2);
}
const files = findSol(srcDir, []).sort();
if (files.length === 0) die(`no .sol files under ${srcDir}`, 2);

// Source unit names are paths relative to srcDir (forward slashes).
const sources = {};
for (const f of files) {
  const unit = path.relative(srcDir, f).split(path.sep).join('/');
  sources[unit] = { content: fs.readFileSync(f, 'utf8') };
}

const input = {
  language: 'Solidity',
  sources,
  settings: {
    evmVersion: 'osaka',
    optimizer: { enabled: true, runs: 200 },
    outputSelection: {
      '*': { '*': ['abi', 'evm.bytecode.object', 'evm.deployedBytecode.object'] },
    },
  },
};

// Resolve imports not already in `sources`: relative to srcDir, then node_modules.
function findImports(importPath) {
  const candidates = [
    path.resolve(srcDir, importPath),
    path.resolve(__dirname, 'node_modules', importPath),
  ];
  for (const c of candidates) {
    if (fs.existsSync(c) && fs.statSync(c).isFile()) {
      return { contents: fs.readFileSync(c, 'utf8') };
    }
  }
  return { error: `File not found: ${importPath} (looked in ${candidates.join(', ')})` };
}

let output;
try {
  output = JSON.parse(solc.compile(JSON.stringify(input), { import: findImports }));
} catch (e) {
  die(`solc crashed: ${e && e.stack ? e.stack : e}`, 1);
}

const diags = output.errors || [];
const errors = diags.filter((d) => d.severity === 'error');
for (const d of diags) {
  if (d.severity !== 'error') process.stderr.write((d.formattedMessage || d.message) + '\n');
}
if (errors.length > 0) {
  for (const d of errors) process.stderr.write((d.formattedMessage || d.message) + '\n');
  die(`${errors.length} compile error(s); no artifacts written (solc ${solc.version()})`, 1);
}

const contracts = [];
for (const [sourceName, byName] of Object.entries(output.contracts || {})) {
  for (const [contractName, c] of Object.entries(byName)) {
    contracts.push({ sourceName, contractName, c });
  }
}
const nameCount = {};
for (const { contractName } of contracts) nameCount[contractName] = (nameCount[contractName] || 0) + 1;

const hex = (s) => '0x' + (s || '');
fs.mkdirSync(outDir, { recursive: true });
for (const { sourceName, contractName, c } of contracts) {
  const artifact = {
    contractName,
    sourceName,
    abi: c.abi,
    bytecode: hex(c.evm && c.evm.bytecode && c.evm.bytecode.object),
    deployedBytecode: hex(c.evm && c.evm.deployedBytecode && c.evm.deployedBytecode.object),
  };
  let file = `${contractName}.json`;
  if (nameCount[contractName] > 1) {
    file = `${sourceName.replace(/\//g, '_')}.${contractName}.json`;
    process.stderr.write(`compile.js: warning: duplicate contract name ${contractName}; writing ${file}\n`);
  }
  // Written beside, then renamed over: a reader (another test) sees the old file or the new
  // one, never half of one.
  const dest = path.join(outDir, file);
  const partial = `${dest}.${process.pid}.partial`;
  fs.writeFileSync(partial, JSON.stringify(artifact, null, 2) + '\n');
  fs.renameSync(partial, dest);
  process.stdout.write(`${sourceName}:${contractName} -> ${dest}\n`);
}
process.stdout.write(`compiled ${files.length} file(s), ${contracts.length} contract(s) with solc ${solc.version()} (evm osaka, optimizer 200)\n`);
