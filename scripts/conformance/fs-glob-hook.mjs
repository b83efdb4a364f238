// Node 20 has no fs.globSync, which the conformance suite imports by name from 'fs'. This --import hook points the
// suite's 'fs' imports at fs-with-glob.mjs (all of node:fs plus globSync from the `glob` package).
// Usage: node --import ./scripts/conformance/fs-glob-hook.mjs node_modules/@modelcontextprotocol/conformance/dist/index.js …
import fs from 'node:fs';
import { register } from 'node:module';

if (typeof fs.globSync !== 'function') register('./fs-glob-resolve.mjs', import.meta.url);
