/**
 * `memfdbus list [--job-id JOB] [--socket PATH]`: print the visible objects, exactly as the
 * broker sends the listing.
 *
 * @module
 */

import { Client } from "../client.ts";
import { UsageError } from "../errors.ts";
import { DEFAULT_SOCKET } from "../options.ts";
import { CLI_SYNC_WAIT_US } from "./args.ts";
import { flagValue, resolveJob } from "./args.ts";

/** Run `list`; returns the exit code. */
export async function listCommand(args: readonly string[]): Promise<number> {
  let socket = DEFAULT_SOCKET;
  let jobFlag: string | undefined;
  for (let i = 0; i < args.length; i++) {
    const a = args[i] ?? "";
    if (a === "--socket") socket = flagValue(args, i++, a);
    else if (a === "--job-id") jobFlag = flagValue(args, i++, a);
    else throw new UsageError(`unexpected argument: ${a}`);
  }
  const job = resolveJob(jobFlag);
  await using client = new Client({
    socket,
    jobId: job,
    keepAlive: false,
    syncWaitUs: CLI_SYNC_WAIT_US,
  });
  const text = await client.listRaw();
  let off = 0;
  while (off < text.length) off += Deno.stdout.writeSync(text.subarray(off));
  return 0;
}
