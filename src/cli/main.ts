/**
 * The CLI dispatcher: picks the subcommand, prints errors as one line on stderr with exit code
 * 1, and usage on `--help` (stdout, exit 0) or a missing/unknown subcommand (stderr, exit 1).
 *
 * @module
 */

import { UsageError } from "../errors.ts";
import { setDefaultBrokerUid } from "../client/peer_check.ts";
import { err, out } from "./output.ts";
import { USAGE } from "./usage.ts";

type Command = (args: readonly string[]) => Promise<number>;

// Each subcommand is loaded when it runs: a `list` should not pay for the broker, the hashing
// code or the process-spawning bindings at start-up.
const COMMANDS: Readonly<Record<string, () => Promise<Command>>> = {
  broker: async () => (await import("./broker.ts")).brokerCommand,
  put: async () => (await import("./put.ts")).putCommand,
  get: async () => (await import("./get.ts")).getCommand,
  exec: async () => (await import("./exec.ts")).execCommand,
  drop: async () => (await import("./drop.ts")).dropCommand,
  list: async () => (await import("./list.ts")).listCommand,
  shadow: async () => (await import("./shadow.ts")).shadowCommand,
  stat: async () => (await import("./stat.ts")).statCommand,
  capture: async () => (await import("./capture.ts")).captureCommand,
};

/**
 * Take `--broker-uid UID|USER` (accepted by every command that connects, anywhere among its
 * arguments) out of `args`: the client then trusts that uid as the broker besides root and its
 * own, in place of `MEMFDBUS_BROKER_UID`.
 */
function withoutBrokerUid(args: readonly string[]): string[] {
  const rest: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const a = args[i] ?? "";
    if (a === "--") {
      rest.push(...args.slice(i));
      break;
    }
    if (a === "--broker-uid" || a.startsWith("--broker-uid=")) {
      const v = a === "--broker-uid" ? args[++i] : a.slice("--broker-uid=".length);
      if (v === undefined || v === "") {
        throw new UsageError("--broker-uid needs a uid or user name");
      }
      setDefaultBrokerUid(v);
      continue;
    }
    rest.push(a);
  }
  return rest;
}

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
  const load = Object.hasOwn(COMMANDS, cmd) ? COMMANDS[cmd] : undefined;
  if (load === undefined) {
    err(USAGE);
    return 1;
  }
  try {
    const run = await load();
    return await run(withoutBrokerUid(args.slice(1)));
  } catch (e) {
    err(`${e instanceof Error ? e.message : String(e)}\n`);
    return 1;
  }
}
