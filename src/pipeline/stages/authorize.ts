// Stage 3. The agent's allow-list (globs). Tools it may not call are also absent from its tools/list.
import { BusError } from '../../errors.js';
import type { Stage } from '../compose.js';

export function authorize(): Stage {
  return function authorizeStage(ctx, next) {
    if (!ctx.agent.allows(ctx.toolName)) {
      throw new BusError('auth', 'tool_not_allowed', `Agent ${ctx.agent.id} may not call ${ctx.toolName}.`);
    }
    return next();
  };
}
