/**
 * `memfdbus drop OBJECT_ID` / `drop --name NAME`: remove an object and print its id (with
 * `--json`, `{id, size}`).
 *
 * @module
 */

import { Client } from "../client.ts";
import { UsageError } from "../errors.ts";
import { DEFAULT_SOCKET } from "../core/options.ts";
import { CLI_SYNC_WAIT_US } from "./args.ts";
import { checkName, flagValue, parseId, resolveJob } from "./args.ts";
import { jsonLine, out } from "./output.ts";
import { DROP_USAGE } from "./usage.ts";

/** Run `drop`; returns the exit code. */
export async function dropCommand(args: readonly string[]): Promise<number> {
  let socket = DEFAULT_SOCKET;
  let jobFlag: string | undefined;
  let name: string | undefined;
  let id: bigint | undefined;
  let json = false;
  for (let i = 0; i < args.length; i++) {
    const a = args[i] ?? "";
    if (a === "--socket") socket = flagValue(args, i++, a);
    else if (a === "--job-id") jobFlag = flagValue(args, i++, a);
    else if (a === "--name") name = flagValue(args, i++, a);
    else if (a === "--json") json = true;
    else if (name === undefined && id === undefined) id = parseId(a);
    else throw new UsageError(`unexpected argument: ${a}`);
  }
  if ((id !== undefined) === (name !== undefined)) throw new UsageError(DROP_USAGE);
  if (name !== undefined) checkName(name);
  const job = resolveJob(jobFlag);

  await using client = new Client({
    socket,
    jobId: job,
    keepAlive: false,
    syncWaitUs: CLI_SYNC_WAIT_US,
  });
  const r = await client.drop(id !== undefined ? id : { name: name ?? "" });
  out(json ? jsonLine({ id: r.id, size: r.size }) : `${r.id}\n`);
  return 0;
}
