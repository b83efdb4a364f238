// An upstream's requests (sampling/createMessage, elicitation/create) relayed to a 2025-era agent on its call's SSE
// stream, and the agent's answers, which it POSTs back. The id toolbus gives each request is random and bound to the
// agent asked: only that agent can answer it. A request ends with its call (the agent went away), or after ten
// minutes without an answer.
import { METHOD_NOT_FOUND } from './rpc.js';

const ANSWER_WITHIN_MS = 10 * 60_000;

/** The client capability each request an upstream may send an agent needs. */
const NEEDS: Readonly<Record<string, string>> = {
  'sampling/createMessage': 'sampling',
  'elicitation/create': 'elicitation',
  'roots/list': 'roots',
};

/** The capability a client must have declared to be asked `method`; undefined for a method no client is asked. */
export function capabilityFor(method: string): string | undefined {
  return NEEDS[method];
}

type Reply = { result?: unknown; error?: unknown };

export class AgentAsks {
  private readonly waiting = new Map<string, { agentId: string; settle: (reply: Reply) => void }>();
  private seq = 0;

  /** Sends the request with `write` and waits for the agent's answer. Never to a client that did not declare it. */
  ask(
    agentId: string,
    caps: Record<string, unknown>,
    method: string,
    params: Record<string, unknown> | undefined,
    signal: AbortSignal,
    write: (msg: Record<string, unknown>) => void,
  ): Promise<Record<string, unknown>> {
    const needed = capabilityFor(method);
    if (!needed || caps[needed] === undefined) {
      return Promise.reject(
        Object.assign(new Error(`the agent's client does not support ${method}`), { code: METHOD_NOT_FOUND }),
      );
    }
    const id = `toolbus-${++this.seq}-${Math.random().toString(36).slice(2, 10)}`;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiting.delete(id);
        reject(new Error(`the agent did not answer ${method} in time`));
      }, ANSWER_WITHIN_MS).unref();
      const onAbort = () => this.waiting.get(id)?.settle({ error: { code: -32603, message: 'the agent went away' } });
      signal.addEventListener('abort', onAbort, { once: true });
      this.waiting.set(id, {
        agentId,
        settle: (reply) => {
          clearTimeout(timer);
          signal.removeEventListener('abort', onAbort);
          this.waiting.delete(id);
          if (reply.error !== undefined) {
            const e = reply.error as { code?: number; message?: string };
            reject(Object.assign(new Error(e.message ?? 'error'), { code: e.code ?? -32603 }));
          } else resolve((reply.result ?? {}) as Record<string, unknown>);
        },
      });
      write({ jsonrpc: '2.0', id, method, ...(params ? { params } : {}) });
    });
  }

  /** An agent's answer (a JSON-RPC response it POSTed); ignored unless this agent was asked under that id. */
  answer(agentId: string, msg: { id?: unknown } & Reply): void {
    const waiting = this.waiting.get(String(msg.id));
    if (waiting && waiting.agentId === agentId) waiting.settle(msg);
  }
}
