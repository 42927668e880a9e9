/**
 * `memfdbus get OBJECT_ID OUT` / `get --name NAME OUT`: fetch an object into a file or stdout.
 * Extensions: `--wait SECONDS` (by name: wait for the name to be published), `--json`
 * (describe what was written, on stdout; not with OUT `-`) and `--timeout SECONDS`.
 *
 * SIGINT, SIGTERM and SIGHUP while the bytes go to a temporary file stop the copy, remove it
 * and exit 130, 143 or 129; writing to stdout or a pipe they end the process at once (as they
 * would any program: there is nothing to remove); a closed output pipe exits 141.
 *
 * @module
 */

import type { GetOptions } from "../client.ts";
import { UsageError } from "../errors.ts";
import {
  checkName,
  checkWait,
  cliClient,
  CLIENT_FLAGS,
  clientDefaults,
  clientFlag,
  CliUsageError,
  parseCommandLine,
  parseId,
  parseWait,
  resolveJob,
} from "./args.ts";
import { jsonLine, out, writeObject } from "./output.ts";
import { ProgressLine } from "./progress.ts";
import { GET_USAGE } from "./usage.ts";

/** The signals that stop a get while it writes. */
const STOP_SIGNALS: readonly Deno.Signal[] = ["SIGINT", "SIGTERM", "SIGHUP"];

/** Run `get`; returns the exit code. */
export async function getCommand(args: readonly string[]): Promise<number> {
  const { items } = parseCommandLine(args, {
    ...CLIENT_FLAGS,
    name: "string",
    wait: "string",
    json: "boolean",
  });
  const s = clientDefaults();
  let name: string | undefined;
  let id: bigint | undefined;
  let outPath: string | undefined;
  let json = false;
  let waitText: string | undefined;
  for (const it of items) {
    if (clientFlag(s, it)) continue;
    if (it.kind === "flag" && it.flag === "--name") name = it.value;
    else if (it.kind === "flag" && it.flag === "--wait") {
      // Checked at once: a mistaken value must not hide behind a usage message.
      parseWait(it.value, 0);
      waitText = it.value;
    } else if (it.kind === "switch" && it.flag === "--json") json = true;
    else if (it.kind !== "positional") continue;
    else if (name === undefined && id === undefined) id = parseId(it.text);
    else if (outPath === undefined) outPath = it.text;
    else throw new UsageError(`unexpected argument: ${it.text}`);
  }
  if ((id !== undefined) === (name !== undefined) || outPath === undefined) {
    throw new UsageError(GET_USAGE);
  }
  if (json && outPath === "-") throw new CliUsageError("--json cannot be combined with OUT -");
  checkWait(waitText, name !== undefined);
  const wait = waitText === undefined ? undefined : parseWait(waitText, s.timeoutMs);
  if (name !== undefined) checkName(name);
  const job = resolveJob(s.jobFlag);

  await using client = cliClient(s, job);
  const options: GetOptions = wait === undefined ? {} : { wait };
  using obj = await client.get(id !== undefined ? id : { name: name ?? "" }, options);
  const progress = ProgressLine.start("get", obj.size);
  try {
    await writeObject(obj.fd, obj.size, outPath, {
      onProgress: progress === null ? undefined : (n) => progress.update(n),
      stopSignals: STOP_SIGNALS,
    });
  } finally {
    progress?.finish();
  }
  if (json) {
    out(jsonLine({ id: obj.id, size: obj.size, digest: obj.digest, name: obj.name, out: outPath }));
  }
  return 0;
}
