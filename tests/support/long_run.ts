/**
 * Support for the long runs (`deno task fuzz`, `deno task soak`): a broker subprocess whose audit
 * log is validated line by line as it streams (nothing is kept but counts and the last lines),
 * and a tiny flag parser.
 *
 * @module
 */

import { alive, AUDIT_KEYS, catchesSignal, CLI, CLI_PERMS, fdCount } from "./harness.ts";
import { waitFor } from "./wait.ts";

/** A broker subprocess for long runs. */
export class StreamingBroker {
  readonly socket: string;
  readonly child: Deno.ChildProcess;
  /** Audit records seen (lines after the listening line). */
  records = 0;
  /** Stored object ids by the audit log's account (`put ok` adds, `drop ok` removes). */
  readonly live = new Map<number, string>();
  /** Lines that were not a valid twelve-key record. */
  readonly badLines: string[] = [];
  /** The last few lines, for reports. */
  readonly tail: string[] = [];
  stderr = "";
  exited: Deno.CommandStatus | null = null;
  #listening = false;
  readonly #done: Promise<void>;

  private constructor(socket: string, child: Deno.ChildProcess) {
    this.socket = socket;
    this.child = child;
    void child.status.then((s) => (this.exited = s));
    const out = (async () => {
      let pending = "";
      for await (const chunk of child.stdout.pipeThrough(new TextDecoderStream())) {
        pending += chunk;
        let nl: number;
        while ((nl = pending.indexOf("\n")) >= 0) {
          this.#line(pending.slice(0, nl));
          pending = pending.slice(nl + 1);
        }
      }
      if (pending !== "") this.badLines.push(`unterminated last line: ${pending}`);
    })();
    const err = (async () => {
      for await (const chunk of child.stderr.pipeThrough(new TextDecoderStream())) {
        this.stderr += chunk;
      }
    })();
    this.#done = Promise.all([out, err]).then(() => {});
  }

  #line(line: string): void {
    this.tail.push(line);
    if (this.tail.length > 20) this.tail.shift();
    if (!this.#listening) {
      this.#listening = line === `memfdbus broker listening on ${this.socket}`;
      if (!this.#listening) this.badLines.push(`first line: ${line}`);
      return;
    }
    this.records++;
    try {
      const r = JSON.parse(line) as Record<string, unknown>;
      const keys = Object.keys(r).slice(0, 12);
      if (keys.join() !== AUDIT_KEYS.join()) this.badLines.push(line);
      if (r.result === "ok" && typeof r.object_id === "number") {
        if (r.op === "put") this.live.set(r.object_id, String(r.name));
        else if (r.op === "drop") this.live.delete(r.object_id);
      }
    } catch {
      if (this.badLines.length < 100) this.badLines.push(line);
    }
  }

  /** Start `memfdbus broker --socket SOCKET ARGS` and wait until it listens. */
  static async start(socket: string, args: readonly string[]): Promise<StreamingBroker> {
    const child = new Deno.Command(Deno.execPath(), {
      args: ["run", ...CLI_PERMS, CLI, "broker", "--socket", socket, ...args],
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const b = new StreamingBroker(socket, child);
    await waitFor(() => b.#listening || b.exited !== null, {
      what: "the broker's listening line",
      timeoutMs: 60_000,
    }).catch(() => {});
    if (!b.#listening) throw new Error(`broker did not start: ${b.stderr}`);
    await waitFor(() => catchesSignal(b.pid, "SIGTERM"), { what: "the broker's SIGTERM handler" });
    return b;
  }

  /** The process id. */
  get pid(): number {
    return this.child.pid;
  }

  /** True while the process runs. */
  get running(): boolean {
    return this.exited === null && alive(this.pid);
  }

  /** Open descriptors. */
  fdCount(): number {
    return fdCount(this.pid);
  }

  /** Stop with a signal; resolves with the exit status once every output is read. */
  async stop(signal: Deno.Signal = "SIGTERM"): Promise<Deno.CommandStatus> {
    try {
      if (this.exited === null) this.child.kill(signal);
    } catch {
      // Already gone.
    }
    const s = await this.child.status;
    await this.#done;
    return s;
  }
}

/** Parse `--name value` flags over defaults (numbers only). */
export function numberFlags<T extends Record<string, number>>(
  args: readonly string[],
  defaults: T,
  usage: string,
): T {
  const out: Record<string, number> = { ...defaults };
  for (let i = 0; i < args.length; i++) {
    const a = args[i] ?? "";
    if (a === "--help" || a === "-h") {
      console.log(usage);
      Deno.exit(0);
    }
    const key = a.replace(/^--/, "").replace(/-([a-z])/g, (_m, c: string) => c.toUpperCase());
    const v = Number(args[i + 1]);
    if (!a.startsWith("--") || !(key in defaults) || !Number.isFinite(v)) {
      console.error(`unexpected argument: ${a}\n${usage}`);
      Deno.exit(2);
    }
    out[key] = v;
    i++;
  }
  return out as T;
}
