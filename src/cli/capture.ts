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
 * itself exits 1 (a usage mistake 2; a COMMAND not found 127, one that cannot be executed 126).
 *
 * The object holds what was written by the time COMMAND exits. A background process it left
 * behind with the descriptor can no longer write once the memfd is sealed; one that still has a
 * writable shared mapping of it makes sealing fail (`F_ADD_SEALS: Device or resource busy`).
 *
 * @module
 */

import { jobIdFromEnv, type PutOptions } from "../client.ts";
import { ConnectError } from "../client/connection.ts";
import { UsageError } from "../errors.ts";
import { tryLstat } from "../sys/fd.ts";
import { ENOENT } from "../sys/linux.ts";
import { Memfd } from "../sys/memfd.ts";
import {
  checkJob,
  checkName,
  cliClient,
  CLIENT_FLAGS,
  clientDefaults,
  clientFlag,
  CliUsageError,
  parseCommandLine,
} from "./args.ts";
import { commandError } from "./exit.ts";
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
  const { items, rest } = parseCommandLine(
    args,
    {
      ...CLIENT_FLAGS,
      name: "string",
      "allow-job": "string",
      json: "boolean",
      always: "boolean",
    },
    true,
  );
  const s = clientDefaults();
  let name: string | undefined;
  let allow: string | undefined;
  let json = false;
  let always = false;
  for (const it of items) {
    if (clientFlag(s, it)) continue;
    if (it.kind === "flag" && it.flag === "--name") name = it.value;
    else if (it.kind === "flag" && it.flag === "--allow-job") allow = it.value;
    else if (it.kind === "switch" && it.flag === "--json") json = true;
    else if (it.kind === "switch" && it.flag === "--always") always = true;
    else if (it.kind === "positional") {
      throw new UsageError(`unexpected argument before --: ${it.text}`);
    }
  }
  if (name === undefined || rest === null || rest.length === 0) {
    throw new CliUsageError(CAPTURE_USAGE);
  }
  const job = s.jobFlag ?? jobIdFromEnv();
  if (allow !== undefined && job === null) {
    throw new UsageError("--allow-job requires --job-id or MEMFDBUS_JOB_ID");
  }
  if (job !== null) checkJob("--job-id", job);
  if (allow !== undefined) checkJob("--allow-job", allow);
  checkName(name);
  // Fail before running the command when no broker can be there at all: its output would be lost.
  if (tryLstat(s.socket) === -ENOENT) throw new ConnectError(s.socket, ENOENT);

  using memfd = Memfd.create(name);
  let exit: ChildExit;
  try {
    exit = runInto(rest, memfd);
  } catch (e) {
    throw commandError(e, rest[0] ?? "");
  }
  if (exit.kind !== "exited" || exit.code !== 0) {
    if (!always) {
      err(`not published: the command ${describeExit(exit)} (--always publishes anyway)\n`);
      return exitCodeOf(exit);
    }
  }
  memfd.seal();
  await using client = cliClient(s, job);
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
