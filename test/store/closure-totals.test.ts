/**
 * closureTotals (src/store/closure.ts): every member's closure sums in one pass, against a walk
 * per member, on random reference graphs (bitsets) and on one too big for bitsets (a walk each).
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';

import { StorePath } from '../../src/core/store-path.js';
import { closureTotals } from '../../src/store/closure.js';

/** `refs[i]`: the members node i refers to (any, itself included: cycles only through self). */
function graph(refs: number[][]): { path: StorePath; references: StorePath[]; size: number }[] {
  const paths = refs.map((_, i) => StorePath.fromBaseName(`${String(i).padStart(32, '0').replace(/[eotu]/g, '0')}-n${i}`));
  return refs.map((r, i) => ({ path: paths[i]!, references: r.map((j) => paths[j]!), size: 1000 + i * 7 }));
}

/** The sums by walking each member's closure. */
function walked(nodes: ReturnType<typeof graph>): Map<string, number[]> {
  const byName = new Map(nodes.map((n) => [n.path.baseName, n]));
  return new Map(
    nodes.map((n) => {
      const seen = new Set<string>();
      const todo = [n];
      let size = 0;
      let count = 0;
      while (todo.length > 0) {
        const m = todo.pop()!;
        if (seen.has(m.path.baseName)) continue;
        seen.add(m.path.baseName);
        size += m.size;
        count++;
        for (const r of m.references) todo.push(byName.get(r.baseName)!);
      }
      return [n.path.baseName, [size, count]];
    }),
  );
}

describe('closureTotals', () => {
  it('equals a walk per member on random graphs (self-references included)', () => {
    fc.assert(
      fc.property(
        fc.array(fc.array(fc.nat(), { maxLength: 5 }), { minLength: 1, maxLength: 80 }),
        fc.boolean(),
        (raw, selfRefs) => {
          // References point to earlier members (a store's graph has no cycles but self-references).
          const refs = raw.map((r, i) => [...new Set(r.filter(() => i > 0).map((x) => x % Math.max(1, i)))].concat(selfRefs && i % 3 === 0 ? [i] : []));
          const nodes = graph(refs);
          expect(closureTotals(nodes, (n) => [n.size, 1])).toEqual(walked(nodes));
        },
      ),
      { numRuns: 200 },
    );
  });

  it('walks each member when the set is too big for bitsets (over 16,384 members)', () => {
    // Chains of ten: each member refers to the one before it, except every tenth.
    const n = 17_000;
    const refs = Array.from({ length: n }, (_, i) => (i % 10 === 0 ? [] : [i - 1]));
    const nodes = graph(refs);
    expect(closureTotals(nodes, (x) => [x.size, 1])).toEqual(walked(nodes));
  });
});
