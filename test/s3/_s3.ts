/**
 * A real S3 server for the S3 tests: Ceph's RADOS Gateway started by the shared
 * `../shared/tools/s3-local.sh` into a temporary directory (memstore, no mgr: small enough for a
 * 2-core CI machine), plus bucket helpers that talk to it with the SDK directly.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import {
  CreateBucketCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListMultipartUploadsCommand,
  ListObjectsV2Command,
  PutBucketPolicyCommand,
  S3Client,
} from '@aws-sdk/client-s3';

import { ROOT } from '../support/cli.js';

export const S3_LOCAL = process.env['S3_LOCAL_SH'] ?? join(ROOT, '..', 'shared', 'tools', 's3-local.sh');

/** Why the S3 tests cannot run here, or `undefined` when they can (CI installs Ceph). */
export function s3Unavailable(): string | undefined {
  const missing = ['ceph-mon', 'ceph-osd', 'radosgw', 'radosgw-admin', 'ceph'].filter((b) => spawnSync('sh', ['-c', `command -v ${b}`]).status !== 0);
  if (missing.length > 0) return `Ceph is not installed (missing ${missing.join(', ')}): apt-get install -y --no-install-recommends ceph-mon ceph-mgr ceph-osd radosgw ceph-common`;
  if (process.getuid?.() !== 0) return 'the Ceph test cluster must be started as root';
  return undefined;
}

/** A running test server. */
export interface S3Server {
  dir: string;
  /** `http://127.0.0.1:PORT` */
  endpoint: string;
  /** `127.0.0.1:PORT`, for `endpoint=` in store URIs. */
  hostPort: string;
  port: number;
  accessKey: string;
  secretKey: string;
  region: string;
  client: S3Client;
}

/** Starts Ceph + RGW (about 15 s) and puts its keys into `process.env` for in-process stores. */
export function startS3(): S3Server {
  if (!existsSync(S3_LOCAL)) throw new Error(`${S3_LOCAL} is missing (set S3_LOCAL_SH)`);
  const dir = mkdtempSync(join(tmpdir(), 'strata-s3-'));
  // No mgr and a 1.5 GiB memstore: the CI machine has 2 cores and little RAM to spare.
  const r = spawnSync('bash', [S3_LOCAL, 'start', dir], {
    env: { ...process.env, S3_LOCAL_MGR: '0', S3_LOCAL_MEM_BYTES: String(1536 * 1024 * 1024) },
    encoding: 'utf8',
    timeout: 240_000,
  });
  if (r.status !== 0) throw new Error(`s3-local.sh start failed (${r.status}): ${r.stderr}`);
  const env = Object.fromEntries(
    readFileSync(join(dir, 'env'), 'utf8')
      .trim()
      .split('\n')
      .map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]),
  ) as Record<string, string>;
  const endpoint = env['ENDPOINT']!;
  const url = new URL(endpoint);
  process.env['AWS_ACCESS_KEY_ID'] = env['ACCESS_KEY']!;
  process.env['AWS_SECRET_ACCESS_KEY'] = env['SECRET_KEY']!;
  process.env['AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED'] = 'true';
  const client = new S3Client({
    endpoint,
    region: env['REGION']!,
    forcePathStyle: true,
    credentials: { accessKeyId: env['ACCESS_KEY']!, secretAccessKey: env['SECRET_KEY']! },
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
  });
  return { dir, endpoint, hostPort: url.host, port: Number(url.port), accessKey: env['ACCESS_KEY']!, secretKey: env['SECRET_KEY']!, region: env['REGION']!, client };
}

/**
 * Stops the daemons and removes the directory. Its data is thrown away, so the daemons (ours, by
 * the PIDs in their pid files) are killed outright: `s3-local.sh stop` makes memstore save every
 * object to disk first, ~10 s for the 300 MB a test run leaves.
 */
export function stopS3(s: S3Server | undefined): void {
  if (!s) return;
  s.client.destroy();
  const run = join(s.dir, 'run');
  const pids = existsSync(run)
    ? readdirSync(run)
        .filter((f) => f.endsWith('.pid'))
        .map((f) => Number(readFileSync(join(run, f), 'utf8').trim()))
        .filter((pid) => pid > 0)
    : [];
  const alive = (pid: number) => {
    try {
      process.kill(pid, 0);
      return true;
    } catch {
      return false;
    }
  };
  for (const pid of pids) if (alive(pid)) process.kill(pid, 'SIGKILL');
  for (let i = 0; i < 100 && pids.some(alive); i++) spawnSync('sleep', ['0.1']);
  rmSync(s.dir, { recursive: true, force: true });
}

/** Kills the gateway with SIGKILL (a server dying mid-request); the cluster below stays up. */
export function killGateway(s: S3Server): void {
  const pid = Number(readFileSync(join(s.dir, 'run', 'client.rgw.x.pid'), 'utf8'));
  process.kill(pid, 'SIGKILL');
}

/** Starts the gateway again on the same port, over the same data, and waits until it answers. */
export async function restartGateway(s: S3Server): Promise<void> {
  const r = spawnSync('radosgw', ['-c', join(s.dir, 'ceph.conf'), '-n', 'client.rgw.x'], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`radosgw failed to start again: ${r.stderr}`);
  for (let i = 0; i < 600; i++) {
    const ok = await fetch(`${s.endpoint}/`).then(
      () => true,
      () => false,
    );
    if (ok) return;
    await new Promise((res) => setTimeout(res, 100));
  }
  throw new Error('radosgw did not answer within 60 s of its restart');
}

let bucketCounter = 0;

/** Creates a fresh bucket (unique per run), optionally readable anonymously over plain HTTP. */
export async function makeBucket(s: S3Server, prefix: string, options: { public?: boolean } = {}): Promise<string> {
  const name = `${prefix}-${process.pid}-${++bucketCounter}-${Math.random().toString(36).slice(2, 8)}`;
  await s.client.send(new CreateBucketCommand({ Bucket: name }));
  if (options.public) {
    const policy = { Version: '2012-10-17', Statement: [{ Effect: 'Allow', Principal: '*', Action: ['s3:GetObject'], Resource: [`arn:aws:s3:::${name}/*`] }] };
    await s.client.send(new PutBucketPolicyCommand({ Bucket: name, Policy: JSON.stringify(policy) }));
  }
  return name;
}

/** The store URI of a bucket on the test server (or on `hostPort`, e.g. a proxy in front of it). */
export function s3Uri(s: S3Server, bucket: string, extra = '', hostPort = s.hostPort): string {
  return `s3://${bucket}?endpoint=${hostPort}&scheme=http&region=${s.region}${extra}`;
}

/** Every key with its size, as any reader would see the bucket now. */
export async function listObjects(s: S3Server, bucket: string): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  let token: string | undefined;
  do {
    const page = await s.client.send(new ListObjectsV2Command({ Bucket: bucket, ContinuationToken: token }));
    for (const o of page.Contents ?? []) out.set(o.Key!, o.Size ?? 0);
    token = page.IsTruncated ? page.NextContinuationToken : undefined;
  } while (token);
  return out;
}

/** Multipart uploads started and neither completed nor aborted. */
export async function openUploads(s: S3Server, bucket: string): Promise<number> {
  const r = await s.client.send(new ListMultipartUploadsCommand({ Bucket: bucket }));
  return r.Uploads?.length ?? 0;
}

/** Whether an object exists (HEAD). */
export async function headSize(s: S3Server, bucket: string, key: string): Promise<number | undefined> {
  try {
    return (await s.client.send(new HeadObjectCommand({ Bucket: bucket, Key: key }))).ContentLength;
  } catch {
    return undefined;
  }
}

/**
 * Checks the cache invariant a reader relies on: every narinfo's NAR exists with its FileSize.
 * Returns the violations (empty when the bucket is consistent).
 */
export async function danglingNarInfos(s: S3Server, bucket: string, objects?: Map<string, number>): Promise<string[]> {
  const all = objects ?? (await listObjects(s, bucket));
  const bad: string[] = [];
  await Promise.all(
    [...all.keys()]
      .filter((k) => k.endsWith('.narinfo'))
      .map(async (k) => {
        const text = await getText(s, bucket, k);
        if (text === undefined) return; // listed, then replaced: still fine
        const url = /^URL: (.*)$/m.exec(text)?.[1];
        const size = Number(/^FileSize: (.*)$/m.exec(text)?.[1]);
        const actual = url === undefined ? undefined : await headSize(s, bucket, url);
        if (actual !== size) bad.push(`${k} -> ${url} (FileSize ${size}, object ${actual ?? 'missing'})`);
      }),
  );
  return bad;
}

/** An object's text, or `undefined`. */
export async function getText(s: S3Server, bucket: string, key: string): Promise<string | undefined> {
  try {
    const r = await s.client.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
    return await r.Body!.transformToString();
  } catch {
    return undefined;
  }
}
