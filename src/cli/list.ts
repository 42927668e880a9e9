/**
 * `memfdbus list [--job-id JOB] [--socket PATH] [--json]`: print the visible objects, exactly as
 * the broker sends the listing, or with `--json` as an array of
 * `{id, owner, allowed, size, digest, name}` (no owner or allowed job: null).
 *
 * @module
 */

import { Client } from "../client.ts";
import { UsageError } from "../errors.ts";
import { DEFAULT_SOCKET } from "../core/options.ts";
import { CLI_SYNC_WAIT_US } from "./args.ts";
import { flagValue, resolveJob } from "./args.ts";
import { jsonLine, out } from "./output.ts";

/** Run `list`; returns the exit code. */
export async function listCommand(args: readonly string[]): Promise<number> {
  let socket = DEFAULT_SOCKET;
  let jobFlag: string | undefined;
  let json = false;
  for (let i = 0; i < args.length; i++) {
    const a = args[i] ?? "";
    if (a === "--socket") socket = flagValue(args, i++, a);
    else if (a === "--job-id") jobFlag = flagValue(args, i++, a);
    else if (a === "--json") json = true;
    else throw new UsageError(`unexpected argument: ${a}`);
  }
  const job = resolveJob(jobFlag);
  await using client = new Client({
    socket,
    jobId: job,
    keepAlive: false,
    syncWaitUs: CLI_SYNC_WAIT_US,
  });
  if (json) {
    const entries = await client.list();
    out(jsonLine(entries.map((e) => ({
      id: e.id,
      owner: e.owner,
      allowed: e.allowed,
      size: e.size,
      digest: e.digest,
      name: e.name,
    }))));
    return 0;
  }
  const text = await client.listRaw();
  let off = 0;
  while (off < text.length) off += Deno.stdout.writeSync(text.subarray(off));
  return 0;
}
