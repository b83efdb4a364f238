// Stage 2. Exposed name → catalog entry (upstream, tool, policy). Unknown names stop here with not_found.
import { BusError } from '../../errors.js';
import type { Stage } from '../compose.js';
import type { PipelineServices } from '../services.js';

export function resolveTool(services: PipelineServices): Stage {
  return function resolveToolStage(ctx, next) {
    const tool = services.catalog.get(ctx.toolName);
    if (!tool) {
      throw new BusError('not_found', 'unknown_tool', `No tool named ${JSON.stringify(ctx.toolName)} is on this bus.`);
    }
    ctx.tool = tool;
    return next();
  };
}
