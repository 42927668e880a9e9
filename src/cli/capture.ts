/**
 * `memfdbus capture --name NAME [--job-id JOB] [--allow-job JOB] [--socket PATH] [--json]
 * [--always] -- COMMAND [ARG...]`: run COMMAND with its stdout going straight into a new memfd
 * (no pipe, no copy), then seal that memfd and publish it as is. The memfd plays the part of a
 * pipe whose contents stay behind.
 *
 * The output is published only when COMMAND exits with status 0, unless `--always` is given.
 * Either way capture exits with COMMAND's status (128 + the signal number when a signal killed
 * it). A published object's id is printed like `put` prints it (`--json`: `{id, size, digest,
 * name}`); when nothing is published a one-line notice goes to stderr. A failure of capture
 * itself (bad arguments, the command cannot be started, the publish fails) exits 1.
 *
 * The object holds what was written by the time COMMAND exits. A background process it left
 * behind with the descriptor can no longer write once the memfd is sealed; one that still has a
 * writable shared mapping of it makes sealing fail (`F_ADD_SEALS: Device or resource busy`).
 *
 * @module
 */

import { Client, jobIdFromEnv, type PutOptions } from "../client.ts";
import { UsageError } from "../errors.ts";
import { tryLstat } from "../sys/fd.ts";
import { errnoErrorOf } from "../ffi.ts";
import { ENOENT } from "../sys/linux.ts";
import { Memfd } from "../sys/memfd.ts";
import { DEFAULT_SOCKET } from "../core/options.ts";
import { CLI_SYNC_WAIT_US } from "./args.ts";
import { checkJob, checkName, flagValue } from "./args.ts";
import { err, jsonLine, out } from "./output.ts";
import {
  type ChildExit,
  describeExit,
  exitCodeOf,
  spawnWithStdout,
  waitChild,
} from "../sys/spawn.ts";
import { CAPTURE_USAGE } from "./usage.ts";

/** Run `capture`; returns the exit code (COMMAND's own status on success). */
export async function captureCommand(args: readonly string[]): Promise<number> {
  let socket = DEFAULT_SOCKET;
  let name: string | undefined;
  let jobFlag: string | undefined;
  let allow: string | undefined;
  let json = false;
  let always = false;
  let cmdIndex = -1;
  for (let i = 0; i < args.length; i++) {
    const a = args[i] ?? "";
    if (a === "--socket") socket = flagValue(args, i++, a);
    else if (a === "--name") name = flagValue(args, i++, a);
    else if (a === "--job-id") jobFlag = flagValue(args, i++, a);
    else if (a === "--allow-job") allow = flagValue(args, i++, a);
    else if (a === "--json") json = true;
    else if (a === "--always") always = true;
    else if (a === "--") {
      cmdIndex = i + 1;
      break;
    } else throw new UsageError(`unexpected argument before --: ${a}`);
  }
  if (name === undefined || cmdIndex < 0 || cmdIndex >= args.length) {
    throw new UsageError(CAPTURE_USAGE);
  }
  const job = jobFlag ?? jobIdFromEnv();
  if (allow !== undefined && job === null) {
    throw new UsageError("--allow-job requires --job-id or MEMFDBUS_JOB_ID");
  }
  if (job !== null) checkJob("--job-id", job);
  if (allow !== undefined) checkJob("--allow-job", allow);
  checkName(name);
  // Fail before running the command when no broker can be there at all: its output would be lost.
  if (tryLstat(socket) === -ENOENT) throw errnoErrorOf("connect", ENOENT);

  using memfd = Memfd.create(name);
  const exit = runInto(args.slice(cmdIndex), memfd);
  if (exit.kind !== "exited" || exit.code !== 0) {
    if (!always) {
      err(`not published: the command ${describeExit(exit)} (--always publishes anyway)\n`);
      return exitCodeOf(exit);
    }
  }
  memfd.seal();
  await using client = new Client({
    socket,
    jobId: job,
    keepAlive: false,
    syncWaitUs: CLI_SYNC_WAIT_US,
  });
  const options: PutOptions = { name, ...(allow === undefined ? {} : { allowJob: allow }) };
  const result = await client.put(memfd, options);
  out(
    json
      ? jsonLine({ id: result.id, size: result.size, digest: result.digest, name: result.name })
      : `${result.id}\n`,
  );
  return exitCodeOf(exit);
}

/**
 * Run the command with stdout on the memfd and wait for it. While it runs, SIGINT and SIGQUIT
 * from the terminal are left to the command (as system(3) does): capture then reports how the
 * command ended instead of dying first.
 */
function runInto(argv: readonly string[], memfd: Memfd): ChildExit {
  const pid = spawnWithStdout(argv, memfd.fd);
  const ignore = (): void => {};
  Deno.addSignalListener("SIGINT", ignore);
  Deno.addSignalListener("SIGQUIT", ignore);
  try {
    return waitChild(pid);
  } finally {
    Deno.removeSignalListener("SIGINT", ignore);
    Deno.removeSignalListener("SIGQUIT", ignore);
  }
}
