/**
 * `memfdbus put FILE [--name NAME | --content-addressed] [--job-id JOB] [--allow-job JOB]
 * [--socket PATH] [--json] [--local]`: publish a file (or stdin for `-`) and print its id (with
 * `--json`, `{id, size, digest, name}`). `--local` keeps the object on this host when the broker
 * runs with a cluster tier (named objects are shared by default).
 *
 * @module
 */

import { Client, type PutOptions } from "../client.ts";
import { UsageError } from "../errors.ts";
import { closeQuietly, cstr, lastError, libc } from "../ffi.ts";
import { fstat, isRegular, seek, trySeals } from "../sys/fd.ts";
import { O_CLOEXEC, O_RDONLY, SEALS_IMMUTABLE } from "../sys/linux.ts";
import { copyFd } from "../sys/copy.ts";
import { Memfd } from "../sys/memfd.ts";
import { DEFAULT_SOCKET } from "../core/options.ts";
import { CLI_SYNC_WAIT_US } from "./args.ts";
import { jobIdFromEnv } from "../client.ts";
import { checkJob, checkName, flagValue } from "./args.ts";
import { jsonLine, out } from "./output.ts";
import { PROGRESS_MIN_BYTES, PROGRESS_STEP_BYTES, ProgressLine } from "./progress.ts";
import { PUT_USAGE } from "./usage.ts";

/** lseek(2) whence: relative to the current offset. */
const SEEK_CUR = 1;

/** Run `put`; returns the exit code. */
export async function putCommand(args: readonly string[]): Promise<number> {
  let socket = DEFAULT_SOCKET;
  let name: string | undefined;
  let contentAddressed = false;
  let jobFlag: string | undefined;
  let allow: string | undefined;
  let path: string | undefined;
  let json = false;
  let local = false;
  for (let i = 0; i < args.length; i++) {
    const a = args[i] ?? "";
    if (a === "--socket") socket = flagValue(args, i++, a);
    else if (a === "--name") name = flagValue(args, i++, a);
    else if (a === "--content-addressed") contentAddressed = true;
    else if (a === "--job-id") jobFlag = flagValue(args, i++, a);
    else if (a === "--allow-job") allow = flagValue(args, i++, a);
    else if (a === "--json") json = true;
    else if (a === "--local") local = true;
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
  const options: PutOptions = {
    ...(contentAddressed ? { contentAddressed: true } : { name: label }),
    ...(allow === undefined ? {} : { allowJob: allow }),
    ...(local ? { local: true } : {}),
  };
  using copied = copyWithProgress(path, label);
  const source = copied ?? (path === "-" ? { fd: 0, fromCurrentOffset: true } : path);
  const result = await client.put(source, options);
  out(
    json
      ? jsonLine({ id: result.id, size: result.size, digest: result.digest, name: result.name })
      : `${result.id}\n`,
  );
  return 0;
}

/**
 * When stderr is a terminal and the input is large (or a pipe of unknown length), copy it into a
 * sealed memfd here, in steps, showing progress; the client then publishes that memfd as is.
 * Returns null where the client's own copy applies unchanged: stderr is not a terminal, the input
 * is a regular file under {@link PROGRESS_MIN_BYTES}, or it is already sealed (published without
 * a copy). The messages are those of the client's copy (`open input: ...`, `read input: ...`).
 */
function copyWithProgress(path: string, label: string): Memfd | null {
  if (!ProgressLine.available()) return null;
  const fd = path === "-" ? 0 : libc.symbols.open(cstr(path), O_RDONLY | O_CLOEXEC, 0);
  if (fd < 0) throw lastError("open", "open input");
  try {
    const st = fstat(fd, "fstat input");
    const regular = isRegular(st.mode);
    let total: number | null = null;
    if (regular) {
      const seals = trySeals(fd);
      if (seals >= 0 && (seals & SEALS_IMMUTABLE) === SEALS_IMMUTABLE) return null;
      const offset = path === "-" ? seek(fd, 0, SEEK_CUR, "lseek input") : 0;
      total = Math.max(0, Number(st.size) - offset);
      if (total < PROGRESS_MIN_BYTES) return null;
    }
    const progress = ProgressLine.start("put", total);
    const memfd = Memfd.create(label);
    try {
      let done = 0;
      for (;;) {
        const r = copyFd(
          fd,
          memfd.fd,
          PROGRESS_STEP_BYTES,
          { read: "read input", write: "write destination" },
          regular,
        );
        done += r.bytes;
        progress?.update(done);
        if (r.bytes < PROGRESS_STEP_BYTES) break;
      }
      memfd.seal();
      return memfd;
    } catch (e) {
      memfd.close();
      throw e;
    } finally {
      progress?.finish();
    }
  } finally {
    if (path !== "-") closeQuietly(fd);
  }
}
