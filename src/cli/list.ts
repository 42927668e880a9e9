/**
 * `memfdbus list [--job-id JOB] [--socket PATH] [--json]`: print the visible objects, exactly as
 * the broker sends the listing, or with `--json` as an array of
 * `{id, owner, allowed, size, digest, name}` (no owner or allowed job: null).
 *
 * @module
 */

import { Client } from "../client.ts";
import { UsageError } from "../errors.ts";
import {
  CLI_SYNC_WAIT_US,
  CLIENT_FLAGS,
  clientDefaults,
  clientFlag,
  parseCommandLine,
  resolveJob,
} from "./args.ts";
import { jsonLine, out } from "./output.ts";

/** Run `list`; returns the exit code. */
export async function listCommand(args: readonly string[]): Promise<number> {
  const { items } = parseCommandLine(args, { ...CLIENT_FLAGS, json: "boolean" });
  const s = clientDefaults();
  let json = false;
  for (const it of items) {
    if (clientFlag(s, it)) continue;
    if (it.kind === "switch" && it.flag === "--json") json = true;
    else if (it.kind === "positional") throw new UsageError(`unexpected argument: ${it.text}`);
  }
  const job = resolveJob(s.jobFlag);
  await using client = new Client({
    socket: s.socket,
    jobId: job,
    keepAlive: false,
    syncWaitUs: CLI_SYNC_WAIT_US,
    timeoutMs: s.timeoutMs,
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
