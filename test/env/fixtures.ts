/**
 * Fixtures for environment tests: packages with real executables (small shell scripts under
 * `bin/`), added with `addPath` and real references, and the package index a store publishes.
 */
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';

import type { StorePath } from '../../src/core/store-path.js';
import { indexFileOfRoot } from '../../src/env/store-layout.js';
import { openStore } from '../../src/store/open.js';
import type { Store } from '../../src/store/store.js';

/** One package: scripts in `bin/` (each prints its line), other files, deps by earlier name. */
export interface PackageRecipe {
  name: string;
  /** Script name → the line it prints. */
  bin?: Record<string, string>;
  /** Relative path → contents. */
  files?: Record<string, string>;
  /** Names of earlier packages this one refers to (written into it, so the reference is real). */
  deps?: string[];
  /** Names of earlier packages listed in `nix-support/propagated-user-env-packages`. */
  propagated?: string[];
}

/** Adds packages in order; returns name → store path. */
export async function addPackages(
  store: Store,
  recipes: PackageRecipe[],
  known: Map<string, StorePath> = new Map(),
): Promise<Map<string, StorePath>> {
  const dir = store.storeDir;
  const tmp = mkdtempSync(join(tmpdir(), 'strata-pkg-'));
  try {
    for (const r of recipes) {
      const root = join(tmp, r.name);
      mkdirSync(root);
      const refs = [...(r.deps ?? []), ...(r.propagated ?? [])].map((d) => {
        const p = known.get(d);
        if (!p) throw new Error(`unknown dep ${d}`);
        return p;
      });
      const uses = refs.map((p) => `# uses ${dir.print(p)}\n`).join('');
      for (const [name, line] of Object.entries(r.bin ?? {})) {
        mkdirSync(join(root, 'bin'), { recursive: true });
        writeFileSync(join(root, 'bin', name), `#!/bin/sh\n${uses}echo '${line}'\n`);
        chmodSync(join(root, 'bin', name), 0o755);
      }
      for (const [rel, text] of Object.entries(r.files ?? {})) {
        mkdirSync(dirname(join(root, rel)), { recursive: true });
        writeFileSync(join(root, rel), text);
      }
      if (r.propagated) {
        mkdirSync(join(root, 'nix-support'), { recursive: true });
        writeFileSync(
          join(root, 'nix-support', 'propagated-user-env-packages'),
          r.propagated.map((n) => dir.print(known.get(n)!)).join(' '),
        );
      }
      if (refs.length > 0 && !r.bin && !r.propagated) writeFileSync(join(root, 'uses'), uses);
      const info = await store.addPath(root, { name: r.name, references: refs });
      known.set(r.name, info.path);
    }
    return known;
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}

/** Writes a package index (name → full store path or `.drv`). */
export function writeIndex(file: string, entries: Record<string, string>): void {
  mkdirSync(dirname(file), { recursive: true });
  writeFileSync(file, `${JSON.stringify(entries, null, 2)}\n`);
}

/** The attribute name a package is published under: its name without the version (`hello-2.12` → `hello`). */
export function attrOf(name: string): string {
  return name.replace(/-[0-9].*$/, '');
}

/** A lower store at `root` holding `recipes`, with its index (every package by attribute) and a generation. */
export async function makePackageLower(
  root: string,
  recipes: PackageRecipe[],
  generation = 'gen-1',
): Promise<{ root: string; paths: Map<string, StorePath> }> {
  const store = await openStore(root);
  try {
    const paths = await addPackages(store, recipes);
    writeIndex(
      indexFileOfRoot(root),
      Object.fromEntries([...paths].map(([n, p]) => [attrOf(n), store.storeDir.print(p)])),
    );
    writeFileSync(join(root, 'nix', 'var', 'nix', 'strata-generation'), `${generation}\n`);
    return { root, paths };
  } finally {
    await store.close();
  }
}
