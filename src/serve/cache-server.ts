/**
 * `strata serve` as a pure request handler: a store in, HTTP answers out, no socket involved
 * (see `listen.ts` for the node:http adapter). Serves any store — local, layered — as a binary
 * cache real Nix substitutes from, and with `writable` accepts `nix copy --to http://…`.
 */
import { createReadStream, createWriteStream, mkdirSync } from 'node:fs';
import { rename, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { PassThrough, type Readable } from 'node:stream';
import { finished, pipeline } from 'node:stream/promises';

import { isStrataError, StrataError } from '../core/error.js';
import { narInfoToPathInfo, type NarInfo, parseNarInfo, pathInfoToNarInfo, printNarInfo } from '../core/narinfo.js';
import { type SecretKey, signPathInfo } from '../core/signature.js';
import type { StorePath } from '../core/store-path.js';
import { BinaryCacheStore } from '../store/binary-cache/binary-cache-store.js';
import { FileTransport } from '../store/binary-cache/file-transport.js';
import { type ServedCompression, servedNarUrl } from '../store/binary-cache/transport.js';
import { computeClosure } from '../store/closure.js';
import { type OwnedDir, ownedTempDir } from '../store/owned-temp-dir.js';
import { readAtMost } from '../store/read-at-most.js';
import type { PathInfo, Store } from '../store/store.js';
import { ServeMetrics } from './metrics.js';
import { MAX_TARGET, narinfoHashPart, parseRoute, type Route, routeLabel } from './route.js';

/** A request as the handler sees it. */
export interface ServeRequest {
  method: string;
  /** The raw request target (path and query, not decoded). */
  url: string;
  headers?: Record<string, string | string[] | undefined>;
  /** The request body (PUT). */
  body?: Readable | undefined;
}

/** An answer: a status, headers and an optional body (a buffer or a stream). */
export interface ServeResponse {
  status: number;
  headers: Record<string, string>;
  body?: Buffer | Readable | undefined;
  /** The metrics label of the route. */
  route: string;
}

/** Options for {@link CacheServer}. */
export interface CacheServerOptions {
  /** Signs every narinfo served (the store's own signatures are kept too). */
  signKey?: SecretKey | undefined;
  /** How NARs are offered in narinfos (default `zstd`: 100 MB/s at level 3 vs 1.7 MB/s for xz -6). */
  compression?: ServedCompression | undefined;
  /** Compression level (default zstd 3, xz 6). */
  compressionLevel?: number | undefined;
  /** Accept PUT uploads (`nix copy --to http://…`). */
  writable?: boolean | undefined;
  /** `Priority:` in nix-cache-info (default 30, ahead of cache.nixos.org's 40). */
  priority?: number | undefined;
}

// Rendered narinfos kept per hash part, as ready answers (body bytes and headers made once): store
// paths are immutable while valid, so a hit costs one validity check instead of two queries, a
// signing and a rendering. 20,000 entries of ~0.6 KiB: ~12 MiB at most.
const NARINFO_MEMO = 20_000;

/** A memoised narinfo: the answers to GET and HEAD, shared by every hit (never mutated). */
interface Memo {
  path: StorePath;
  /** What the answer was rendered from (compared after a commit). */
  info: PathInfo;
  layer: string;
  get: ServeResponse;
  head: ServeResponse;
  /**
   * The store's change token read just before the path was last found valid: while the store
   * still shows this token nothing was committed since, so the path is still valid.
   */
  validAt: Buffer | undefined;
}

// Bodies read whole: a narinfo (1 MiB cap in the parser) and nix-cache-info.
const MAX_SMALL_BODY = 1024 * 1024;
/** Uncompressed NARs up to this size are answered from one buffer, not streamed. */
const SMALL_NAR = 64 * 1024;
/** The smallest piece a `nars/` answer is written in (a socket's default send buffer is larger). */
const NARS_PIECE = 64 * 1024;
/** Small NARs of a `nars/` answer read at once: enough to keep a piece's worth in flight. */
const NARS_AHEAD = 16;
const NEWLINE = Buffer.from('\n');

/** Resolves once `out` drains or closes (a closed answer is noticed by its writer's next look). */
function drainedOrClosed(out: PassThrough): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      out.off('drain', done);
      out.off('close', done);
      resolve();
    };
    out.on('drain', done);
    out.on('close', done);
  });
}

/** Whether the store's change token `token` shows no commit since `hit` was last found valid. */
function vouched(hit: Memo, token: Buffer | undefined): boolean {
  return token !== undefined && hit.validAt !== undefined && token.equals(hit.validAt);
}

function text(status: number, body: string, route: string, type = 'text/plain; charset=utf-8'): ServeResponse {
  const buf = Buffer.from(body);
  return { status, headers: { 'content-type': type, 'content-length': String(buf.length) }, body: buf, route };
}

/** Whether a fresh row still renders the memoised narinfo (every field a narinfo shows). */
function sameRow(now: PathInfo | undefined, then: PathInfo): boolean {
  return (
    now !== undefined &&
    now.narHash.equals(then.narHash) &&
    now.narSize === then.narSize &&
    now.deriver?.baseName === then.deriver?.baseName &&
    now.ca === then.ca &&
    now.sigs.join(' ') === then.sigs.join(' ') &&
    now.references.map((r) => r.baseName).join(' ') === then.references.map((r) => r.baseName).join(' ')
  );
}

/** Serves one store over the binary cache protocol. */
export class CacheServer {
  readonly store: Store;
  readonly metrics = new ServeMetrics();
  readonly #options: CacheServerOptions;
  /** Where uploaded NAR files are staged (`nar/` inside), once the first upload came. */
  #uploadDir: string | undefined;
  readonly #memo = new Map<string, Memo>();
  #uploads: Promise<{ dir: OwnedDir; cache: BinaryCacheStore }> | undefined;

  constructor(store: Store, options: CacheServerOptions = {}) {
    this.store = store;
    this.#options = options;
  }

  get compression(): ServedCompression {
    return this.#options.compression ?? 'zstd';
  }

  /**
   * Answers one request. Never throws: store errors become 500 with a one-line message,
   * unknown targets 404, other methods 405, uploads to a read-only server 403.
   *
   * @example const res = await server.handle({ method: 'GET', url: '/nix-cache-info' });
   */
  async handle(req: ServeRequest): Promise<ServeResponse> {
    if (req.url.length > MAX_TARGET) return text(414, 'URI too long\n', 'unknown');
    const hit = req.method === 'GET' || req.method === 'HEAD' ? this.#memo.get(narinfoHashPart(req.url) ?? '') : undefined;
    if (hit !== undefined) {
      const token = this.store.changeToken?.();
      if (vouched(hit, token)) return this.#answer(hit, req.method);
      // A memo hit the change token cannot vouch for: its row is read again and compared, so a
      // deleted path is never served, nor stale signatures, nor a path deleted and registered
      // again with other contents. With a token this is the first hit per path after a commit;
      // without one (the layered store) every hit, still sparing the signing and the rendering.
      try {
        if (sameRow(await this.store.queryPathInfo(hit.path), hit.info)) {
          hit.validAt = token;
          return this.#answer(hit, req.method);
        }
      } catch {
        // Answered (or refused) by the slow path below, with its error handling.
      }
    }
    const route = parseRoute(req.url);
    const label = routeLabel(route);
    if (!route) return text(404, 'not found\n', label);
    const head = req.method === 'HEAD';
    try {
      if (req.method === 'GET' || head) {
        const res = await this.#get(route, label);
        if (!head || res.body === undefined) return res;
        // A copy: the GET answer may be memoised and shared.
        if (!Buffer.isBuffer(res.body)) res.body.destroy();
        return { status: res.status, headers: res.headers, route: res.route };
      }
      if (req.method === 'PUT') {
        if (!this.#options.writable) return text(403, 'this server is read-only (start it with --writable)\n', label);
        return await this.#put(route, label, req.body);
      }
      return { ...text(405, 'method not allowed\n', label), headers: { allow: this.#options.writable ? 'GET, HEAD, PUT' : 'GET, HEAD', 'content-length': '19' } };
    } catch (e) {
      const msg = isStrataError(e) ? e.message : `internal error: ${(e as Error).message}`;
      // A path deleted since its narinfo was answered (a GC between the two requests) is gone,
      // as a missing file is for a static cache; a client then tries its next substituter.
      if (isStrataError(e, 'PATH_NOT_VALID') && req.method !== 'PUT') return text(404, `${msg}\n`, label);
      return text(isStrataError(e) && /INVALID|MISMATCH|UNTRUSTED/.test(e.code) ? 400 : 500, `${msg}\n`, label);
    }
  }

  /**
   * The hot path (Nix asks for one narinfo per path), synchronous: the shared ready answer to a
   * GET or HEAD of a memoised narinfo when the store's change token shows no commit since the
   * path was last found valid; `undefined` otherwise ({@link handle} answers then).
   */
  answerFromMemo(method: string | undefined, url: string | undefined): ServeResponse | undefined {
    if (url === undefined || (method !== 'GET' && method !== 'HEAD')) return undefined;
    const hit = this.#memo.get(narinfoHashPart(url) ?? '');
    return hit !== undefined && vouched(hit, this.store.changeToken?.()) ? this.#answer(hit, method) : undefined;
  }

  /** The memoised answer to a GET or HEAD of `hit`'s narinfo, counted as a hit of its layer. */
  #answer(hit: Memo, method: string): ServeResponse {
    this.metrics.layerHit(hit.layer);
    return method === 'GET' ? hit.get : hit.head;
  }

  async #get(route: Route, label: string): Promise<ServeResponse> {
    switch (route.kind) {
      case 'root':
        return text(200, 'strata binary cache: see /nix-cache-info\n', label);
      case 'cache-info':
        return text(200, `StoreDir: ${this.store.storeDir.path}\nWantMassQuery: 1\nPriority: ${this.#options.priority ?? 30}\nStrataClosure: 1\nStrataNars: 1\n`, label, 'text/x-nix-cache-info');
      case 'metrics':
        return text(200, this.metrics.render(), label, 'text/plain; version=0.0.4');
      case 'narinfo': {
        this.#memo.delete(route.hashPart);
        const token = this.store.changeToken?.();
        const info = await this.#info(route.hashPart);
        if (!info) return text(404, 'not found\n', label);
        this.metrics.layerHit(info.layer ?? 'store');
        return this.#remember(info, token).get;
      }
      case 'closure': {
        const token = this.store.changeToken?.();
        const starts: StorePath[] = [];
        for (const h of route.hashParts) {
          const p = await this.store.queryPathFromHashPart(h);
          if (p) starts.push(p);
        }
        const closure = starts.length > 0 ? await computeClosure(this.store, starts) : new Map<string, PathInfo>();
        // Each member's narinfo as its own GET would answer it, memoised the same way: a
        // client that asked for the closure asks for these paths' NARs next (nars/).
        const bodies = [...closure.values()].map((i) => this.#remember(i, token).get.body as Buffer);
        const res = text(200, '', label, 'text/x-nix-narinfo');
        res.body = Buffer.concat(bodies.flatMap((b, k) => (k === 0 ? [b] : [NEWLINE, b])));
        res.headers['content-length'] = String(res.body.length);
        return res;
      }
      case 'nar':
        return this.#nar(route, label);
      case 'nars':
        return this.#nars(route, label);
      case 'listing':
        // Not offered: a listing is only ever uploaded (see #put), and clients read the NAR.
        return text(404, 'not found\n', label);
      case 'upload-nar': {
        // nix copy asks (HEAD) whether it must upload; and a Nix that uploaded keeps the narinfo
        // it wrote in its disk cache, so it fetches the NAR by this name later: the uploaded
        // file, byte for byte (its FileHash).
        const file = this.#uploadDir === undefined ? undefined : join(this.#uploadDir, 'nar', route.file);
        const size = file === undefined ? undefined : await stat(file).then((st) => st.size, () => undefined);
        if (size === undefined) return text(404, 'not found\n', label);
        return { status: 200, headers: { 'content-type': 'application/x-nix-nar', 'content-length': String(size) }, body: createReadStream(file!), route: label };
      }
    }
  }

  /**
   * The ready narinfo answer of `info`, read from the store when the change token was `token`:
   * the memoised one when it was rendered from the same row, else a new one, memoised when the
   * path is the store's own (or the upper's: a lower's answer may change).
   */
  #remember(info: PathInfo, token: Buffer | undefined): Memo {
    const layer = info.layer ?? 'store';
    const old = this.#memo.get(info.path.hashPart);
    if (old !== undefined && old.path.baseName === info.path.baseName && sameRow(info, old.info)) {
      old.validAt = token;
      return old;
    }
    const res = text(200, this.#narInfoText(info), 'narinfo', 'text/x-nix-narinfo');
    const memo: Memo = { path: info.path, info, layer, get: res, head: { status: 200, headers: res.headers, route: 'narinfo' }, validAt: token };
    if (layer === 'store' || layer === 'upper') {
      this.#memo.delete(info.path.hashPart);
      if (this.#memo.size >= NARINFO_MEMO) this.#memo.delete(this.#memo.keys().next().value!);
      this.#memo.set(info.path.hashPart, memo);
    }
    return memo;
  }

  /**
   * The info of a path by hash part: from the memo while the store's change token shows no
   * commit since the path was last found valid, else from the store.
   */
  async #knownInfo(hashPart: string, token: Buffer | undefined): Promise<PathInfo | undefined> {
    const hit = this.#memo.get(hashPart);
    return hit !== undefined && vouched(hit, token) ? hit.info : this.#info(hashPart);
  }

  async #info(hashPart: string): Promise<PathInfo | undefined> {
    const path = await this.store.queryPathFromHashPart(hashPart);
    return path ? this.store.queryPathInfo(path) : undefined;
  }

  #narInfoText(info: PathInfo): string {
    const c = this.compression;
    const url = servedNarUrl(info.path.hashPart, info.narHash.toNix32(), c);
    // Uncompressed, the file is the NAR: Nix writes FileHash = NarHash then, and so do we.
    let ni: NarInfo = pathInfoToNarInfo(info, c === 'none' ? { url, compression: c, fileHash: info.narHash, fileSize: info.narSize } : { url, compression: c });
    if (this.#options.signKey) ni = signPathInfo(this.store.storeDir, ni, this.#options.signKey);
    return printNarInfo(ni, this.store.storeDir);
  }

  async #nar(route: Extract<Route, { kind: 'nar' }>, label: string): Promise<ServeResponse> {
    // Nix asks for the narinfo first: its info is then memoised, and no query is needed here
    // while nothing was committed (narFromPath still refuses a path that is not valid).
    const info = await this.#knownInfo(route.hashPart, this.store.changeToken?.());
    // A NAR hash that differs means a stale URL: the path changed since the narinfo was made.
    if (!info || info.narHash.toNix32() !== route.narHash) return text(404, 'not found\n', label);
    this.metrics.layerHit(info.layer ?? 'store');
    const nar = await this.store.narFromPath(info.path);
    const type = 'application/x-nix-nar';
    if (route.compression === 'none') {
      // A small NAR goes out as one buffer: a stream, a byte counter and a pipeline per request
      // cost more than its bytes (substituting a 300-path closure is 300 such requests).
      const body = info.narSize <= SMALL_NAR ? Buffer.concat(await nar.toArray()) : nar;
      const length = Buffer.isBuffer(body) ? body.length : info.narSize;
      return { status: 200, headers: { 'content-type': type, 'content-length': String(length) }, body, route: label };
    }
    return { status: 200, headers: { 'content-type': type }, body: await this.#compressed(nar, route.compression), route: label };
  }

  /** `source` compressed with `compression` (at the configured level when it is the server's own). */
  async #compressed(source: Readable, compression: Exclude<ServedCompression, 'none'>): Promise<Readable> {
    const { compressor } = await import('../compression/index.js');
    const level = compression === this.compression ? this.#options.compressionLevel : undefined;
    const packed = compressor(compression, { level });
    source.on('error', (e) => packed.destroy(e));
    // pipe() does not end its source when the destination goes: a HEAD, or a client gone
    // mid-download, would leave the NAR's open file behind, paused, for good.
    packed.once('close', () => source.destroy());
    return source.pipe(packed);
  }

  /**
   * Many NARs back to back in one answer (strata's `nars/` endpoint; `nars.zst/` and `nars.xz/`
   * compress the whole answer, for a server that offers compressed NARs): a client that
   * has the narinfos knows every NarSize, so no framing is needed, and it checks every NAR
   * against its NarHash. Substituting a 300-path closure of small paths is 4 requests instead of
   * 300, each of which cost both sides a request's system calls and parsing. All or nothing:
   * one path not valid, or with another NAR hash than asked (a stale narinfo), is a 404, as for
   * its own NAR URL; a path whose NAR turns out another size than recorded cuts the connection.
   */
  async #nars(route: Extract<Route, { kind: 'nars' }>, label: string): Promise<ServeResponse> {
    const infos: PathInfo[] = [];
    let total = 0;
    // Read once: a commit during the loop only makes later infos come from the store.
    const token = this.store.changeToken?.();
    for (const { hashPart, narHash } of route.items) {
      const info = await this.#knownInfo(hashPart, token);
      if (!info || info.narHash.toNix32() !== narHash) return text(404, 'not found\n', label);
      infos.push(info);
      total += info.narSize;
    }
    for (const info of infos) this.metrics.layerHit(info.layer ?? 'store');
    const type = 'application/x-nix-nar';
    if (route.compression === 'none') return { status: 200, headers: { 'content-type': type, 'content-length': String(total) }, body: this.#concatNars(infos), route: label };
    // `nars.zst/`, `nars.xz/`: the same bytes as one compressed stream, as the NAR files are.
    return { status: 200, headers: { 'content-type': type }, body: await this.#compressed(this.#concatNars(infos), route.compression), route: label };
  }

  /**
   * The NARs of `infos` back to back, in pieces of at least {@link NARS_PIECE} bytes: a NAR of a
   * small path comes as a few small chunks, and a socket write per chunk was most of the
   * server's time (three writes per 4 KiB path). Small NARs are read {@link NARS_AHEAD} at a time
   * (`narBytes`), in order: one after the other, each waited for its lstat, open, read and close
   * on the thread pool, and the client's 300-path substitution waited ~120 ms for the NARs to
   * trickle in. A large NAR is streamed with plain stream events: an async iterator per NAR
   * (its promises and end-of-stream hooks) cost more than a small NAR.
   */
  #concatNars(infos: PathInfo[]): Readable {
    const out = new PassThrough({ highWaterMark: NARS_PIECE });
    let pending: Buffer[] = [];
    let size = 0;
    /** Writes what is pending; false when the answer's buffer is full (wait for 'drain'). */
    const flush = (): boolean => {
      if (size === 0) return true;
      const piece = pending.length === 1 ? pending[0]! : Buffer.concat(pending, size);
      pending = [];
      size = 0;
      return out.write(piece);
    };
    let current: Readable | undefined;
    // The client went away: stop reading.
    out.once('close', () => current?.destroy());
    const streamed = async (info: PathInfo): Promise<void> => {
      const nar = (current = await this.store.narFromPath(info.path));
      let n = 0;
      nar.on('data', (chunk: Buffer) => {
        n += chunk.length;
        if (n > info.narSize) return void nar.destroy(this.#wrongSize(info));
        pending.push(chunk);
        size += chunk.length;
        if (size >= NARS_PIECE && !flush()) {
          nar.pause();
          out.once('drain', () => nar.resume());
        }
      });
      await finished(nar);
      if (n !== info.narSize) throw this.#wrongSize(info);
    };
    const narBytes = this.store.narBytes?.bind(this.store);
    const whole = new Map<number, Promise<Uint8Array>>();
    /** Starts reading the small NARs among the next {@link NARS_AHEAD} from `k` on. */
    const readAhead = (k: number): void => {
      if (!narBytes) return;
      for (let j = k; j < infos.length && j < k + NARS_AHEAD; j++) {
        if (whole.has(j) || infos[j]!.narSize > SMALL_NAR) continue;
        const bytes = narBytes(infos[j]!.path);
        bytes.catch(() => {}); // awaited in turn below
        whole.set(j, bytes);
      }
    };
    void (async () => {
      // A turn first: a HEAD drops the answer as soon as it is made, before anything is read.
      await new Promise((resolve) => setImmediate(resolve));
      for (let k = 0; k < infos.length; k++) {
        if (out.destroyed) return;
        readAhead(k);
        const bytes = whole.get(k);
        if (!bytes) {
          await streamed(infos[k]!);
          continue;
        }
        whole.delete(k);
        const nar = await bytes;
        if (nar.length !== infos[k]!.narSize) throw this.#wrongSize(infos[k]!);
        pending.push(Buffer.from(nar.buffer, nar.byteOffset, nar.length));
        size += nar.length;
        if (size >= NARS_PIECE && !flush()) await drainedOrClosed(out);
      }
      flush();
      out.end();
    })().catch((e: unknown) => out.destroy(e as Error));
    return out;
  }

  #wrongSize(info: PathInfo): StrataError {
    const full = this.store.storeDir.print(info.path);
    return new StrataError('SIZE_MISMATCH', `Cannot serve the NAR of '${full}': it is not the ${info.narSize} bytes recorded`, { value: full });
  }

  // ---------------------------------------------------------------------------------------------
  // Uploads: NAR files land in a private staging dir; the narinfo that follows names one, and
  // the path is added from it through the store's verifying addFromNar.

  /**
   * The staging dir, made once (concurrent first uploads share it) and owned by this process: a
   * server killed mid-upload leaves it to be removed by the next one (owned-temp-dir.ts).
   */
  async #staging(): Promise<BinaryCacheStore> {
    this.#uploads ??= (async () => {
      const dir = await ownedTempDir('strata-serve-uploads-');
      mkdirSync(join(dir.path, 'nar'));
      this.#uploadDir = dir.path;
      return { dir, cache: await BinaryCacheStore.open('uploads', new FileTransport(dir.path), { storeDir: this.store.storeDir }) };
    })();
    return (await this.#uploads).cache;
  }

  async #put(route: Route, label: string, body: Readable | undefined): Promise<ServeResponse> {
    switch (route.kind) {
      case 'cache-info': {
        // Nix writes it when the first GET 404s; ours is generated, so just accept it.
        if (body && (await readAtMost(body, MAX_SMALL_BODY)) === undefined) return text(413, 'too large\n', label);
        return text(200, 'ok\n', label);
      }
      case 'upload-nar': {
        await this.#staging();
        const dest = join(this.#uploadDir!, 'nar', route.file);
        const tmp = `${dest}.part-${Math.random().toString(36).slice(2)}`;
        try {
          await pipeline(body!, createWriteStream(tmp, { flags: 'wx' }));
          await rename(tmp, dest);
        } finally {
          await rm(tmp, { force: true });
        }
        return text(200, 'ok\n', label);
      }
      case 'listing':
        // `write-nar-listing=true` uploads `<hash>.ls` before the NAR and fails the copy
        // unless it is taken. It is derived from the NAR, which is what the store keeps, so it
        // is read and dropped.
        if (body) await finished(body.resume());
        return text(200, 'ok\n', label);
      case 'narinfo': {
        const raw = body ? await readAtMost(body, MAX_SMALL_BODY) : Buffer.alloc(0);
        if (raw === undefined) return text(413, 'too large\n', label);
        const ni = parseNarInfo(raw, { storeDir: this.store.storeDir, whence: `PUT /${route.hashPart}.narinfo` });
        if (ni.path.hashPart !== route.hashPart) {
          this.metrics.upload('refused');
          throw new StrataError('NARINFO_MISMATCH', `Cannot accept narinfo '${route.hashPart}.narinfo': its StorePath '${this.store.storeDir.print(ni.path)}' has another hash part`, { value: route.hashPart });
        }
        const staging = await this.#staging();
        try {
          await this.store.addFromNar(narInfoToPathInfo(ni), await staging.narFromNarInfo(ni));
        } catch (e) {
          this.metrics.upload('refused');
          throw e;
        }
        this.metrics.upload('ok');
        return text(200, 'ok\n', label);
      }
      default:
        return text(405, 'method not allowed\n', label);
    }
  }

  /** Removes staged uploads. The store is the caller's to close. */
  async close(): Promise<void> {
    const staged = await this.#uploads?.catch(() => undefined);
    await staged?.dir.release();
  }
}
