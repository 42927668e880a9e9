/**
 * The CLI dispatcher: picks the subcommand, prints errors as one line on stderr with exit code
 * 1, and usage on `--help` (stdout, exit 0) or a missing/unknown subcommand (stderr, exit 1).
 *
 * @module
 */

import { brokerCommand } from "./broker.ts";
import { captureCommand } from "./capture.ts";
import { dropCommand } from "./drop.ts";
import { execCommand } from "./exec.ts";
import { getCommand } from "./get.ts";
import { listCommand } from "./list.ts";
import { err, out } from "./output.ts";
import { putCommand } from "./put.ts";
import { shadowCommand } from "./shadow.ts";
import { statCommand } from "./stat.ts";
import { USAGE } from "./usage.ts";

const COMMANDS: Readonly<Record<string, (args: readonly string[]) => Promise<number>>> = {
  broker: brokerCommand,
  put: putCommand,
  get: getCommand,
  exec: execCommand,
  drop: dropCommand,
  list: listCommand,
  shadow: shadowCommand,
  stat: statCommand,
  capture: captureCommand,
};

/**
 * Run the CLI with `args` (without the program name); resolves with the exit code. Output goes
 * to this process's stdout and stderr, exactly as the `memfdbus` command prints it.
 *
 * @example
 * ```ts
 * import { main } from "@memfdbus/memfdbus/cli";
 * const code = await main(["--help"]); // prints the usage
 * console.log(code); // 0
 * ```
 *
 * @example Listing the objects of a broker
 * ```ts ignore
 * import { main } from "@memfdbus/memfdbus/cli";
 * Deno.exitCode = await main(["list", "--socket", "/run/memfdbus.sock"]);
 * ```
 */
export async function main(args: readonly string[]): Promise<number> {
  const cmd = args[0];
  if (cmd === undefined) {
    err(USAGE);
    return 1;
  }
  if (cmd === "--help" || cmd === "-h") {
    out(USAGE);
    return 0;
  }
  const run = Object.hasOwn(COMMANDS, cmd) ? COMMANDS[cmd] : undefined;
  if (run === undefined) {
    err(USAGE);
    return 1;
  }
  try {
    return await run(args.slice(1));
  } catch (e) {
    err(`${e instanceof Error ? e.message : String(e)}\n`);
    return 1;
  }
}
