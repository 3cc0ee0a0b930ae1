/**
 * Copy-up of metadata from a local lower's database into the upper's: the closure's rows, read
 * in two queries, written unchanged (same hash text, registration time, deriver, signatures, NULLs)
 * with their `Refs` and `DerivationOutputs` rows in one transaction, references first, rows the
 * upper already has left as they are. Nothing is parsed into `PathInfo` and back: for the
 * 500-path closure of bench/layered.ts (b) that round trip cost more than the SQL itself.
 */
import type Database from 'better-sqlite3';

import { StrataError } from '../../core/error.js';
import type { StoreDir, StorePath } from '../../core/store-path.js';
import type { ClosureRow, NixDatabase } from '../local/database.js';

/** What one copy-up wrote, and which asked-for paths the lower had. */
export interface CopyUpResult {
  /** Those of the asked-for paths the lower holds (now valid in the upper). */
  found: StorePath[];
  /** Rows written (closure members the upper lacked). */
  written: number;
}

/**
 * Copies the rows of the closure of `paths` (the ones `lower` holds) into `upper`.
 * `outputsElsewhere` gives `DerivationOutputs` of a `.drv` whose rows the lower lacks (another
 * lower may have them), looked up before the write transaction starts.
 */
export async function copyUpRows(
  storeDir: StoreDir,
  upper: NixDatabase,
  lower: NixDatabase,
  paths: StorePath[],
  outputsElsewhere: (drvPath: string) => Promise<Map<string, string> | undefined>,
): Promise<CopyUpResult> {
  const rows = lower.queryClosureRows(paths);
  const inClosure = new Set(rows.map((r) => r.path));
  const found = paths.filter((p) => inClosure.has(storeDir.print(p)));
  if (rows.length === 0) return { found, written: 0 };
  if (upper.readOnly) {
    throw new StrataError('STORE_READ_ONLY', `Cannot copy paths up: the upper database is read-only`, { value: storeDir.print(found[0] ?? paths[0]!) });
  }
  const ordered = referencesFirst(rows);
  const lowerPath = new Map(rows.map((r) => [r.id, r.path]));
  // Derivation outputs: the lower's own rows, else another lower's (asked now, outside the write).
  const drvIds = rows.filter((r) => r.path.endsWith('.drv')).map((r) => r.id);
  const outputs = new Map<number, [string, string][]>();
  for (const o of lower.queryDerivationOutputRows(drvIds)) {
    let list = outputs.get(o.drv);
    if (!list) outputs.set(o.drv, (list = []));
    list.push([o.id, o.path]);
  }
  for (const id of drvIds) {
    if (outputs.has(id)) continue;
    const elsewhere = await outputsElsewhere(lowerPath.get(id)!);
    if (elsewhere && elsewhere.size > 0) outputs.set(id, [...elsewhere]);
  }
  // Nothing to write (all copied up before): no write transaction, no lock taken.
  if (upper.queryIds(ordered.map((r) => r.path)).size === rows.length) return { found, written: 0 };
  const s = statements(upper.db);
  let written = 0;
  upper.transaction(() => {
    // Read again inside the write transaction: another process may have copied some up meanwhile.
    const upperId = upper.queryIds(ordered.map((r) => r.path));
    const added: ClosureRow[] = [];
    for (const r of ordered) {
      if (upperId.has(r.path)) continue;
      upperId.set(r.path, Number(s.insertPath.run(r.path, r.hash, r.registrationTime, r.deriver, r.narSize, r.ultimate, r.sigs, r.ca).lastInsertRowid));
      added.push(r);
    }
    for (const r of added) {
      const referrer = upperId.get(r.path)!;
      if (r.refs) {
        for (const ref of r.refs.split(',')) {
          const id = upperId.get(lowerPath.get(Number(ref)) ?? '');
          if (id === undefined) throw new StrataError('REFERENCE_INVALID', `Cannot copy up '${r.path}': its reference (row ${ref}) is not in the lower's closure`, { value: r.path });
          s.insertRef.run(referrer, id);
        }
      }
      for (const [name, path] of outputs.get(r.id) ?? []) s.insertDrvOutput.run(referrer, name, path);
    }
    written = added.length;
  });
  return { found, written };
}

/**
 * The rows with every reference before its referrer (self-references aside). Rows come in id
 * order, which is already that order in a store Nix or strata wrote (a path registers after its
 * references); any other order is sorted, and a cycle is refused as registration refuses it.
 */
function referencesFirst(rows: ClosureRow[]): ClosureRow[] {
  const byId = new Map(rows.map((r) => [r.id, r]));
  const refIds = (r: ClosureRow): number[] => (r.refs ? r.refs.split(',').map(Number).filter((id) => id !== r.id) : []);
  if (rows.every((r) => refIds(r).every((id) => id < r.id))) return rows;
  const out: ClosureRow[] = [];
  const state = new Map<number, 'visiting' | 'done'>();
  const visit = (r: ClosureRow, from: ClosureRow): void => {
    const st = state.get(r.id);
    if (st === 'done') return;
    if (st === 'visiting') {
      throw new StrataError('REFERENCE_CYCLE', `Cannot copy up '${r.path}': cycle detected in its references from '${from.path}'`, { value: r.path });
    }
    state.set(r.id, 'visiting');
    for (const id of refIds(r)) visit(byId.get(id)!, r);
    state.set(r.id, 'done');
    out.push(r);
  };
  for (const r of rows) visit(r, r);
  return out;
}

/** The three inserts, prepared once per upper database handle. */
const prepared = new WeakMap<Database.Database, ReturnType<typeof prepare>>();
function statements(db: Database.Database): ReturnType<typeof prepare> {
  let s = prepared.get(db);
  if (!s) prepared.set(db, (s = prepare(db)));
  return s;
}
function prepare(db: Database.Database) {
  return {
    // The statements Nix 2.8 uses for these rows (local-store.cc), positional.
    insertPath: db.prepare('INSERT INTO ValidPaths (path, hash, registrationTime, deriver, narSize, ultimate, sigs, ca) VALUES (?, ?, ?, ?, ?, ?, ?, ?)'),
    insertRef: db.prepare('INSERT OR REPLACE INTO Refs (referrer, reference) VALUES (?, ?)'),
    insertDrvOutput: db.prepare('INSERT OR REPLACE INTO DerivationOutputs (drv, id, path) VALUES (?, ?, ?)'),
  };
}
