// Multi round-trip requests as a 2026-07-28 agent sees them (DESIGN.md section 13), in one place for the front:
// - the upstream's own InputRequiredResult reaches the agent with its requestState sealed (request-state.ts), and the
//   agent's retry has it unsealed before anything else runs;
// - a 2025 upstream's questions during the call become an InputRequiredResult naming a parked call
//   (parked-calls.ts), and the retry that names it is answered here, without running the request again.
import { capabilityFor } from './agent-asks.js';
import { PARKED_STATE, ParkedCall } from './parked-calls.js';
import { RequestStateSeal, type SealBinding } from './request-state.js';
import { METHOD_NOT_FOUND } from './rpc.js';

type Result = Record<string, unknown>;

/** The requests during which an upstream may ask the agent something (the others are answered at once). */
const ASKING_METHODS = new Set(['tools/call', 'prompts/get', 'resources/read']);

/** What a 2026-07-28 request's requestState says: go on (with the upstream's own state), resume a parked call, or stop. */
export type Opened =
  | { kind: 'run'; params: Record<string, unknown> | undefined }
  | { kind: 'resume'; call: ParkedCall<Result> }
  | { kind: 'refuse'; message: string };

/** How a parked call's retry went: a result to reply with, or a refusal of the retry itself. */
export type Resumed = { kind: 'result'; result: Result } | { kind: 'refuse'; message: string };

export class InputRounds {
  private readonly seal: RequestStateSeal;
  /** 2026-07-28 agents' calls waiting for their answers, by id. */
  private readonly parked = new Map<string, ParkedCall<Result>>();

  /** `sealKey`: shared by every replica on the same store (request-state.ts: sharedSealKey); random if absent. */
  constructor(sealKey?: Buffer) {
    this.seal = new RequestStateSeal(sealKey);
  }

  /** Unseals a retry's requestState; a request without one runs as it is. */
  open(binding: SealBinding): Opened {
    const params = binding.params;
    if (params?.requestState === undefined) return { kind: 'run', params };
    const opened = this.seal.open(binding, params.requestState);
    if (!opened)
      return {
        kind: 'refuse',
        message: 'Invalid params: requestState was not issued by toolbus for this agent and request, or was altered',
      };
    const parkId = (opened.inner as Record<string, unknown> | null | undefined)?.[PARKED_STATE];
    if (typeof parkId === 'string') {
      const call = this.parked.get(parkId);
      if (!call || call.agentId !== binding.agentId)
        return {
          kind: 'refuse',
          message:
            'Invalid params: the call this requestState names is no longer pending here (it expired, ended, or the retry reached another toolbus replica)',
        };
      return { kind: 'resume', call };
    }
    const { requestState: _sealed, ...rest } = params;
    return { kind: 'run', params: opened.inner === undefined ? rest : { ...rest, requestState: opened.inner } };
  }

  /** A parked call for this request if an upstream may ask during it, else undefined. */
  parkable(agentId: string, method: string): ParkedCall<Result> | undefined {
    return ASKING_METHODS.has(method) ? new ParkedCall<Result>(agentId, (c) => this.parked.delete(c.id)) : undefined;
  }

  /**
   * The asker of a parked call: a question for a capability the agent declared becomes an input request; one it did
   * not declare is the agent's -32021 (parked-calls.ts: refuse).
   */
  askerFor(call: ParkedCall<Result>, caps: Record<string, unknown>) {
    return (method: string, p: Record<string, unknown> | undefined) => {
      const needed = capabilityFor(method) ?? method;
      return caps[needed] === undefined ? call.refuse(method, needed) : call.ask(method, p);
    };
  }

  /** Waits for the call's end or its questions: the result to send, sealed as this binding's. */
  async step(call: ParkedCall<Result>, binding: SealBinding, running?: Promise<Result>): Promise<Result> {
    const step = await call.next(running);
    if ('input' in step) return this.park(call, step.input, binding);
    return this.sealed(step.done, binding);
  }

  /** The retry of a parked call: its answers complete the upstream's requests, then the call goes on. */
  async resume(call: ParkedCall<Result>, binding: SealBinding): Promise<Resumed> {
    const responses = binding.params?.inputResponses;
    if (responses === null || typeof responses !== 'object' || Array.isArray(responses))
      return {
        kind: 'refuse',
        message: 'Invalid params: inputResponses must be an object keyed by the inputRequests keys',
      };
    // Answers missing or malformed: the questions still open are asked again.
    if (call.answer(responses as Record<string, unknown>) > 0)
      return { kind: 'result', result: this.park(call, call.pending(), binding) };
    this.parked.delete(call.id);
    return { kind: 'result', result: await this.step(call, binding) };
  }

  /** An upstream's own InputRequiredResult, its requestState sealed for the agent; other results unchanged. */
  sealed(result: Result, binding: SealBinding): Result {
    if (result.resultType !== 'input_required' || result.requestState === undefined) return result;
    return { ...result, requestState: this.seal.seal(binding, result.requestState) };
  }

  private park(call: ParkedCall<Result>, inputRequests: Record<string, unknown>, binding: SealBinding): Result {
    this.parked.set(call.id, call);
    // Each round's state differs (the round is in it), as a 2026 agent may expect of an evolving requestState.
    const requestState = this.seal.seal(binding, { [PARKED_STATE]: call.id, round: ++call.rounds });
    return { resultType: 'input_required', inputRequests, requestState };
  }
}

/** The error an upstream gets for a question the agent cannot be asked. */
export function cannotAsk(method: string): Error {
  return Object.assign(
    new Error(
      `the agent's client does not support ${method} (it declared no such capability, or does not accept text/event-stream)`,
    ),
    { code: METHOD_NOT_FOUND },
  );
}
