// Ownership of a SQLite state file: one bus process at a time, marked by `PATH.lock` holding the owner's pid.
// The lock is made by linking a fully written temp file into place, so nobody ever reads a half-written pid. A lock
// whose pid is dead is stale (its bus was killed) and is taken over. Our own pid in a lock we did not take is a
// previous incarnation too (pid 1 in a restarted container).
import { linkSync, readFileSync, unlinkSync, writeFileSync } from 'node:fs';
import { resolve } from 'node:path';

/** Lock files held by this process, so a second store on the same file in this process is refused as well. */
const held = new Set<string>();

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function readPid(lockPath: string): number | undefined {
  try {
    const pid = Number.parseInt(readFileSync(lockPath, 'utf8'), 10);
    return Number.isInteger(pid) && pid > 0 ? pid : undefined;
  } catch {
    return undefined;
  }
}

function unlinkQuietly(path: string): void {
  try {
    unlinkSync(path);
  } catch {
    // already gone
  }
}

/** Takes `${dbPath}.lock` or throws "another toolbus (pid N) owns PATH". Returns the release function. */
export function takeFileLock(dbPath: string): () => void {
  const lockPath = `${resolve(dbPath)}.lock`;
  if (held.has(lockPath)) throw new Error(`another toolbus (pid ${process.pid}) owns ${dbPath}`);
  const temp = `${lockPath}.${process.pid}.tmp`;
  writeFileSync(temp, `${process.pid}\n`);
  try {
    for (let attempt = 0; attempt < 3; attempt++) {
      try {
        linkSync(temp, lockPath);
        held.add(lockPath);
        return () => {
          held.delete(lockPath);
          if (readPid(lockPath) === process.pid) unlinkQuietly(lockPath);
        };
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      }
      const owner = readPid(lockPath);
      if (owner !== undefined && owner !== process.pid && isAlive(owner)) {
        throw new Error(`another toolbus (pid ${owner}) owns ${dbPath}`);
      }
      unlinkQuietly(lockPath);
    }
    throw new Error(`could not take the lock ${lockPath}: it keeps reappearing`);
  } finally {
    unlinkQuietly(temp);
  }
}

/** True while `${dbPath}.lock` exists and names this process. */
export function stillLocked(dbPath: string): boolean {
  return readPid(`${resolve(dbPath)}.lock`) === process.pid;
}
