/**
 * `memfdbus put FILE [--name NAME | --content-addressed] [--job-id JOB] [--allow-job JOB]
 * [--socket PATH]`: publish a file (or stdin for `-`) and print its id.
 *
 * @module
 */

import { Client } from "../client.ts";
import { UsageError } from "../errors.ts";
import { DEFAULT_SOCKET } from "../options.ts";
import { CLI_SYNC_WAIT_US } from "./args.ts";
import { jobIdFromEnv } from "../client.ts";
import { checkJob, checkName, flagValue } from "./args.ts";
import { out } from "./output.ts";
import { PUT_USAGE } from "./usage.ts";

/** Run `put`; returns the exit code. */
export async function putCommand(args: readonly string[]): Promise<number> {
  let socket = DEFAULT_SOCKET;
  let name: string | undefined;
  let contentAddressed = false;
  let jobFlag: string | undefined;
  let allow: string | undefined;
  let path: string | undefined;
  for (let i = 0; i < args.length; i++) {
    const a = args[i] ?? "";
    if (a === "--socket") socket = flagValue(args, i++, a);
    else if (a === "--name") name = flagValue(args, i++, a);
    else if (a === "--content-addressed") contentAddressed = true;
    else if (a === "--job-id") jobFlag = flagValue(args, i++, a);
    else if (a === "--allow-job") allow = flagValue(args, i++, a);
    else if (path === undefined) path = a;
    else throw new UsageError(`unexpected argument: ${a}`);
  }
  if (path === undefined) throw new UsageError(PUT_USAGE);
  if (contentAddressed && name !== undefined) {
    throw new UsageError("--content-addressed cannot be combined with --name");
  }
  const label = name ?? (path === "-" ? "stdin" : path.slice(path.lastIndexOf("/") + 1));
  const job = jobFlag ?? jobIdFromEnv();
  if (allow !== undefined && job === null) {
    throw new UsageError("--allow-job requires --job-id or MEMFDBUS_JOB_ID");
  }
  if (job !== null) checkJob("--job-id", job);
  if (allow !== undefined) checkJob("--allow-job", allow);
  // The name is checked before any copying (the C CLI copied the whole input first, D23).
  if (!contentAddressed) checkName(label);

  await using client = new Client({
    socket,
    jobId: job,
    keepAlive: false,
    syncWaitUs: CLI_SYNC_WAIT_US,
  });
  const source = path === "-" ? { fd: 0, fromCurrentOffset: true } : path;
  const result = await client.put(source, {
    ...(contentAddressed ? { contentAddressed: true } : { name: label }),
    ...(allow === undefined ? {} : { allowJob: allow }),
  });
  out(`${result.id}\n`);
  return 0;
}
