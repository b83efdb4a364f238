// node:fs plus globSync (from the `glob` package), for the conformance suite on Node 20.
import fs from 'node:fs';
import { globSync as globSyncFromPackage } from 'glob';

export * from 'node:fs';
export default fs;
export function globSync(pattern, options) {
  return globSyncFromPackage(pattern, options ?? {});
}
