/**
 * A synthetic lower store of N paths (default 1,000,000) for the metadata benchmarks: the Nix
 * schema-10 database only (no files; metadata queries never look at them), written directly with
 * better-sqlite3 in one transaction.
 *
 * The shape is meant to look like a big Nix store:
 * - ids in a topological order (references registered first, as Nix does);
 * - each path refers to 0–10 earlier paths (log-normal count, median 3), picked with power-law
 *   popularity: target `floor(t · u^3)` for uniform u, so early paths (the glibc and bash of this
 *   store) are referred to by very many, late ones by few;
 * - NAR sizes log-normal with median 20 KiB (σ 1.5: a long tail of big paths);
 * - most paths have a deriver and a signature, as substituted paths do.
 *
 * Inserts are in id order for ValidPaths and in (referrer, reference) order for Refs; the
 * secondary indexes are dropped during the load and re-created after with Nix's exact statements
 * (SQLite keeps each statement's text, so every table, index and trigger reads as Nix's). A million paths take a minute or
 * two here, so the result is cached under .cache/bench/synthetic-<N>-<seed>/ and reused.
 *
 * Run alone: `npx tsx bench/gen/synthetic-store.ts [--paths N] [--seed S]` (prints the root).
 */
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

import Database from 'better-sqlite3';

import { SCHEMA_SQL, SCHEMA_VERSION } from '../../src/store/local/schema.js';
import { CACHE } from '../lib/env.js';
import { hashPart, logNormal, prng } from '../lib/random.js';

export interface SyntheticStore {
  /** The store root (`local?root=…`): `nix/store` (empty) and `nix/var/nix/db`. */
  root: string;
  dbFile: string;
  paths: number;
  refs: number;
  /** Seconds the generation took (0 when the cached copy was used). */
  generatedIn: number;
}

const INDEXES = [
  'CREATE INDEX IndexReferrer on Refs(referrer)',
  'CREATE INDEX IndexReference on Refs(reference)',
  'CREATE INDEX IndexDerivationOutputs on DerivationOutputs(path)',
];

/** Returns the cached synthetic store for (paths, seed), generating it first when missing. */
export function syntheticStore(paths = 1_000_000, seed = 1): SyntheticStore {
  const dir = join(CACHE, `synthetic-${paths}-${seed}`);
  const root = join(dir, 'root');
  const dbFile = join(root, 'nix', 'var', 'nix', 'db', 'db.sqlite');
  const meta = join(dir, 'meta.json');
  if (existsSync(meta))
    return {
      ...(JSON.parse(readFileSync(meta, 'utf8')) as Omit<SyntheticStore, 'generatedIn'>),
      generatedIn: 0,
    };
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(join(root, 'nix', 'store'), { recursive: true });
  mkdirSync(join(root, 'nix', 'var', 'nix', 'db'), { recursive: true });
  const t0 = Date.now();
  const tmp = `${dbFile}.tmp`;
  const db = new Database(tmp);
  db.pragma('journal_mode = off');
  db.pragma('synchronous = off');
  db.pragma('cache_size = -1048576'); // 1 GiB: the path index takes random inserts.
  for (const sql of INDEXES)
    if (!SCHEMA_SQL.includes(sql)) throw new Error(`schema changed: '${sql}' is not in SCHEMA_SQL`);
  db.exec(SCHEMA_SQL);
  for (const sql of INDEXES) db.exec(`DROP INDEX ${sql.split(' ')[2]}`);

  const rand = prng(seed);
  const insertPath = db.prepare(
    'INSERT INTO ValidPaths (id, path, hash, registrationTime, deriver, narSize, ultimate, sigs, ca) VALUES (?, ?, ?, ?, ?, ?, NULL, ?, NULL)',
  );
  const insertRef = db.prepare('INSERT INTO Refs (referrer, reference) VALUES (?, ?)');
  const sig = (): string =>
    `cache.example.org-1:${Buffer.from(Array.from({ length: 64 }, () => Math.floor(rand() * 256))).toString('base64')}`;
  const hex = (): string =>
    Array.from({ length: 8 }, () =>
      Math.floor(rand() * 2 ** 32)
        .toString(16)
        .padStart(8, '0'),
    ).join('');
  let refs = 0;
  db.transaction(() => {
    for (let t = 0; t < paths; t++) {
      const id = t + 1;
      const name = `p${t}-${1 + (t % 7)}.${t % 13}`;
      const deriver = rand() < 0.85 ? `/nix/store/${hashPart(rand)}-${name}.drv` : null;
      const narSize = Math.max(120, Math.round(logNormal(rand, 20 * 1024, 1.5)));
      insertPath.run(
        id,
        `/nix/store/${hashPart(rand)}-${name}`,
        `sha256:${hex()}`,
        1_700_000_000 + t,
        deriver,
        narSize,
        rand() < 0.7 ? sig() : null,
      );
      if (t === 0) continue;
      const k = Math.min(10, Math.floor(logNormal(rand, 3, 0.8)));
      const targets = new Set<number>();
      for (let i = 0; i < k; i++) targets.add(1 + Math.floor(t * rand() ** 3));
      if (rand() < 0.1) targets.add(id); // some paths refer to themselves, as in real stores
      for (const r of [...targets].sort((a, b) => a - b)) insertRef.run(id, r);
      refs += targets.size;
    }
  })();
  for (const sql of INDEXES) db.exec(sql);
  db.pragma('journal_mode = delete');
  db.close();
  renameSync(tmp, dbFile);
  writeFileSync(join(root, 'nix', 'var', 'nix', 'db', 'schema'), String(SCHEMA_VERSION));
  const result = { root, dbFile, paths, refs };
  writeFileSync(meta, JSON.stringify(result));
  return { ...result, generatedIn: (Date.now() - t0) / 1000 };
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const arg = (name: string, dflt: number): number => {
    const i = process.argv.indexOf(name);
    return i >= 0 ? Number(process.argv[i + 1]) : dflt;
  };
  const s = syntheticStore(arg('--paths', 1_000_000), arg('--seed', 1));
  console.log(
    `${s.root} (${s.paths} paths, ${s.refs} references${s.generatedIn > 0 ? `, generated in ${s.generatedIn.toFixed(0)} s` : ', cached'})`,
  );
}
