// Koa-style composition of the pipeline stages: each stage gets the context and a `next` that runs the rest.
// A stage may act before next() (admission), after it (recording the result) and in `finally` (releasing).
import type { CallContext, ToolResult } from './context.js';

export type Next = () => Promise<ToolResult>;
export type Stage = (ctx: CallContext, next: Next) => Promise<ToolResult>;

export function compose(stages: readonly Stage[]): (ctx: CallContext) => Promise<ToolResult> {
  return function runPipeline(ctx) {
    let last = -1;
    const dispatch = (i: number): Promise<ToolResult> => {
      // A stage that calls next() twice would run the upstream call twice: refuse loudly instead.
      if (i <= last) return Promise.reject(new Error('pipeline: next() called more than once'));
      last = i;
      const stage = stages[i];
      if (!stage) return Promise.reject(new Error('pipeline: the last stage must not call next()'));
      return stage(ctx, () => dispatch(i + 1));
    };
    return dispatch(0);
  };
}
