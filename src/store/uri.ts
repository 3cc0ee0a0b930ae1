/**
 * Store URIs, parsed strictly: every scheme strata knows, with its parameters. An option that a
 * scheme does not understand is an error naming it, never silently ignored.
 */
import { StrataError } from '../core/error.js';

export type StoreUri =
  | { scheme: 'local'; root?: string | undefined; params: Map<string, string> }
  | { scheme: 'file'; path: string; params: Map<string, string> }
  | { scheme: 'http' | 'https'; url: string; params: Map<string, string> }
  | { scheme: 's3'; bucket: string; params: Map<string, string> }
  | { scheme: 'local-overlay'; root?: string | undefined; params: Map<string, string> }
  | { scheme: 'layered'; path: string; params: Map<string, string> };

const LOCAL_PARAMS = ['root', 'store', 'state', 'real', 'log', 'read-only', 'trusted', 'priority', 'want-mass-query', 'require-sigs'];
/** Local-store parameters naming directories or files: they must be absolute. */
const PATH_PARAMS = ['root', 'store', 'state', 'real', 'log', 'upper-layer', 'remount-hook'];
const CACHE_PARAMS = ['compression', 'secret-key', 'parallel-compression', 'multipart-upload', 'priority', 'want-mass-query', 'trusted', 'write-nar-listing', 'index-debug-info', 'compression-level', 'local-nar-cache', 'require-sigs', 'ttl-negative', 'ttl-positive'];
const KNOWN_PARAMS: Record<StoreUri['scheme'], string[]> = {
  local: LOCAL_PARAMS,
  'local-overlay': [...LOCAL_PARAMS, 'lower-store', 'upper-layer', 'check-mount', 'remount-hook'],
  file: CACHE_PARAMS,
  http: [...CACHE_PARAMS, 'timeout', 'retries'],
  https: [...CACHE_PARAMS, 'timeout', 'retries'],
  s3: [...CACHE_PARAMS, 'endpoint', 'region', 'scheme', 'profile', 'buffer-size', 'narinfo-compression', 'ls-compression', 'log-compression'],
  layered: ['read-only'],
};

function invalid(uri: string, why: string): StrataError {
  return new StrataError('URI_INVALID', `Cannot use store URI '${uri}': ${why}`, { value: uri });
}

function parseQuery(uri: string, query: string): Map<string, string> {
  const params = new Map<string, string>();
  if (query === '') return params;
  for (const part of query.split('&')) {
    if (part === '') continue;
    const eq = part.indexOf('=');
    const key = eq < 0 ? part : part.slice(0, eq);
    let value: string;
    try {
      value = eq < 0 ? '' : decodeURIComponent(part.slice(eq + 1));
    } catch {
      throw invalid(uri, `bad percent-encoding in parameter '${key}'`);
    }
    if (params.has(key)) throw invalid(uri, `parameter '${key}' is given twice`);
    params.set(key, value);
  }
  return params;
}

function checkAbsolute(uri: string, path: string, what: string): string {
  if (!path.startsWith('/')) throw invalid(uri, `${what} '${path}' is not an absolute path`);
  if (path.includes('\0')) throw invalid(uri, `${what} contains a NUL byte`);
  // '//' is the root directory, not '' (a relative path: the store would land in the cwd).
  return path.replace(/\/+$/, '') || '/';
}

/**
 * Parses a store URI as `--store`, `--from`, `--to` and `--lower` accept it.
 *
 * @example parseStoreUri('local?root=/tmp/s') // { scheme: 'local', root: '/tmp/s', … }
 */
export function parseStoreUri(uri: string): StoreUri {
  if (uri.length === 0) throw invalid(uri, 'it is empty');
  if (uri.length > 4096) throw invalid(uri.slice(0, 64) + '…', 'it is longer than 4096 characters');
  const q = uri.indexOf('?');
  const head = q < 0 ? uri : uri.slice(0, q);
  const params = parseQuery(uri, q < 0 ? '' : uri.slice(q + 1));
  let parsed: StoreUri;
  if (head.startsWith('/')) {
    parsed = { scheme: 'local', root: checkAbsolute(uri, head, 'root'), params };
  } else if (head === 'local' || head === 'auto') {
    parsed = { scheme: 'local', root: undefined, params };
  } else {
    const m = /^([a-z][a-z0-9+.-]*):\/\/(.*)$/.exec(head);
    if (!m) throw invalid(uri, 'unknown form (expected /abs/dir, local, file://, http(s)://, s3://, local-overlay:// or layered://)');
    const scheme = m[1]!;
    const rest = m[2]!;
    switch (scheme) {
      case 'file':
        parsed = { scheme: 'file', path: checkAbsolute(uri, rest, 'path'), params };
        break;
      case 'http':
      case 'https':
        if (rest === '' || rest.startsWith('/')) throw invalid(uri, 'no host');
        parsed = { scheme, url: `${scheme}://${rest.replace(/\/+$/, '')}`, params };
        break;
      case 's3':
        if (!/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/.test(rest)) throw invalid(uri, `'${rest}' is not a valid bucket name`);
        parsed = { scheme: 's3', bucket: rest, params };
        break;
      case 'local-overlay':
        parsed = { scheme: 'local-overlay', root: rest === '' ? undefined : checkAbsolute(uri, rest, 'root'), params };
        break;
      case 'layered':
        parsed = { scheme: 'layered', path: checkAbsolute(uri, rest, 'path'), params };
        break;
      case 'local':
        parsed = { scheme: 'local', root: rest === '' ? undefined : checkAbsolute(uri, rest, 'root'), params };
        break;
      default:
        throw invalid(uri, `unknown scheme '${scheme}'`);
    }
  }
  const known = KNOWN_PARAMS[parsed.scheme];
  for (const [key, value] of params) {
    if (!known.includes(key)) throw invalid(uri, `unknown parameter '${key}' for ${parsed.scheme} stores`);
    // A relative directory would be taken from the working directory: a store made wherever the command ran.
    if (PATH_PARAMS.includes(key) && (parsed.scheme === 'local' || parsed.scheme === 'local-overlay')) checkAbsolute(uri, value, `parameter '${key}'`);
  }
  return parsed;
}

/** Reads a boolean parameter as Nix does (`true`/`false`, also 1/0). */
export function boolParam(uri: string, params: Map<string, string>, key: string, fallback: boolean): boolean {
  const v = params.get(key);
  if (v === undefined) return fallback;
  if (v === 'true' || v === '1') return true;
  if (v === 'false' || v === '0') return false;
  throw invalid(uri, `parameter '${key}' must be true or false, not '${v}'`);
}
