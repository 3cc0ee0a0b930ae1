/**
 * The store database (`<state>/db/db.sqlite`), read and written exactly as Nix 2.8 does: schema
 * 10, the same pragmas, the same value encodings (`sha256:<hex>` hashes, `ultimate` 1 or NULL,
 * NULL for absent deriver/sigs/ca and for narSize 0, full paths), `DerivationOutputs` rows for
 * `.drv` files, and every multi-row registration in one transaction.
 */
import { createHash } from 'node:crypto';
import { closeSync, copyFileSync, existsSync, fsyncSync, mkdirSync, openSync, readFileSync, readSync, renameSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import Database from 'better-sqlite3';

import { StrataError } from '../../core/error.js';
import { parseHash } from '../../core/hash.js';
import type { StoreDir, StorePath } from '../../core/store-path.js';
import type { PathInfo, Registration } from '../store.js';
import { SCHEMA_SQL, SCHEMA_VERSION } from './schema.js';

export interface ValidPathRow {
  id: number;
  path: string;
  hash: string;
  registrationTime: number;
  deriver: string | null;
  narSize: number | null;
  ultimate: number | null;
  sigs: string | null;
  ca: string | null;
}


/** A `ValidPaths` row with its references' ids (`group_concat`, or null when it has none). */
export interface ClosureRow extends ValidPathRow {
  refs: string | null;
}

// Nix waits an hour for a busy database rather than failing; so do we ("database is locked" must
// never reach a user while another process holds a write transaction).
const BUSY_TIMEOUT_MS = 3_600_000;

// Two copies of the 48-byte WalIndexHdr begin the -shm file.
const WAL_INDEX_HEADERS = 96;

export class NixDatabase {
  readonly db: Database.Database;
  readonly readOnly: boolean;
  private readonly storeDir: StoreDir;
  private readonly stmts: ReturnType<typeof prepare>;
  /** `db.sqlite-shm`, opened on the first {@link changeToken}. */
  private shmFd = -1;
  private readonly shmScratch = Buffer.alloc(WAL_INDEX_HEADERS);
  private lastToken: Buffer | undefined;

  private constructor(db: Database.Database, storeDir: StoreDir, readOnly: boolean) {
    this.db = db;
    this.storeDir = storeDir;
    this.readOnly = readOnly;
    this.stmts = prepare(db);
  }

  /**
   * Opens the database in `dbDir`, creating it (schema 10) when absent and not read-only.
   * Read-only opens take no lock and write nothing, so a lower store on read-only media works.
   */
  static open(dbDir: string, storeDir: StoreDir, options: { readOnly?: boolean } = {}): NixDatabase {
    const readOnly = options.readOnly ?? false;
    const dbFile = join(dbDir, 'db.sqlite');
    const version = readSchemaVersion(dbDir);
    if (version > SCHEMA_VERSION) {
      throw new StrataError('DB_SCHEMA', `Cannot open store database '${dbFile}': its schema is version ${version}, but strata only supports ${SCHEMA_VERSION}`, { value: dbFile });
    }
    if (version !== 0 && version < SCHEMA_VERSION) {
      throw new StrataError('DB_SCHEMA', `Cannot open store database '${dbFile}': schema version ${version} is too old`, { value: dbFile, hint: 'open it once with real Nix to upgrade it' });
    }
    if (readOnly) {
      if (version === 0 || !existsSync(dbFile)) {
        throw new StrataError('DB_MISSING', `Cannot open store database '${dbFile}' read-only: it does not exist`, { value: dbFile });
      }
      const db = openReadOnly(dbFile);
      return new NixDatabase(db, storeDir, true);
    }

    mkdirSync(dbDir, { recursive: true });
    let db: Database.Database;
    try {
      db = new Database(dbFile, { timeout: BUSY_TIMEOUT_MS });
    } catch (e) {
      throw new StrataError('DB_OPEN', `Cannot open store database '${dbFile}': ${(e as Error).message}`, { value: dbFile, cause: e });
    }
    db.pragma('foreign_keys = 1');
    db.pragma('synchronous = normal');
    if (String(db.pragma('journal_mode', { simple: true })).toLowerCase() !== 'wal') db.pragma('journal_mode = wal');
    db.pragma('journal_size_limit = 1099511627776');
    db.pragma('wal_autocheckpoint = 40000');
    db.pragma('cache_size = -65536'); // 64 MiB: the million-path lower's hot pages stay cached.
    if (version === 0) {
      try {
        db.exec(`BEGIN IMMEDIATE; ${SCHEMA_SQL} COMMIT;`);
      } catch (e) {
        if (db.inTransaction) db.exec('ROLLBACK');
        // Another process created it between our check and now.
        if (!/already exists/.test((e as Error).message)) throw e;
      }
      writeSchemaFile(dbDir);
    } else {
      checkTables(db, dbFile);
    }
    return new NixDatabase(db, storeDir, false);
  }

  close(): void {
    if (this.shmFd >= 0) closeSync(this.shmFd);
    this.shmFd = -1;
    if (this.db.open) this.db.close();
  }

  /**
   * A token that changes with every commit by any process, read without a transaction: the two
   * copies of the WAL-index header at the start of `db.sqlite-shm` (sqlite.org/walformat.html
   * §2.2.1; every commit bumps its `iChange` counter, a WAL reset its salts). One pread (~3 µs
   * here) where a query's read transaction takes two fcntl locks and an fstat (~10 µs).
   * Equal tokens mean nothing was committed in between. `undefined` when it cannot tell: not
   * in WAL mode (read-only opens use a private copy), or the header is being written.
   */
  changeToken(): Buffer | undefined {
    if (this.readOnly || !this.db.open) return undefined;
    if (this.shmFd < 0) {
      // The -shm file exists while this connection is open in WAL mode, and no other process
      // can remove or truncate it while we hold it (SQLite's DMS lock).
      if (String(this.db.pragma('journal_mode', { simple: true })).toLowerCase() !== 'wal') return undefined;
      try {
        this.shmFd = openSync(`${this.db.name}-shm`, 'r');
      } catch {
        return undefined;
      }
    }
    const hdr = this.shmScratch;
    if (readSync(this.shmFd, hdr, 0, WAL_INDEX_HEADERS, 0) !== WAL_INDEX_HEADERS) return undefined;
    // Writers fill the second copy, then the first: copies that differ are a write under way.
    if (hdr.compare(hdr, 0, WAL_INDEX_HEADERS / 2, WAL_INDEX_HEADERS / 2, WAL_INDEX_HEADERS) !== 0) return undefined;
    // The same token object while nothing changes: no allocation on a hot path that polls.
    if (this.lastToken?.equals(hdr) !== true) this.lastToken = Buffer.from(hdr);
    return this.lastToken;
  }

  /** A row as a `PathInfo`; `refs` are full paths, or store paths already sorted by base name. */
  private rowToInfo(row: ValidPathRow, path: StorePath, refs: string[] | StorePath[]): PathInfo {
    return {
      path,
      narHash: parseHash(row.hash),
      narSize: row.narSize ?? 0,
      references: refs.length > 0 && typeof refs[0] !== 'string' ? (refs as StorePath[]) : (refs as string[]).map((r) => this.storeDir.parse(r)).sort((a, b) => (a.baseName < b.baseName ? -1 : 1)),
      deriver: row.deriver ? this.storeDir.parse(row.deriver) : undefined,
      registrationTime: row.registrationTime,
      ultimate: row.ultimate === 1,
      sigs: row.sigs ? row.sigs.split(' ').filter((s) => s.length > 0) : [],
      ca: row.ca ?? undefined,
    };
  }

  queryPathInfo(path: StorePath): PathInfo | undefined {
    const full = this.storeDir.print(path);
    const row = this.stmts.queryPathInfo.get(full) as ValidPathRow | undefined;
    if (!row) return undefined;
    const refs = (this.stmts.queryReferences.all(row.id) as { path: string }[]).map((r) => r.path);
    return this.rowToInfo(row, path, refs);
  }

  /** Path infos of many paths in two queries (the valid ones; order not kept). */
  queryPathInfos(paths: StorePath[]): PathInfo[] {
    if (paths.length === 0) return [];
    const json = JSON.stringify(paths.map((p) => this.storeDir.print(p)));
    const rows = this.stmts.queryPathInfoMany.all(json) as (ValidPathRow & { path: string })[];
    const refs = new Map<number, string[]>();
    // By the ids just found, not by path again: in a million-path lower each path lookup is a
    // walk of the text index (~25 µs here), ids are integer-key hits (bench/layered.ts, copy-up).
    for (const r of this.stmts.queryReferencesMany.all(JSON.stringify(rows.map((row) => row.id))) as { referrer: number; path: string }[]) {
      let list = refs.get(r.referrer);
      if (!list) refs.set(r.referrer, (list = []));
      list.push(r.path);
    }
    return rows.map((row) => this.rowToInfo(row, this.storeDir.parse(row.path), refs.get(row.id) ?? []));
  }

  isValid(path: StorePath): boolean {
    return this.stmts.queryId.get(this.storeDir.print(path)) !== undefined;
  }

  /** The recorded NAR size of a valid path (0 when a row has none), undefined when it is not valid; one query. */
  narSizeOf(path: StorePath): number | undefined {
    const size = this.stmts.queryNarSize.get(this.storeDir.print(path)) as number | null | undefined;
    return size === undefined ? undefined : (size ?? 0);
  }

  /** The valid subset of `paths`, answered with one join instead of one query each. */
  queryValid(paths: StorePath[]): StorePath[] {
    if (paths.length === 0) return [];
    const full = paths.map((p) => this.storeDir.print(p));
    const valid = new Set((this.stmts.queryValidMany.all(JSON.stringify(full)) as { path: string }[]).map((r) => r.path));
    return paths.filter((p, i) => valid.has(full[i]!));
  }

  queryAllValid(): StorePath[] {
    return (this.stmts.queryAll.all() as { path: string }[]).map((r) => this.storeDir.parse(r.path));
  }

  countValid(): number {
    return (this.stmts.countAll.get() as { n: number }).n;
  }

  totalNarSize(): number {
    return (this.stmts.sumNarSize.get() as { s: number | null }).s ?? 0;
  }

  queryReferrers(path: StorePath): StorePath[] {
    return (this.stmts.queryReferrers.all(this.storeDir.print(path)) as { path: string }[]).map((r) => this.storeDir.parse(r.path));
  }

  queryValidDerivers(path: StorePath): StorePath[] {
    return (this.stmts.queryValidDerivers.all(this.storeDir.print(path)) as { path: string }[]).map((r) => this.storeDir.parse(r.path));
  }

  queryDerivationOutputs(drv: StorePath): Map<string, StorePath> {
    const rows = this.stmts.queryDerivationOutputs.all(this.storeDir.print(drv)) as { id: string; path: string }[];
    return new Map(rows.map((r) => [r.id, this.storeDir.parse(r.path)]));
  }

  queryPathFromHashPart(hashPart: string): StorePath | undefined {
    if (hashPart.length !== 32) return undefined;
    const prefix = `${this.storeDir.path}/${hashPart}`;
    const row = this.stmts.queryPathFromHashPart.get(prefix) as { path: string } | undefined;
    return row && row.path.startsWith(prefix) ? this.storeDir.parse(row.path) : undefined;
  }

  /**
   * The closure of `paths` (the valid ones and all they reach) as path infos, order not kept:
   * one recursive query for the ids, then one read of their rows, each with its reference ids
   * (`group_concat`). A reference of a member is a member, so references resolve to paths
   * parsed once from these rows: no lookup by path again (a text-index walk, ~25 µs in a
   * million-path DB), no join and no JavaScript object per reference. For bench/layered.ts (a)
   * (71,000 members, 237,000 references) this is about half the CPU of rows plus reference
   * pairs (1.1 s against 1.9 s).
   */
  queryClosureInfos(paths: StorePath[]): PathInfo[] {
    const rows = this.queryClosureRows(paths);
    const pathOf = new Map<number, StorePath>();
    for (const row of rows) pathOf.set(row.id, this.storeDir.parse(row.path));
    return rows.map((row) => {
      const refs: StorePath[] = [];
      if (row.refs) for (const id of row.refs.split(',')) refs.push(pathOf.get(Number(id))!);
      return this.rowToInfo(row, pathOf.get(row.id)!, refs.sort(byBaseName));
    });
  }

  /**
   * The closure's rows exactly as stored, each with `refs`, its references' ids joined by commas
   * (all of them are ids of rows in the result), in id order: what a copy-up writes elsewhere
   * unchanged, and what {@link queryClosureInfos} builds path infos from.
   */
  queryClosureRows(paths: StorePath[]): ClosureRow[] {
    if (paths.length === 0) return [];
    const ids = this.stmts.queryClosureIds.all(JSON.stringify(paths.map((p) => this.storeDir.print(p)))) as number[];
    if (ids.length === 0) return [];
    return this.stmts.queryRowsWithRefIds.all(JSON.stringify(ids)) as ClosureRow[];
  }

  /** How many paths and NAR bytes the closure of `paths` holds, counted inside SQLite (no row is read out). */
  queryClosureSize(paths: StorePath[]): { paths: number; bytes: number } {
    if (paths.length === 0) return { paths: 0, bytes: 0 };
    const r = this.stmts.queryClosureSize.get(JSON.stringify(paths.map((p) => this.storeDir.print(p)))) as { n: number; bytes: number };
    return { paths: r.n, bytes: r.bytes };
  }

  /** The `DerivationOutputs` rows of the derivations with these row ids. */
  queryDerivationOutputRows(drvIds: number[]): { drv: number; id: string; path: string }[] {
    if (drvIds.length === 0) return [];
    return this.stmts.queryDerivationOutputsById.all(JSON.stringify(drvIds)) as { drv: number; id: string; path: string }[];
  }

  /** Row id by full path, for the given full paths that are valid. */
  queryIds(fullPaths: string[]): Map<string, number> {
    if (fullPaths.length === 0) return new Map();
    return new Map((this.stmts.queryIdMany.all(JSON.stringify(fullPaths)) as { id: number; path: string }[]).map((r) => [r.path, r.id]));
  }

  /**
   * Registers (or updates) paths in one transaction. Every reference must be valid already or
   * be in the batch; an update keeps `registrationTime` and `deriver`, as Nix's does.
   */
  register(batch: Registration[]): void {
    if (batch.length === 0) return;
    const now = Math.floor(Date.now() / 1000);
    const tx = this.db.transaction(() => {
      const ids = new Map<string, number>();
      for (const { info } of batch) {
        const full = this.storeDir.print(info.path);
        const existing = this.stmts.queryId.get(full) as { id: number } | undefined;
        const values = {
          hash: `sha256:${info.narHash.toBase16()}`,
          narSize: info.narSize === 0 ? null : info.narSize,
          ultimate: info.ultimate ? 1 : null,
          sigs: info.sigs.length > 0 ? [...new Set(info.sigs)].join(' ') : null,
          ca: info.ca ?? null,
        };
        if (existing) {
          this.stmts.updatePath.run({ ...values, id: existing.id });
          ids.set(full, existing.id);
        } else {
          const r = this.stmts.insertPath.run({
            ...values,
            path: full,
            registrationTime: info.registrationTime && info.registrationTime > 0 ? info.registrationTime : now,
            deriver: info.deriver ? this.storeDir.print(info.deriver) : null,
          });
          ids.set(full, Number(r.lastInsertRowid));
        }
      }
      for (const { info, derivationOutputs } of batch) {
        const referrer = ids.get(this.storeDir.print(info.path))!;
        for (const ref of info.references) {
          const refFull = this.storeDir.print(ref);
          const id = ids.get(refFull) ?? (this.stmts.queryId.get(refFull) as { id: number } | undefined)?.id;
          if (id === undefined) {
            throw new StrataError('REFERENCE_INVALID', `Cannot register '${this.storeDir.print(info.path)}': its reference '${refFull}' is not valid`, { value: refFull });
          }
          this.stmts.insertRef.run(referrer, id);
        }
        if (derivationOutputs) for (const [id, path] of derivationOutputs) this.stmts.insertDrvOutput.run(referrer, id, path);
      }
      checkAcyclic(batch, this.storeDir);
    });
    tx.immediate();
  }

  updateSigs(path: StorePath, sigs: string[]): void {
    this.stmts.updateSigs.run(sigs.length > 0 ? [...new Set(sigs)].join(' ') : null, this.storeDir.print(path));
  }

  /** Removes a row; fails with `PATH_IN_USE` while other valid paths refer to it. */
  invalidate(path: StorePath): void {
    try {
      this.stmts.deletePath.run(this.storeDir.print(path));
    } catch (e) {
      if (/FOREIGN KEY/.test((e as Error).message)) {
        throw new StrataError('PATH_IN_USE', `Cannot invalidate '${this.storeDir.print(path)}': other valid paths refer to it`, { value: this.storeDir.print(path) });
      }
      throw e;
    }
  }

  /** Runs `fn` in one write transaction. */
  transaction<T>(fn: () => T): T {
    return this.db.transaction(fn).immediate();
  }
}

/** The ids of the closure of the full paths in the JSON array `?`: one recursive query. */
const CLOSURE = `WITH RECURSIVE closure(id) AS (
  SELECT id FROM ValidPaths WHERE path IN (SELECT value FROM json_each(?))
  UNION SELECT reference FROM Refs JOIN closure ON referrer = closure.id)`;

function prepare(db: Database.Database) {
  return {
    queryPathInfo: db.prepare('SELECT id, hash, registrationTime, deriver, narSize, ultimate, sigs, ca FROM ValidPaths WHERE path = ?'),
    queryId: db.prepare('SELECT id FROM ValidPaths WHERE path = ?'),
    queryNarSize: db.prepare('SELECT narSize FROM ValidPaths WHERE path = ?').pluck(),
    queryPathInfoMany: db.prepare('SELECT id, path, hash, registrationTime, deriver, narSize, ultimate, sigs, ca FROM ValidPaths WHERE path IN (SELECT value FROM json_each(?))'),
    queryReferencesMany: db.prepare('SELECT r.referrer, v.path FROM Refs r JOIN ValidPaths v ON r.reference = v.id WHERE r.referrer IN (SELECT value FROM json_each(?))'),
    queryReferences: db.prepare('SELECT path FROM Refs JOIN ValidPaths ON reference = id WHERE referrer = ?'),
    queryReferrers: db.prepare('SELECT path FROM Refs JOIN ValidPaths ON referrer = id WHERE reference = (SELECT id FROM ValidPaths WHERE path = ?)'),
    queryValidDerivers: db.prepare('SELECT v.path FROM DerivationOutputs d JOIN ValidPaths v ON d.drv = v.id WHERE d.path = ?'),
    queryDerivationOutputs: db.prepare('SELECT id, path FROM DerivationOutputs WHERE drv = (SELECT id FROM ValidPaths WHERE path = ?)'),
    queryPathFromHashPart: db.prepare('SELECT path FROM ValidPaths WHERE path >= ? LIMIT 1'),
    queryValidMany: db.prepare('SELECT path FROM ValidPaths WHERE path IN (SELECT value FROM json_each(?))'),
    queryAll: db.prepare('SELECT path FROM ValidPaths'),
    countAll: db.prepare('SELECT count(*) AS n FROM ValidPaths'),
    sumNarSize: db.prepare('SELECT sum(narSize) AS s FROM ValidPaths'),
    queryClosureIds: db.prepare(`${CLOSURE} SELECT id FROM closure`).pluck(),
    queryRowsWithRefIds: db.prepare(`SELECT id, path, hash, registrationTime, deriver, narSize, ultimate, sigs, ca,
        (SELECT group_concat(reference) FROM Refs WHERE referrer = v.id) AS refs
      FROM ValidPaths v WHERE id IN (SELECT value FROM json_each(?)) ORDER BY id`),
    queryClosureSize: db.prepare(`${CLOSURE} SELECT count(*) AS n, coalesce(sum(narSize), 0) AS bytes FROM ValidPaths JOIN closure USING (id)`),
    queryDerivationOutputsById: db.prepare('SELECT drv, id, path FROM DerivationOutputs WHERE drv IN (SELECT value FROM json_each(?))'),
    queryIdMany: db.prepare('SELECT id, path FROM ValidPaths WHERE path IN (SELECT value FROM json_each(?))'),
    insertPath: db.prepare('INSERT INTO ValidPaths (path, hash, registrationTime, deriver, narSize, ultimate, sigs, ca) VALUES (@path, @hash, @registrationTime, @deriver, @narSize, @ultimate, @sigs, @ca)'),
    updatePath: db.prepare('UPDATE ValidPaths SET narSize = @narSize, hash = @hash, ultimate = @ultimate, sigs = @sigs, ca = @ca WHERE id = @id'),
    updateSigs: db.prepare('UPDATE ValidPaths SET sigs = ? WHERE path = ?'),
    insertRef: db.prepare('INSERT OR REPLACE INTO Refs (referrer, reference) VALUES (?, ?)'),
    insertDrvOutput: db.prepare('INSERT OR REPLACE INTO DerivationOutputs (drv, id, path) VALUES (?, ?, ?)'),
    deletePath: db.prepare('DELETE FROM ValidPaths WHERE path = ?'),
  };
}

/** Base-name order without building base names: hash parts first (they differ but for a clash), then names. */
function byBaseName(a: StorePath, b: StorePath): number {
  if (a.hashPart !== b.hashPart) return a.hashPart < b.hashPart ? -1 : 1;
  return a.name < b.name ? -1 : a.name > b.name ? 1 : 0;
}

/** Nix refuses a batch whose references form a cycle (other than self-references). */
function checkAcyclic(batch: Registration[], storeDir: StoreDir): void {
  const inBatch = new Map(batch.map((r) => [r.info.path.baseName, r.info]));
  const state = new Map<string, 'visiting' | 'done'>();
  const visit = (base: string, from: string): void => {
    const s = state.get(base);
    if (s === 'done') return;
    if (s === 'visiting') {
      throw new StrataError('REFERENCE_CYCLE', `Cannot register '${storeDir.path}/${base}': cycle detected in its references from '${storeDir.path}/${from}'`, { value: base });
    }
    state.set(base, 'visiting');
    for (const ref of inBatch.get(base)?.references ?? []) {
      if (ref.baseName !== base && inBatch.has(ref.baseName)) visit(ref.baseName, base);
    }
    state.set(base, 'done');
  };
  for (const base of inBatch.keys()) visit(base, base);
}

function readSchemaVersion(dbDir: string): number {
  const file = join(dbDir, 'schema');
  if (!existsSync(file)) return 0;
  const text = readFileSync(file, 'utf8').trim();
  if (!/^\d+$/.test(text)) {
    throw new StrataError('DB_CORRUPT', `Cannot open store database in '${dbDir}': the schema file is corrupt`, { value: file });
  }
  return Number(text);
}

function writeSchemaFile(dbDir: string): void {
  const file = join(dbDir, 'schema');
  const fd = openSync(file, 'w', 0o666);
  try {
    writeFileSync(fd, String(SCHEMA_VERSION));
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

function checkTables(db: Database.Database, dbFile: string): void {
  try {
    const names = new Set((db.prepare("SELECT name FROM sqlite_master WHERE type = 'table'").all() as { name: string }[]).map((r) => r.name));
    for (const t of ['ValidPaths', 'Refs', 'DerivationOutputs']) {
      if (!names.has(t)) throw new Error(`table ${t} is missing`);
    }
  } catch (e) {
    throw new StrataError('DB_CORRUPT', `Cannot open store database '${dbFile}': ${(e as Error).message}`, { value: dbFile, cause: e });
  }
}

/**
 * Opens a database for reading only, writing nothing and taking no lock in its directory.
 *
 * A rollback-journal database is opened in place (SQLite only reads it). A WAL database cannot
 * be: SQLite would create or write its `-shm`/`-wal` files beside it, which on a lower store is a
 * write into someone else's disk (and on read-only media fails), and better-sqlite3 is built
 * without URI filenames, so SQLite's `immutable=1` is out of reach. Then we read a private
 * snapshot copy, made once per (path, inode, size, mtime) and reused, which is safe because a
 * read-only lower does not change under us (a new generation is a new snapshot).
 */
function openReadOnly(dbFile: string): Database.Database {
  const open = (file: string): Database.Database => {
    const db = new Database(file, { readonly: true, fileMustExist: true, timeout: BUSY_TIMEOUT_MS });
    db.pragma('cache_size = -65536');
    checkTables(db, dbFile);
    return db;
  };
  if (!isWalDatabase(dbFile) && !existsSync(`${dbFile}-wal`)) return open(dbFile);
  const st = statSync(dbFile);
  const walSt = existsSync(`${dbFile}-wal`) ? statSync(`${dbFile}-wal`) : undefined;
  const key = createHash('sha256').update(`${dbFile}\0${st.dev}-${st.ino}-${st.size}-${st.mtimeMs}-${walSt?.size ?? 0}-${walSt?.mtimeMs ?? 0}`).digest('hex').slice(0, 32);
  const dir = join(process.env['XDG_CACHE_HOME'] ?? join(tmpdir(), 'strata-cache'), 'strata', 'ro-db', key);
  const copy = join(dir, 'db.sqlite');
  if (!existsSync(copy)) {
    mkdirSync(dir, { recursive: true });
    const tmp = `${copy}.tmp-${process.pid}`;
    copyFileSync(dbFile, tmp);
    if (walSt) copyFileSync(`${dbFile}-wal`, `${tmp}-wal`);
    // Fold the WAL into the copy and make it a plain rollback-journal database.
    const w = new Database(tmp);
    w.pragma('journal_mode = delete');
    w.close();
    renameSync(tmp, copy);
  }
  try {
    return open(copy);
  } catch (e) {
    if (e instanceof StrataError) throw e;
    throw new StrataError('DB_OPEN', `Cannot open store database '${dbFile}' read-only: ${(e as Error).message}`, { value: dbFile, cause: e });
  }
}

/** Byte 18 of a SQLite header is 2 for a WAL-mode database. */
function isWalDatabase(dbFile: string): boolean {
  const fd = openSync(dbFile, 'r');
  try {
    const header = Buffer.alloc(20);
    readSync(fd, header, 0, 20, 0);
    return header[18] === 2;
  } finally {
    closeSync(fd);
  }
}
