/**
 * The CLI dispatcher: picks the subcommand and turns what it throws into one line on stderr
 * and an exit code.
 *
 * Exit codes: 0 success; 1 an error; 2 a usage mistake, every one (a missing or unknown
 * subcommand, a bad flag or value, a missing argument; those the C CLI also reports keep its
 * text, PROTOCOL.md §6, but exit 2 where it exits 1, as is conventional); 126/127 a COMMAND of
 * exec or capture that cannot be executed / is not found; 128+N interrupted by signal N (get:
 * 129 SIGHUP, 130 SIGINT, 141 a closed output pipe, 143 SIGTERM).
 *
 * @module
 */

import { nearestWord } from "../core/nearest.ts";
import denoJson from "../../deno.json" with { type: "json" };
import { UsageError } from "../errors.ts";
import { CliUsageError, HelpRequested } from "./args.ts";
import { errorLine, ExitError, Interrupted } from "./exit.ts";
import { setDefaultBrokerUid } from "../client/peer_check.ts";
import { err, out } from "./output.ts";
import { COMMAND_HELP, USAGE } from "./usage.ts";

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
  help: () => Promise.resolve(helpCommand),
  watch: async () => (await import("./watch.ts")).watchCommand,
  usage: async () => (await import("./usage_cmd.ts")).usageCommand,
};

/** The exit code of every usage mistake (a missing or unknown command, a bad flag or value). */
export const USAGE_EXIT = 2;

/** The version of this CLI, from deno.json. */
export const VERSION: string = denoJson.version;

/**
 * `unknown command: lsit (did you mean list?)` when a command is close, else a pointer to
 * `memfdbus --help`.
 */
export function unknownCommand(cmd: string, rest: readonly string[] = []): string {
  if (["version", "-v", "-V"].includes(cmd)) {
    return `unknown command: ${cmd} (did you mean --version?)`;
  }
  if (cmd.startsWith("-")) return optionBeforeCommand(cmd, rest);
  const best = nearestWord(cmd, Object.keys(COMMANDS));
  return `unknown command: ${cmd} (${
    best !== undefined ? `did you mean ${best}?` : "run `memfdbus --help` for the commands"
  })`;
}

/**
 * `memfdbus --socket /tmp/x.sock list`: options belong after the command. Shows the command
 * line reordered when a command follows and every word is plain, else says where options go.
 */
function optionBeforeCommand(option: string, rest: readonly string[]): string {
  const words = [option, ...rest];
  const at = words.findIndex((w) => Object.hasOwn(COMMANDS, w));
  const plain = words.every((w) => /^[\w@%+=:,./-]+$/.test(w));
  if (at < 0 || !plain) {
    return `unknown command: ${option} (options go after the command: ` +
      `memfdbus COMMAND ${option} ...; run \`memfdbus --help\` for the commands)`;
  }
  const reordered = [words[at], ...words.slice(0, at), ...words.slice(at + 1)].join(" ");
  return `unknown command: ${option} (options go after the command: memfdbus ${reordered})`;
}

/** `memfdbus help [COMMAND]`. */
function helpCommand(args: readonly string[]): Promise<number> {
  const [topic, ...extra] = args;
  if (extra.length > 0) throw new CliUsageError(`unexpected argument: ${extra[0]}`);
  if (topic === undefined) {
    out(USAGE);
    return Promise.resolve(0);
  }
  if (topic === "--help" || topic === "-h") {
    out(COMMAND_HELP["help"] ?? USAGE);
    return Promise.resolve(0);
  }
  const text = Object.hasOwn(COMMAND_HELP, topic) ? COMMAND_HELP[topic] : undefined;
  if (text === undefined) throw new CliUsageError(unknownCommand(topic));
  out(text);
  return Promise.resolve(0);
}

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
    return 2;
  }
  if (cmd === "--help" || cmd === "-h") {
    out(USAGE);
    return 0;
  }
  if (cmd === "--version" || cmd === "-V") {
    out(`memfdbus ${VERSION}\n`);
    return 0;
  }
  const load = Object.hasOwn(COMMANDS, cmd) ? COMMANDS[cmd] : undefined;
  if (load === undefined) {
    err(`${unknownCommand(cmd, args.slice(1))}\n`);
    return 2;
  }
  try {
    const run = await load();
    return await run(withoutBrokerUid(args.slice(1)));
  } catch (e) {
    if (e instanceof HelpRequested) {
      out(COMMAND_HELP[cmd] ?? USAGE);
      return 0;
    }
    if (e instanceof Interrupted) return e.exitCode;
    err(`${errorLine(e)}\n`);
    if (e instanceof ExitError) return e.exitCode;
    if (e instanceof UsageError) return USAGE_EXIT;
    return 1;
  }
}
