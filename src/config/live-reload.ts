// When the running config is read again: on SIGHUP, and when the config file or a secret file it references changes
// (debounced: editors and secret managers replace files, so any event on one counts). Reloads run one at a time, in
// order, so two can never race on an upstream; a reload that could not apply everything is tried again a little later.
import { type FSWatcher, watch } from 'node:fs';
import type { Logger } from 'pino';

/** Quiet time after a file event before the reload starts (one reload per burst of events). */
const DEBOUNCE_MS = 100;
/** A reload that left an upstream on its old config is tried again after this long. */
const RETRY_MS = 5000;

export interface LiveReloadOptions {
  logger: Logger;
  /** The config file and the secret files it references (watched again after each reload). */
  files: () => readonly string[];
  /** Reads the config again and applies it; true when something could not be applied and it should be retried. */
  apply: (reason: string) => Promise<boolean>;
}

export class LiveReload {
  private watchers: FSWatcher[] = [];
  private debounce: NodeJS.Timeout | undefined;
  private retry: NodeJS.Timeout | undefined;
  private chain: Promise<void> = Promise.resolve();
  private stopped = false;
  private rewatchTried = false;
  private readonly onSighup = () => void this.request('SIGHUP');

  constructor(private readonly opts: LiveReloadOptions) {}

  /** Starts listening for SIGHUP and watching the files. */
  start(): void {
    process.on('SIGHUP', this.onSighup);
    this.watchFiles();
  }

  /** One reload, after those already asked for; resolves when it is done. */
  request(reason: string): Promise<void> {
    const run = this.chain.then(() => this.run(reason));
    this.chain = run.catch((err: unknown) => this.opts.logger.error({ err }, 'config reload failed'));
    return this.chain;
  }

  stop(): void {
    this.stopped = true;
    process.off('SIGHUP', this.onSighup);
    clearTimeout(this.debounce);
    clearTimeout(this.retry);
    for (const w of this.watchers) w.close();
    this.watchers = [];
  }

  private async run(reason: string): Promise<void> {
    if (this.stopped) return;
    clearTimeout(this.retry);
    const again = await this.opts.apply(reason);
    if (this.stopped) return;
    this.watchFiles();
    if (again) {
      // The file already says what it should be: a failed change (an upstream that did not start) is tried again.
      this.retry = setTimeout(() => void this.request('retry after a failed upstream change'), RETRY_MS);
      this.retry.unref();
    }
  }

  private watchFiles(): void {
    for (const w of this.watchers) w.close();
    this.watchers = [];
    let missing = false;
    for (const file of this.opts.files()) {
      try {
        const watcher = watch(file, () => this.fileChanged());
        // A watcher can fail later (the file deleted, on some systems): watched again at the next reload.
        watcher.on('error', () => this.fileChanged());
        this.watchers.push(watcher);
      } catch (err) {
        // Replaced at this very moment (an editor's save), or gone: tried again shortly, and a reload then reads it.
        missing = true;
        this.opts.logger.warn({ err: (err as Error).message, file }, 'cannot watch file; trying again in 5 s');
      }
    }
    // Once: a file that stays missing is the operator's to fix (a reload now would fail on it), then SIGHUP.
    if (missing && !this.rewatchTried && !this.stopped) {
      this.rewatchTried = true;
      clearTimeout(this.retry);
      this.retry = setTimeout(() => void this.request('a watched file came back'), RETRY_MS);
      this.retry.unref();
    }
    if (!missing) this.rewatchTried = false;
  }

  private fileChanged(): void {
    clearTimeout(this.debounce);
    this.debounce = setTimeout(() => void this.request('file changed'), DEBOUNCE_MS);
  }
}
