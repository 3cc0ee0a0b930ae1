/**
 * Multipart upload of one local file: parts read straight from disk (so a failed part is retried
 * on its own, not the whole NAR), several in flight, and the object appears only when
 * CompleteMultipartUpload succeeds. On any failure the upload is aborted, so no parts linger;
 * an upload whose abort cannot reach the server is still invisible to readers (S3 never lists
 * or serves an incomplete multipart upload).
 */
import { createReadStream } from 'node:fs';

import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CreateMultipartUploadCommand,
  type S3Client,
  UploadPartCommand,
} from '@aws-sdk/client-s3';

/** S3's limits: parts of at least 5 MiB (but the last), at most 10,000 of them. */
export const MIN_PART_SIZE = 5 * 1024 * 1024;
const MAX_PARTS = 10_000;

/** Runs one S3 request with the transport's retries; `what` names it in errors. */
export type Attempt = <T>(what: string, fn: () => Promise<T>) => Promise<T>;

/** One multipart upload's inputs. */
export interface MultipartUpload {
  client: S3Client;
  bucket: string;
  key: string;
  file: string;
  size: number;
  contentType: string;
  /** Bytes per part, raised when the file would need more than 10,000 parts. */
  partSize: number;
  /** Parts in flight at once. */
  concurrency: number;
  attempt: Attempt;
}

/**
 * Uploads `u.file` to `u.key` in parts and completes the upload; aborts it on failure.
 *
 * @example await uploadMultipart({ client, bucket, key: 'nar/x.nar.xz', file, size, contentType, partSize: 8 << 20, concurrency: 4, attempt });
 */
export async function uploadMultipart(u: MultipartUpload): Promise<void> {
  const partSize = Math.max(MIN_PART_SIZE, u.partSize, Math.ceil(u.size / MAX_PARTS));
  const count = Math.max(1, Math.ceil(u.size / partSize));
  const created = await u.attempt('start a multipart upload of', () => u.client.send(new CreateMultipartUploadCommand({ Bucket: u.bucket, Key: u.key, ContentType: u.contentType })));
  const uploadId = created.UploadId!;
  const etags: string[] = new Array<string>(count);
  try {
    let next = 0;
    let failed = false;
    const worker = async () => {
      while (!failed && next < count) {
        const i = next++;
        const start = i * partSize;
        const end = Math.min(u.size, start + partSize);
        try {
          const res = await u.attempt('upload a part of', () =>
            u.client.send(
              new UploadPartCommand({
                Bucket: u.bucket,
                Key: u.key,
                UploadId: uploadId,
                PartNumber: i + 1,
                ContentLength: end - start,
                // A fresh stream per attempt: a retried part re-reads its bytes from disk.
                Body: createReadStream(u.file, { start, end: end - 1, highWaterMark: 1 << 20 }),
              }),
            ),
          );
          etags[i] = res.ETag!;
        } catch (e) {
          failed = true;
          throw e;
        }
      }
    };
    const results = await Promise.allSettled(Array.from({ length: Math.min(u.concurrency, count) }, worker));
    const failure = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failure) throw failure.reason;
    await u.attempt('complete the multipart upload of', () =>
      u.client.send(
        new CompleteMultipartUploadCommand({
          Bucket: u.bucket,
          Key: u.key,
          UploadId: uploadId,
          MultipartUpload: { Parts: etags.map((ETag, i) => ({ ETag, PartNumber: i + 1 })) },
        }),
      ),
    );
  } catch (e) {
    // Best effort, one attempt: the server may be the thing that failed.
    await u.client.send(new AbortMultipartUploadCommand({ Bucket: u.bucket, Key: u.key, UploadId: uploadId })).catch(() => {});
    throw e;
  }
}
