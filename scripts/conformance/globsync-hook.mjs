// Node 20 has no fs.globSync, which the conformance suite (built for Node 22) imports by name from 'fs'.
// A builtin's ESM export names are fixed when it is first loaded, so patching fs is not enough: this hook
// sends the suite's own `import ... from "fs"` to a shim that re-exports fs plus the glob package's globSync.
// On a Node that has fs.globSync the hook does nothing.
import fs from 'node:fs';
import { register } from 'node:module';

if (typeof fs.globSync !== 'function') {
  register('./globsync-resolve.mjs', import.meta.url);
}
