/**
 * `memfdbus get OBJECT_ID OUT` / `get --name NAME OUT`: fetch an object into a file or stdout.
 *
 * @module
 */

import { Client } from "../client.ts";
import { UsageError } from "../errors.ts";
import { DEFAULT_SOCKET } from "../options.ts";
import { CLI_SYNC_WAIT_US } from "./args.ts";
import { checkName, flagValue, parseId, resolveJob } from "./args.ts";
import { writeObject } from "./output.ts";
import { GET_USAGE } from "./usage.ts";

/** Run `get`; returns the exit code. */
export async function getCommand(args: readonly string[]): Promise<number> {
  let socket = DEFAULT_SOCKET;
  let jobFlag: string | undefined;
  let name: string | undefined;
  let id: bigint | undefined;
  let outPath: string | undefined;
  for (let i = 0; i < args.length; i++) {
    const a = args[i] ?? "";
    if (a === "--socket") socket = flagValue(args, i++, a);
    else if (a === "--job-id") jobFlag = flagValue(args, i++, a);
    else if (a === "--name") name = flagValue(args, i++, a);
    else if (name === undefined && id === undefined) id = parseId(a);
    else if (outPath === undefined) outPath = a;
    else throw new UsageError(`unexpected argument: ${a}`);
  }
  if ((id !== undefined) === (name !== undefined) || outPath === undefined) {
    throw new UsageError(GET_USAGE);
  }
  if (name !== undefined) checkName(name);
  const job = resolveJob(jobFlag);

  await using client = new Client({
    socket,
    jobId: job,
    keepAlive: false,
    syncWaitUs: CLI_SYNC_WAIT_US,
  });
  using obj = await client.get(id !== undefined ? id : { name: name ?? "" });
  writeObject(obj.fd, obj.size, outPath);
  return 0;
}
