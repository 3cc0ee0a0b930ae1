/**
 * The JSON forms of a derivation: what `nix show-derivation` prints in Nix 2.8 (written and
 * read), and, for reading, the later `nix derivation show` forms:
 *
 * - 2.8 ("v1"): `{ "<drv path>": { outputs: { out: { path, hashAlgo: "r:sha256", hash } },
 *   inputSrcs, inputDrvs: { "<drv path>": ["out"] }, system, builder, args, env } }`;
 * - 2.19+ ("v2"): adds `name`; outputs split `method` (`flat`/`nar`/`text`) from `hashAlgo`;
 *   inputDrvs values are `{ outputs: [...], dynamicOutputs: {} }`;
 * - "v3" (`version: 3`): store paths as base names; "v4": `inputs: { srcs, drvs }` and SRI hashes.
 */
import { StrataError } from '../error.js';
import { isHashAlgo, parseHash } from '../hash.js';
import { type StoreDir, StorePath } from '../store-path.js';
import { compareUtf8 } from './aterm.js';
import { derivationPath } from './output-paths.js';
import { type Derivation, type DerivationOutput, isHexDigest, parseOutputHashAlgo } from './types.js';

/** One output in the 2.8 JSON. */
export interface DerivationOutputJson {
  path?: string;
  hashAlgo?: string;
  hash?: string;
}

/** The object `nix show-derivation` (2.8) prints for one derivation, fields in Nix's order. */
export interface DerivationJson {
  outputs: Record<string, DerivationOutputJson>;
  inputSrcs: string[];
  inputDrvs: Record<string, string[]>;
  system: string;
  builder: string;
  args: string[];
  env: Record<string, string>;
}

/** Which JSON shape {@link derivationFromJson} recognised. */
export type DerivationJsonFormat = 'v1' | 'v2' | 'v3' | 'v4';

/**
 * The 2.8 `nix show-derivation` object for one derivation (without the outer drv-path key).
 *
 * @example JSON.stringify(derivationToJson(new StoreDir(), drv))
 */
export function derivationToJson(storeDir: StoreDir, drv: Derivation): DerivationJson {
  // Object.fromEntries defines own properties, so a key like `__proto__` stays data (found by fast-check).
  const outputs = Object.fromEntries(
    [...drv.outputs.keys()].sort(compareUtf8).map((name) => {
      const o = drv.outputs.get(name)!;
      const j: DerivationOutputJson = {};
      if (o.path !== undefined) j.path = storeDir.print(o.path);
      if (o.hashAlgo) {
        j.hashAlgo = o.hashAlgo;
        j.hash = o.hash ?? '';
      }
      return [name, j];
    }),
  );
  const inputDrvs = Object.fromEntries(
    [...drv.inputDrvs.keys()].sort(compareUtf8).map((base) => [`${storeDir.path}/${base}`, [...drv.inputDrvs.get(base)!]]),
  );
  const env = Object.fromEntries([...drv.env.keys()].sort(compareUtf8).map((k) => [k, drv.env.get(k)!]));
  return {
    outputs,
    inputSrcs: drv.inputSrcs.map((p) => storeDir.print(p)).sort(compareUtf8),
    inputDrvs,
    system: drv.system,
    builder: drv.builder,
    args: [...drv.args],
    env,
  };
}

/**
 * What `nix show-derivation` prints for several derivations: an object keyed by `.drv` path.
 *
 * @example showDerivations(dir, [drv]) // { '/nix/store/…-simple.drv': { outputs: … } }
 */
export function showDerivations(storeDir: StoreDir, drvs: Iterable<Derivation>): Record<string, DerivationJson> {
  return Object.fromEntries([...drvs].map((drv) => [storeDir.print(derivationPath(storeDir, drv)), derivationToJson(storeDir, drv)]));
}

/**
 * The text `nix show-derivation` (2.8) prints for {@link showDerivations}' object: indented by two
 * spaces, a newline at the end, and control characters as `\u00XX` (Nix's JSON writer has no
 * `\b` or `\f`, which JSON.stringify uses). Byte for byte what Nix prints.
 */
export function showDerivationsText(shown: Record<string, DerivationJson>): string {
  // Backslashes occur only inside strings; `\\` is matched first, so an escaped backslash
  // followed by a `b` is left alone.
  const text = JSON.stringify(shown, null, 2).replace(/\\\\|\\b|\\f/g, (m) => (m === '\\b' ? '\\u0008' : m === '\\f' ? '\\u000c' : m));
  return `${text}\n`;
}

type Json = null | boolean | number | string | Json[] | { [k: string]: Json };

function isObject(v: unknown): v is Record<string, Json> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

class JsonReader {
  constructor(
    readonly storeDir: StoreDir,
    readonly label: string,
    readonly baseNames: boolean,
  ) {}

  fail(state: string): never {
    throw new StrataError('DRV_INVALID', `Cannot parse derivation JSON '${this.label}': ${state}`, { value: this.label });
  }

  string(v: unknown, what: string): string {
    if (typeof v !== 'string') this.fail(`${what} is not a string`);
    return v;
  }

  strings(v: unknown, what: string): string[] {
    if (!Array.isArray(v)) this.fail(`${what} is not an array`);
    return v.map((x, i) => this.string(x, `${what}[${i}]`));
  }

  object(v: unknown, what: string): Record<string, Json> {
    if (!isObject(v)) this.fail(`${what} is not an object`);
    return v;
  }

  /** Full paths (v1, v2) or base names (v3+); either is accepted in every version. */
  path(s: string, what: string): StorePath {
    try {
      return s.startsWith('/') ? this.storeDir.parse(s) : StorePath.fromBaseName(s);
    } catch (e) {
      this.fail(`${what} '${s}' is not a store path (${(e as Error).message})`);
    }
  }

  output(name: string, v: unknown): DerivationOutput {
    const o = this.object(v, `output '${name}'`);
    const out: DerivationOutput = {};
    if (o.path !== undefined && o.path !== null && o.path !== '') out.path = this.path(this.string(o.path, `output '${name}' path`), `output '${name}' path`);
    const method = o.method === undefined || o.method === null ? undefined : this.string(o.method, `output '${name}' method`);
    let hashAlgo = o.hashAlgo === undefined || o.hashAlgo === null ? '' : this.string(o.hashAlgo, `output '${name}' hashAlgo`);
    const hash = o.hash === undefined || o.hash === null ? '' : this.string(o.hash, `output '${name}' hash`);
    if (method !== undefined) {
      const prefix = { flat: '', nar: 'r:', text: 'text:' }[method];
      if (prefix === undefined) this.fail(`output '${name}' has unsupported method '${method}'`);
      if (!isHashAlgo(hashAlgo)) this.fail(`output '${name}' has unknown hash algorithm '${hashAlgo}'`);
      hashAlgo = prefix + hashAlgo;
    }
    if (hashAlgo === '') {
      if (hash !== '') this.fail(`output '${name}' has a hash but no hash algorithm`);
      return out;
    }
    let algo;
    try {
      algo = parseOutputHashAlgo(hashAlgo).algo;
    } catch {
      this.fail(`output '${name}' has unknown hash algorithm '${hashAlgo}'`);
    }
    let hex = hash;
    if (hash !== '' && hash !== 'impure' && !isHexDigest(hash, algo)) {
      // Later formats may print SRI or other encodings; the ATerm always holds hex.
      try {
        hex = parseHash(hash, algo).toBase16();
      } catch {
        this.fail(`output '${name}' hash '${hash}' is not a ${algo} hash`);
      }
    }
    out.hashAlgo = hashAlgo;
    out.hash = hex;
    return out;
  }
}

/**
 * Reads any of the JSON forms (see the module doc), with or without the outer drv-path key.
 * The name comes from `name` if given, else the JSON `name`, else the outer key, else env `name`.
 *
 * @example derivationFromJson(new StoreDir(), JSON.parse(execSync('nix show-derivation x.drv')))
 */
export function derivationFromJson(storeDir: StoreDir, json: unknown, name?: string): { derivation: Derivation; format: DerivationJsonFormat } {
  let body: unknown = json;
  let keyName: string | undefined;
  if (isObject(json)) {
    const keys = Object.keys(json);
    if (keys.length === 1 && keys[0]!.endsWith('.drv') && isObject(json[keys[0]!])) {
      const key = keys[0]!;
      body = json[key];
      const r = new JsonReader(storeDir, key, false);
      keyName = r.path(key, 'derivation path').name.slice(0, -'.drv'.length);
    }
  }
  const pre: JsonReader = new JsonReader(storeDir, name ?? keyName ?? 'derivation', false);
  const o = pre.object(body, 'the derivation');
  const version = o.version;
  if (version !== undefined && version !== 3 && version !== 4) pre.fail(`unsupported version ${JSON.stringify(version)}`);
  const jsonName = o.name === undefined ? undefined : pre.string(o.name, 'name');
  const env = new Map(Object.entries(pre.object(o.env ?? {}, 'env')).map(([k, v]) => [k, pre.string(v, `env '${k}'`)] as const));
  const drvName = name ?? jsonName ?? keyName ?? env.get('name');
  if (drvName === undefined) pre.fail('no name, no drv path key and no env name');
  const r: JsonReader = new JsonReader(storeDir, drvName, version !== undefined);

  const outputs = new Map<string, DerivationOutput>();
  for (const [k, v] of Object.entries(r.object(o.outputs, 'outputs'))) outputs.set(k, r.output(k, v));
  if (outputs.size === 0) r.fail('a derivation needs at least one output');

  let format: DerivationJsonFormat = version === 4 ? 'v4' : version === 3 ? 'v3' : jsonName !== undefined ? 'v2' : 'v1';
  const inputs = o.inputs === undefined ? undefined : r.object(o.inputs, 'inputs');
  const srcsJson = inputs ? inputs.srcs : o.inputSrcs;
  const drvsJson = inputs ? inputs.drvs : o.inputDrvs;
  const inputSrcs = r.strings(srcsJson ?? [], 'inputSrcs').map((s) => r.path(s, 'input source'));
  const inputDrvs = new Map<string, string[]>();
  for (const [k, v] of Object.entries(r.object(drvsJson ?? {}, 'inputDrvs'))) {
    const p = r.path(k, 'input derivation');
    if (!p.isDerivation()) r.fail(`input derivation '${k}' does not end in '.drv'`);
    let outs: string[];
    if (Array.isArray(v)) outs = r.strings(v, `inputDrvs '${k}'`);
    else {
      const e = r.object(v, `inputDrvs '${k}'`);
      outs = r.strings(e.outputs ?? [], `inputDrvs '${k}' outputs`);
      if (e.dynamicOutputs !== undefined && Object.keys(r.object(e.dynamicOutputs, 'dynamicOutputs')).length > 0) {
        r.fail(`input derivation '${k}' has dynamic outputs, which Nix 2.8 cannot express`);
      }
      if (format === 'v1') format = 'v2';
    }
    inputDrvs.set(p.baseName, [...new Set(outs)].sort(compareUtf8));
  }
  const derivation: Derivation = {
    name: drvName,
    outputs,
    inputDrvs,
    inputSrcs: inputSrcs.sort((a, b) => compareUtf8(a.baseName, b.baseName)),
    system: r.string(o.system, 'system'),
    builder: r.string(o.builder, 'builder'),
    args: r.strings(o.args ?? [], 'args'),
    env,
  };
  return { derivation, format };
}
