/**
 * What an S3 failure means for strata: whether to try again (throttling, 5xx, a dropped
 * connection) and the one-line {@link StrataError} a user sees when it is final. The SDK's own
 * messages are multi-line or empty ("UnknownError" for a HEAD), so they are rewritten here from
 * the error name, the HTTP status and the socket error code.
 */
import { StrataError } from '../../core/error.js';

interface SdkError {
  name?: string;
  code?: string;
  message?: string;
  $metadata?: { httpStatusCode?: number; clockSkewCorrected?: boolean };
  $fault?: 'client' | 'server';
}

// Names S3 (and Ceph RGW) use for "slow down / try later"; all come with a 503 or 500.
const RETRYABLE_NAMES = new Set(['SlowDown', 'ServiceUnavailable', 'InternalError', 'RequestTimeout', 'Throttling', 'ThrottlingException', 'TooManyRequestsException', 'RequestTimeTooSkewed', 'TimeoutError']);
// Socket-level failures: a restarting or overloaded server, a connection the server dropped.
const RETRYABLE_CODES = new Set(['ECONNRESET', 'ECONNREFUSED', 'EPIPE', 'ETIMEDOUT', 'ECONNABORTED', 'EAI_AGAIN', 'UND_ERR_SOCKET', 'ERR_STREAM_PREMATURE_CLOSE']);
const CREDENTIAL_NAMES = new Set(['SignatureDoesNotMatch', 'InvalidAccessKeyId', 'InvalidToken', 'ExpiredToken', 'TokenRefreshRequired', 'CredentialsProviderError']);

function statusOf(e: unknown): number | undefined {
  return (e as SdkError).$metadata?.httpStatusCode;
}

/** The socket error code of `e` or of one of its causes (the SDK wraps some of them). */
function socketCode(e: unknown): string | undefined {
  for (let c: unknown = e, depth = 0; c && depth < 4; c = (c as { cause?: unknown }).cause, depth++) {
    const code = (c as SdkError).code;
    if (code && RETRYABLE_CODES.has(code)) return code;
  }
  return undefined;
}

/** Whether another attempt may succeed: throttling, 5xx, 429, or a dropped/refused connection. */
export function isRetryable(e: unknown): boolean {
  if (e instanceof StrataError) return false;
  const name = (e as SdkError).name ?? '';
  if (CREDENTIAL_NAMES.has(name)) return false;
  // The SDK set its clock offset from the refusal's Date header: signed again, it may pass.
  // A HEAD's 403 has no body to say RequestTimeTooSkewed, so this flag is all there is to go by.
  if ((e as SdkError).$metadata?.clockSkewCorrected === true) return true;
  const status = statusOf(e);
  if (status !== undefined) return status >= 500 || status === 429 || RETRYABLE_NAMES.has(name);
  return RETRYABLE_NAMES.has(name) || socketCode(e) !== undefined;
}

/** Whether `e` says the object (not the bucket) is not there. */
export function isNoSuchKey(e: unknown): boolean {
  const name = (e as SdkError).name;
  // HEAD responses have no body, so a missing key is a bare 404 ("NotFound").
  return name === 'NoSuchKey' || (name === 'NotFound' && statusOf(e) === 404);
}

/** What went wrong, as the tail of a one-line message, plus the stable code. */
function classify(e: unknown, endpoint: string, bucket: string): { code: string; why: string; hint?: string } {
  const err = e as SdkError;
  const name = err.name ?? 'Error';
  const status = statusOf(e);
  if (CREDENTIAL_NAMES.has(name) && name !== 'CredentialsProviderError') {
    return { code: 'S3_CREDENTIALS', why: `the server refused the credentials (${name})`, hint: 'check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or the profile= entry in ~/.aws/credentials' };
  }
  if (name === 'CredentialsProviderError') {
    return { code: 'S3_CREDENTIALS', why: 'no AWS credentials found', hint: 'set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or name a profile of ~/.aws/credentials with profile=' };
  }
  if (name === 'NoSuchBucket') {
    return { code: 'S3_NO_SUCH_BUCKET', why: `bucket '${bucket}' does not exist`, hint: 'create the bucket first, or check the bucket name and the endpoint= parameter' };
  }
  if (name === 'AccessDenied' || status === 403) {
    // A HEAD with a bad signature is a bare 403: no body, so no error name to tell the two apart.
    return { code: 'S3_ACCESS_DENIED', why: 'access denied (HTTP 403: wrong credentials, or no permission on the bucket)', hint: 'check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or the profile= entry in ~/.aws/credentials' };
  }
  const sock = socketCode(e);
  if (sock !== undefined) return { code: 'S3_UNREACHABLE', why: `connection to '${endpoint}' failed (${sock})` };
  if (name === 'TimeoutError') return { code: 'S3_UNREACHABLE', why: `'${endpoint}' did not answer in time` };
  if (status !== undefined) return { code: 'S3_ERROR', why: `${name} (HTTP ${status})` };
  const msg = (err.message ?? String(e)).split('\n')[0]!.replace(/\.$/, '');
  return { code: 'S3_ERROR', why: name !== 'Error' && !msg.includes(name) ? `${msg} (${name})` : msg };
}

/**
 * The error shown for a failed S3 request: "Cannot <action> 's3://bucket/key': <why>", with the
 * number of attempts when there were several.
 */
export function s3Error(e: unknown, action: string, target: string, ctx: { endpoint: string; bucket: string; attempts: number }): StrataError {
  if (e instanceof StrataError) return e;
  const { code, why, hint } = classify(e, ctx.endpoint, ctx.bucket);
  const tail = ctx.attempts > 1 ? ` (after ${ctx.attempts} attempts)` : '';
  return new StrataError(code, `Cannot ${action} '${target}': ${why}${tail}`, { value: target, cause: e, ...(hint === undefined ? {} : { hint }) });
}
