/**
 * `memfdbus shadow --socket PATH`: hold the objects of a broker started with `--shadow PATH`
 * so they survive the broker's crash or restart. A broker starts one itself when none runs.
 * SIGTERM or SIGINT stops it and removes its socket file.
 *
 * @module
 */

import { UsageError } from "../errors.ts";
import { runShadow } from "../shadow/server.ts";
import { CliUsageError, parseCommandLine } from "./args.ts";
import { out } from "./output.ts";
import { nameSocket } from "./exit.ts";

/** Run the shadow until a signal stops it. */
export async function shadowCommand(args: readonly string[]): Promise<number> {
  const { items } = parseCommandLine(args, { socket: "string" });
  let socket: string | undefined;
  for (const it of items) {
    if (it.kind === "flag" && it.flag === "--socket") socket = it.value;
    else if (it.kind === "positional") throw new UsageError(`unexpected argument: ${it.text}`);
  }
  if (socket === undefined) throw new CliUsageError("usage: memfdbus shadow --socket PATH");
  const path = socket;
  try {
    return await runShadow(path, () => out(`memfdbus shadow listening on ${path}\n`));
  } catch (e) {
    throw nameSocket(e, path);
  }
}
