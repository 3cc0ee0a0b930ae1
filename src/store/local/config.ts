/**
 * Where a local store keeps things. A store rooted at `root` (a "chroot store") keeps the logical
 * store dir `/nix/store` (so hashes do not change) while its files live in `root/nix/store`.
 */
import { join } from 'node:path';

import { DEFAULT_STORE_DIR } from '../../core/store-path.js';
import { boolParam } from '../uri.js';

export interface LocalStoreConfig {
  /** Logical store dir, the one hashed into paths. */
  storeDir: string;
  /** Where the store's files are on this machine. */
  realStoreDir: string;
  /** `nix/var/nix`: db/, gcroots/, profiles/, temproots/, gc.lock. */
  stateDir: string;
  /** `nix/var/log/nix`: build logs. */
  logDir: string;
  /** Open the DB read-only (no lock, no write): the typical lower store. */
  readOnly: boolean;
  /** The root for chroot stores; undefined for the machine's own store. */
  root?: string | undefined;
}

/** The configuration Nix derives from `root=` (or `/abs/dir`) and the explicit overrides. */
export function localStoreConfig(params: {
  root?: string | undefined;
  store?: string | undefined;
  state?: string | undefined;
  real?: string | undefined;
  log?: string | undefined;
  readOnly?: boolean | undefined;
}): LocalStoreConfig {
  const root = params.root;
  const base = root ?? '/';
  const storeDir = params.store ?? DEFAULT_STORE_DIR;
  return {
    storeDir,
    realStoreDir: params.real ?? (root ? join(root, storeDir) : storeDir),
    stateDir: params.state ?? join(base, 'nix/var/nix'),
    logDir: params.log ?? join(base, 'nix/var/log/nix'),
    readOnly: params.readOnly ?? false,
    root,
  };
}

/** The configuration a local-store URI gives (`/abs/dir`, `local?…`, and `local-overlay://?…` for its upper). */
export function localStoreConfigOf(uri: string, parsed: { root?: string | undefined; params: Map<string, string> }): LocalStoreConfig {
  const p = parsed.params;
  return localStoreConfig({
    root: p.get('root') ?? parsed.root,
    store: p.get('store'),
    state: p.get('state'),
    real: p.get('real'),
    log: p.get('log'),
    readOnly: boolParam(uri, p, 'read-only', false),
  });
}
