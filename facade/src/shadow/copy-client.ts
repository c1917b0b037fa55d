import net from 'node:net';
import tls from 'node:tls';
import type { IncomingHttpHeaders } from 'node:http';
import type { CapturedResponse } from './normalise.ts';

/**
 * A small HTTP/1.1 client for shadow copies, one per upstream, with its own keep-alive pool.
 *
 * Why not node:http: a copy is a complete request (the body is already buffered, its length
 * known) whose answer is captured whole and bounded, never streamed. node:http's ClientRequest,
 * agent and IncomingMessage cost about twice the CPU of the exchange itself (option merging, a
 * header dictionary, stream machinery, listeners added and removed per request), and a shadowed
 * request pays for a copy on top of the proxied one. Here the request head is one string written
 * with the body in a single write, each pooled socket keeps one set of listeners for its life,
 * and the response is parsed straight into a CapturedResponse.
 *
 * What it does: Content-Length and chunked response bodies (trailers skipped), bodies delimited by
 * the connection's close, no body for HEAD, 204 and 304, interim 1xx answers skipped; duplicate
 * response headers combined as node:http does (so the candidate's headers compare like the
 * primary's); keep-alive reuse (LIFO, at most `maxIdle` idle sockets, each closed after
 * `idleSocketMs` idle, below the upstreams' keep-alive timeout) unless the answer says
 * `connection: close`, is HTTP/1.0, or is delimited by close; an idle timeout per exchange
 * (ETIMEDOUT); a response head over 16 KiB or a malformed answer fails the copy (EPARSE) and
 * destroys the socket. A body over `maxBytes` is not read further: the copy resolves with a null
 * body (not compared) and the socket is destroyed rather than drained.
 */

const MAX_HEAD_BYTES = 16 * 1024;
const CRLFCRLF = Buffer.from('\r\n\r\n');
/** Response headers of which node:http keeps only the first (see IncomingMessage._addHeaderLine). */
const FIRST_WINS = new Set(['content-type', 'content-length', 'user-agent', 'referer', 'host', 'authorization', 'proxy-authorization', 'if-modified-since', 'if-unmodified-since', 'from', 'location', 'max-forwards', 'retry-after', 'etag', 'last-modified', 'server', 'age', 'expires']);
const VALID_PATH = /^[\u0021-\u00ff]+$/;

export interface CopyClientOptions {
  /** Idle pooled sockets are closed after this long (keep it below the upstream's keep-alive timeout). */
  idleSocketMs: number;
  maxIdle?: number;
}

export interface CopyExchange {
  method: string;
  path: string;
  /** Flat name/value pairs; must include Host and the body's framing (Content-Length). */
  headers: readonly string[];
  body: Buffer;
  /** Largest body kept; a longer one resolves with `body: null`. */
  maxBytes: number;
  /** Socket idle time after which the exchange fails with ETIMEDOUT. */
  timeoutMs: number;
}

const EXCHANGE = Symbol('strangler.copy.exchange');
type PooledSocket = net.Socket & { [EXCHANGE]?: Exchange | null; client?: CopyClient };

const parseError = (message: string) => Object.assign(new Error(`shadow copy: ${message}`), { code: 'EPARSE' });
const hangUp = () => Object.assign(new Error('socket hang up'), { code: 'ECONNRESET' });

export class CopyClient {
  private readonly idle: PooledSocket[] = [];
  private readonly sockets = new Set<PooledSocket>();
  private retired = false;
  private readonly maxIdle: number;

  constructor(
    private readonly target: URL,
    private readonly options: CopyClientOptions,
    private readonly onTimeout: () => Error,
  ) {
    this.maxIdle = options.maxIdle ?? 256;
  }

  /** Sends one copy; resolves with its captured answer, rejects on transport or protocol failure. */
  send(x: CopyExchange): Promise<CapturedResponse> {
    return new Promise((resolve, reject) => {
      if (!VALID_PATH.test(x.path)) return reject(Object.assign(new Error('shadow copy: invalid request path'), { code: 'ERR_UNESCAPED_CHARACTERS' }));
      let head = `${x.method} ${x.path} HTTP/1.1\r\n`;
      const h = x.headers;
      for (let i = 0; i < h.length; i += 2) head += `${h[i]}: ${h[i + 1]}\r\n`;
      head += '\r\n';
      let socket = this.idle.pop();
      while (socket?.destroyed) socket = this.idle.pop(); // closed, its 'close' not emitted yet
      socket ??= this.connect();
      const ex = new Exchange(socket, x.method === 'HEAD', x.maxBytes, resolve, reject);
      socket[EXCHANGE] = ex;
      socket.setTimeout(x.timeoutMs);
      if (x.body.length) {
        socket.cork();
        socket.write(head, 'latin1');
        socket.write(x.body);
        socket.uncork();
      } else socket.write(head, 'latin1');
    });
  }

  /** Stops pooling: idle sockets are closed now, busy ones when their exchange ends. */
  retire(): void {
    this.retired = true;
    for (const s of this.idle.splice(0)) s.destroy();
  }

  /** Closes every socket. */
  close(): void {
    this.retire();
    for (const s of this.sockets) s.destroy();
  }

  private connect(): PooledSocket {
    const t = this.target;
    const host = t.hostname.startsWith('[') ? t.hostname.slice(1, -1) : t.hostname;
    const secure = t.protocol === 'https:';
    const port = Number(t.port) || (secure ? 443 : 80);
    const socket: PooledSocket = secure
      ? tls.connect({ host, port, servername: net.isIP(host) ? undefined : host, ALPNProtocols: ['http/1.1'] })
      : net.connect({ host, port });
    socket.setNoDelay(true);
    socket.setKeepAlive(true, 1_000);
    socket.client = this;
    this.sockets.add(socket);
    socket.on('data', onData);
    socket.on('timeout', onSocketTimeout);
    socket.on('error', onError);
    socket.on('end', onEnd);
    socket.on('close', onClose);
    return socket;
  }

  /** An exchange on `socket` is over: pool the socket when it may carry another, else close it. */
  release(socket: PooledSocket, reusable: boolean): void {
    socket[EXCHANGE] = null;
    if (reusable && !this.retired && !socket.destroyed && this.idle.length < this.maxIdle) {
      socket.setTimeout(this.options.idleSocketMs);
      this.idle.push(socket);
    } else socket.destroy();
  }

  timeoutError(): Error {
    return this.onTimeout();
  }

  forget(socket: PooledSocket): void {
    this.sockets.delete(socket);
    const i = this.idle.indexOf(socket);
    if (i >= 0) this.idle.splice(i, 1);
  }
}

// Socket listeners, shared by every pooled socket (`this` is the socket): a socket carries one
// exchange at a time, found on it.
function onData(this: PooledSocket, chunk: Buffer) {
  const ex = this[EXCHANGE];
  if (ex) ex.data(chunk);
  else this.destroy(); // bytes nobody asked for: the connection cannot be trusted any more
}
function onSocketTimeout(this: PooledSocket) {
  const ex = this[EXCHANGE];
  if (ex) ex.fail(this.client!.timeoutError());
  else this.destroy(); // idle too long
}
function onError(this: PooledSocket, err: Error) {
  this[EXCHANGE]?.fail(err);
}
function onEnd(this: PooledSocket) {
  const ex = this[EXCHANGE];
  if (ex) ex.ended();
  else this.destroy();
}
function onClose(this: PooledSocket) {
  this.client!.forget(this);
  this[EXCHANGE]?.ended();
}

const enum State {
  Head,
  Length,
  ChunkSize,
  ChunkData,
  ChunkDataEnd,
  Trailers,
  UntilClose,
  Done,
}

/** One request/response on a socket: the response parser and the capture. */
class Exchange {
  private state = State.Head;
  private pending: Buffer | null = null;
  private status = 0;
  private headers: IncomingHttpHeaders = {};
  private keepAlive = true;
  private remaining = 0;
  private size = 0;
  private chunks: Buffer[] = [];
  private line = '';

  constructor(
    private readonly socket: PooledSocket,
    private readonly head: boolean,
    private readonly maxBytes: number,
    private readonly resolve: (res: CapturedResponse) => void,
    private readonly reject: (err: unknown) => void,
  ) {}

  data(chunk: Buffer): void {
    let buf = chunk;
    while (buf.length && this.state !== State.Done) {
      switch (this.state) {
        case State.Head: {
          if (this.pending) buf = Buffer.concat([this.pending, buf]);
          const end = buf.indexOf(CRLFCRLF);
          if (end < 0) {
            if (buf.length > MAX_HEAD_BYTES) return this.fail(parseError('response head too large'));
            this.pending = buf;
            return;
          }
          this.pending = null;
          if (!this.parseHead(buf.toString('latin1', 0, end))) return;
          buf = buf.subarray(end + 4);
          break;
        }
        case State.Length:
        case State.ChunkData: {
          // `remaining` bytes of the body, or of the current chunk, are still to come.
          const n = Math.min(this.remaining, buf.length);
          if (!this.keep(buf.subarray(0, n))) return;
          this.remaining -= n;
          buf = buf.subarray(n);
          if (this.remaining === 0) {
            if (this.state === State.Length) this.complete();
            else this.state = State.ChunkDataEnd;
          }
          break;
        }
        case State.UntilClose:
          if (!this.keep(buf)) return;
          buf = buf.subarray(buf.length);
          break;
        default: {
          // Line-oriented states: chunk size, the CRLF after a chunk's data, trailers.
          const nl = buf.indexOf(10);
          const upto = nl < 0 ? buf.length : nl + 1;
          this.line += buf.toString('latin1', 0, upto);
          buf = buf.subarray(upto);
          if (this.line.length > MAX_HEAD_BYTES) return this.fail(parseError('chunk framing too long'));
          if (nl < 0) return;
          const line = this.line.endsWith('\r\n') ? this.line.slice(0, -2) : this.line.slice(0, -1);
          this.line = '';
          if (!this.chunkLine(line)) return;
        }
      }
    }
    if (buf.length && this.state === State.Done) this.socket.destroy(); // bytes past the response
  }

  /** The socket ended or closed. */
  ended(): void {
    if (this.state === State.UntilClose) {
      this.keepAlive = false;
      this.complete();
    } else if (this.state !== State.Done) this.fail(hangUp());
  }

  fail(err: unknown): void {
    if (this.state === State.Done) return;
    this.state = State.Done;
    this.socket[EXCHANGE] = null;
    this.socket.destroy();
    this.reject(err);
  }

  private parseHead(text: string): boolean {
    const lines = text.split('\r\n');
    const m = /^HTTP\/1\.([01]) (\d{3})(?: |$)/.exec(lines[0]!);
    if (!m) {
      this.fail(parseError('malformed status line'));
      return false;
    }
    const status = Number(m[2]);
    if (status >= 100 && status < 200) {
      // An interim answer (100 Continue, 103 Early Hints): the real one follows.
      if (status === 101) {
        this.fail(parseError('unexpected protocol switch'));
        return false;
      }
      return true;
    }
    const headers: IncomingHttpHeaders = {};
    for (let i = 1; i < lines.length; i++) {
      const l = lines[i]!;
      const colon = l.indexOf(':');
      if (colon <= 0) {
        this.fail(parseError('malformed header line'));
        return false;
      }
      const name = l.slice(0, colon).trim().toLowerCase();
      const value = l.slice(colon + 1).trim();
      const prev = headers[name];
      if (prev === undefined) headers[name] = name === 'set-cookie' ? [value] : value;
      else if (name === 'set-cookie') (prev as string[]).push(value);
      else if (!FIRST_WINS.has(name)) headers[name] = `${prev as string}${name === 'cookie' ? '; ' : ', '}${value}`;
    }
    this.status = status;
    this.headers = headers;
    const connection = headers.connection?.toLowerCase();
    this.keepAlive = m[1] === '1' ? !connection?.includes('close') : Boolean(connection?.includes('keep-alive'));
    const te = headers['transfer-encoding'];
    if (this.head || status === 204 || status === 304) this.complete();
    else if (te !== undefined) {
      if (/(?:^|,)\s*chunked\s*$/i.test(te)) this.state = State.ChunkSize;
      else this.state = State.UntilClose;
    } else if (headers['content-length'] !== undefined) {
      const cl = headers['content-length'];
      if (!/^\d+$/.test(cl)) {
        this.fail(parseError('invalid content-length'));
        return false;
      }
      this.remaining = Number(cl);
      if (this.remaining === 0) this.complete();
      else this.state = State.Length;
    } else this.state = State.UntilClose;
    if (this.state === State.UntilClose) this.keepAlive = false;
    return true;
  }

  private chunkLine(line: string): boolean {
    if (this.state === State.ChunkSize) {
      const m = /^([0-9a-fA-F]{1,8})\s*(?:;.*)?$/.exec(line);
      if (!m) {
        this.fail(parseError('malformed chunk size'));
        return false;
      }
      this.remaining = parseInt(m[1]!, 16);
      this.state = this.remaining === 0 ? State.Trailers : State.ChunkData;
    } else if (this.state === State.ChunkDataEnd) {
      if (line !== '') {
        this.fail(parseError('missing CRLF after a chunk'));
        return false;
      }
      this.state = State.ChunkSize;
    } else if (line === '') this.complete(); // end of the trailers
    return true;
  }

  /** Keeps body bytes up to the bound; past it the copy is finished without its body. */
  private keep(part: Buffer): boolean {
    this.size += part.length;
    if (this.size > this.maxBytes) {
      this.chunks = [];
      this.keepAlive = false; // not drained
      this.finish(null);
      return false;
    }
    if (part.length) this.chunks.push(part);
    return true;
  }

  private complete(): void {
    const c = this.chunks;
    this.finish(c.length === 0 ? Buffer.alloc(0) : c.length === 1 ? c[0]! : Buffer.concat(c));
  }

  private finish(body: Buffer | null): void {
    this.state = State.Done;
    this.socket.client!.release(this.socket, this.keepAlive);
    const captured: CapturedResponse = { status: this.status, headers: this.headers, body };
    if (captured.status >= 500) this.reject({ code: 'EUPSTREAM_STATUS', status: captured.status, captured });
    else this.resolve(captured);
  }
}
