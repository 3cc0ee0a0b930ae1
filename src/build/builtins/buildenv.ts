/**
 * `builtin:buildenv` (Nix 2.8's builtins/buildenv.cc), what nix-env builds a profile with: a tree
 * of symlinks into the packages named by `derivations` (`active priority nOutputs paths…`
 * groups), directories shared between packages split into real directories, collisions settled
 * by priority (lower wins; equal priorities are an error), packages named in
 * `nix-support/propagated-user-env-packages` added afterwards at priorities 1000, 1001, …, and
 * `manifest.nix` linking to `manifest`.
 *
 * The packages are read through the store's logical paths, which may live elsewhere on this
 * machine (a chroot or layered store): symlinks are followed as they would resolve under the
 * logical store dir, and the links made point at logical paths, as Nix makes them.
 */
import { lstatSync, mkdirSync, readdirSync, readFileSync, readlinkSync, type Stats, statSync, symlinkSync, unlinkSync } from 'node:fs';
import { posix } from 'node:path';

import { StrataError } from '../../core/error.js';
import { type BuiltinContext, requireAttr } from './context.js';

/** Entries Nix leaves out of profiles: useless, or a collision in every profile. */
const SKIPPED_SUFFIXES = [
  '/propagated-build-inputs',
  '/nix-support',
  '/perllocal.pod',
  '/info/dir',
  '/log',
  '/manifest.nix',
  '/manifest.json',
];

interface Package {
  path: string;
  active: boolean;
  priority: number;
}

function errnoError(code: string, path: string): NodeJS.ErrnoException {
  const e: NodeJS.ErrnoException = new Error(`${code}: '${path}'`);
  e.code = code;
  return e;
}

/** Reads the logical file system: the store dir mapped to where its files are here. */
class LogicalFs {
  constructor(
    private readonly storeDir: string,
    private readonly realStoreDir: string,
  ) {}

  /** Where a logical (symlink-free) path is on this machine. */
  private real(p: string): string {
    if (this.storeDir === this.realStoreDir) return p;
    if (p === this.storeDir || p.startsWith(`${this.storeDir}/`)) return this.realStoreDir + p.slice(this.storeDir.length);
    return p;
  }

  /** `p` with every symlink resolved as under the logical store dir (Nix's canonPath(p, true)). */
  resolve(p: string): string {
    if (this.storeDir === this.realStoreDir) return p;
    let rest = posix.normalize(p).split('/').filter((c) => c !== '');
    let done = '';
    for (let hops = 0; rest.length > 0; ) {
      const c = rest.shift()!;
      if (c === '..') {
        done = posix.dirname(done === '' ? '/' : done);
        if (done === '/') done = '';
        continue;
      }
      const next = `${done}/${c}`;
      const st = lstatSync(this.real(next));
      if (!st.isSymbolicLink()) {
        if (rest.length > 0 && !st.isDirectory()) throw errnoError('ENOTDIR', next);
        done = next;
        continue;
      }
      if (++hops > 40) throw errnoError('ELOOP', next);
      const target = readlinkSync(this.real(next));
      if (target.startsWith('/')) done = '';
      rest = [...target.split('/').filter((x) => x !== ''), ...rest];
    }
    return done === '' ? '/' : done;
  }

  stat(p: string): Stats {
    return statSync(this.real(this.resolve(p)));
  }

  readdir(p: string): string[] {
    return readdirSync(this.real(this.resolve(p))).sort();
  }

  readFile(p: string): string {
    return readFileSync(this.real(this.resolve(p)), 'utf8');
  }
}

class Profile {
  readonly priorities = new Map<string, number>();

  constructor(
    private readonly fs: LogicalFs,
    /** The profile's real location and its logical path, for messages. */
    private readonly out: string,
    private readonly outLogical: string,
    private readonly warn: (line: string) => void,
  ) {}

  /** Links the entries of `srcDir` (logical) into `dstDir` (a real path under the output). */
  createLinks(srcDir: string, dstDir: string, priority: number): void {
    let entries: string[];
    try {
      entries = this.fs.readdir(srcDir);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOTDIR') {
        this.warn(`warning: not including '${srcDir}' in the user environment because it's not a directory`);
        return;
      }
      throw e;
    }
    for (const name of entries) {
      if (name.startsWith('.')) continue; // Not matched by a glob.
      const srcFile = `${srcDir}/${name}`;
      const dstFile = `${dstDir}/${name}`;
      let srcSt: Stats;
      try {
        srcSt = this.fs.stat(srcFile);
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code;
        if (code === 'ENOENT' || code === 'ENOTDIR') {
          this.warn(`warning: skipping dangling symlink '${this.logical(dstFile)}'`);
          continue;
        }
        throw e;
      }
      if (SKIPPED_SUFFIXES.some((s) => srcFile.endsWith(s))) continue;
      const dstSt = lstatOrUndefined(dstFile);
      if (srcSt.isDirectory()) {
        if (dstSt?.isDirectory()) {
          this.createLinks(srcFile, dstFile, priority);
          continue;
        }
        if (dstSt?.isSymbolicLink()) {
          // Another package's directory: make it a real one holding both packages' entries.
          const target = this.fs.resolve(readlinkSync(dstFile));
          if (!this.fs.stat(target).isDirectory())
            throw buildenvError(`collision between '${srcFile}' and non-directory '${target}'`, srcFile);
          unlinkSync(dstFile);
          mkdirSync(dstFile, { mode: 0o755 });
          this.createLinks(target, dstFile, this.priorities.get(dstFile) ?? 0);
          this.createLinks(srcFile, dstFile, priority);
          continue;
        }
      } else if (dstSt?.isSymbolicLink()) {
        const prev = this.priorities.get(dstFile) ?? 0;
        if (prev === priority)
          throw buildenvError(
            `packages '${srcFile}' and '${readlinkSync(dstFile)}' have the same priority ${priority}; use 'nix-env --set-flag priority NUMBER INSTALLED_PKGNAME' to change the priority of one of the conflicting packages (0 being the highest priority)`,
            srcFile,
          );
        if (prev < priority) continue;
        unlinkSync(dstFile);
      } else if (dstSt?.isDirectory()) {
        throw buildenvError(`collision between non-directory '${srcFile}' and directory '${this.logical(dstFile)}'`, srcFile);
      }
      symlinkSync(srcFile, dstFile);
      this.priorities.set(dstFile, priority);
    }
  }

  /** A path under the output as Nix names it (its logical path). */
  private logical(real: string): string {
    return real.startsWith(this.out) ? this.outLogical + real.slice(this.out.length) : real;
  }
}

function lstatOrUndefined(p: string): Stats | undefined {
  try {
    return lstatSync(p);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw e;
  }
}

function buildenvError(message: string, value: string): StrataError {
  return new StrataError('BUILD_FAILED', message, { value });
}

/** The packages of the `derivations` attribute, in nix-env's `active priority n paths…` groups. */
function parsePackages(spec: string): Package[] {
  const words = spec.split(/[ \t\n\r]+/).filter((w) => w !== '');
  const pkgs: Package[] = [];
  const int = (w: string | undefined): number => {
    const n = w === undefined ? NaN : parseInt(w, 10);
    if (Number.isNaN(n)) throw new StrataError('DRV_INVALID', `invalid 'derivations' entry '${w ?? ''}': not a number`, { value: w ?? '' });
    return n;
  };
  while (words.length > 0) {
    const active = words.shift()!;
    const priority = int(words.shift());
    const n = int(words.shift());
    for (let i = 0; i < n; i++) {
      const path = words.shift();
      if (path === undefined) throw new StrataError('DRV_INVALID', `invalid 'derivations': missing output path`, { value: spec });
      pkgs.push({ path, active: active !== 'false', priority });
    }
  }
  return pkgs;
}

/**
 * Builds the profile at `ctx.target`.
 *
 * @example await builtinBuildenv({ env, target, storeDir: '/nix/store', realStoreDir, log });
 */
export function builtinBuildenv(ctx: BuiltinContext): void {
  const { env } = ctx;
  const out = requireAttr(env, 'out');
  const pkgs = parsePackages(requireAttr(env, 'derivations'));
  mkdirSync(ctx.target, { recursive: true, mode: 0o755 });
  const fs = new LogicalFs(ctx.storeDir, ctx.realStoreDir);
  const profile = new Profile(fs, ctx.target, out, ctx.log);

  const done = new Set<string>();
  let postponed = new Set<string>();
  const addPkg = (pkgDir: string, priority: number): void => {
    if (done.has(pkgDir)) return;
    done.add(pkgDir);
    profile.createLinks(pkgDir, ctx.target, priority);
    let propagated: string;
    try {
      propagated = fs.readFile(`${pkgDir}/nix-support/propagated-user-env-packages`);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' || code === 'ENOTDIR') return;
      throw e;
    }
    for (const p of propagated.split(/[ \n]+/).filter((w) => w !== '')) if (!done.has(p)) postponed.add(p);
  };

  // Explicitly installed packages in priority order (fewer replaced links), then propagated ones.
  pkgs.sort((a, b) => a.priority - b.priority || (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  for (const p of pkgs) if (p.active) addPkg(p.path, p.priority);
  let counter = 1000;
  while (postponed.size > 0) {
    const dirs = [...postponed].sort();
    postponed = new Set();
    for (const d of dirs) addPkg(d, counter++);
  }

  symlinkSync(requireAttr(env, 'manifest'), `${ctx.target}/manifest.nix`);
}
