/**
 * `memfdbus exec OBJECT_ID|--name NAME [--job-id JOB] [--socket PATH] -- COMMAND [ARG...]`:
 * fetch an object and replace this process with COMMAND, which inherits the sealed descriptor
 * (FD_CLOEXEC cleared on it alone) and MEMFDBUS_FD, _OBJECT_ID, _SIZE, _DIGEST and _NAME.
 * Extension: `--wait[=SECONDS]` (by name) waits for the name to be published first.
 *
 * @module
 */

import { Client, type GetOptions } from "../client.ts";
import { UsageError } from "../errors.ts";
import { closeQuietly, cstr, lastError, libc } from "../ffi.ts";
import { setCloexec } from "../sys/fd.ts";
import { DEFAULT_SOCKET } from "../core/options.ts";
import { CLI_SYNC_WAIT_US } from "./args.ts";
import { checkName, checkWait, flagValue, parseId, parseWaitFlag, resolveJob } from "./args.ts";
import { EXEC_USAGE } from "./usage.ts";

/** setenv(3) through libc, so the exec'd program sees it (`setenv: ...` on failure). */
function setenv(name: string, value: string | Uint8Array): void {
  if (libc.symbols.setenv(cstr(name), cstr(value), 1) < 0) throw lastError("setenv");
}

/**
 * execvp(3): replace the process image. Returns only on failure, by throwing
 * `execvp: <strerror>`.
 */
export function execvp(argv: readonly string[]): never {
  const strings = argv.map((a) => cstr(a));
  const table = new BigUint64Array(strings.length + 1);
  strings.forEach((
    s,
    i,
  ) => (table[i] = BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(s)))));
  const file = strings[0] ?? cstr("");
  libc.symbols.execvp(file, new Uint8Array(table.buffer));
  const e = lastError("execvp");
  // Keep the strings reachable until after the call.
  strings.length = 0;
  throw e;
}

/** Run `exec`; on success it does not return. */
export async function execCommand(args: readonly string[]): Promise<number> {
  let socket = DEFAULT_SOCKET;
  let jobFlag: string | undefined;
  let name: string | undefined;
  let id: bigint | undefined;
  let cmdIndex = -1;
  let wait: number | true | undefined;
  for (let i = 0; i < args.length; i++) {
    const a = args[i] ?? "";
    const w = parseWaitFlag(a);
    if (w !== undefined) wait = w;
    else if (a === "--socket") socket = flagValue(args, i++, a);
    else if (a === "--job-id") jobFlag = flagValue(args, i++, a);
    else if (a === "--name") name = flagValue(args, i++, a);
    else if (a === "--") {
      cmdIndex = i + 1;
      break;
    } else if (id === undefined) id = parseId(a);
    else throw new UsageError(`unexpected argument before --: ${a}`);
  }
  if ((id !== undefined) === (name !== undefined) || cmdIndex < 0 || cmdIndex >= args.length) {
    throw new UsageError(EXEC_USAGE);
  }
  checkWait(wait, name !== undefined);
  if (name !== undefined) checkName(name);
  const job = resolveJob(jobFlag);

  const client = new Client({ socket, jobId: job, keepAlive: false, syncWaitUs: CLI_SYNC_WAIT_US });
  const options: GetOptions = wait === undefined ? {} : { wait };
  const obj = await client.get(id !== undefined ? id : { name: name ?? "" }, options);
  client.close();
  const fd = obj.releaseFd();
  try {
    setCloexec(fd, false);
    setenv("MEMFDBUS_FD", String(fd));
    setenv("MEMFDBUS_OBJECT_ID", String(obj.id));
    setenv("MEMFDBUS_SIZE", String(obj.size));
    setenv("MEMFDBUS_DIGEST", obj.digest);
    setenv("MEMFDBUS_NAME", obj.nameBytes);
    execvp(args.slice(cmdIndex));
  } catch (e) {
    closeQuietly(fd);
    throw e;
  }
}
