// The two protocol eras toward an upstream (DESIGN.md section 13). A request is sent in the era its own `_meta` says
// (a 2026-07-28 agent's envelope is forwarded with its call), on the channel of that era when the upstream has it.
// When the upstream only has the other era, toolbus translates: a 2025 agent's request goes to a 2026-only upstream
// with an envelope of the bus's making, and the upstream's InputRequiredResult rounds are answered inside that one
// call (the embedded elicitation and sampling requests go to the agent whose call it is; roots are what a roots/list
// request would get, generation.ts).

import type { ServerRequestAsker } from './generation.js';

export const MODERN_VERSION = '2026-07-28';
export const PROTOCOL_VERSION_META = 'io.modelcontextprotocol/protocolVersion';
export const CLIENT_CAPABILITIES_META = 'io.modelcontextprotocol/clientCapabilities';
export const CLIENT_INFO_META = 'io.modelcontextprotocol/clientInfo';

export type Era = 'legacy' | 'modern';

/** Rounds of input a translated call may take before toolbus gives up on it (an upstream that never completes). */
export const MAX_ROUNDS = 8;

export function isModernMeta(meta: unknown): boolean {
  if (meta === null || typeof meta !== 'object') return false;
  const v = (meta as Record<string, unknown>)[PROTOCOL_VERSION_META];
  return typeof v === 'string' && v >= MODERN_VERSION;
}

/** Params with a 2026-07-28 envelope; an agent's own envelope (its capabilities) is kept when it sent one. */
export function withEnvelope(
  params: Record<string, unknown> | undefined,
  capabilities: Record<string, unknown>,
  clientInfo: Record<string, unknown>,
): Record<string, unknown> {
  const meta = (params?._meta as Record<string, unknown> | undefined) ?? {};
  if (isModernMeta(meta)) return params ?? {};
  return {
    ...params,
    _meta: {
      ...meta,
      [PROTOCOL_VERSION_META]: MODERN_VERSION,
      [CLIENT_CAPABILITIES_META]: capabilities,
      [CLIENT_INFO_META]: clientInfo,
    },
  };
}

/** Params without the 2026-07-28 envelope, for a 2025 session. */
export function withoutEnvelope(params: Record<string, unknown> | undefined): Record<string, unknown> | undefined {
  const meta = params?._meta as Record<string, unknown> | undefined;
  if (!meta) return params;
  const { [PROTOCOL_VERSION_META]: _v, [CLIENT_CAPABILITIES_META]: _c, [CLIENT_INFO_META]: _i, ...rest } = meta;
  return { ...params, _meta: rest };
}

export function isInputRequired(result: Record<string, unknown>): boolean {
  return result.resultType === 'input_required';
}

/**
 * A 2025 agent's call to a 2026-only upstream: every InputRequiredResult is answered here (elicitation and sampling
 * by asking the agent on its call's stream, roots from the upstream's config) and the request is sent again with the
 * answers and the upstream's requestState, until the upstream completes it.
 */
export async function answerInputRounds(
  send: (params: Record<string, unknown> | undefined) => Promise<Record<string, unknown>>,
  params: Record<string, unknown> | undefined,
  asker: ServerRequestAsker | undefined,
  roots: () => Promise<readonly { uri: string; name?: string | undefined }[]>,
  signal?: AbortSignal,
): Promise<Record<string, unknown>> {
  // The call's own deadline and cancellation hold between rounds too, while the agent is being asked.
  const untilAborted = <T>(p: Promise<T>): Promise<T> =>
    signal
      ? new Promise<T>((resolve, reject) => {
          if (signal.aborted) return reject(signal.reason);
          const onAbort = () => reject(signal.reason);
          signal.addEventListener('abort', onAbort, { once: true });
          p.then(resolve, reject).finally(() => signal.removeEventListener('abort', onAbort));
        })
      : p;
  let current = params;
  for (let round = 0; round <= MAX_ROUNDS; round++) {
    const result = await send(current);
    if (!isInputRequired(result)) {
      const { resultType: _drop, ...rest } = result;
      return rest;
    }
    if (round === MAX_ROUNDS) break;
    const requests = (result.inputRequests ?? {}) as Record<string, { method?: unknown; params?: unknown }>;
    const responses: Record<string, unknown> = {};
    for (const [key, req] of Object.entries(requests)) {
      const method = typeof req?.method === 'string' ? req.method : '';
      const reqParams = (req?.params ?? undefined) as Record<string, unknown> | undefined;
      if (method === 'roots/list') responses[key] = { roots: (await roots()).map((r) => ({ ...r })) };
      else if (!asker) throw new InputNotGiven(`the agent's request cannot be asked ${method.slice(0, 60)}`);
      else {
        try {
          responses[key] = await untilAborted(asker.ask(method, reqParams));
        } catch (err) {
          if (signal?.aborted) throw err;
          throw new InputNotGiven(`the agent did not answer ${method.slice(0, 60)}: ${(err as Error).message}`);
        }
      }
    }
    const { inputResponses: _old, requestState: _state, ...rest } = current ?? {};
    current = {
      ...rest,
      inputResponses: responses,
      ...(result.requestState !== undefined ? { requestState: result.requestState } : {}),
    };
  }
  throw new InputNotGiven(`the upstream still asked for input after ${MAX_ROUNDS} rounds of answers`);
}

/**
 * A translated call that ended without its input: the agent could not or did not answer, or the upstream kept asking.
 * The upstream was waiting for input, so it did nothing it needed the input for: for the key, nothing was done (the
 * key is released, the error is not recorded).
 */
export class InputNotGiven extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'InputNotGiven';
  }
}
