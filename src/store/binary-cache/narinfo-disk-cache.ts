/**
 * The narinfo lookups of HTTP caches, remembered on disk across processes as Nix does
 * (`$XDG_CACHE_HOME/nix/binary-cache-v6.sqlite`), in strata's own file
 * `$XDG_CACHE_HOME/strata/binary-cache-v1.sqlite`. Answers expire: found ones after 30 days,
 * "not there" after 3600 s (Nix's `narinfo-cache-positive-ttl`/`-negative-ttl`), and
 * `nix-cache-info` after 7 days (Nix's `cacheInfoTtl`).
 */
import { existsSync, mkdirSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';

import type BetterSqlite3 from 'better-sqlite3';

/** Nix 2.8's defaults, in seconds. */
export const DEFAULT_TTL_POSITIVE = 30 * 24 * 3600;
export const DEFAULT_TTL_NEGATIVE = 3600;
const CACHE_INFO_TTL = 7 * 24 * 3600;

/** A remembered lookup: the narinfo text, or `null` for "the cache does not have it". */
export type CachedLookup = { text: string } | null;

const SCHEMA = `
CREATE TABLE IF NOT EXISTS Caches (url TEXT PRIMARY KEY NOT NULL, info TEXT NOT NULL, timestamp INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS NarInfos (
  cache TEXT NOT NULL, hashPart TEXT NOT NULL, narinfo TEXT, timestamp INTEGER NOT NULL,
  PRIMARY KEY (cache, hashPart)
) WITHOUT ROWID;`;

/** The directory strata caches things in: `$XDG_CACHE_HOME/strata`, else `~/.cache/strata`. */
export function strataCacheDir(): string {
  const base = process.env['XDG_CACHE_HOME'] || join(homedir(), '.cache');
  return join(base, 'strata');
}

/**
 * Answers are kept in memory before they are written: up to this many rows go to the file in one
 * transaction, and whatever is pending after a second (a long-lived process) or at close. A
 * closure walk remembers a narinfo per path, and 300 single-row transactions (each a WAL append
 * and a lock round) were ~20 ms of a 300-path substitution at load 5.
 */
const WRITE_BATCH = 256;
const FILE_NAME = 'binary-cache-v1.sqlite';
const WRITE_DELAY_MS = 1000;

/** One process's handle on the shared disk cache. Unusable disks degrade to no caching. */
export class NarInfoDiskCache {
  readonly #db: BetterSqlite3.Database;
  readonly #get: BetterSqlite3.Statement<[string, string], { narinfo: string | null; timestamp: number }>;
  readonly #put: BetterSqlite3.Statement<[string, string, string | null, number]>;
  /** Rows remembered and not yet written, by `cache hashPart`. */
  readonly #pending = new Map<string, [string, string, string | null, number]>();
  #timer: NodeJS.Timeout | undefined;

  private constructor(db: BetterSqlite3.Database) {
    this.#db = db;
    this.#get = db.prepare('SELECT narinfo, timestamp FROM NarInfos WHERE cache = ? AND hashPart = ?');
    this.#put = db.prepare('INSERT OR REPLACE INTO NarInfos (cache, hashPart, narinfo, timestamp) VALUES (?, ?, ?, ?)');
  }

  /** Whether the cache file is there yet (one made now remembers nothing). */
  static exists(dir: string = strataCacheDir()): boolean {
    return existsSync(join(dir, FILE_NAME));
  }

  /** Opens (creating) the cache file; `undefined` when it cannot be used (read-only home…). */
  static async open(dir: string = strataCacheDir()): Promise<NarInfoDiskCache | undefined> {
    try {
      const { default: Database } = await import('better-sqlite3');
      mkdirSync(dir, { recursive: true });
      // 5 s busy timeout: several strata processes share the file, writes are single rows.
      const db = new Database(join(dir, FILE_NAME), { timeout: 5000 });
      // A cache, as Nix's SQLite::isCache() makes its own: no sync, a journal truncated rather
      // than a WAL beside it. Losing the last answers to a crash costs requests, nothing else;
      // opening and closing a new file this way took 3-5 ms here against 7-10 ms with a WAL.
      try {
        db.pragma('journal_mode = truncate');
      } catch {
        // A file left in WAL mode by an earlier strata, open in another process: kept as it is.
      }
      db.pragma('synchronous = off');
      db.exec(SCHEMA);
      return new NarInfoDiskCache(db);
    } catch {
      return undefined;
    }
  }

  /** A remembered answer still within its TTL, else `undefined` (ask the cache). */
  lookup(cache: string, hashPart: string, ttlPositive: number, ttlNegative: number): CachedLookup | undefined {
    if (ttlPositive <= 0 && ttlNegative <= 0) return undefined; // nothing remembered can be fresh
    const mine = this.#pending.get(`${cache} ${hashPart}`);
    const row = mine ? { narinfo: mine[2], timestamp: mine[3] } : this.#get.get(cache, hashPart);
    if (!row) return undefined;
    const age = Date.now() / 1000 - row.timestamp;
    if (row.narinfo === null) return age < ttlNegative ? null : undefined;
    return age < ttlPositive ? { text: row.narinfo } : undefined;
  }

  /** Remembers a narinfo text, or `null` for a 404. */
  remember(cache: string, hashPart: string, text: string | null): void {
    this.#pending.set(`${cache} ${hashPart}`, [cache, hashPart, text, Math.floor(Date.now() / 1000)]);
    if (this.#pending.size >= WRITE_BATCH) this.flush();
    else this.#timer ??= setTimeout(() => this.flush(), WRITE_DELAY_MS).unref();
  }

  /** Writes what was remembered since the last write, in one transaction. */
  flush(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    if (this.#pending.size === 0) return;
    const rows = [...this.#pending.values()];
    this.#pending.clear();
    try {
      this.#db.transaction(() => {
        for (const r of rows) this.#put.run(...r);
      })();
    } catch {
      // A busy or full disk only costs future requests.
    }
  }

  /** The cached `nix-cache-info` text of a cache, if fresh. */
  cacheInfo(cache: string): string | undefined {
    const row = this.#db.prepare('SELECT info, timestamp FROM Caches WHERE url = ?').get(cache) as { info: string; timestamp: number } | undefined;
    if (!row || Date.now() / 1000 - row.timestamp >= CACHE_INFO_TTL) return undefined;
    return row.info;
  }

  rememberCacheInfo(cache: string, text: string): void {
    try {
      this.#db.prepare('INSERT OR REPLACE INTO Caches (url, info, timestamp) VALUES (?, ?, ?)').run(cache, text, Math.floor(Date.now() / 1000));
    } catch {
      // As above.
    }
  }

  close(): void {
    this.flush();
    this.#db.close();
  }
}
