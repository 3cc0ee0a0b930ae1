/**
 * Strict parsing of the request targets `strata serve` answers. Nothing here maps a URL to a
 * file: every route is a fixed shape of nix32 hashes and known suffixes, so no crafted URL can
 * name anything outside the store (traversal, encoded slashes, NUL bytes simply do not match).
 */
import { NARS_BATCH, SERVED_EXT, type ServedCompression } from '../store/binary-cache/transport.js';

/** A recognised request target. */
export type Route =
  | { kind: 'cache-info' }
  | { kind: 'narinfo'; hashPart: string }
  | { kind: 'nar'; hashPart: string; narHash: string; compression: ServedCompression }
  | { kind: 'upload-nar'; file: string }
  | { kind: 'listing'; hashPart: string }
  | { kind: 'closure'; hashParts: string[] }
  | { kind: 'nars'; items: Array<{ hashPart: string; narHash: string }>; compression: ServedCompression }
  | { kind: 'metrics' }
  | { kind: 'root' };

/** Request targets longer than this are refused (414): the longest route, a 240-path closure, is ~8 KiB. */
export const MAX_TARGET = 8 * 1024;

const H32 = '[0-9a-df-np-sv-z]{32}';
const H52 = '[0-9a-df-np-sv-z]{52}';
const NARINFO_RE = new RegExp(`^/(${H32})\\.narinfo$`);
// What `nix copy --to 'http://…?write-nar-listing=true'` uploads beside each narinfo.
const LISTING_RE = new RegExp(`^/(${H32})\\.ls$`);
const NAR_RE = new RegExp(`^/nar/(${H32})-(${H52})\\.nar(\\.xz|\\.zst)?$`);
// What `nix copy --to http://` uploads: `nar/<file hash nix32>.nar[.ext]`.
const UPLOAD_RE = new RegExp(`^/nar/(${H52}\\.nar(?:\\.xz|\\.zst|\\.bz2|\\.br|\\.lz4|\\.lzip)?)$`);
const CLOSURE_RE = new RegExp(`^/closure/(${H32}(?:,${H32}){0,239})$`);
// `nars/` answers the NARs back to back as they are; `nars.zst/` and `nars.xz/` compress the whole answer.
const NARS_RE = new RegExp(`^/nars(\\.xz|\\.zst)?/(${H32}-${H52}(?:,${H32}-${H52}){0,${NARS_BATCH - 1}})$`);

/** A suffix of a NAR file or `nars` answer → its compression (the inverse of SERVED_EXT). */
const EXT: Record<string, ServedCompression> = Object.fromEntries(Object.entries(SERVED_EXT).map(([c, ext]) => [ext, c as ServedCompression]));

/**
 * The route of a raw request target, or `undefined` (404). The query string, if any, is ignored;
 * the path must be exactly one of the shapes above, byte for byte (no percent-decoding).
 *
 * @example parseRoute('/nar/0l…-1b….nar.zst') // { kind: 'nar', …, compression: 'zstd' }
 */
export function parseRoute(target: string): Route | undefined {
  if (target.length > MAX_TARGET) return undefined;
  const q = target.indexOf('?');
  const path = q < 0 ? target : target.slice(0, q);
  switch (path) {
    case '/':
      return { kind: 'root' };
    case '/nix-cache-info':
      return { kind: 'cache-info' };
    case '/metrics':
      return { kind: 'metrics' };
  }
  let m = NARINFO_RE.exec(path);
  if (m) return { kind: 'narinfo', hashPart: m[1]! };
  m = LISTING_RE.exec(path);
  if (m) return { kind: 'listing', hashPart: m[1]! };
  m = NAR_RE.exec(path);
  if (m) return { kind: 'nar', hashPart: m[1]!, narHash: m[2]!, compression: EXT[m[3] ?? '']! };
  m = UPLOAD_RE.exec(path);
  if (m) return { kind: 'upload-nar', file: m[1]! };
  m = CLOSURE_RE.exec(path);
  if (m) return { kind: 'closure', hashParts: m[1]!.split(',') };
  m = NARS_RE.exec(path);
  if (m) return { kind: 'nars', items: m[2]!.split(',').map((s) => ({ hashPart: s.slice(0, 32), narHash: s.slice(33) })), compression: EXT[m[1] ?? '']! };
  return undefined;
}

/**
 * The hash part of a plain `/<hash>.narinfo` target, without validating it: a cheap key for
 * looking up answers memoised under hash parts that {@link parseRoute} did validate (anything
 * else misses and takes the strict route).
 */
export function narinfoHashPart(target: string): string | undefined {
  return target.length === 41 && target.charCodeAt(0) === 0x2f && target.endsWith('.narinfo') ? target.slice(1, 33) : undefined;
}

/** A short label per route for metrics. */
export function routeLabel(route: Route | undefined): string {
  return route === undefined ? 'unknown' : route.kind;
}
