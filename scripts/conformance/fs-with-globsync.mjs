// node:fs with the glob package's globSync added, for the conformance suite on Node 20 (see globsync-hook.mjs).
import fs from 'node:fs';

export * from 'node:fs';
export { globSync } from 'glob';
export default fs;
