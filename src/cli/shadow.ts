/**
 * `memfdbus shadow --socket PATH`: hold the objects of a broker started with `--shadow PATH`
 * so they survive the broker's crash or restart. A broker starts one itself when none runs.
 *
 * @module
 */

import { UsageError } from "../errors.ts";
import { runShadow } from "../shadow/server.ts";
import { flagValue } from "./args.ts";
import { out } from "./output.ts";

/** Run the shadow until it is killed. */
export function shadowCommand(args: readonly string[]): Promise<number> {
  let socket: string | undefined;
  for (let i = 0; i < args.length; i++) {
    const a = args[i] ?? "";
    if (a === "--socket") socket = flagValue(args, i++, a);
    else throw new UsageError(`unexpected argument: ${a}`);
  }
  if (socket === undefined) throw new UsageError("usage: memfdbus shadow --socket PATH");
  const path = socket;
  runShadow(path, () => out(`memfdbus shadow listening on ${path}\n`));
}
