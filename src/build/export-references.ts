/**
 * `exportReferencesGraph` (Nix 2.8's `initTmpDir`): pairs `<file name> <store path>`; each path's
 * closure goes into `<file name>` in the build dir, in the format of
 * `nix-store --register-validity` with empty derivers. Used by builders that pack closures
 * (images, closure-info).
 */
import { StrataError } from '../core/error.js';
import type { Derivation } from '../core/derivation/index.js';
import { type StorePath, sortStorePaths } from '../core/store-path.js';
import { closureTotals } from '../store/closure.js';
import type { LocalFsStore, PathInfo } from '../store/store.js';
import type { BuildDirFile } from './environment.js';
import { isJsonObject, JsonNumber, type JsonValue } from './structured-attrs.js';

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
  const graph = new ReferenceGraph(store, full, inputClosure);
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
    let text = '';
    for (const p of await graph.exported([start])) {
      const refs = sortStorePaths(graph.info(p).references);
      text += `${dir.print(p)}\n\n${refs.length}\n`;
      for (const r of refs) text += `${dir.print(r)}\n`;
    }
    files.push({ name, contents: text });
  }
  return files;
}

/**
 * The same for structured attributes: `exportReferencesGraph` is an object of key → store path
 * (or list of them), and each key gets, in `.attrs.json`, the path infos of the closure as
 * `nix path-info --json --closure-size` prints them.
 */
export async function exportReferencesGraphJson(
  store: LocalFsStore,
  drvPath: StorePath,
  attrs: { [key: string]: JsonValue },
  inputClosure: StorePath[],
): Promise<{ [key: string]: JsonValue }> {
  const spec = attrs['exportReferencesGraph'];
  const result: { [key: string]: JsonValue } = {};
  if (!isJsonObject(spec)) return result;
  const dir = store.storeDir;
  const full = dir.print(drvPath);
  const graph = new ReferenceGraph(store, full, inputClosure);
  for (const key of Object.keys(spec)) {
    const v = spec[key]!;
    const list = Array.isArray(v) ? v : [v];
    const starts: StorePath[] = [];
    for (const s of list) {
      if (typeof s !== 'string' || !dir.isStorePath(s)) {
        throw new StrataError(
          'DRV_INVALID',
          `Cannot build '${full}': 'exportReferencesGraph.${key}' holds ${JSON.stringify(s)}, which is not a store path`,
          { value: key },
        );
      }
      starts.push(dir.parse(s));
    }
    const infos: JsonValue[] = [];
    const exported = await graph.exported(starts);
    // The exported set is closed under references: every member's closure size in one pass.
    const totals = closureTotals(exported.map((p) => graph.info(p)), (i) => [i.narSize]);
    for (const p of exported) {
      const info = graph.info(p);
      const o: { [key: string]: JsonValue } = {
        path: dir.print(p),
        narHash: `sha256:${info.narHash.toNix32()}`,
        narSize: new JsonNumber(String(info.narSize)),
        references: sortStorePaths(info.references).map((r) => dir.print(r)),
      };
      if (info.ca !== undefined) o['ca'] = info.ca;
      o['closureSize'] = new JsonNumber(String(totals.get(p.baseName)![0]));
      infos.push(o);
    }
    result[key] = infos;
  }
  return result;
}

/** Closures over the store's path infos, as Nix's `exportReferences` takes them. */
class ReferenceGraph {
  private readonly infos = new Map<string, PathInfo>();
  private readonly inputs: Set<string>;

  constructor(
    private readonly store: LocalFsStore,
    /** The derivation being built, for messages. */
    private readonly full: string,
    inputClosure: StorePath[],
  ) {
    this.inputs = new Set(inputClosure.map((p) => p.baseName));
  }

  /** The info of a path met in a closure. */
  info(p: StorePath): PathInfo {
    return this.infos.get(p.baseName)!;
  }

  async closure(starts: StorePath[], into = new Map<string, StorePath>()): Promise<Map<string, StorePath>> {
    const dir = this.store.storeDir;
    const queue = [...starts];
    while (queue.length > 0) {
      const p = queue.shift()!;
      if (into.has(p.baseName)) continue;
      const info = this.infos.get(p.baseName) ?? (await this.store.queryPathInfo(p));
      if (info === undefined) {
        throw new StrataError(
          'PATH_NOT_VALID',
          `Cannot build '${this.full}': '${dir.print(p)}' in 'exportReferencesGraph' is not valid`,
          { value: dir.print(p) },
        );
      }
      this.infos.set(p.baseName, info);
      into.set(p.baseName, p);
      queue.push(...info.references);
    }
    return into;
  }

  /**
   * The closure of paths of the input closure, plus the closures of the outputs of any
   * derivation in it; sorted as Nix's StorePathSet.
   */
  async exported(starts: StorePath[]): Promise<StorePath[]> {
    const dir = this.store.storeDir;
    const paths = new Map<string, StorePath>();
    for (const start of starts) {
      if (!this.inputs.has(start.baseName)) {
        throw new StrataError(
          'DRV_INVALID',
          `Cannot build '${this.full}': cannot export the references of '${dir.print(start)}', which is not in its input closure`,
          { value: dir.print(start) },
        );
      }
      await this.closure([start], paths);
    }
    for (const p of [...paths.values()]) {
      if (!p.isDerivation()) continue;
      await this.closure([...(await this.store.queryDerivationOutputs(p)).values()], paths);
    }
    return sortStorePaths(paths.values());
  }
}
