/**
 * Profiles: one store path holding the merged trees of an environment's packages, as symlinks
 * into them, the way nixpkgs' `buildEnv` (builder.pl) makes a user environment:
 *
 * - a directory found in one package only is linked whole (`bin -> /nix/store/…-a/bin`); when a
 *   second package has it too, the link is "unfolded" into a real directory whose entries link
 *   into both, recursively — so a profile of 30 packages is a few hundred links, not a copy;
 * - two packages with the same file: if both are the same link or files with identical bytes it
 *   is no conflict (buildEnv's `checkCollisionContents`); otherwise it is a collision, reported
 *   with both paths, and the package listed first in the spec wins (buildEnv resolves by
 *   `meta.priority`; here the spec order is the priority);
 * - `nix-support/propagated-user-env-packages` of a package adds those packages after the
 *   listed ones, and `nix-support/`, `propagated-build-inputs`, `share/info/dir` and
 *   `perllocal.pod` are never linked (each package has its own; buildEnv skips them too).
 *
 * The tree's NAR is made in memory and added with `addFromNar` as the `source` path that
 * `addPath(tree, { references })` would give (recursive sha256, content-addressed), with the
 * packages as references: the same packages always give the same profile path, and the GC keeps
 * the packages while the profile lives. Link targets are logical store paths (`/nix/store/…`),
 * never the real dir.
 */
import { lstatSync, readdirSync, readFileSync, readlinkSync, statSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { Readable } from 'node:stream';

import { Hash } from '../core/hash.js';
import { NarWriter } from '../core/nar/writer.js';
import { sortStorePaths, type StoreDir, type StorePath } from '../core/store-path.js';
import type { LocalFsStore, PathInfo } from '../store/store.js';

/** Two packages providing the same file; the first in the spec was kept. */
export interface Collision {
  /** Path inside the profile, e.g. `bin/python`. */
  file: string;
  /** The link target kept (from the earlier package). */
  kept: string;
  /** The one left out. */
  dropped: string;
}

/** A merged tree: directories, and links to logical store paths. */
export type ProfileNode =
  | { kind: 'dir'; children: Map<string, ProfileNode> }
  | {
      kind: 'link';
      /** Logical target, `/nix/store/…/bin/x`. */ target: string;
      /** The same object on this machine. */ real: string;
      isDir: boolean;
    };

/** Where the packages are: the logical store dir and its files on this machine. */
export interface StoreLocation {
  storeDir: string;
  realStoreDir: string;
}

/** The merged tree of packages and what happened while merging. */
export interface MergedTree {
  root: ProfileNode & { kind: 'dir' };
  collisions: Collision[];
  /** Every package linked in, listed ones first then propagated ones (full logical paths). */
  packages: string[];
  /** Packages that are not directories (nothing to link), full logical paths. */
  skipped: string[];
}

// Files each package has for itself; buildEnv's builder.pl skips the same ones.
const SKIP_PATHS = new Set(['nix-support', 'propagated-build-inputs', 'share/info/dir']);
const SKIP_NAMES = new Set(['perllocal.pod']);
// Link resolution gives up after this many hops, as the kernel does (ELOOP at 40).
const MAX_LINK_HOPS = 40;

/**
 * Maps a path that may go through absolute `/nix/store/…` links to the object on this machine:
 * each link is followed, and a target in the logical store dir is redirected to the real one.
 */
export function resolveReal(loc: StoreLocation, p: string): string {
  const prefix = `${loc.storeDir}/`;
  let hops = 0;
  let done = loc.realStoreDir;
  let rest = p.startsWith(`${loc.realStoreDir}/`)
    ? p.slice(loc.realStoreDir.length + 1).split('/')
    : undefined;
  if (rest === undefined) return p;
  while (rest.length > 0) {
    const part = rest.shift()!;
    if (part === '' || part === '.') continue;
    if (part === '..') {
      done = dirname(done);
      continue;
    }
    const next = join(done, part);
    let st;
    try {
      st = lstatSync(next);
    } catch {
      return join(next, ...rest);
    }
    if (!st.isSymbolicLink()) {
      done = next;
      continue;
    }
    if (++hops > MAX_LINK_HOPS) return next;
    let target = readlinkSync(next);
    if (target.startsWith(prefix)) target = join(loc.realStoreDir, target.slice(prefix.length));
    else if (!target.startsWith('/')) target = resolve(done, target);
    if (!target.startsWith(`${loc.realStoreDir}/`)) return join(target, ...rest);
    rest = [...target.slice(loc.realStoreDir.length + 1).split('/'), ...rest];
    done = loc.realStoreDir;
  }
  return done;
}

function isDirectory(real: string): boolean {
  try {
    return statSync(real).isDirectory();
  } catch {
    return false;
  }
}

function sameContents(a: string, b: string): boolean {
  try {
    const sa = statSync(a);
    const sb = statSync(b);
    if (!sa.isFile() || !sb.isFile() || sa.size !== sb.size) return false;
    if ((sa.mode & 0o111) !== (sb.mode & 0o111)) return false;
    return readFileSync(a).equals(readFileSync(b));
  } catch {
    return false;
  }
}

/**
 * Merges the trees of `packages` (full logical store paths, highest priority first) as buildEnv
 * does. Pure apart from reading the packages.
 *
 * @example
 * ```ts
 * const { root, collisions } = mergePackages(loc, ['/nix/store/…-hello', '/nix/store/…-make']);
 * ```
 */
export function mergePackages(loc: StoreLocation, packages: string[]): MergedTree {
  const root: ProfileNode & { kind: 'dir' } = { kind: 'dir', children: new Map() };
  const collisions: Collision[] = [];
  const skipped: string[] = [];
  const linked: string[] = [];
  const seen = new Set<string>();
  const toReal = (logical: string) =>
    resolveReal(loc, join(loc.realStoreDir, logical.slice(loc.storeDir.length + 1)));

  const addEntries = (
    dir: ProfileNode & { kind: 'dir' },
    rel: string,
    logical: string,
    real: string,
  ): void => {
    // `real` is already resolved: only entries that are symlinks need following (d_type says
    // which, so a package of plain files and directories costs one readdir per directory).
    const entries = readdirSync(real, { withFileTypes: true }).sort((a, b) =>
      a.name < b.name ? -1 : a.name > b.name ? 1 : 0,
    );
    for (const e of entries) {
      const childRel = rel === '' ? e.name : `${rel}/${e.name}`;
      if (SKIP_PATHS.has(childRel) || SKIP_NAMES.has(e.name)) continue;
      // Symlinks, and entries a file system reports without a type, are looked at properly.
      const known = e.isDirectory() ? true : e.isFile() ? false : undefined;
      const childReal =
        known === undefined ? resolveReal(loc, join(real, e.name)) : join(real, e.name);
      addOne(dir, e.name, childRel, `${logical}/${e.name}`, childReal, known);
    }
  };

  const addOne = (
    dir: ProfileNode & { kind: 'dir' },
    name: string,
    rel: string,
    logical: string,
    real: string,
    knownDir?: boolean,
  ): void => {
    const isDir = knownDir ?? isDirectory(real);
    const existing = dir.children.get(name);
    if (existing === undefined) {
      dir.children.set(name, { kind: 'link', target: logical, real, isDir });
      return;
    }
    if (existing.kind === 'dir') {
      if (isDir) addEntries(existing, rel, logical, real);
      else
        collisions.push({
          file: rel,
          kept: `${existing.children.size} entries from several packages`,
          dropped: logical,
        });
      return;
    }
    if (existing.isDir && isDir) {
      // Unfold: the directory now comes from two packages.
      const merged: ProfileNode & { kind: 'dir' } = { kind: 'dir', children: new Map() };
      dir.children.set(name, merged);
      addEntries(merged, rel, existing.target, existing.real);
      addEntries(merged, rel, logical, real);
      return;
    }
    if (existing.target === logical || existing.real === real || sameContents(existing.real, real))
      return;
    collisions.push({ file: rel, kept: existing.target, dropped: logical });
  };

  const addPackage = (pkg: string): void => {
    if (seen.has(pkg)) return;
    seen.add(pkg);
    const real = toReal(pkg);
    if (!isDirectory(real)) {
      skipped.push(pkg);
      return;
    }
    linked.push(pkg);
    addEntries(root, '', pkg, real);
  };

  for (const p of packages) addPackage(p);
  // Propagated user-env packages come after all listed ones (lower priority), breadth first.
  for (let i = 0; i < linked.length; i++) {
    for (const q of propagatedOf(loc, linked[i]!)) addPackage(q);
  }
  return { root, collisions, packages: linked, skipped };
}

/** The store paths in a package's `nix-support/propagated-user-env-packages`. */
function propagatedOf(loc: StoreLocation, pkg: string): string[] {
  const file = resolveReal(
    loc,
    join(
      loc.realStoreDir,
      pkg.slice(loc.storeDir.length + 1),
      'nix-support',
      'propagated-user-env-packages',
    ),
  );
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch {
    return [];
  }
  const prefix = `${loc.storeDir}/`;
  return text
    .split(/\s+/)
    .filter((w) => w.startsWith(prefix) && !w.slice(prefix.length).includes('/'));
}

/** True when `rel` (e.g. `share/man`) exists in the merged tree, as a directory. */
export function treeHasDir(loc: StoreLocation, root: ProfileNode, rel: string): boolean {
  let node: ProfileNode = root;
  const parts = rel.split('/');
  for (let i = 0; i < parts.length; i++) {
    if (node.kind === 'link')
      return node.isDir && isDirectory(resolveReal(loc, join(node.real, ...parts.slice(i))));
    const next = node.children.get(parts[i]!);
    if (next === undefined) return false;
    node = next;
  }
  return node.kind === 'dir' || node.isDir;
}

/**
 * The canonical NAR of a merged tree: directories and symlinks only, entries in byte order.
 * Made in memory (a profile of 30 packages is a few KiB) so nothing is written but the object.
 */
export function profileNar(root: ProfileNode & { kind: 'dir' }): Buffer {
  const chunks: Uint8Array[] = [];
  const w = new NarWriter((c) => chunks.push(c));
  const visit = (node: ProfileNode): void => {
    if (node.kind === 'link') return w.symlink(Buffer.from(node.target));
    w.directory();
    const names = [...node.children.keys()].map((n) => Buffer.from(n)).sort(Buffer.compare);
    for (const name of names) {
      w.entry(name);
      visit(node.children.get(name.toString())!);
    }
    w.directoryEnd();
  };
  visit(root);
  w.end();
  return Buffer.concat(chunks);
}

/** A profile made in a store. */
export interface Profile {
  path: StorePath;
  info: PathInfo;
  tree: MergedTree;
  /** False when the store already had this exact profile. */
  added: boolean;
}

/**
 * Builds the profile of `packages` (valid store paths, highest priority first) in `store`: the
 * merged tree, added as a content-addressed path named `name` (default `strata-env`) with the
 * packages as references.
 *
 * @example
 * ```ts
 * const { path, tree } = await buildProfile(store, [hello, gnumake]);
 * tree.collisions; // [] when no two packages ship the same file
 * ```
 */
export async function buildProfile(
  store: LocalFsStore,
  packages: StorePath[],
  options: { name?: string | undefined } = {},
): Promise<Profile> {
  const dir: StoreDir = store.storeDir;
  const loc: StoreLocation = { storeDir: dir.path, realStoreDir: store.realStoreDir };
  const tree = mergePackages(
    loc,
    packages.map((p) => dir.print(p)),
  );
  const references = sortStorePaths(
    new Map(
      [...packages, ...tree.packages.map((p) => dir.parse(p))].map((p) => [p.baseName, p]),
    ).values(),
  );
  const name = options.name ?? 'strata-env';
  const nar = profileNar(tree.root);
  const narHash = Hash.of('sha256', nar);
  // A `source` path: recursive sha256 of the NAR, with references (as `nix-store --add` makes).
  const path = dir.makeFixedOutputPath(name, narHash, true, references);
  if (await store.isValidPath(path))
    return { path, info: (await store.queryPathInfo(path))!, tree, added: false };
  const info: PathInfo = {
    path,
    narHash,
    narSize: nar.length,
    references,
    ultimate: false,
    sigs: [],
    ca: `fixed:r:sha256:${narHash.toNix32()}`,
  };
  await store.addFromNar(info, Readable.from([nar]));
  return { path, info: (await store.queryPathInfo(path)) ?? info, tree, added: true };
}
