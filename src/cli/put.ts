/**
 * `memfdbus put FILE [--name NAME | --content-addressed] [--job-id JOB] [--allow-job JOB]
 * [--socket PATH] [--json] [--local]`: publish a file (or stdin for `-`) and print its id (with
 * `--json`, `{id, size, digest, name}`). `--local` keeps the object on this host when the broker
 * runs with a cluster tier (named objects are shared by default).
 *
 * @module
 */

import { jobIdFromEnv, type PutOptions } from "../client.ts";
import { UsageError } from "../errors.ts";
import { closeQuietly } from "../ffi.ts";
import { fstat, isRegular, seek, trySeals } from "../sys/fd.ts";
import { O_CLOEXEC, O_RDONLY, SEALS_IMMUTABLE } from "../sys/linux.ts";
import { copyFd } from "../sys/copy.ts";
import { openPath } from "../sys/file.ts";
import { Memfd } from "../sys/memfd.ts";
import {
  checkJob,
  checkName,
  cliClient,
  CLIENT_FLAGS,
  clientDefaults,
  clientFlag,
  parseCommandLine,
} from "./args.ts";
import { jsonLine, out } from "./output.ts";
import { PROGRESS_MIN_BYTES, PROGRESS_STEP_BYTES, ProgressLine } from "./progress.ts";
import { PUT_USAGE } from "./usage.ts";

/** lseek(2) whence: relative to the current offset. */
const SEEK_CUR = 1;

/** Whether `path` names a directory (following links). */
function isDirectory(path: string): boolean {
  try {
    return Deno.statSync(path).isDirectory;
  } catch {
    return false;
  }
}

/** Run `put`; returns the exit code. */
export async function putCommand(args: readonly string[]): Promise<number> {
  const { items } = parseCommandLine(args, {
    ...CLIENT_FLAGS,
    name: "string",
    "content-addressed": "boolean",
    "allow-job": "string",
    json: "boolean",
    local: "boolean",
  });
  const s = clientDefaults();
  let name: string | undefined;
  let contentAddressed = false;
  let allow: string | undefined;
  let path: string | undefined;
  let json = false;
  let local = false;
  for (const it of items) {
    if (clientFlag(s, it)) continue;
    if (it.kind === "flag" && it.flag === "--name") name = it.value;
    else if (it.kind === "flag" && it.flag === "--allow-job") allow = it.value;
    else if (it.kind === "switch" && it.flag === "--content-addressed") contentAddressed = true;
    else if (it.kind === "switch" && it.flag === "--json") json = true;
    else if (it.kind === "switch" && it.flag === "--local") local = true;
    else if (it.kind !== "positional") continue;
    else if (path === undefined) path = it.text;
    else throw new UsageError(`unexpected argument: ${it.text}`);
  }
  if (path === undefined) throw new UsageError(PUT_USAGE);
  if (contentAddressed && name !== undefined) {
    throw new UsageError("--content-addressed cannot be combined with --name");
  }
  const label = name ?? (path === "-" ? "stdin" : path.slice(path.lastIndexOf("/") + 1));
  const job = s.jobFlag ?? jobIdFromEnv();
  if (allow !== undefined && job === null) {
    throw new UsageError("--allow-job requires --job-id or MEMFDBUS_JOB_ID");
  }
  if (job !== null) checkJob("--job-id", job);
  if (allow !== undefined) checkJob("--allow-job", allow);
  if (path !== "-" && isDirectory(path)) {
    throw new UsageError(
      `cannot put ${path}: it is a directory (put takes one file, or - for stdin)`,
    );
  }
  // The name is checked before any copying (the C CLI copied the whole input first, D23).
  if (!contentAddressed && name === undefined && label === "") {
    throw new UsageError(
      `object name must not be empty (FILE ${path} ends in /: name the object with --name NAME)`,
    );
  }
  if (!contentAddressed) checkName(label);

  await using client = cliClient(s, job);
  const options: PutOptions = {
    ...(contentAddressed ? { contentAddressed: true } : { name: label }),
    ...(allow === undefined ? {} : { allowJob: allow }),
    ...(local ? { local: true } : {}),
  };
  const copied = copyWithProgress(path, label);
  try {
    const source = copied?.memfd ?? (path === "-" ? { fd: 0, fromCurrentOffset: true } : path);
    copied?.progress?.note("verifying…");
    const result = await client.put(source, options);
    copied?.progress?.finish();
    out(
      json
        ? jsonLine({ id: result.id, size: result.size, digest: result.digest, name: result.name })
        : `${result.id}\n`,
    );
  } finally {
    copied?.progress?.finish();
    copied?.memfd.close();
  }
  return 0;
}

/**
 * When stderr is a terminal and the input is large (or a pipe of unknown length), copy it into a
 * sealed memfd here, in steps, showing progress; the client then publishes that memfd as is.
 * Returns null where the client's own copy applies unchanged: stderr is not a terminal, the input
 * is a regular file under {@link PROGRESS_MIN_BYTES}, or it is already sealed (published without
 * a copy). The messages are those of the client's copy (`open input: ...`, `read input: ...`).
 */
function copyWithProgress(
  path: string,
  label: string,
): { memfd: Memfd; progress: ProgressLine | null } | null {
  if (!ProgressLine.available()) return null;
  const fd = path === "-" ? 0 : openPath(path, O_RDONLY | O_CLOEXEC, 0, `open input: ${path}`);
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
          { read: `read input: ${path}`, write: "write destination" },
          regular,
        );
        done += r.bytes;
        progress?.update(done);
        if (r.bytes < PROGRESS_STEP_BYTES) break;
      }
      memfd.seal();
      return { memfd, progress };
    } catch (e) {
      progress?.finish();
      memfd.close();
      throw e;
    }
  } finally {
    if (path !== "-") closeQuietly(fd);
  }
}
