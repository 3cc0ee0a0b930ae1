/**
 * `exportReferencesGraph` (Nix 2.8's `initTmpDir`): pairs `<file name> <store path>`; each path's
 * closure goes into `<file name>` in the build dir, in the format of
 * `nix-store --register-validity` with empty derivers. Used by builders that pack closures
 * (images, closure-info).
 */
import { StrataError } from '../core/error.js';
import type { Derivation } from '../core/derivation/index.js';
import { type StorePath, sortStorePaths } from '../core/store-path.js';
import type { LocalFsStore, PathInfo } from '../store/store.js';
import type { BuildDirFile } from './environment.js';

/** The file names Nix accepts (no slash, no leading dot or dash). */
const FILE_NAME = /^[A-Za-z_][A-Za-z0-9_.-]*$/;

/**
 * The files `exportReferencesGraph` asks for; none when the derivation does not set it. Each
 * path must be in the input closure; a derivation in a closure brings its outputs' closures too.
 */
export async function exportReferencesGraph(
  store: LocalFsStore,
  drvPath: StorePath,
  drv: Derivation,
  inputClosure: StorePath[],
): Promise<BuildDirFile[]> {
  const value = drv.env.get('exportReferencesGraph');
  if (value === undefined) return [];
  const dir = store.storeDir;
  const full = dir.print(drvPath);
  const tokens = value.split(/\s+/).filter((s) => s !== '');
  if (tokens.length % 2 !== 0) {
    throw new StrataError(
      'DRV_INVALID',
      `Cannot build '${full}': 'exportReferencesGraph' has an odd number of words`,
      { value },
    );
  }
  const inputs = new Set(inputClosure.map((p) => p.baseName));
  const infos = new Map<string, PathInfo>();
  const addClosure = async (start: StorePath, into: Map<string, StorePath>): Promise<void> => {
    const queue = [start];
    while (queue.length > 0) {
      const p = queue.shift()!;
      if (into.has(p.baseName)) continue;
      const info = infos.get(p.baseName) ?? (await store.queryPathInfo(p));
      if (info === undefined) {
        throw new StrataError(
          'PATH_NOT_VALID',
          `Cannot build '${full}': '${dir.print(p)}' in 'exportReferencesGraph' is not valid`,
          { value: dir.print(p) },
        );
      }
      infos.set(p.baseName, info);
      into.set(p.baseName, p);
      queue.push(...info.references);
    }
  };

  const files: BuildDirFile[] = [];
  for (let i = 0; i < tokens.length; i += 2) {
    const name = tokens[i]!;
    const target = tokens[i + 1]!;
    if (!FILE_NAME.test(name)) {
      throw new StrataError(
        'DRV_INVALID',
        `Cannot build '${full}': invalid file name '${name}' in 'exportReferencesGraph'`,
        { value: name },
      );
    }
    let start: StorePath;
    try {
      start = dir.toStorePath(target);
    } catch {
      throw new StrataError(
        'DRV_INVALID',
        `Cannot build '${full}': 'exportReferencesGraph' holds '${target}', which is not a store path`,
        { value: target },
      );
    }
    if (!inputs.has(start.baseName)) {
      throw new StrataError(
        'DRV_INVALID',
        `Cannot build '${full}': cannot export the references of '${dir.print(start)}', which is not in its input closure`,
        { value: dir.print(start) },
      );
    }
    const closure = new Map<string, StorePath>();
    await addClosure(start, closure);
    for (const p of [...closure.values()]) {
      if (!p.isDerivation()) continue;
      for (const out of (await store.queryDerivationOutputs(p)).values())
        await addClosure(out, closure);
    }
    let text = '';
    for (const p of sortStorePaths(closure.values())) {
      const refs = sortStorePaths(infos.get(p.baseName)!.references);
      text += `${dir.print(p)}\n\n${refs.length}\n`;
      for (const r of refs) text += `${dir.print(r)}\n`;
    }
    files.push({ name, contents: text });
  }
  return files;
}
