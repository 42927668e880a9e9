/**
 * The nearest known word to a mistyped one, for "did you mean" hints (`lsit` → `list`,
 * `maxObject` → `maxObjects`). Pure.
 *
 * @module
 */

/** Edit distance with transpositions (`lsit` is one step from `list`). */
export function editDistance(a: string, b: string): number {
  const d: number[][] = Array.from(
    { length: a.length + 1 },
    (_, i) => Array.from({ length: b.length + 1 }, (_, j) => (i === 0 ? j : j === 0 ? i : 0)),
  );
  const at = (i: number, j: number): number => d[i]?.[j] ?? 0;
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let v = Math.min(at(i - 1, j) + 1, at(i, j - 1) + 1, at(i - 1, j - 1) + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) {
        v = Math.min(v, at(i - 2, j - 2) + 1);
      }
      (d[i] as number[])[j] = v;
    }
  }
  return at(a.length, b.length);
}

/**
 * The candidate closest to `word` (case-insensitive), when it is close enough to be a typo of
 * it: at most a third of its length away (and at least one step allowed); else undefined.
 * `nearestWord("maxObject", ["maxObjects", "maxClients"])` is `"maxObjects"`.
 */
export function nearestWord(word: string, candidates: Iterable<string>): string | undefined {
  let best: string | undefined;
  let bestD = Infinity;
  for (const c of candidates) {
    const d = editDistance(word.toLowerCase(), c.toLowerCase());
    if (d < bestD) [best, bestD] = [c, d];
  }
  if (best === undefined) return undefined;
  return bestD <= Math.max(1, Math.floor(best.length / 3)) ? best : undefined;
}
