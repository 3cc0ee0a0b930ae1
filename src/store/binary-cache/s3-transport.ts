/**
 * `s3://bucket` caches over the official AWS SDK (`@aws-sdk/client-s3`, pinned to 3.1175.0: the
 * last line that supports Node 20). Objects are the cache's files under their cache keys, so a
 * bucket readable anonymously is also a plain HTTP cache at `<endpoint>/<bucket>/`.
 *
 * Every write is atomic for readers: a single PUT or a multipart upload that only appears on
 * completion (and is aborted on failure). Requests are retried here, not by the SDK, because a
 * retried upload needs a fresh body stream read again from disk.
 */
import { createReadStream, createWriteStream } from 'node:fs';
import { rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';

import { GetObjectCommand, HeadObjectCommand, ListObjectsV2Command, PutObjectCommand, S3Client, type S3ClientConfig } from '@aws-sdk/client-s3';

import { StrataError } from '../../core/error.js';
import { isNoSuchKey, isRetryable, s3Error } from './_s3-errors.js';
import { type Attempt, MIN_PART_SIZE, uploadMultipart } from './_s3-multipart.js';
import { type OwnedDir, ownedTempDir } from '../owned-temp-dir.js';
import { readAtMost } from '../read-at-most.js';
import { CACHE_KEY_RE, type CacheTransport } from './transport.js';

/** Options for {@link S3Transport}; the names follow Nix's `s3://` store parameters. */
export interface S3TransportOptions {
  bucket: string;
  /** `host[:port]` (with {@link scheme}) or a full URL; default: AWS for {@link region}. */
  endpoint?: string | undefined;
  /** `https` (default) or `http`, for an `endpoint` given without one. */
  scheme?: 'http' | 'https' | undefined;
  /** Default `us-east-1`, as Nix. */
  region?: string | undefined;
  /** A profile of `~/.aws/credentials`/`config`; default: the SDK's chain (env vars first). */
  profile?: string | undefined;
  /** Explicit credentials (tests, benchmarks); default: {@link profile} or the SDK's chain. */
  credentials?: { accessKeyId: string; secretAccessKey: string; sessionToken?: string } | undefined;
  /** Upload files larger than one part in parts (default true). */
  multipartUpload?: boolean | undefined;
  /** Bytes per multipart part (default 8 MiB; S3's minimum is 5 MiB). */
  partSize?: number | undefined;
  /** Parts of one file in flight at once (default 4). */
  partConcurrency?: number | undefined;
  /** Extra attempts after throttling, a 5xx or a dropped connection (default 4, as HTTP caches). */
  retries?: number | undefined;
  /** First backoff in ms, doubled per attempt with ±25 % jitter (default 200). */
  backoffMs?: number | undefined;
}

// A narinfo is at most 1 MiB (MAX_NARINFO_BYTES); small files over 4 MiB are refused unread.
const MAX_SMALL_FILE = 4 * 1024 * 1024;
// 8 MiB parts: 2 round trips per 16 MiB NAR instead of 1, but a failed part costs at most 8 MiB.
const DEFAULT_PART_SIZE = 8 * 1024 * 1024;

const noop = () => {};
const SILENT = { trace: noop, debug: noop, info: noop, warn: noop, error: noop };

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The endpoint URL the client talks to, for the SDK and for messages. */
function endpointUrl(o: S3TransportOptions): string | undefined {
  if (o.endpoint === undefined || o.endpoint === '') return undefined;
  return /^[a-z]+:\/\//.test(o.endpoint) ? o.endpoint.replace(/\/+$/, '') : `${o.scheme ?? 'https'}://${o.endpoint}`;
}

/** A binary cache in an S3 bucket. */
export class S3Transport implements CacheTransport {
  /** `s3://bucket`, or `<endpoint>/<bucket>` when an endpoint is given (messages, disk cache). */
  readonly uri: string;
  readonly bucket: string;
  /** Where requests go (`http://127.0.0.1:7480`, or AWS's regional endpoint). */
  readonly endpoint: string;
  readonly client: S3Client;
  readonly #multipart: boolean;
  readonly #partSize: number;
  readonly #partConcurrency: number;
  readonly #retries: number;
  readonly #backoff: number;
  #staging: Promise<OwnedDir> | undefined;

  constructor(options: S3TransportOptions) {
    this.bucket = options.bucket;
    const region = options.region || 'us-east-1';
    const endpoint = endpointUrl(options);
    this.endpoint = endpoint ?? `https://s3.${region}.amazonaws.com`;
    // With an endpoint, the bucket's path-style URL: it names the server too, so two servers'
    // buckets of the same name never share narinfo disk-cache entries.
    this.uri = endpoint === undefined ? `s3://${options.bucket}` : `${endpoint}/${options.bucket}`;
    this.#multipart = options.multipartUpload ?? true;
    this.#partSize = Math.max(MIN_PART_SIZE, options.partSize ?? DEFAULT_PART_SIZE);
    this.#partConcurrency = Math.max(1, options.partConcurrency ?? 4);
    this.#retries = options.retries ?? 4;
    this.#backoff = options.backoffMs ?? 200;
    // The version is pinned on purpose (see above); its Node 20 deprecation notice is noise on stderr.
    process.env['AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED'] ??= 'true';
    const agent = { keepAlive: true, maxSockets: 32 };
    const config: S3ClientConfig = {
      region,
      // Path-style (`endpoint/bucket/key`): what Ceph RGW, MinIO and other self-hosted S3 serve.
      forcePathStyle: endpoint !== undefined,
      // Retries are ours (fresh body streams per attempt).
      maxAttempts: 1,
      // Checksum trailers (aws-chunked) are not understood by every S3 server (Ceph 16): send
      // and check checksums only where the API requires them.
      requestChecksumCalculation: 'WHEN_REQUIRED',
      responseChecksumValidation: 'WHEN_REQUIRED',
      // 32 sockets: 8 NARs in flight × 4 parts each.
      requestHandler: { httpAgent: agent, httpsAgent: agent, connectionTimeout: 10_000, socketTimeout: 60_000 },
      // The SDK warns on the console about failed streaming uploads; failures reach the caller
      // as one StrataError instead, and the library never writes to the terminal.
      logger: SILENT,
    };
    if (endpoint !== undefined) config.endpoint = endpoint;
    if (options.credentials) config.credentials = options.credentials;
    else if (options.profile) config.profile = options.profile;
    this.client = new S3Client(config);
  }

  #target(key: string): string {
    return `${this.uri}/${key}`;
  }

  #check(key: string): void {
    if (!CACHE_KEY_RE.test(key)) {
      throw new StrataError('CACHE_KEY_INVALID', `Cannot access '${key}' in '${this.uri}': it is not a cache file name`, { value: key });
    }
  }

  /**
   * Runs `fn` with retries and exponential backoff for what may pass (throttling, 5xx, dropped
   * connections); throws the one-line error of the last failure.
   */
  async #retry<T>(action: string, key: string, fn: () => Promise<T>, accept?: (e: unknown) => T | undefined): Promise<T> {
    for (let attempt = 0; ; attempt++) {
      if (attempt > 0) await sleep(this.#backoff * 2 ** (attempt - 1) * (0.75 + Math.random() / 2));
      try {
        return await fn();
      } catch (e) {
        const v = accept?.(e);
        if (v !== undefined) return v;
        if (isRetryable(e) && attempt < this.#retries) continue;
        throw s3Error(e, action, this.#target(key), { endpoint: this.endpoint, bucket: this.bucket, attempts: attempt + 1 });
      }
    }
  }

  #attempt(key: string): Attempt {
    return (what, fn) => this.#retry(what, key, fn);
  }

  async #get(key: string): Promise<{ body: Readable; length: number | undefined } | undefined> {
    this.#check(key);
    const NONE = { body: undefined, length: undefined };
    const res = await this.#retry('fetch', key, async () => {
      const r = await this.client.send(new GetObjectCommand({ Bucket: this.bucket, Key: key }));
      return { body: r.Body as Readable | undefined, length: r.ContentLength };
    }, (e) => (isNoSuchKey(e) ? NONE : undefined));
    if (res.body === undefined) return undefined;
    return { body: res.body, length: res.length };
  }

  async getFile(key: string): Promise<Buffer | undefined> {
    const res = await this.#get(key);
    if (!res) return undefined;
    const tooBig = () => new StrataError('S3_ERROR', `Cannot fetch '${this.#target(key)}': it is larger than ${MAX_SMALL_FILE} bytes`, { value: this.#target(key) });
    if ((res.length ?? 0) > MAX_SMALL_FILE) {
      res.body.destroy();
      throw tooBig();
    }
    let file: Buffer | undefined;
    try {
      file = await readAtMost(res.body, MAX_SMALL_FILE);
    } catch (e) {
      throw s3Error(e, 'fetch', this.#target(key), { endpoint: this.endpoint, bucket: this.bucket, attempts: 1 });
    }
    if (!file) throw tooBig();
    return file;
  }

  /** The object's body as the server sends it: one GET, no ranges, nothing buffered. */
  async getStream(key: string): Promise<Readable | undefined> {
    return (await this.#get(key))?.body;
  }

  async exists(key: string): Promise<boolean> {
    this.#check(key);
    return this.#retry('check', key, async () => {
      await this.client.send(new HeadObjectCommand({ Bucket: this.bucket, Key: key }));
      return true;
    }, (e) => (isNoSuchKey(e) ? false : undefined));
  }

  async putFile(key: string, body: Buffer | (() => Readable), contentType: string, size?: number): Promise<void> {
    this.#check(key);
    if (Buffer.isBuffer(body)) {
      await this.#retry('upload', key, () => this.client.send(new PutObjectCommand({ Bucket: this.bucket, Key: key, Body: body, ContentType: contentType, ContentLength: body.length })));
      return;
    }
    if (size !== undefined) {
      // Known length: stream it, re-creating the body for each attempt.
      await this.#retry('upload', key, () => this.client.send(new PutObjectCommand({ Bucket: this.bucket, Key: key, Body: body(), ContentType: contentType, ContentLength: size })));
      return;
    }
    // S3 needs the length up front (or parts): spool a stream of unknown length to disk first.
    const staged = join(await this.stagingDir(), `.strata-put-${process.pid}-${Math.random().toString(36).slice(2)}`);
    try {
      await pipeline(body(), createWriteStream(staged, { flags: 'wx' }));
    } catch (e) {
      await rm(staged, { force: true });
      throw e;
    }
    await this.putLocalFile(key, staged, contentType);
  }

  /**
   * Uploads a finished local file and deletes it: one PUT up to one part size, a multipart
   * upload above it (each part retried on its own).
   */
  async putLocalFile(key: string, localPath: string, contentType: string): Promise<void> {
    this.#check(key);
    try {
      const { size } = await stat(localPath);
      if (this.#multipart && size > this.#partSize) {
        await uploadMultipart({
          client: this.client,
          bucket: this.bucket,
          key,
          file: localPath,
          size,
          contentType,
          partSize: this.#partSize,
          concurrency: this.#partConcurrency,
          attempt: this.#attempt(key),
        });
      } else {
        await this.#retry('upload', key, () =>
          this.client.send(new PutObjectCommand({ Bucket: this.bucket, Key: key, ContentType: contentType, ContentLength: size, Body: createReadStream(localPath, { highWaterMark: 1 << 20 }) })),
        );
      }
    } finally {
      await rm(localPath, { force: true });
    }
  }

  async stagingDir(): Promise<string> {
    // The promise is kept, not its result: 8 uploads start at once, and each must get the one
    // directory that close() removes, not a mkdtemp of its own.
    // Owned: a process killed mid-push leaves its spooled NARs there, and the next one removes them.
    this.#staging ??= ownedTempDir('strata-s3-');
    return (await this.#staging).path;
  }

  /** Top-level keys ending in `suffix`, over every page of the listing. */
  async list(suffix: string): Promise<string[]> {
    return (await this.listSome('', Infinity)).keys.filter((k) => k.endsWith(suffix));
  }

  /**
   * The keys directly under `prefix` from at most `maxPages` pages (1,000 keys each) of the
   * listing. S3 lists in key order, so when it stops early every key up to `through` was seen.
   */
  async listSome(prefix: string, maxPages: number): Promise<{ keys: string[]; through?: string | undefined }> {
    const out: string[] = [];
    let token: string | undefined;
    for (let page = 0; page < maxPages; page++) {
      const res = await this.#retry('list', prefix, () =>
        this.client.send(new ListObjectsV2Command({ Bucket: this.bucket, Delimiter: '/', Prefix: prefix === '' ? undefined : prefix, ContinuationToken: token })),
      );
      for (const o of res.Contents ?? []) if (o.Key !== undefined) out.push(o.Key);
      token = res.IsTruncated ? res.NextContinuationToken : undefined;
      if (token === undefined) return { keys: out };
    }
    // Stopped early: nothing is known past the last key seen (or at all, if none was).
    return { keys: out, through: out.at(-1) ?? '' };
  }

  async close(): Promise<void> {
    this.client.destroy();
    const staging = await this.#staging?.catch(() => undefined);
    await staging?.release();
  }
}
