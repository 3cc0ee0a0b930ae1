// Creating, using once and closing a new narinfo disk cache file (src/store/binary-cache/
// narinfo-disk-cache.ts's schema), with a WAL and synchronous normal, and as Nix's
// SQLite::isCache opens its own (a truncated journal, synchronous off); interleaved, ms per
// phase. Behind the disk cache figure in BENCHMARKS.md (eighth session).
//   npx tsx bench/probes/sqlite-cache-open.ts [ROUNDS]
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import Database from 'better-sqlite3';

import { median } from '../lib/timing.js';

const SCHEMA = `CREATE TABLE IF NOT EXISTS Caches (url TEXT PRIMARY KEY NOT NULL, info TEXT NOT NULL, timestamp INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS NarInfos (cache TEXT NOT NULL, hashPart TEXT NOT NULL, narinfo TEXT, timestamp INTEGER NOT NULL, PRIMARY KEY (cache, hashPart)) WITHOUT ROWID;`;
const modes: Record<string, string[]> = { wal: ['journal_mode = wal', 'synchronous = normal'], cache: ['journal_mode = truncate', 'synchronous = off'] };
const rounds = Number(process.argv[2] ?? 7);
new Database(':memory:').close(); // the library's own start-up, paid once by either
const all: Record<string, number[]> = { wal: [], cache: [] };
for (let r = 0; r < rounds; r++) {
  for (const [name, pragmas] of Object.entries(modes)) {
    const dir = mkdtempSync(join(tmpdir(), 'strata-probe-sqlite-'));
    const t = performance.now();
    const db = new Database(join(dir, 'x.sqlite'), { timeout: 5000 });
    for (const p of pragmas) db.pragma(p);
    db.exec(SCHEMA);
    db.prepare('INSERT OR REPLACE INTO Caches (url, info, timestamp) VALUES (?, ?, ?)').run('http://x', 'StoreDir: /nix/store\n', 1);
    db.close();
    all[name]!.push(performance.now() - t);
    rmSync(dir, { recursive: true, force: true });
  }
}
for (const [name, xs] of Object.entries(all)) console.log(`${name}: median ${median(xs).toFixed(1)} ms (runs ${xs.map((x) => x.toFixed(1)).join(', ')})`);
