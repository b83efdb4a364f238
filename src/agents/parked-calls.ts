// A 2026-07-28 agent's call to an upstream that speaks 2025 and asks for input the 2025 way, by sending elicitation or
// sampling requests while the call runs (DESIGN.md section 13). The agent's revision takes no pushed requests: it gets
// an InputRequiredResult whose (sealed) state names this parked call, while the upstream call stays open here. The
// agent's retry carries the answers; they complete the upstream's requests, and the retry then waits for the call's
// end or its next questions. A parked call lives on the replica that holds the upstream call, until it ends or
// PARK_TTL_MS passes without a retry (then the upstream's questions are refused and its answer is dropped).
import { randomUUID } from 'node:crypto';
import { METHOD_NOT_FOUND, RpcError } from './rpc.js';

const MISSING_CAPABILITY = -32021;

const PARK_TTL_MS = 5 * 60_000;
/** Requests an upstream sends together arrive a few ticks apart: they are gathered into one InputRequiredResult. */
const GATHER_MS = 15;

export interface InputRequest {
  method: string;
  params?: Record<string, unknown>;
}

type Step<T> = { done: T } | { input: Record<string, InputRequest> };

interface Question {
  request: InputRequest;
  resolve: (answer: Record<string, unknown>) => void;
  reject: (err: Error) => void;
}

export const PARKED_STATE = 'toolbus/parked';

export class ParkedCall<T> {
  private parkedId: string | undefined;

  /** Made when the call is first parked: most calls never are, and pay nothing for it. */
  get id(): string {
    this.parkedId ??= randomUUID();
    return this.parkedId;
  }
  private readonly questions = new Map<string, Question>();
  private seq = 0;
  /** InputRequiredResults given for this call so far. */
  rounds = 0;
  private wake: (() => void) | undefined;
  private timer: NodeJS.Timeout | undefined;
  private failed: RpcError | undefined;
  private running: Promise<{ ok: true; value: T } | { ok: false; err: unknown }> | undefined;

  constructor(
    readonly agentId: string,
    private readonly onExpire: (call: ParkedCall<T>) => void,
  ) {}

  /** The asker handed to the pipeline: each upstream request becomes an input request of the next reply. */
  readonly ask = (method: string, params: Record<string, unknown> | undefined): Promise<Record<string, unknown>> =>
    new Promise((resolve, reject) => {
      const key = `${method.split('/')[0]}-${++this.seq}`;
      this.questions.set(key, { request: { method, ...(params ? { params } : {}) }, resolve, reject });
      this.wake?.();
    });

  /**
   * The upstream asked for something the agent's client did not declare. In the 2026-07-28 revision that is the
   * agent's error (-32021, MissingRequiredClientCapability), not a question: the agent gets it at once, and the
   * upstream's request is refused.
   */
  refuse(method: string, capability: string): Promise<never> {
    this.failed ??= new RpcError(MISSING_CAPABILITY, `Missing required client capability: ${capability}`, {
      requiredCapabilities: { [capability]: {} },
    });
    this.wake?.();
    return Promise.reject(
      Object.assign(new Error(`the agent's client does not support ${method}`), { code: METHOD_NOT_FOUND }),
    );
  }

  /** Waits for the call to end or to ask for input (the questions asked together, still unanswered). */
  async next(running?: Promise<T>): Promise<Step<T>> {
    clearTimeout(this.timer);
    if (running) {
      this.running = running.then(
        (value) => ({ ok: true as const, value }),
        (err: unknown) => ({ ok: false as const, err }),
      );
    }
    const run = this.running!;
    for (;;) {
      if (this.questions.size === 0) {
        const asked = new Promise<'asked'>((resolve) => {
          this.wake = () => resolve('asked');
        });
        const first = this.failed ? 'asked' : await Promise.race([run, asked]);
        this.wake = undefined;
        if (this.failed) throw this.failed;
        if (first !== 'asked') {
          if (first.ok) return { done: first.value };
          throw first.err;
        }
      }
      await new Promise((r) => setTimeout(r, GATHER_MS));
      if (this.failed) throw this.failed;
      if (this.questions.size > 0) {
        this.timer = setTimeout(() => this.expire(), PARK_TTL_MS).unref();
        return { input: this.pending() };
      }
    }
  }

  /** The unanswered questions, by key. */
  pending(): Record<string, InputRequest> {
    return Object.fromEntries([...this.questions].map(([k, q]) => [k, q.request]));
  }

  /** Answers the questions the agent answered; returns how many are still open. */
  answer(responses: Record<string, unknown>): number {
    for (const [key, q] of [...this.questions]) {
      const a = responses[key];
      if (a === null || typeof a !== 'object' || Array.isArray(a)) continue;
      this.questions.delete(key);
      q.resolve(a as Record<string, unknown>);
    }
    return this.questions.size;
  }

  private expire(): void {
    for (const q of this.questions.values()) q.reject(new Error('the agent did not answer in time'));
    this.questions.clear();
    this.onExpire(this);
  }
}
