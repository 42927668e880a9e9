/**
 * `memfdbus get OBJECT_ID OUT` / `get --name NAME OUT`: fetch an object into a file or stdout.
 * Extensions: `--wait[=SECONDS]` (by name: wait for the name to be published) and `--json`
 * (describe what was written, on stdout; not with OUT `-`).
 *
 * @module
 */

import { Client, type GetOptions } from "../client.ts";
import { UsageError } from "../errors.ts";
import { DEFAULT_SOCKET } from "../core/options.ts";
import { CLI_SYNC_WAIT_US } from "./args.ts";
import { checkName, checkWait, flagValue, parseId, parseWaitFlag, resolveJob } from "./args.ts";
import { jsonLine, out, writeObject } from "./output.ts";
import { ProgressLine } from "./progress.ts";
import { GET_USAGE } from "./usage.ts";

/** Run `get`; returns the exit code. */
export async function getCommand(args: readonly string[]): Promise<number> {
  let socket = DEFAULT_SOCKET;
  let jobFlag: string | undefined;
  let name: string | undefined;
  let id: bigint | undefined;
  let outPath: string | undefined;
  let json = false;
  let wait: number | true | undefined;
  for (let i = 0; i < args.length; i++) {
    const a = args[i] ?? "";
    const w = parseWaitFlag(a);
    if (w !== undefined) wait = w;
    else if (a === "--socket") socket = flagValue(args, i++, a);
    else if (a === "--job-id") jobFlag = flagValue(args, i++, a);
    else if (a === "--name") name = flagValue(args, i++, a);
    else if (a === "--json") json = true;
    else if (name === undefined && id === undefined) id = parseId(a);
    else if (outPath === undefined) outPath = a;
    else throw new UsageError(`unexpected argument: ${a}`);
  }
  if ((id !== undefined) === (name !== undefined) || outPath === undefined) {
    throw new UsageError(GET_USAGE);
  }
  if (json && outPath === "-") throw new UsageError("--json cannot be combined with OUT -");
  checkWait(wait, name !== undefined);
  if (name !== undefined) checkName(name);
  const job = resolveJob(jobFlag);

  await using client = new Client({
    socket,
    jobId: job,
    keepAlive: false,
    syncWaitUs: CLI_SYNC_WAIT_US,
  });
  const options: GetOptions = wait === undefined ? {} : { wait };
  using obj = await client.get(id !== undefined ? id : { name: name ?? "" }, options);
  const progress = ProgressLine.start("get", obj.size);
  try {
    writeObject(
      obj.fd,
      obj.size,
      outPath,
      progress === null ? undefined : (n) => progress.update(n),
    );
  } finally {
    progress?.finish();
  }
  if (json) {
    out(jsonLine({ id: obj.id, size: obj.size, digest: obj.digest, name: obj.name, out: outPath }));
  }
  return 0;
}
