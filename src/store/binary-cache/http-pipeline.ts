/**
 * HTTP/1.1 pipelining for the GETs and HEADs of an `http://` cache: requests are written back to
 * back on a few keep-alive connections (all that are waiting go out in one write) and the
 * responses are read in order. Substituting a closure is hundreds of small requests; with one
 * request per write and per read (Node's own client), fetching the 300 NARs of a 300-path chain
 * from strata serve on loopback took 230-650 ms here, pipelined 40-150 ms (nginx: 370-490 ms and
 * 70-145 ms), because a syscall costs a lot on this paravirtualised VM. Nix 2.8's curl does not
 * pipeline; nginx and Node's HTTP server (strata serve) answer pipelined requests in order.
 *
 * Only idempotent requests go this way, so a request a connection took but did not start to
 * answer (the server closed it: keep-alive timeout, request limit) is sent again on another
 * connection; any other failure is the caller's to retry. A response body is a stream with
 * backpressure: a slow reader pauses its connection (and the responses queued behind it).
 */
import { connect, type Socket } from 'node:net';
import { Readable } from 'node:stream';

/** A response whose status line and headers were read; `body` streams the rest. */
export interface PipelinedResponse {
  statusCode: number;
  /** Lower-case names; a repeated header keeps its last value. */
  headers: Record<string, string>;
  body: Readable;
}

/** Options for {@link PipelinePool}. */
export interface PipelineOptions {
  /** Connections at most (default 4). */
  connections?: number | undefined;
  /** Requests queued on one connection at most (default 32). */
  depth?: number | undefined;
  /** Ms without a byte while a request waits, before the connection is given up (default 30 s). */
  timeout?: number | undefined;
}

interface Pending {
  head: string;
  isHead: boolean;
  resolve: (r: PipelinedResponse) => void;
  reject: (e: Error) => void;
  /** Times sent again after a connection closed before answering it. */
  resent: number;
}

/** Response head is refused past this size (nginx's own large_client_header_buffers is 4×8 KiB). */
const MAX_HEAD = 64 * 1024;
/** A request is re-sent at most this often after its connection closed unanswered. */
const MAX_RESEND = 2;

function httpError(message: string, code: string): Error {
  return Object.assign(new Error(message), { code });
}

/** A response body: pushed by its connection, pausing the socket while the reader is behind. */
class Body extends Readable {
  constructor(private readonly socket: Socket) {
    super({ highWaterMark: 1 << 20 });
  }
  override _read(): void {
    this.socket.resume();
  }
}

type BodyMode = { kind: 'length'; left: number } | { kind: 'chunked'; left: number; state: 'size' | 'data' | 'crlf' | 'trailer' } | { kind: 'eof' };

class Connection {
  readonly socket: Socket;
  /** Requests written (or about to be), oldest first: responses come back in this order. */
  readonly queue: Pending[] = [];
  #toWrite: string[] = [];
  #flushScheduled = false;
  #buf: Buffer = Buffer.alloc(0);
  /** The response being read: its request, its body and how it ends. */
  #current: { pending: Pending; body: Body; mode: BodyMode; close: boolean } | undefined;
  /** Bytes of the current response received (a request with none may be re-sent). */
  #answered = false;
  closed = false;

  constructor(
    host: string,
    port: number,
    timeout: number,
    private readonly events: { closed(conn: Connection, unanswered: Pending[], error: Error | undefined): void; answered(): void },
  ) {
    this.socket = connect({ host, port, noDelay: true });
    this.socket.setTimeout(timeout, () => {
      if (this.queue.length === 0) this.close(undefined);
      else this.close(httpError(`no answer for ${timeout / 1000} s`, 'ETIMEDOUT'));
    });
    this.socket.on('data', (d: Buffer) => this.#onData(d));
    this.socket.on('error', (e) => this.close(e));
    this.socket.on('end', () => {
      // Read to the end of the connection: the one body framed that way is complete.
      if (this.#current?.mode.kind === 'eof') this.#finishBody();
      this.close(this.queue.length > 0 ? httpError('the server closed the connection', 'ECONNRESET') : undefined);
    });
    this.socket.on('close', () => this.close(httpError('the connection closed', 'ECONNRESET')));
  }

  send(p: Pending): void {
    this.queue.push(p);
    this.#toWrite.push(p.head);
    this.socket.ref();
    if (this.#flushScheduled) return;
    this.#flushScheduled = true;
    // One write for every request queued in this turn of the event loop.
    setImmediate(() => {
      this.#flushScheduled = false;
      if (this.closed || this.#toWrite.length === 0) return;
      this.socket.write(this.#toWrite.join(''));
      this.#toWrite = [];
    });
  }

  #onData(d: Buffer): void {
    this.#answered = true;
    this.#buf = this.#buf.length === 0 ? d : Buffer.concat([this.#buf, d]);
    try {
      while (!this.closed && this.#buf.length > 0) {
        if (!this.#current) {
          if (!this.#readHead()) return;
        } else if (!this.#readBody()) return;
      }
    } catch (e) {
      this.close(e as Error);
    }
  }

  /** Parses one response head from the buffer; false when it is not all there yet. */
  #readHead(): boolean {
    const end = this.#buf.indexOf('\r\n\r\n');
    if (end < 0) {
      if (this.#buf.length > MAX_HEAD) throw httpError('response head too large', 'HPE_HEADER_OVERFLOW');
      return false;
    }
    const lines = this.#buf.subarray(0, end).toString('latin1').split('\r\n');
    this.#buf = this.#buf.subarray(end + 4);
    const status = /^HTTP\/1\.([01]) ([0-9]{3})(?: |$)/.exec(lines[0]!);
    if (!status) throw httpError(`malformed status line '${lines[0]!.slice(0, 80)}'`, 'HPE_INVALID_CONSTANT');
    const statusCode = Number(status[2]);
    const headers: Record<string, string> = {};
    for (const line of lines.slice(1)) {
      const colon = line.indexOf(':');
      if (colon <= 0) throw httpError(`malformed header line '${line.slice(0, 80)}'`, 'HPE_INVALID_HEADER_TOKEN');
      headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
    }
    if (statusCode >= 100 && statusCode < 200) return true; // 100 Continue and friends: the real answer follows
    const pending = this.queue[0];
    if (!pending) throw httpError('a response nobody asked for', 'HPE_UNEXPECTED');
    const connection = (headers['connection'] ?? '').toLowerCase();
    const close = connection.includes('close') || (status[1] === '0' && !connection.includes('keep-alive'));
    let mode: BodyMode;
    if (pending.isHead || statusCode === 204 || statusCode === 304) mode = { kind: 'length', left: 0 };
    else if ((headers['transfer-encoding'] ?? '').toLowerCase().includes('chunked')) mode = { kind: 'chunked', left: 0, state: 'size' };
    else if (headers['content-length'] !== undefined) {
      if (!/^[0-9]{1,15}$/.test(headers['content-length'])) throw httpError(`bad content-length '${headers['content-length']}'`, 'HPE_INVALID_CONTENT_LENGTH');
      mode = { kind: 'length', left: Number(headers['content-length']) };
    } else mode = { kind: 'eof' };
    const body = new Body(this.socket);
    // A reader that gives up early leaves the connection mid-response: it cannot carry on.
    body.on('close', () => {
      if (this.#current?.body === body) this.close(httpError('response body abandoned', 'ECONNRESET'));
    });
    this.#current = { pending, body, mode, close: close || mode.kind === 'eof' };
    pending.resolve({ statusCode, headers, body });
    if (mode.kind === 'length' && mode.left === 0) this.#finishBody();
    return true;
  }

  /** Moves body bytes from the buffer to the current body; false when more input is needed. */
  #readBody(): boolean {
    const cur = this.#current!;
    const mode = cur.mode;
    if (mode.kind === 'eof') {
      this.#push(this.#buf);
      this.#buf = Buffer.alloc(0);
      return false;
    }
    if (mode.kind === 'length') {
      const n = Math.min(mode.left, this.#buf.length);
      this.#push(this.#buf.subarray(0, n));
      this.#buf = this.#buf.subarray(n);
      mode.left -= n;
      if (mode.left === 0) this.#finishBody();
      return true;
    }
    // Chunked: size line, data, CRLF, ..., then a zero size and trailers up to an empty line.
    if (mode.state === 'data') {
      const n = Math.min(mode.left, this.#buf.length);
      this.#push(this.#buf.subarray(0, n));
      this.#buf = this.#buf.subarray(n);
      mode.left -= n;
      if (mode.left === 0) mode.state = 'crlf';
      return this.#buf.length > 0;
    }
    const eol = this.#buf.indexOf('\r\n');
    if (eol < 0) {
      if (this.#buf.length > MAX_HEAD) throw httpError('chunk header too large', 'HPE_INVALID_CHUNK_SIZE');
      return false;
    }
    const line = this.#buf.subarray(0, eol).toString('latin1');
    this.#buf = this.#buf.subarray(eol + 2);
    if (mode.state === 'crlf') {
      if (line !== '') throw httpError('missing CRLF after a chunk', 'HPE_INVALID_CHUNK_SIZE');
      mode.state = 'size';
    } else if (mode.state === 'size') {
      const size = /^([0-9a-fA-F]{1,12})(?:;.*)?$/.exec(line);
      if (!size) throw httpError(`bad chunk size '${line.slice(0, 40)}'`, 'HPE_INVALID_CHUNK_SIZE');
      mode.left = parseInt(size[1]!, 16);
      mode.state = mode.left === 0 ? 'trailer' : 'data';
    } else if (line === '') this.#finishBody(); // the empty line after the trailers
    return true;
  }

  #push(chunk: Buffer): void {
    if (chunk.length === 0) return;
    if (!this.#current!.body.push(chunk)) this.socket.pause();
  }

  #finishBody(): void {
    const cur = this.#current!;
    this.#current = undefined;
    this.queue.shift();
    this.#answered = false;
    cur.body.push(null);
    if (cur.close) this.close(undefined);
    else {
      if (this.queue.length === 0) this.socket.unref(); // idle keep-alive: no reason to stay up
      this.events.answered();
    }
  }

  /** Ends the connection; what it had not started to answer goes back to the pool. */
  close(error: Error | undefined): void {
    if (this.closed) return;
    this.closed = true;
    const cur = this.#current;
    this.#current = undefined;
    if (cur) {
      this.queue.shift();
      cur.body.destroy(error ?? httpError('the connection closed mid-response', 'ECONNRESET'));
    } else if (this.#answered && this.queue.length > 0) {
      // Part of a response head arrived: that request failed, it is not re-sent.
      this.queue.shift()!.reject(error ?? httpError('the connection closed mid-response', 'ECONNRESET'));
    }
    this.socket.destroy();
    this.events.closed(this, this.queue.splice(0), error);
  }
}

/** A few pipelined connections to one `host:port`. */
export class PipelinePool {
  readonly #host: string;
  readonly #port: number;
  readonly #max: number;
  readonly #depth: number;
  readonly #timeout: number;
  #conns: Connection[] = [];
  /** Requests waiting for room on a connection. */
  #waiting: Pending[] = [];
  #closed = false;

  constructor(host: string, port: number, options: PipelineOptions = {}) {
    this.#host = host;
    this.#port = port;
    this.#max = Math.max(1, options.connections ?? 4);
    this.#depth = Math.max(1, options.depth ?? 32);
    this.#timeout = options.timeout ?? 30_000;
  }

  /** Sends `GET`/`HEAD path` (the path already percent-safe); resolves with the response head. */
  request(method: 'GET' | 'HEAD', path: string, hostHeader: string): Promise<PipelinedResponse> {
    return new Promise((resolve, reject) => {
      if (this.#closed) return reject(httpError('the client is closed', 'ERR_CLOSED'));
      const head = `${method} ${path} HTTP/1.1\r\nHost: ${hostHeader}\r\nAccept: */*\r\n\r\n`;
      this.#dispatch({ head, isHead: method === 'HEAD', resolve, reject, resent: 0 });
    });
  }

  /** The least busy connection with room, opening one while all have work and there may be more; else undefined. */
  #pick(): Connection | undefined {
    let best: Connection | undefined;
    for (const c of this.#conns) if (!best || c.queue.length < best.queue.length) best = c;
    if ((!best || best.queue.length > 0) && this.#conns.length < this.#max) {
      best = new Connection(this.#host, this.#port, this.#timeout, {
        closed: (conn, unanswered, error) => this.#onClosed(conn, unanswered, error),
        answered: () => this.#drain(),
      });
      this.#conns.push(best);
    }
    return best && best.queue.length < this.#depth ? best : undefined;
  }

  #dispatch(p: Pending): void {
    const conn = this.#waiting.length === 0 ? this.#pick() : undefined;
    if (conn) conn.send(p);
    else this.#waiting.push(p);
  }

  #onClosed(conn: Connection, unanswered: Pending[], error: Error | undefined): void {
    this.#conns = this.#conns.filter((c) => c !== conn);
    for (const p of unanswered) {
      if (this.#closed) p.reject(error ?? httpError('the client is closed', 'ERR_CLOSED'));
      // Refused or reset before it was answered: a new connection may fare no better, and
      // re-sending forever would hide a dead server from the caller's retries.
      else if (p.resent >= MAX_RESEND || (error && !conn.socket.bytesRead)) p.reject(error ?? httpError('the server closed the connection', 'ECONNRESET'));
      else {
        p.resent++;
        this.#dispatch(p);
      }
    }
    this.#drain();
  }

  /** Sends waiting requests, oldest first, while a connection has room (called whenever one may have). */
  #drain(): void {
    for (let conn; this.#waiting.length > 0 && !this.#closed && (conn = this.#pick()); ) conn.send(this.#waiting.shift()!);
  }

  close(): void {
    this.#closed = true;
    for (const c of [...this.#conns]) c.close(undefined);
    for (const p of this.#waiting.splice(0)) p.reject(httpError('the client is closed', 'ERR_CLOSED'));
  }
}
