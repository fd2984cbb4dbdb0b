// concbench model node-http: Node.js's own `http` module on its one libuv event loop (epoll).
//
// The technique is Node's: one thread runs JavaScript callbacks; http.createServer parses with
// llhttp and calls the 'request' handler once per request (pipelined answers go out in order,
// Node queues them); waits are setTimeout, a fan-out is Promise.all over http.request calls on a
// keep-alive http.Agent, a file is fs.createReadStream piped into the response (64 KiB reads on
// libuv's threadpool), /bytes/N is 64 KiB res.write()s that wait for 'drain'. --workers N > 1
// runs N such processes under the cluster module (the primary accepts and hands connections
// round-robin to the workers: Node's default on Linux; Node 18-21 have no reusePort).
//
// Needs Node.js 18 or later (Debian bookworm's nodejs 18, or 20): closeAllConnections, the
// requestTimeout/headersTimeout/noDelay server options; requireHostHeader (20) is turned off.
// Run: node server.js --proto http|echo --host 127.0.0.1 --port 0 [--workers N]
//                     [--backend IPV4:PORT] [--docroot DIR]          (build/bin/server-node-http)
'use strict';
const cluster = require('node:cluster');
const fs = require('node:fs');
const http = require('node:http');
const net = require('node:net');
const { pipeline } = require('node:stream');

const NAME = 'node-http';
const PROG = `server-${NAME}`;
const SERVER = `concbench-${NAME}`;
let stop = () => process.exit(0);  // replaced once there is something to close
process.on('SIGTERM', () => stop());
process.on('SIGINT', () => stop());

// ------------------------------------------------------------------------------ command line

const USAGE = `usage: ${PROG} [--proto http|echo] [--host IP] [--port N] [--workers N]
                 [--backend IPV4:PORT] [--docroot DIR]
concbench server, model '${NAME}' (Node.js ${process.version}, http module)
  --proto    protocol: http or echo (default http)
  --host     address to listen on, an IP literal (default 127.0.0.1)
  --port     port to listen on; 0 picks a free one (default 0)
  --workers  event loops: processes under the cluster module (default 1)
  --backend  HOST:PORT of the server fan-out calls go to
  --docroot  directory /file/NAME is served from
`;

function usageError(msg) {
  process.stderr.write(`${PROG}: ${msg} (see --help)\n`);
  process.exit(2);
}

function parseOptions(argv) {
  const v = { proto: 'http', host: '127.0.0.1', port: '0', workers: '1' };
  for (let i = 0; i < argv.length; i++) {
    let flag = argv[i], value;
    if (flag === '--help' || flag === '-h') {
      process.stdout.write(USAGE);
      process.exit(0);
    }
    const eq = flag.indexOf('=');
    if (flag.startsWith('--') && eq > 0) [flag, value] = [flag.slice(0, eq), flag.slice(eq + 1)];
    const key = flag.slice(2);
    if (!flag.startsWith('--') || !['proto', 'host', 'port', 'workers', 'backend', 'docroot'].includes(key))
      usageError(`unknown option '${argv[i]}'`);
    if (value === undefined) {
      if (i + 1 >= argv.length) usageError(`${flag}: a value is required`);
      value = argv[++i];
    }
    v[key] = value;
  }
  const o = { proto: v.proto, host: v.host, port: 0, workers: 1, backend: null, docroot: null };
  if (o.proto !== 'http' && o.proto !== 'echo') usageError(`--proto: '${v.proto}' is not http or echo`);
  if (!net.isIP(o.host)) usageError(`--host: '${v.host}' is not an IPv4 or IPv6 address`);
  if (!/^[0-9]{1,5}$/.test(v.port) || +v.port > 65535)
    usageError(`--port: '${v.port}' is not a port number (0 to 65535)`);
  o.port = +v.port;
  if (!/^[0-9]{1,4}$/.test(v.workers) || +v.workers < 1 || +v.workers > 4096)
    usageError(`--workers: '${v.workers}' is not a whole number from 1 to 4096`);
  o.workers = +v.workers;
  if (v.backend !== undefined) {
    const c = v.backend.lastIndexOf(':');
    const host = v.backend.slice(0, c), port = v.backend.slice(c + 1);
    if (c < 0 || !net.isIPv4(host) || !/^[0-9]{1,5}$/.test(port) || +port < 1 || +port > 65535)
      usageError(`--backend: '${v.backend}' is not IPv4-ADDRESS:PORT`);
    o.backend = { host, port: +port };
  }
  if (v.docroot !== undefined) {
    let dir = false;
    try { dir = fs.statSync(v.docroot).isDirectory(); } catch {}
    if (!dir) usageError(`--docroot: directory '${v.docroot}' does not exist`);
    o.docroot = v.docroot;
  }
  return o;
}

// --------------------------------------------------------------------------- the HTTP contract

const CHUNK = 64 * 1024;  // /bytes/N and files go out in pieces of this size
const PATTERN = Buffer.from('ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_'.repeat(CHUNK / 64));
const HELLO = 'Hello, World!';
const TEXT = 'text/plain', OCTETS = 'application/octet-stream';
const REASONS = { 400: 'Bad Request', 431: 'Request Header Fields Too Large' };
const ERROR_BODIES = { 400: 'Bad Request\n', 404: 'Not Found\n', 405: 'Method Not Allowed\n',
                       431: 'Request Header Fields Too Large\n', 502: 'Bad Gateway\n' };
// Node counts the request target and header names and values against maxHeaderSize (and refuses
// at >=); the C++ models count the method and version too and refuse past 8 KiB: for a GET
// (3 + 3 bytes: "GET", "1.1") the two refuse the same requests.
const MAX_HEADER_SIZE = 8 * 1024 - 6 + 1;

// Node 18 closes a keep-alive connection whose answer had its Connection header removed
// (_storeHeader: _removedConnection sets _last); Node 20 keeps it open. On 18 the answer keeps
// Node's "Connection: keep-alive" line rather than lose keep-alive.
const REMOVED_CONNECTION_KEEPS_ALIVE = Number(process.versions.node.split('.')[0]) >= 20;

// Node 18's llhttp lets a header name with a space through ("Bad Name: x"); Node 20's refuses it
// with a 400 itself. On 18 the names are checked here (an RFC 9110 token each).
const CHECK_HEADER_NAMES = !REMOVED_CONNECTION_KEEPS_ALIVE;
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
function badHeaderName(req) {
  const h = req.rawHeaders;
  for (let i = 0; i < h.length; i += 2) if (!TOKEN.test(h[i])) return true;
  return false;
}

// GET /work/US: the computation of workloads/include/concbench/work.hpp in JavaScript (32-bit
// FNV-1a over the bytes i & 0xff), run in the handler, on the loop's thread, as Node code does,
// in chunks until the process has spent US µs of CPU (process.cpuUsage(): Node has no per-thread
// CPU clock before 23, so V8's own threads count too); the chunks sized by the rounds per µs
// measured at start-up, after V8 has optimised the loop.
const WORK_BASIS = 2166136261, WORK_CHUNK_US = 20;
function workDigestFrom(x, from, n) {
  x |= 0;
  for (let i = from, end = from + n; i < end; i++) x = Math.imul(x ^ (i & 255), 16777619);
  return x >>> 0;
}
const workDigest = (rounds) => workDigestFrom(WORK_BASIS, 0, rounds);
const cpuUs = () => { const u = process.cpuUsage(); return u.user + u.system; };
let workRoundsPerUs = 0;
function calibrateWork() {
  // Three runs of at least 5 ms of CPU, the rounds growing until a run takes that long (so the
  // runs after V8 has optimised the loop are long enough too); the fastest run counts.
  let rounds = 1000, best = 0;
  for (let k = 0; k < 3; k++) {
    for (;;) {
      const t0 = cpuUs();
      workDigest(rounds);
      const took = cpuUs() - t0;
      if (took >= 5000) { best = Math.max(best, rounds / took); break; }
      rounds *= 2;
    }
  }
  workRoundsPerUs = best;
}
function workBody(us) {
  let rounds = 0, x = WORK_BASIS;
  if (us > 0) {
    const end = cpuUs() + us;
    for (let left = us; left > 0; left = end - cpuUs()) {  // the last chunk is what is left
      const n = Math.max(1, Math.floor(Math.min(left, WORK_CHUNK_US) * workRoundsPerUs));
      x = workDigestFrom(x, rounds, n);
      rounds += n;
    }
  }
  const digest = x.toString(16).padStart(8, '0');
  return `work ${us} us: ${String(rounds % 1e10).padStart(10, '0')} rounds, fnv1a ${digest}\n`;
}

let dateSecond = -1, dateValue = '';
function httpDate() {  // the Date value (IMF-fixdate), formatted at most once a second
  const s = Math.floor(Date.now() / 1000);
  if (s !== dateSecond) {
    dateSecond = s;
    dateValue = new Date(s * 1000).toUTCString();
  }
  return dateValue;
}

// The head every answer has, in this order: Server, Date, Content-Type, Content-Length, then
// Connection: close when the request asked to close, keep-alive for an HTTP/1.0 keep-alive.
function writeHead(req, res, status, length, ctype) {
  const h = ['Server', SERVER, 'Date', httpDate(), 'Content-Type', ctype, 'Content-Length', length];
  if (!res.shouldKeepAlive) h.push('Connection', 'close');  // Node closes after it, too
  else if (req.httpVersionMinor === 0) h.push('Connection', 'keep-alive');
  else if (REMOVED_CONNECTION_KEEPS_ALIVE) res.removeHeader('Connection');  // else Node adds "Connection: keep-alive"
  res.writeHead(status, h);
}

function answer(req, res, status, body, ctype = TEXT) {
  writeHead(req, res, status, body.length, ctype);  // the bodies are ASCII: length = bytes
  res.end(body);  // a HEAD's body is dropped by Node
}

const fail = (req, res, status) => answer(req, res, status, ERROR_BODIES[status]);

// A malformed request (llhttp's error): the 400 or 431 answer and close, after the answers to
// the requests before it (an earlier answer may still be under way: wait for it). Status 0: the
// peer left (FIN) in the middle of a request: close after those answers, adding none.
function answerClientError(socket, status) {
  const m = socket._httpMessage;
  if (socket.destroyed) return;
  if (m) return void m.once('finish', () => answerClientError(socket, status));
  const body = ERROR_BODIES[status];
  if (status) {
    socket.write(`HTTP/1.1 ${status} ${REASONS[status]}\r\nServer: ${SERVER}\r\nDate: ${httpDate()}\r\n` +
                 `Content-Type: ${TEXT}\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n${body}`);
  }
  socket.destroySoon();
}

function number(s, limit) {  // plain digits, at most 9 of them, at most limit; else -1
  return /^[0-9]{1,9}$/.test(s) && +s <= limit ? +s : -1;
}

function queryId(query) {
  for (const kv of query.split('&')) {
    if (kv.startsWith('id=')) {
      const v = number(kv.slice(3), 1e9);
      if (v >= 0) return v;
    }
  }
  return -1;
}

const delayBody = (ms, id) => (id >= 0 ? `delayed ${ms} ms id ${id}\n` : `delayed ${ms} ms\n`);
const FILE_NAME = /^[A-Za-z0-9_-][A-Za-z0-9._-]{0,254}$/;

function makeHandler(o, agent) {
  // /bytes/N: the pattern, a 64 KiB view at a time (never copied), waiting for 'drain'.
  function sendBytes(req, res, n) {
    writeHead(req, res, 200, n, OCTETS);
    if (req.method === 'HEAD') return void res.end();
    let left = n;
    const pump = () => {
      while (left > CHUNK) {
        left -= CHUNK;
        if (!res.write(PATTERN)) return void res.once('drain', pump);
      }
      res.end(PATTERN.subarray(0, left));
    };
    pump();
  }

  // /delay/MS: setTimeout, re-armed if it fires early (libuv's millisecond clock is the loop's
  // cached time); a client that leaves (its request is then destroyed) cancels it.
  function delay(req, res, ms, id) {
    const deadline = performance.now() + ms;
    const fire = () => {
      const left = deadline - performance.now();
      if (left > 0) return void (timer = setTimeout(fire, Math.ceil(left)));
      req.off('close', cancel);
      answer(req, res, 200, delayBody(ms, id));
    };
    const cancel = () => clearTimeout(timer);
    let timer = setTimeout(fire, ms);
    req.once('close', cancel);
  }

  // One backend call: its body, or null (an error, a status other than 200, a cut answer).
  function call(ms, id) {
    return new Promise((resolve) => {
      const r = http.get({ host: o.backend.host, port: o.backend.port, agent,
                           path: `/delay/${ms}?id=${id}`, headers: { Host: 'backend' } }, (b) => {
        let body = '';
        b.setEncoding('latin1');
        b.on('data', (c) => { body += c; });
        b.on('end', () => resolve(b.statusCode === 200 ? body : null));
        b.on('close', () => resolve(null));  // after 'end' this changes nothing
      });
      r.on('error', () => resolve(null));
    });
  }

  // /fanout/K/MS: K concurrent calls of /delay/MS?id=i, the bodies in id order, each checked.
  async function fanout(req, res, k, ms) {
    const bodies = o.backend ? await Promise.all(Array.from({ length: k }, (_, i) => call(ms, i))) : [null];
    if (!bodies.every((b, i) => b === delayBody(ms, i))) return fail(req, res, 502);
    answer(req, res, 200, bodies.join(''));
  }

  // /file/NAME: a regular file under the docroot, piped from a read stream; else 404.
  function sendFile(req, res, name) {
    if (o.docroot === null) return fail(req, res, 404);
    const path = `${o.docroot}/${name}`;
    fs.open(path, 'r', (err, fd) => {
      if (err) return fail(req, res, 404);
      fs.fstat(fd, (err, st) => {
        if (err || !st.isFile()) {
          fs.close(fd, () => {});
          return fail(req, res, 404);
        }
        writeHead(req, res, 200, st.size, OCTETS);
        if (req.method === 'HEAD' || st.size === 0) {
          fs.close(fd, () => {});
          return void res.end();
        }
        const file = fs.createReadStream(path, { fd, start: 0, end: st.size - 1, highWaterMark: CHUNK });
        pipeline(file, res, () => {});
        // A client gone while this answer waits behind others: Node never closes this response,
        // but it destroys the request; the stream (and its fd) goes with it.
        req.once('close', () => { if (!res.writableFinished) file.destroy(); });
      });
    });
  }

  return function onRequest(req, res) {
    if (CHECK_HEADER_NAMES && badHeaderName(req)) {
      res.shouldKeepAlive = false;  // malformed: 400 and close, as llhttp's own errors
      return fail(req, res, 400);
    }
    const url = req.url, q = url.indexOf('?');
    const path = q < 0 ? url : url.slice(0, q);
    if (path === '/' || path.startsWith('/bytes/') || path.startsWith('/delay/') ||
        path.startsWith('/fanout/') || path.startsWith('/file/') || path.startsWith('/work/')) {
      if (req.method !== 'GET' && req.method !== 'HEAD') return fail(req, res, 405);
    } else {
      return fail(req, res, 404);
    }
    if (path === '/') return answer(req, res, 200, HELLO);
    if (path.startsWith('/bytes/')) {
      const n = number(path.slice(7), 64 * 1024 * 1024);
      return n < 0 ? fail(req, res, 400) : sendBytes(req, res, n);
    }
    if (path.startsWith('/delay/')) {
      const ms = number(path.slice(7), 60000);
      return ms < 0 ? fail(req, res, 400) : delay(req, res, ms, queryId(q < 0 ? '' : url.slice(q + 1)));
    }
    if (path.startsWith('/fanout/')) {
      const [k, ms] = path.slice(8).split(/\/(.*)/s);
      const calls = number(k, 100), wait = number(ms ?? '', 60000);
      return calls < 1 || wait < 0 ? fail(req, res, 400) : fanout(req, res, calls, wait);
    }
    if (path.startsWith('/work/')) {
      const us = number(path.slice(6), 1000000);
      return us < 0 ? fail(req, res, 400) : answer(req, res, 200, workBody(us));
    }
    const name = path.slice(6);
    return FILE_NAME.test(name) ? sendFile(req, res, name) : fail(req, res, 404);
  };
}

// ------------------------------------------------------------------------------------ servers

function httpServer(o) {
  const agent = new http.Agent({ keepAlive: true, maxSockets: Infinity });
  const server = http.createServer({
    noDelay: true,
    maxHeaderSize: MAX_HEADER_SIZE,
    requireHostHeader: false,  // Node 20's default answers 400 to an HTTP/1.1 request without Host
    requestTimeout: 0,  // no time limits, as in every model: idle and slow clients stay
    headersTimeout: 0,
  }, makeHandler(o, agent));
  server.keepAliveTimeout = 0;  // idle keep-alive connections stay open (and no Keep-Alive header)
  server.httpAllowHalfOpen = true;  // after a client's FIN, answer what it asked, then close
  server.on('clientError', (err, socket) => {
    if (socket.cbFailed) return;  // llhttp stays in its error state: one answer is enough
    socket.cbFailed = true;
    if (!err.code?.startsWith('HPE_') || !socket.writable) socket.destroy();  // a reset, say
    else if (err.code === 'HPE_INVALID_EOF_STATE') answerClientError(socket, 0);
    else answerClientError(socket, err.code === 'HPE_HEADER_OVERFLOW' ? 431 : 400);
  });
  return { server, close: () => { server.closeAllConnections(); agent.destroy(); } };
}

function echoServer() {
  const conns = new Set();
  const server = net.createServer({ allowHalfOpen: true, noDelay: true }, (s) => {
    conns.add(s);
    s.on('close', () => conns.delete(s));
    s.on('error', () => {});  // a reset: the socket is destroyed, 'close' follows
    s.pipe(s);  // every byte back, reading paused while the socket's buffer is full; FIN after
  });
  return { server, close: () => { for (const s of conns) s.destroy(); } };
}

function serve(o, announce) {
  if (o.proto === 'http') calibrateWork();  // before it listens
  const { server, close } = o.proto === 'http' ? httpServer(o) : echoServer();
  let listening = false, lastWarning = 0;
  server.on('error', (err) => {
    if (!listening) {
      process.stderr.write(`${PROG}: bind ${o.host}:${o.port}: ${err.message}\n`);
      process.exit(1);
    }
    // accept failed (EMFILE: libuv has accepted and closed the pending connections); go on
    const now = Date.now();
    if (now - lastWarning > 1000) {
      lastWarning = now;
      process.stderr.write(`${PROG}: ${err.message}: closing new connections until fds free up\n`);
    }
  });
  // 4096: SOMAXCONN, as the C++ models (Node's default backlog is 511)
  server.listen({ host: o.host, port: o.port, backlog: 4096 }, () => {
    listening = true;
    if (announce) announceListening(o.host, server.address().port);
  });
  stop = () => {
    stop = () => {};
    server.close(() => process.exit(0));
    close();
    setTimeout(() => process.exit(0), 1000).unref();  // whatever is left after a second
  };
}

function announceListening(host, port) {
  process.stdout.write(`listening ${host.includes(':') ? `[${host}]` : host}:${port}\n`);
}

// --workers N > 1: the cluster primary starts N workers, prints the line once all of them
// listen, replaces one that dies, and at SIGTERM stops them all and exits 0 once they have.
function primary(o) {
  const workers = new Set();
  let listening = 0, announced = false, stopping = false;
  const fork = () => workers.add(cluster.fork());
  cluster.on('listening', (w, address) => {
    if (!announced && ++listening === o.workers) {
      announced = true;
      announceListening(o.host, address.port);
    }
  });
  cluster.on('exit', (w, code, signal) => {
    workers.delete(w);
    if (!stopping && !announced) {  // a worker could not start (its message is on stderr)
      process.exitCode = 1;
      stop();
    } else if (!stopping) {
      process.stderr.write(`${PROG}: worker ${w.process.pid} died (${signal || code}); starting another\n`);
      fork();
    }
    if (stopping && workers.size === 0) process.exit();
  });
  stop = () => {
    if (stopping) return;
    stopping = true;
    if (workers.size === 0) process.exit();
    for (const w of workers) w.process.kill('SIGTERM');
    setTimeout(() => { for (const w of workers) w.process.kill('SIGKILL'); }, 4000).unref();
  };
  for (let i = 0; i < o.workers; i++) fork();
}

const options = parseOptions(process.argv.slice(2));
if (cluster.isWorker) serve(options, false);
else if (options.workers > 1) primary(options);
else serve(options, true);
