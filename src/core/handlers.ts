/**
 * What the broker does with each request, in the exact order of checks of the C broker.
 *
 * A handler is a generator: it yields a {@link Step} when it needs body bytes or a digest, and
 * returns an {@link Outcome} (the reply, the audit record, and what became of the descriptor).
 * The connection code feeds it. Nothing here makes a system call: what needs one (checking the
 * request's descriptor, reading seals, reopening an object, the clock) comes in through the
 * {@link RequestContext}, so handlers are tested by driving them with byte arrays and real memfds.
 *
 * The handlers live in `handlers/`, one module per request: `put.ts`, `get_drop_stat.ts`,
 * `list.ts`, `watch.ts`; `context.ts` holds the types they share and `reply.ts` the reply
 * builders. This module dispatches a header to its handler and re-exports what the broker uses.
 *
 * @module
 */

import { Cmd, type Header } from "../protocol/wire.ts";
import type { Handler, Outcome, RequestContext } from "./handlers/context.ts";
import { unknownCommandOutcome } from "./handlers/reply.ts";
import { put } from "./handlers/put.ts";
import { getOrDrop } from "./handlers/get_drop_stat.ts";
import { list } from "./handlers/list.ts";
import { watch } from "./handlers/watch.ts";
import { usage } from "./handlers/usage.ts";

export type {
  DigestAnswer,
  Handler,
  Outcome,
  ReplyStream,
  RequestContext,
  SealedCheck,
  Segment,
  Step,
  StepInput,
} from "./handlers/context.ts";
export {
  badHeaderOutcome,
  clientQuotaOutcome,
  errorOutcome,
  fdLimitOutcome,
  unknownCommandOutcome,
} from "./handlers/reply.ts";
export { buildListText, LIST_CHUNK, ListStream } from "./handlers/list.ts";

/** Start the handler for a valid header (magic and version already checked). */
export function handle(h: Header, ctx: RequestContext): Handler {
  switch (h.cmd) {
    case Cmd.PUT:
      return put(h, ctx);
    case Cmd.GET:
      return getOrDrop(h, ctx, "get");
    case Cmd.LIST:
      return list(h, ctx);
    case Cmd.DROP:
      return getOrDrop(h, ctx, "drop");
    case Cmd.STAT:
      return getOrDrop(h, ctx, "stat");
    case Cmd.WATCH:
      return watch(h, ctx);
    case Cmd.USAGE:
      return usage(h, ctx);
    default:
      return done(unknownCommandOutcome(h.cmd));
  }
}

// deno-lint-ignore require-yield
function* done(o: Outcome): Handler {
  return o;
}
