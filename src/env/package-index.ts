/**
 * Package indexes: how `pkgs.NAME` in a spec becomes a store path.
 *
 * A store publishes its packages in `strata-packages.json` in its state dir, beside its database:
 * `<root>/nix/var/nix/strata-packages.json` for a local store or a lower (a big disk ships it
 * next to its DB), the same file in the layered dir's own state dir for the user's upper, and
 * `<dir>/strata-packages.json` for a `file://` binary cache. The file is one JSON object mapping
 * an attribute name (an attribute path may contain dots: `python3Packages.requests`) to a full
 * store path, or to a `.drv` path (optionally `DRV!out,dev` to pick outputs), e.g.
 *
 * ```json
 * { "hello": "/nix/store/0i8…-hello-2.12.1", "gnumake": "/nix/store/9a2…-gnumake-4.4.drv" }
 * ```
 *
 * Lookup order: the upper's index (what the user published for themselves) first, then each
 * lower in priority order; the first index that has the name wins. A missing file is an empty
 * index; a malformed one is an error naming it.
 */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';

import { StrataError } from '../core/error.js';
import type { IndexLocation } from './store-layout.js';

/** What one index file contributed, for the cache (null: there was no file). */
export interface IndexStamp {
  file: string;
  /** sha256 (hex) of the file's bytes, or null when it does not exist. */
  hash: string | null;
}

/** A name found in an index. */
export interface IndexHit {
  /** The store path (maybe `….drv` or `….drv!outs`) the index maps the name to. */
  target: string;
  /** The layer whose index had it. */
  layer: string;
  file: string;
}

/** Reads one index file's bytes and stamp, or nothing when it does not exist. */
export function readIndexFile(file: string): { bytes: Buffer | undefined; stamp: IndexStamp } {
  let bytes: Buffer;
  try {
    bytes = readFileSync(file);
  } catch (e) {
    if (
      (e as NodeJS.ErrnoException).code === 'ENOENT' ||
      (e as NodeJS.ErrnoException).code === 'ENOTDIR'
    )
      return { bytes: undefined, stamp: { file, hash: null } };
    throw new StrataError(
      'INDEX_INVALID',
      `Cannot read package index '${file}': ${(e as Error).message}`,
      { value: file },
    );
  }
  return { bytes, stamp: { file, hash: createHash('sha256').update(bytes).digest('hex') } };
}

/** The package indexes of a store, merged in lookup order. */
export class PackageIndex {
  /** Every file consulted, found or not, in order. */
  readonly stamps: IndexStamp[];
  private readonly tables: Array<{ layer: string; file: string; map: Map<string, string> }>;

  private constructor(
    stamps: IndexStamp[],
    tables: Array<{ layer: string; file: string; map: Map<string, string> }>,
  ) {
    this.stamps = stamps;
    this.tables = tables;
  }

  /**
   * Loads the index files at `locations` (see `storeLayout(uri).indexes`).
   *
   * @example PackageIndex.load(storeLayout('layered:///srv/me').indexes).lookup('hello')
   */
  static load(locations: IndexLocation[]): PackageIndex {
    const stamps: IndexStamp[] = [];
    const tables: Array<{ layer: string; file: string; map: Map<string, string> }> = [];
    for (const loc of locations) {
      const { bytes, stamp } = readIndexFile(loc.file);
      stamps.push(stamp);
      if (bytes !== undefined)
        tables.push({
          layer: loc.layer,
          file: loc.file,
          map: parseIndex(loc.file, bytes.toString('utf8')),
        });
    }
    return new PackageIndex(stamps, tables);
  }

  /** Layers whose index exists, in lookup order. */
  get layers(): string[] {
    return this.tables.map((t) => t.layer);
  }

  /** The first index's entry for `name`. */
  lookup(name: string): IndexHit | undefined {
    for (const t of this.tables) {
      const target = t.map.get(name);
      if (target !== undefined) return { target, layer: t.layer, file: t.file };
    }
    return undefined;
  }

  /** A known name close to `name` (edit distance ≤ 2, or a case difference), for "did you mean". */
  suggest(name: string): string | undefined {
    let best: { name: string; d: number } | undefined;
    for (const t of this.tables) {
      for (const k of t.map.keys()) {
        const d = k.toLowerCase() === name.toLowerCase() ? 0 : editDistance(k, name, 2);
        if (d <= 2 && (!best || d < best.d)) best = { name: k, d };
      }
    }
    return best?.name;
  }
}

/** Parses an index file's text: a JSON object of name → absolute store path. */
export function parseIndex(file: string, text: string): Map<string, string> {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw new StrataError(
      'INDEX_INVALID',
      `Cannot read package index '${file}': ${(e as Error).message}`,
      { value: file },
    );
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
    throw new StrataError(
      'INDEX_INVALID',
      `Cannot read package index '${file}': it is not a JSON object of name to store path`,
      { value: file },
    );
  }
  const map = new Map<string, string>();
  for (const [k, v] of Object.entries(raw as Record<string, unknown>)) {
    if (typeof v !== 'string' || !v.startsWith('/')) {
      throw new StrataError(
        'INDEX_INVALID',
        `Cannot read package index '${file}': the entry '${k}' is not a store path`,
        { value: file },
      );
    }
    map.set(k, v);
  }
  return map;
}

/** Levenshtein distance, giving up (returning max + 1) once it exceeds `max`. */
function editDistance(a: string, b: string, max: number): number {
  if (Math.abs(a.length - b.length) > max) return max + 1;
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    let rowMin = i;
    for (let j = 1; j <= b.length; j++) {
      const v = Math.min(
        prev[j]! + 1,
        cur[j - 1]! + 1,
        prev[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1),
      );
      cur.push(v);
      rowMin = Math.min(rowMin, v);
    }
    if (rowMin > max) return max + 1;
    prev = cur;
  }
  return prev[b.length]!;
}
