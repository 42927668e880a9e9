/**
 * A one-line progress display for long copies (`put` and `get` of large objects): bytes, rate
 * and ETA on stderr, redrawn in place with `\r`. It appears only when stderr is a terminal, so
 * scripts and tests see exactly the output of the C CLI.
 *
 * {@link renderProgress} is the pure formatting; {@link ProgressLine} decides when to draw.
 *
 * @module
 */

/** Inputs of at least this many bytes get a progress line. */
export const PROGRESS_MIN_BYTES = 64 * 1024 * 1024;

/** Bytes per copy step while a progress line is shown (one redraw chance per step). */
export const PROGRESS_STEP_BYTES = 64 * 1024 * 1024;

/** Least time between two redraws, in milliseconds. */
const REDRAW_MS = 100;

/** Terminal width assumed when the terminal does not say. */
const DEFAULT_WIDTH = 80;

/** Narrowest bar worth drawing; below it the bar is left out. */
const MIN_BAR = 10;

/** What one progress line shows. */
export interface ProgressSnapshot {
  /** The word in front, for example `put`. */
  readonly label: string;
  /** Bytes done so far. */
  readonly done: number;
  /** Bytes expected in all, or null when unknown (a pipe). */
  readonly total: number | null;
  /** Milliseconds since the copy started. */
  readonly elapsedMs: number;
  /** Terminal columns; the line is kept shorter than this. */
  readonly width: number;
}

const UNITS = ["KiB", "MiB", "GiB", "TiB", "PiB"] as const;

/** `512 B`, `64.0 MiB`, `1.5 GiB`: binary units with one decimal. */
export function formatBytes(n: number): string {
  if (n < 1024) return `${Math.max(0, Math.floor(n))} B`;
  let v = n / 1024;
  let unit: string = UNITS[0];
  for (let i = 1; i < UNITS.length && v >= 1024; i++) {
    v /= 1024;
    unit = UNITS[i] ?? unit;
  }
  return `${v.toFixed(1)} ${unit}`;
}

/** `0:07`, `12:34`, `1:02:03`; `--:--` when unknown. */
export function formatEta(seconds: number | null): string {
  if (seconds === null || !Number.isFinite(seconds) || seconds < 0) return "--:--";
  const s = Math.ceil(seconds);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const ss = String(s % 60).padStart(2, "0");
  return h > 0 ? `${h}:${String(m).padStart(2, "0")}:${ss}` : `${m}:${ss}`;
}

/**
 * The progress line for a snapshot, without `\r`, for example
 * `put  45% [#########-----------] 460.8 MiB / 1.0 GiB  1.2 GiB/s  ETA 0:01`.
 * With an unknown total there is no percentage, bar or ETA. The bar takes whatever width is
 * left and is dropped on a narrow terminal; the line is always shorter than `width`.
 */
export function renderProgress(p: ProgressSnapshot): string {
  const seconds = p.elapsedMs / 1000;
  const rate = seconds > 0 ? p.done / seconds : 0;
  const rateText = rate > 0 ? `${formatBytes(rate)}/s` : "-- B/s";
  const width = Math.max(1, p.width) - 1;
  if (p.total === null) return fit(`${p.label} ${formatBytes(p.done)}  ${rateText}`, width);

  const total = Math.max(0, p.total);
  const done = Math.min(p.done, total);
  const fraction = total > 0 ? done / total : 1;
  const pct = `${String(Math.floor(fraction * 100)).padStart(3)}%`;
  const eta = formatEta(rate > 0 ? (total - done) / rate : done >= total ? 0 : null);
  const head = `${p.label} ${pct}`;
  const tail = `${formatBytes(done)} / ${formatBytes(total)}  ${rateText}  ETA ${eta}`;
  const barWidth = width - head.length - tail.length - 4; // " [" + "] "
  if (barWidth < MIN_BAR) return fit(`${head} ${tail}`, width);
  const filled = Math.floor(fraction * barWidth);
  const bar = "#".repeat(filled) + "-".repeat(barWidth - filled);
  return `${head} [${bar}] ${tail}`;
}

function fit(line: string, width: number): string {
  return line.length <= width ? line : line.slice(0, width);
}

function terminalWidth(): number {
  try {
    const { columns } = Deno.consoleSize();
    return columns > 0 ? columns : DEFAULT_WIDTH;
  } catch {
    return DEFAULT_WIDTH;
  }
}

function writeStderr(text: string): void {
  const bytes = new TextEncoder().encode(text);
  let off = 0;
  while (off < bytes.length) off += Deno.stderr.writeSync(bytes.subarray(off));
}

function stderrIsTerminal(): boolean {
  try {
    return Deno.stderr.isTerminal();
  } catch {
    return false;
  }
}

/**
 * A progress line on stderr. {@link ProgressLine.start} returns null unless stderr is a terminal
 * and the copy is large (at least {@link PROGRESS_MIN_BYTES}; with an unknown total, the line
 * appears once that much has been copied).
 */
export class ProgressLine {
  readonly #label: string;
  readonly #total: number | null;
  readonly #start = performance.now();
  #lastDraw = -Infinity;
  #drawn = false;

  private constructor(label: string, total: number | null) {
    this.#label = label;
    this.#total = total;
  }

  /** True when progress lines can be shown at all (stderr is a terminal). */
  static available(): boolean {
    return stderrIsTerminal();
  }

  /**
   * A progress line for a copy of `total` bytes (null: unknown), or null when none is shown.
   *
   * @param label the word in front of the line (`put`, `get`)
   * @param total the bytes expected, or null
   */
  static start(label: string, total: number | null): ProgressLine | null {
    if (total !== null && total < PROGRESS_MIN_BYTES) return null;
    if (!stderrIsTerminal()) return null;
    return new ProgressLine(label, total);
  }

  /** Report `done` bytes copied; redraws at most every 100 ms (and always at the end). */
  update(done: number): void {
    if (this.#total === null && done < PROGRESS_MIN_BYTES) return;
    const now = performance.now();
    const complete = this.#total !== null && done >= this.#total;
    if (!complete && now - this.#lastDraw < REDRAW_MS) return;
    this.#lastDraw = now;
    this.#drawn = true;
    const line = renderProgress({
      label: this.#label,
      done,
      total: this.#total,
      elapsedMs: now - this.#start,
      width: terminalWidth(),
    });
    writeStderr(`\r${line}\x1b[K`);
  }

  /**
   * Replace the line with the label and `text` (for example `put verifying…` while the broker
   * checks the digest after the copy reached 100%), so the line never goes blank while work
   * goes on. Drawn only where a progress line was drawn.
   */
  note(text: string): void {
    if (!this.#drawn) return;
    writeStderr(`\r${fit(`${this.#label} ${text}`, terminalWidth() - 1)}\x1b[K`);
  }

  /** Erase the line (if one was drawn), leaving the cursor at the start of an empty line. */
  finish(): void {
    if (this.#drawn) writeStderr("\r\x1b[K");
    this.#drawn = false;
  }
}
