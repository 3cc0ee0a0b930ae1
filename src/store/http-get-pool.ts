/**
 * Plain-HTTP GETs of small files over a few keep-alive sockets, for a binary cache's narinfos.
 * A cache without strata's closure endpoint is walked one narinfo per level of the closure, so
 * each request's own cost is on the critical path: Node's http client spent ~0.3 ms of CPU per
 * small GET here (request and response objects, agent bookkeeping, listeners), a request written
 * as one string and its response read by the parser below ~0.1 ms (300 sequential GETs of a
 * small file from nginx on loopback: 117-122 ms against 30-34 ms).
 *
 * Only the plain case is handled: HTTP/1.1 (or 1.0), a response framed by Content-Length or
 * chunked encoding, or ended by the server closing. Anything else — a network error, a malformed
 * or informational (1xx) response, a connection that closes before answering — gives `undefined`,
 * and the caller makes the request again through its full client, which retries, follows
 * redirects and words the errors. A stall past the timeout is told apart ({@link TIMED_OUT}): the
 * caller counts it as an attempt.
 */
import { connect, type Socket } from 'node:net';

/** A response read whole: `body` is undefined when it was larger than the limit asked for. */
export interface SmallResponse {
  status: number;
  body: Buffer | undefined;
}

/** What {@link HttpGetPool.get} gives when the server said nothing within the timeout. */
export const TIMED_OUT = 'timed out';

export interface HttpGetPoolOptions {
  /** Sockets open at once (default 8, as the transport's agent). */
  maxSockets?: number;
  /** Ms to wait for a connection, for the response, and between its chunks. */
  timeoutMs: number;
}

/** Response headers larger than this are not a cache's: the full client reads them. */
const MAX_HEAD = 64 * 1024;
/** An idle socket is closed after this long, as the transport's agent does (30 s). */
const IDLE_MS = 30_000;
const HEAD_END = Buffer.from('\r\n\r\n');
const CRLF = Buffer.from('\r\n');
const EMPTY = Buffer.alloc(0);
const STATUS_LINE = /^HTTP\/1\.([01]) ([1-5]\d\d)(?: [^\r\n]*)?/;
const HEADER_LINE = /\r\n([!#$%&'*+.^_`|~0-9A-Za-z-]+):([^\r\n]*)/g;

interface Conn {
  socket: Socket;
  /** Bytes received and not yet parsed. */
  pending: Buffer;
  /** Made for the request in progress (not kept alive from an earlier one). */
  fresh: boolean;
  /** Bytes arrived for the request in progress. */
  answered: boolean;
  /** The timeout ended it. */
  timedOut: boolean;
  /** The request in progress: fed what arrives, told when the socket ends. */
  onData?: () => void;
  onEnd?: () => void;
}

export class HttpGetPool {
  readonly #host: string;
  readonly #port: number;
  readonly #hostHeader: string;
  readonly #max: number;
  readonly #timeoutMs: number;
  readonly #idle: Conn[] = [];
  #open = 0;
  readonly #waiting: Array<() => void> = [];
  #closed = false;

  /** `hostHeader` is the Host the requests name (`host[:port]`, as the URL's `host`). */
  constructor(host: string, port: number, hostHeader: string, options: HttpGetPoolOptions) {
    this.#host = host;
    this.#port = port;
    this.#hostHeader = hostHeader;
    this.#max = options.maxSockets ?? 8;
    this.#timeoutMs = options.timeoutMs;
  }

  /**
   * GETs `path` (an absolute path with its query, already encoded); see the module comment for
   * `undefined`. {@link TIMED_OUT} when the server stalled past the timeout: that was an attempt.
   */
  async get(path: string, limit: number): Promise<SmallResponse | typeof TIMED_OUT | undefined> {
    const request = `GET ${path} HTTP/1.1\r\nHost: ${this.#hostHeader}\r\nAccept: */*\r\n\r\n`;
    // A kept-alive socket the server has closed meanwhile fails before answering: once more on a new one.
    for (let fresh = false; ; fresh = true) {
      const conn = await this.#take(fresh);
      if (!conn) return undefined;
      let reusable = false;
      try {
        const res = await this.#exchange(conn, request, limit);
        reusable = res?.reusable === true;
        if (!res && conn.timedOut) return TIMED_OUT;
        if (res || conn.fresh || conn.answered || fresh) return res && { status: res.status, body: res.body };
      } finally {
        this.#give(conn, reusable);
      }
    }
  }

  /** Closes every socket; later requests give `undefined`. */
  close(): void {
    this.#closed = true;
    for (const c of this.#idle.splice(0)) c.socket.destroy();
    for (const w of this.#waiting.splice(0)) w();
  }

  /** An idle connection (unless `fresh`), a new one, or (all busy) the next one given back. */
  async #take(fresh: boolean): Promise<Conn | undefined> {
    for (;;) {
      if (this.#closed) return undefined;
      const idle = fresh ? undefined : this.#idle.pop();
      if (idle) {
        idle.fresh = false;
        idle.answered = false;
        idle.timedOut = false;
        idle.socket.setTimeout(this.#timeoutMs);
        return idle;
      }
      if (this.#open < this.#max) {
        this.#open++;
        return this.#connect();
      }
      await new Promise<void>((resolve) => this.#waiting.push(resolve));
    }
  }

  #connect(): Conn {
    const socket = connect({ host: this.#host, port: this.#port, noDelay: true });
    const conn: Conn = { socket, pending: EMPTY, fresh: true, answered: false, timedOut: false };
    socket.setTimeout(this.#timeoutMs, () => {
      conn.timedOut = true;
      socket.destroy();
    });
    socket.on('data', (chunk: Buffer) => {
      conn.answered = true;
      conn.pending = conn.pending.length === 0 ? chunk : Buffer.concat([conn.pending, chunk]);
      conn.onData?.();
    });
    // Errors end the exchange through 'close'; an idle socket that fails is dropped from the pool.
    socket.on('error', () => {});
    socket.on('close', () => {
      conn.onEnd?.();
      const at = this.#idle.indexOf(conn);
      if (at >= 0) {
        this.#idle.splice(at, 1);
        this.#open--;
        this.#waiting.shift()?.();
      }
    });
    return conn;
  }

  #give(conn: Conn, reusable: boolean): void {
    conn.onData = undefined;
    conn.onEnd = undefined;
    if (reusable && !this.#closed && !conn.socket.destroyed) {
      // Idle: not keeping the process alive, closed after a while.
      conn.socket.setTimeout(IDLE_MS);
      conn.socket.unref();
      this.#idle.push(conn);
    } else {
      conn.socket.destroy();
      this.#open--;
    }
    this.#waiting.shift()?.();
  }

  /** Writes the request and reads one response on `conn`. */
  #exchange(conn: Conn, request: string, limit: number): Promise<(SmallResponse & { reusable: boolean }) | undefined> {
    conn.socket.ref();
    return new Promise((resolve) => {
      let parser: ResponseParser | undefined = new ResponseParser(limit);
      const finish = (res: (SmallResponse & { reusable: boolean }) | undefined) => {
        parser = undefined;
        conn.onData = undefined;
        conn.onEnd = undefined;
        resolve(res);
      };
      conn.onData = () => {
        if (!parser) return;
        const step = parser.feed(conn.pending);
        conn.pending = step.rest;
        if (step.kind === 'bad') finish(undefined);
        else if (step.kind === 'done') finish({ status: step.status, body: step.body, reusable: step.reusable && step.rest.length === 0 });
      };
      conn.onEnd = () => {
        const step = parser?.end();
        finish(step?.kind === 'done' ? { status: step.status, body: step.body, reusable: false } : undefined);
      };
      conn.socket.write(request);
      // Bytes may be waiting already (a server that answers early): parse them now.
      if (conn.pending.length > 0) conn.onData();
    });
  }
}

type Step = { kind: 'more'; rest: Buffer } | { kind: 'bad'; rest: Buffer } | { kind: 'done'; status: number; body: Buffer | undefined; reusable: boolean; rest: Buffer };

/** One HTTP/1.x response, fed the bytes received so far (each call gets all that is unparsed). */
class ResponseParser {
  #status = 0;
  #reusable = false;
  /** How the body is framed, once the head is read. */
  #framing: { kind: 'length'; left: number } | { kind: 'chunked' } | { kind: 'close' } | undefined;
  readonly #parts: Buffer[] = [];
  #size = 0;
  #tooBig = false;

  constructor(private readonly limit: number) {}

  feed(data: Buffer): Step {
    let at = 0;
    if (!this.#framing) {
      const end = data.indexOf(HEAD_END);
      if (end < 0) return data.length > MAX_HEAD ? { kind: 'bad', rest: data } : { kind: 'more', rest: data };
      if (!this.#head(data.toString('latin1', 0, end))) return { kind: 'bad', rest: data };
      at = end + 4;
    }
    const step = this.#body(data, at);
    // Larger than the limit: answered at once, the rest left unread (the socket is not reused).
    return this.#tooBig ? { kind: 'done', status: this.#status, body: undefined, reusable: false, rest: EMPTY } : step;
  }

  #body(data: Buffer, at: number): Step {
    const framing = this.#framing!;
    if (framing.kind === 'close') {
      this.#take(data.subarray(at));
      return { kind: 'more', rest: EMPTY };
    }
    if (framing.kind === 'length') {
      const n = Math.min(framing.left, data.length - at);
      this.#take(data.subarray(at, at + n));
      framing.left -= n;
      return framing.left === 0 ? this.#done(data.subarray(at + n)) : { kind: 'more', rest: EMPTY };
    }
    // Chunked: `<hex size>[;ext]\r\n<data>\r\n`… then `0\r\n`, trailers, and an empty line.
    for (;;) {
      const eol = data.indexOf(CRLF, at);
      if (eol < 0) return { kind: 'more', rest: data.subarray(at) };
      const sizeText = data.toString('latin1', at, eol).split(';')[0]!.trim();
      if (!/^[0-9a-fA-F]{1,8}$/.test(sizeText)) return { kind: 'bad', rest: data };
      const size = parseInt(sizeText, 16);
      if (size === 0) {
        // Trailer lines, if any, then the empty line: `\r\n\r\n` from the size line's end on.
        const end = data.indexOf(HEAD_END, eol);
        return end < 0 ? { kind: 'more', rest: data.subarray(at) } : this.#done(data.subarray(end + 4));
      }
      if (data.length < eol + 2 + size + 2) return { kind: 'more', rest: data.subarray(at) };
      if (data[eol + 2 + size] !== 0x0d || data[eol + 3 + size] !== 0x0a) return { kind: 'bad', rest: data };
      this.#take(data.subarray(eol + 2, eol + 2 + size));
      if (this.#tooBig) return { kind: 'more', rest: EMPTY };
      at = eol + 4 + size;
    }
  }

  /** The server closed the connection: a body framed by the close is complete, any other is not. */
  end(): Step {
    if (this.#framing?.kind !== 'close') return { kind: 'bad', rest: EMPTY };
    return { kind: 'done', status: this.#status, body: this.#joined(), reusable: false, rest: EMPTY };
  }

  #head(head: string): boolean {
    const m = STATUS_LINE.exec(head);
    if (!m || m[2]![0] === '1') return false;
    this.#status = Number(m[2]);
    let length: number | undefined;
    let chunked = false;
    let close = m[1] === '0';
    // Each header line after the status line; a line that is not `Name: value` is not a cache's.
    let lines = 0;
    let seen = m[0].length;
    for (const h of head.matchAll(HEADER_LINE)) {
      if (h.index !== seen) return false;
      seen += h[0].length;
      lines++;
      const name = h[1]!;
      // Only three headers matter; compared case-insensitively, and only when the length fits.
      if (name.length === 14 && name.toLowerCase() === 'content-length') {
        const value = h[2]!.trim();
        if (!/^\d{1,15}$/.test(value) || (length !== undefined && length !== Number(value))) return false;
        length = Number(value);
      } else if (name.length === 17 && name.toLowerCase() === 'transfer-encoding') {
        chunked = h[2]!.toLowerCase().split(',').at(-1)!.trim() === 'chunked';
      } else if (name.length === 10 && name.toLowerCase() === 'connection') {
        const tokens = h[2]!.toLowerCase().split(',').map((t) => t.trim());
        close = tokens.includes('close') || (close && !tokens.includes('keep-alive'));
      }
    }
    if (seen !== head.length || lines > 100) return false;
    if (chunked) this.#framing = { kind: 'chunked' };
    else if (length !== undefined) this.#framing = { kind: 'length', left: length };
    else if (this.#status === 204 || this.#status === 304) this.#framing = { kind: 'length', left: 0 };
    else {
      this.#framing = { kind: 'close' };
      close = true;
    }
    if (length !== undefined && length > this.limit) this.#tooBig = true;
    this.#reusable = !close;
    return true;
  }

  #take(bytes: Buffer): void {
    if (bytes.length === 0 || this.#tooBig) return;
    if (this.#size + bytes.length > this.limit) {
      this.#tooBig = true;
      this.#parts.length = 0;
      return;
    }
    // A view of the received chunk: copied once, when the body is joined.
    this.#parts.push(bytes);
    this.#size += bytes.length;
  }

  #joined(): Buffer | undefined {
    if (this.#tooBig) return undefined;
    return this.#parts.length === 1 ? Buffer.from(this.#parts[0]!) : Buffer.concat(this.#parts, this.#size);
  }

  #done(rest: Buffer): Step {
    return { kind: 'done', status: this.#status, body: this.#joined(), reusable: this.#reusable, rest };
  }
}
