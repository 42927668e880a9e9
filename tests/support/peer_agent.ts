/**
 * A memfdbus peer of another uid for the security tests: tests/security/peer_agent.py run as uid
 * 65534 through setpriv, driven one JSON command per line.
 */

import { BrokerProcess, enc } from "./harness.ts";
import { waitFor } from "./wait.ts";
import { libc } from "../../src/ffi.ts";

/** The uid the agent runs as. */
export const NOBODY = 65534;
const PYTHON = "/usr/bin/python3";
const canSwitchUser = libc.symbols.geteuid() === 0 &&
  new Deno.Command("setpriv", { args: ["--version"], stdout: "null", stderr: "null" })
    .outputSync().success;
const hasPython = (() => {
  try {
    return Deno.statSync(PYTHON).isFile;
  } catch {
    return false;
  }
})();
/**
 * Whether a process of another uid is impossible here: it needs root (to switch), setpriv and a
 * system python3.
 */
export const SKIP = !(canSwitchUser && hasPython);

/**
 * A broker uid 65534 can reach: `dir` opened to others (mode 0755) and `--socket-mode 0666`,
 * then `args`.
 *
 * @param dir the test's directory, which holds the socket
 * @param args more broker flags
 * @param opts as for {@link BrokerProcess.start}
 */
export function brokerForOthers(
  dir: string,
  args: readonly string[] = [],
  opts?: Parameters<typeof BrokerProcess.start>[2],
): Promise<BrokerProcess> {
  Deno.chmodSync(dir, 0o755);
  return BrokerProcess.start(dir, ["--socket-mode", "0666", ...args], opts);
}

/**
 * `python3 ARGS` as uid 65534 (setpriv, no supplementary groups): `["-c", SOURCE, ...]` for an
 * inline program, or a script path the uid can read.
 *
 * @param args python's arguments
 * @param opts stdin, stdout, stderr and the rest, as for `Deno.Command`
 */
export function pythonAsNobody(
  args: readonly string[],
  opts: Omit<Deno.CommandOptions, "args"> = {},
): Deno.Command {
  return new Deno.Command("setpriv", {
    ...opts,
    args: [`--reuid=${NOBODY}`, `--regid=${NOBODY}`, "--clear-groups", PYTHON, ...args],
  });
}

/** Bytes as lowercase hex, as the agent expects them. */
export const hex = (b: Uint8Array): string =>
  Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");

/** The peer agent (tests/security/peer_agent.py) running as uid 65534, driven line by line. */
export class Agent implements AsyncDisposable {
  readonly #child: Deno.ChildProcess;
  readonly #writer: WritableStreamDefaultWriter<Uint8Array>;
  readonly #lines: string[] = [];
  readonly #done: Promise<void>;

  private constructor(child: Deno.ChildProcess) {
    this.#child = child;
    this.#writer = child.stdin.getWriter();
    this.#done = (async () => {
      let pending = "";
      for await (const chunk of child.stdout.pipeThrough(new TextDecoderStream())) {
        pending += chunk;
        let nl: number;
        while ((nl = pending.indexOf("\n")) >= 0) {
          this.#lines.push(pending.slice(0, nl));
          pending = pending.slice(nl + 1);
        }
      }
    })();
  }

  /** Start the agent in `dir` (copied there, readable by uid 65534) against `socket`. */
  static start(dir: string, socket: string): Agent {
    const script = `${dir}/peer_agent.py`;
    Deno.copyFileSync(new URL("../security/peer_agent.py", import.meta.url), script);
    Deno.chmodSync(script, 0o644);
    return new Agent(
      pythonAsNobody([script, socket], {
        stdin: "piped",
        stdout: "piped",
        stderr: "inherit",
      }).spawn(),
    );
  }

  /** Send one command; resolves with its answer line. */
  async do(cmd: Record<string, unknown>): Promise<Record<string, unknown>> {
    const before = this.#lines.length;
    await this.#writer.write(enc(JSON.stringify(cmd) + "\n"));
    await waitFor(() => this.#lines.length > before, {
      what: `the agent's answer to ${JSON.stringify(cmd)}`,
      timeoutMs: 60_000,
    });
    return JSON.parse(this.#lines[before] ?? "{}");
  }

  /** Send a request on a new connection and read its reply. */
  request(req: Uint8Array, data?: Uint8Array): Promise<Record<string, unknown>> {
    return this.do({ op: "send", req: hex(req), data: data ? hex(data) : null, read: true });
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.#writer.close().catch(() => {});
    await this.#child.status;
    await this.#done;
  }
}
