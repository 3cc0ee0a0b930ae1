/**
 * `strata.json`, the human-editable configuration at the root of a `layered:///dir` store: its
 * lowers in priority order and the generation of each that the current mount was made with.
 */
import { existsSync, readFileSync, renameSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

import { StrataError } from '../../core/error.js';
import { parseStoreUri } from '../uri.js';

export interface LowerConfig {
  /** A store URI: a local store root (`/mnt/bigdisk`), or a binary cache (`file://`, `http://`). */
  uri: string;
  /** Short name shown as `layer` in answers (default `lower0`, `lower1`… in priority order). */
  name: string;
  /** The generation the current mount was made with (local lowers). */
  generation?: string | undefined;
}

export interface LayeredConfig {
  version: 1;
  /** Highest priority first. */
  lowers: LowerConfig[];
  /** Keys trusted for paths arriving from binary-cache lowers and substituters. */
  trustedPublicKeys: string[];
  /** Extra substituters asked when no layer has a path. */
  substituters: string[];
}

export const CONFIG_FILE = 'strata.json';

export function layeredPaths(dir: string) {
  return {
    config: join(dir, CONFIG_FILE),
    merged: join(dir, 'nix', 'store'),
    state: join(dir, 'nix', 'var', 'nix'),
    log: join(dir, 'nix', 'var', 'log', 'nix'),
    /** Exists while a deletion straight from the upper layer still owes a remount. */
    remountMarker: join(dir, 'nix', 'var', 'nix', 'strata-remount-needed'),
    upper: join(dir, 'upper'),
    work: join(dir, 'work'),
  };
}

export function readLayeredConfig(dir: string): LayeredConfig {
  const file = join(dir, CONFIG_FILE);
  if (!existsSync(file)) {
    throw new StrataError('LAYERED_MISSING', `Cannot open layered store '${dir}': '${file}' does not exist`, { value: dir, hint: `create it with: strata init ${dir} --lower URI` });
  }
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(file, 'utf8'));
  } catch (e) {
    throw new StrataError('CONFIG_INVALID', `Cannot read '${file}': ${(e as Error).message}`, { value: file });
  }
  const bad = (why: string) => new StrataError('CONFIG_INVALID', `Cannot read '${file}': ${why}`, { value: file });
  if (typeof raw !== 'object' || raw === null) throw bad('not a JSON object');
  const o = raw as Record<string, unknown>;
  if (o['version'] !== 1) throw bad(`unsupported version ${JSON.stringify(o['version'])}`);
  if (!Array.isArray(o['lowers']) || o['lowers'].length === 0) throw bad('"lowers" must be a non-empty list');
  const known = new Set(['version', 'lowers', 'trustedPublicKeys', 'substituters']);
  for (const k of Object.keys(o)) if (!known.has(k)) throw bad(`unknown key '${k}'`);
  const names = new Set<string>();
  const lowers = o['lowers'].map((l: unknown, i: number): LowerConfig => {
    if (typeof l === 'string') l = { uri: l };
    if (typeof l !== 'object' || l === null || typeof (l as { uri?: unknown }).uri !== 'string') throw bad(`lower ${i} needs a "uri" string`);
    const lc = l as { uri: string; name?: unknown; generation?: unknown };
    const name = typeof lc.name === 'string' ? lc.name : `lower${i}`;
    if (names.has(name) || name === 'upper') throw bad(`lower name '${name}' is used twice`);
    names.add(name);
    return { uri: lc.uri, name, generation: typeof lc.generation === 'string' ? lc.generation : undefined };
  });
  const strings = (key: string): string[] => {
    const v = o[key] ?? [];
    if (!Array.isArray(v) || v.some((x) => typeof x !== 'string')) throw bad(`"${key}" must be a list of strings`);
    return v as string[];
  };
  return { version: 1, lowers, trustedPublicKeys: strings('trustedPublicKeys'), substituters: strings('substituters') };
}

/** Writes the configuration atomically (temp file, then rename). */
export function writeLayeredConfig(dir: string, config: LayeredConfig): void {
  const file = join(dir, CONFIG_FILE);
  const tmp = `${file}.tmp-${process.pid}`;
  writeFileSync(tmp, `${JSON.stringify(config, null, 2)}\n`);
  renameSync(tmp, file);
}

/**
 * A lower store's generation: the `strata-generation` file a publisher writes beside its DB
 * (`nix/var/nix/strata-generation`), else a fingerprint of the DB file and its WAL, which changes
 * whenever the lower's contents do.
 */
export function lowerGeneration(lowerRoot: string): string {
  const published = join(lowerRoot, 'nix', 'var', 'nix', 'strata-generation');
  if (existsSync(published)) return readFileSync(published, 'utf8').trim();
  const db = join(lowerRoot, 'nix', 'var', 'nix', 'db', 'db.sqlite');
  if (!existsSync(db)) return 'none';
  const st = statSync(db);
  // An empty WAL holds no rows: it is there while some process has the DB open (a lower opened
  // read-write, as `local-overlay://` opens it), and must not make each run a new generation.
  const walStat = existsSync(`${db}-wal`) ? statSync(`${db}-wal`) : undefined;
  const wal = walStat && walStat.size > 0 ? walStat : undefined;
  return `db-${st.size}-${Math.floor(st.mtimeMs)}${wal ? `-${wal.size}-${Math.floor(wal.mtimeMs)}` : ''}`;
}

/** The root of a local lower given as `/dir` or `local?root=/dir`; undefined for other stores. */
export function localLowerRoot(uri: string): string | undefined {
  const parsed = parseStoreUri(uri);
  return parsed.scheme === 'local' ? (parsed.params.get('root') ?? parsed.root) : undefined;
}
