/**
 * `memfdbus exec OBJECT_ID|--name NAME [--job-id JOB] [--socket PATH] -- COMMAND [ARG...]`:
 * fetch an object and replace this process with COMMAND, which inherits the sealed descriptor
 * (FD_CLOEXEC cleared on it alone) and MEMFDBUS_FD, _OBJECT_ID, _SIZE, _DIGEST and _NAME.
 * Extensions: `--wait SECONDS` (by name) waits for the name to be published first;
 * `--timeout SECONDS`. A COMMAND that is not found fails with `command not found: COMMAND`
 * (exit 127), one that cannot be executed with `cannot execute COMMAND: <strerror>` (exit 126).
 *
 * @module
 */

import type { GetOptions } from "../client.ts";
import { UsageError } from "../errors.ts";
import { closeQuietly } from "../ffi.ts";
import { setCloexec } from "../sys/fd.ts";
import { execvp, setenv } from "../sys/exec.ts";
import {
  checkName,
  checkWait,
  cliClient,
  CLIENT_FLAGS,
  clientDefaults,
  clientFlag,
  parseCommandLine,
  parseId,
  parseWait,
  resolveJob,
} from "./args.ts";
import { commandError } from "./exit.ts";
import { EXEC_USAGE } from "./usage.ts";

/** Run `exec`; on success it does not return. */
export async function execCommand(args: readonly string[]): Promise<number> {
  const { items, rest } = parseCommandLine(
    args,
    { ...CLIENT_FLAGS, name: "string", wait: "string" },
    true,
  );
  const s = clientDefaults();
  let name: string | undefined;
  let id: bigint | undefined;
  let waitText: string | undefined;
  for (const it of items) {
    if (clientFlag(s, it)) continue;
    if (it.kind === "flag" && it.flag === "--name") name = it.value;
    else if (it.kind === "flag" && it.flag === "--wait") {
      // Checked at once: a mistaken value must not hide behind a usage message.
      parseWait(it.value, 0);
      waitText = it.value;
    } else if (it.kind !== "positional") continue;
    else if (id === undefined) id = parseId(it.text);
    else throw new UsageError(`unexpected argument before --: ${it.text}`);
  }
  if ((id !== undefined) === (name !== undefined) || rest === null || rest.length === 0) {
    throw new UsageError(EXEC_USAGE);
  }
  checkWait(waitText, name !== undefined);
  const wait = waitText === undefined ? undefined : parseWait(waitText, s.timeoutMs);
  if (name !== undefined) checkName(name);
  const job = resolveJob(s.jobFlag);

  const client = cliClient(s, job);
  const options: GetOptions = wait === undefined ? {} : { wait };
  let obj;
  try {
    obj = await client.get(id !== undefined ? id : { name: name ?? "" }, options);
  } finally {
    client.close();
  }
  const fd = obj.releaseFd();
  try {
    setCloexec(fd, false);
    setenv("MEMFDBUS_FD", String(fd));
    setenv("MEMFDBUS_OBJECT_ID", String(obj.id));
    setenv("MEMFDBUS_SIZE", String(obj.size));
    setenv("MEMFDBUS_DIGEST", obj.digest);
    setenv("MEMFDBUS_NAME", obj.nameBytes);
    execvp(rest);
  } catch (e) {
    closeQuietly(fd);
    throw commandError(e, rest[0] ?? "");
  }
}
