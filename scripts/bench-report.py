#!/usr/bin/env python3
"""Performance report: the release functions against the Node.js peers, one run, one machine.

  scripts/build-release.sh                       # the zips this measures
  scripts/bench-report.py [--runs 20] [--warm 1000] [--soak 10000] [--perf] [--no-peers]
  scripts/build-release.sh products-get && scripts/bench-report.py --stub-dynamodb
                                                 # products-get and the peers against a DynamoDB
                                                 # that answers at once (StubDynamoDb)

Everything runs against a Lambda Runtime API emulator in this script (loopback, HTTP/1.1
keep-alive, as the managed runtime's) and the local stack (`scripts/stack.sh up`, DynamoDB in
LocalStack with keep-alive for every client, see localstack/keepalive.py):

- cold start, every function and both peers, --runs starts each, fed its events/ sample:
  init (exec -> first GET /next), first response (exec -> first response), peak RSS (VmHWM);
- warm, products-get and both peers: --warm invocations in one process, round trip per
  invocation (event handed out -> response received), CPU seconds per 1,000 invocations
  (utime + stime of the process), RSS after the run; then products-get alone for --soak
  invocations with its RSS sampled every 1,000;
- TIME_WAIT sockets towards LocalStack after the warm runs (connection reuse check);
- with --perf, a `perf record` (cpu-clock) of products-get over --soak warm invocations, built
  with symbols (`--profile profiling`), summarised by crate.

products-get and the peers serve GET /api/v1/products/{id} for the same item, read from
DynamoDB on every invocation: products-get runs without CACHE_URL here (the peers have no
cache and no per-client rate limits). Writes tables and PNG charts to docs/bench/ and the tables
into docs/benchmarks.md between the report markers.
"""

import argparse
import http.server
import json
import os
import pathlib
import platform
import queue
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
import zipfile

from zxlocal import CACHE, ROOT, in_venv, stack_aws, stack_env

OUT = ROOT / "docs" / "bench"
PEERS_SRC = ROOT.parent / "shared" / "peers"
TICK = os.sysconf("SC_CLK_TCK")


# ----------------------------------------------------------------- Lambda Runtime API emulator
class Runtime:
    """One function process's Runtime API: hands out events one at a time, times responses."""

    def __init__(self):
        self.events = queue.Queue()
        self.results = queue.Queue()
        self.first_next = None
        self.sent_at = None
        runtime = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body go out as separate writes: without this, Nagle's algorithm and
            # the client's delayed ACK add ~40 ms to every answer.
            disable_nagle_algorithm = True
            # Headers and body go out in two writes: with Nagle's algorithm the body would wait
            # for the client's delayed ACK (~40 ms on Linux) and every round trip with it.
            disable_nagle_algorithm = True

            def log_message(self, *args):
                pass

            def do_GET(self):
                if not self.path.endswith("/invocation/next"):
                    self.send_error(404)
                    return
                if runtime.first_next is None:
                    runtime.first_next = time.perf_counter()
                event = runtime.events.get()
                if event is None:  # shutting down: let the process block on a dead socket
                    self.close_connection = True
                    return
                self.send_response(200)
                self.send_header("Lambda-Runtime-Aws-Request-Id", str(uuid.uuid4()))
                self.send_header("Lambda-Runtime-Deadline-Ms", str(int(time.time() * 1000) + 30_000))
                self.send_header("Lambda-Runtime-Invoked-Function-Arn",
                                 "arn:aws:lambda:us-east-1:000000000000:function:bench")
                self.send_header("Lambda-Runtime-Trace-Id", "Root=1-00000000-000000000000000000000000")
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(event)))
                self.end_headers()
                runtime.sent_at = time.perf_counter()
                self.wfile.write(event)
                self.wfile.flush()

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                now = time.perf_counter()
                self.send_response(202)
                self.send_header("Content-Length", "0")
                self.end_headers()
                kind = "error" if self.path.endswith("/error") else "response"
                runtime.results.put((kind, now, body))

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request, client_address):
                # A killed function drops its connection: expected, not worth a traceback.
                if not isinstance(sys.exc_info()[1], (ConnectionError, BrokenPipeError)):
                    super().handle_error(request, client_address)

        self.server = Server(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.address = f"127.0.0.1:{self.server.server_address[1]}"

    def invoke(self, event, timeout=30, allow_error=False):
        self.events.put(event)
        kind, at, body = self.results.get(timeout=timeout)
        if kind != "response" and not allow_error:
            raise RuntimeError(f"function error: {body[:300]!r}")
        return at, body if kind == "response" else b'{"error": true}'


    def close(self):
        self.events.put(None)
        self.server.shutdown()
        self.server.server_close()


def proc_status(pid, field):
    """A /proc/<pid>/status field in KiB (VmRSS, VmHWM)."""
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def cpu_seconds(pid):
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime


class Process:
    def __init__(self, command, env, cwd=None):
        self.runtime = Runtime()
        env = dict(env, AWS_LAMBDA_RUNTIME_API=self.runtime.address)
        self.stderr = tempfile.TemporaryFile()
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(command, env=env, cwd=cwd, stdout=subprocess.DEVNULL,
                                     stderr=self.stderr)

    def stderr_tail(self):
        self.stderr.seek(0)
        return self.stderr.read()[-800:]

    def stop(self):
        self.proc.kill()
        self.proc.wait()
        self.runtime.close()


def cold_start(command, event, env, cwd=None):
    p = Process(command, env, cwd)
    try:
        at, body = p.runtime.invoke(event, allow_error=True)
        peak = proc_status(p.proc.pid, "VmHWM")
        if p.runtime.first_next is None:
            raise RuntimeError("answered without polling /next")
        return {"init": (p.runtime.first_next - p.started) * 1000,
                "first": (at - p.started) * 1000, "peak_kib": peak, "body": body}
    except Exception as error:
        p.proc.kill()
        raise RuntimeError(f"{command}: {error}; stderr: {p.stderr_tail()!r}")
    finally:
        p.stop()


def warm(command, event, env, count, cwd=None, sample_every=0, expect=200):
    p = Process(command, env, cwd)
    try:
        p.runtime.invoke(event)  # the cold start
        for _ in range(20):  # settle lazily built state (connections, JIT) before measuring
            p.runtime.invoke(event)
        pid = p.proc.pid
        cpu0 = cpu_seconds(pid)
        rtts, samples = [], []
        for i in range(count):
            at, body = p.runtime.invoke(event)
            rtts.append((at - p.runtime.sent_at) * 1000)
            if i == 0 and json.loads(body).get("statusCode") != expect:
                raise RuntimeError(f"{command}: answered {body[:300]!r}")
            if sample_every and (i + 1) % sample_every == 0:
                samples.append((i + 1, proc_status(pid, "VmRSS")))
        cpu = cpu_seconds(pid) - cpu0
        rtts.sort()
        return {"p50": rtts[len(rtts) // 2], "p99": rtts[int(len(rtts) * 0.99) - 1],
                "cpu_per_1000": cpu * 1000 / count, "rss_after_kib": proc_status(pid, "VmRSS"),
                "samples": samples}
    finally:
        p.stop()


# ----------------------------------------------------------------- a DynamoDB that answers at once
class StubDynamoDb:
    """An endpoint that answers DynamoDB calls from memory: the first call of each kind (its
    X-Amz-Target and body) is forwarded to LocalStack and its answer kept; every later identical
    call gets that answer at once. With it, the warm and cold figures of products-get and the
    peers show what their own code costs, not what LocalStack costs."""

    def __init__(self, upstream):
        import http.server
        import socketserver

        answers, lock = {}, threading.Lock()
        self.forwarded = 0
        stub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body go out as separate writes: without this, Nagle's algorithm and
            # the client's delayed ACK add ~40 ms to every answer.
            disable_nagle_algorithm = True

            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                key = (self.headers.get("X-Amz-Target", ""), body)
                with lock:
                    answer = answers.get(key)
                if answer is None:
                    request = urllib.request.Request(upstream, data=body, method="POST", headers={
                        k: v for k, v in self.headers.items()
                        if k.lower() not in ("host", "content-length", "connection")})
                    with urllib.request.urlopen(request, timeout=10) as response:
                        answer = (response.status, response.read(),
                                  [(k, v) for k, v in response.headers.items()
                                   if k.lower() in ("content-type", "x-amz-crc32", "x-amzn-requestid")])
                    with lock:
                        answers[key] = answer
                        stub.forwarded += 1
                status, data, headers = answer
                self.send_response(status)
                for k, v in headers:
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
            daemon_threads = True

        self.server = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()


def stub_comparison(args, env, no_cache, peer_table, get_event):
    """products-get and the peers against StubDynamoDb: cold first response, warm round trip
    and CPU, written to docs/bench/stub-results.json and benchmarks.md's stub section."""
    stub = StubDynamoDb(env["AWS_ENDPOINT_URL"])
    try:
        rust_get = str(bootstrap("products-get")[0])
        peers = build_peers()
        peer_env = dict(env, PRODUCTS_TABLE=peer_table, AWS_SDK_LOAD_CONFIG="0")
        contenders = {"products-get": ([rust_get], no_cache, None),
                      "plain Node.js": (["node", "bootstrap.js", "./dist/plain.js"], peer_env, peers),
                      "NestJS": (["node", "bootstrap.js", "./dist/nest.js"], peer_env, peers)}
        rows = {}
        for name, (command, cenv, cwd) in contenders.items():
            cenv = dict(cenv, AWS_ENDPOINT_URL=stub.url)
            cold = [cold_start(command, get_event, cenv, cwd) for _ in range(args.runs)]
            for r in cold:
                if json.loads(r["body"]).get("statusCode") != 200:
                    raise RuntimeError(f"{name} answered {r['body'][:200]!r}")
            w = warm(command, get_event, cenv, args.warm, cwd)
            rows[name] = {"first_p50": median([r["first"] for r in cold]),
                          "peak_kib_p50": median([r["peak_kib"] for r in cold]),
                          "warm_p50": w["p50"], "warm_p99": w["p99"],
                          "cpu_per_1000": w["cpu_per_1000"], "rss_after_kib": w["rss_after_kib"]}
            print(f"[bench] stub {name:14} first p50 {rows[name]['first_p50']:7.2f} ms  warm p50 "
                  f"{w['p50']:.3f} ms  cpu/1000 {w['cpu_per_1000']:.3f} s", file=sys.stderr)
    finally:
        stub.stop()
    result = {"machine": machine(), "runs": args.runs, "warm_n": args.warm,
              "forwarded_to_localstack": stub.forwarded, "rows": rows}
    (OUT / "stub-results.json").write_text(json.dumps(result, indent=2) + "\n")
    rust = rows["products-get"]
    lines = ["<!-- stub-report:start -->",
             f"Measured {time.strftime('%Y-%m-%d')} by `scripts/bench-report.py --stub-dynamodb "
             f"--runs {args.runs} --warm {args.warm}` on: {result['machine']}. DynamoDB was an "
             f"in-memory stub that forwarded only the first call of each kind to LocalStack "
             f"({stub.forwarded} calls) and answered every later one at once.", "",
             "| | cold: first response p50 | peak RSS p50 | warm round trip p50 | p99 | CPU per 1,000 warm | vs products-get (first / warm p50 / CPU) |",
             "|---|---:|---:|---:|---:|---:|---|"]
    for name, r in rows.items():
        ratio = (f"{r['first_p50'] / rust['first_p50']:.1f}× / {r['warm_p50'] / rust['warm_p50']:.1f}× / "
                 f"{r['cpu_per_1000'] / rust['cpu_per_1000']:.1f}×") if name != "products-get" else "1×"
        lines.append(f"| {name} | {r['first_p50']:.2f} ms | {r['peak_kib_p50'] / 1024:.1f} MiB | "
                     f"{r['warm_p50']:.3f} ms | {r['warm_p99']:.3f} ms | {r['cpu_per_1000']:.3f} s | {ratio} |")
    lines.append("<!-- stub-report:end -->")
    bench = ROOT / "docs" / "benchmarks.md"
    text = bench.read_text()
    block = "\n".join(lines)
    if "<!-- stub-report:start -->" in text:
        head, rest = text.split("<!-- stub-report:start -->", 1)
        text = head + block + rest.split("<!-- stub-report:end -->", 1)[1]
    else:
        text = (text.rstrip() + "\n\n## Our code without LocalStack: a stub DynamoDB (issue 18)\n\n"
                + block + "\n")
    bench.write_text(text)


# ----------------------------------------------------------------- local stack and data
def dynamodb(env, target, body):
    request = urllib.request.Request(
        env["AWS_ENDPOINT_URL"], data=json.dumps(body).encode(), method="POST",
        headers={"Content-Type": "application/x-amz-json-1.0",
                 "X-Amz-Target": f"DynamoDB_20120810.{target}",
                 "Authorization": "AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/dynamodb/"
                                  "aws4_request, SignedHeaders=host, Signature=0"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read() or b"{}")


def uuid7():
    ms = int(time.time() * 1000)
    raw = bytearray(ms.to_bytes(6, "big") + os.urandom(10))
    raw[6] = 0x70 | (raw[6] & 0x0F)
    raw[8] = 0x80 | (raw[8] & 0x3F)
    return str(uuid.UUID(bytes=bytes(raw)))


def product_item(product_id):
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    name, description = "Benchmark Tea Set", "Porcelain tea set, four cups, measured by the report."
    return {
        "productId": {"S": product_id}, "name": {"S": name}, "nameLower": {"S": name.lower()},
        "description": {"S": description}, "descriptionLower": {"S": description.lower()},
        "price": {"N": "12900"}, "categoryId": {"S": "tea"},
        "images": {"L": [{"S": "https://img.zhixuan.example/tea-set.jpg"}]},
        "available": {"N": "42"}, "reserved": {"N": "0"}, "createdAt": {"S": now},
        "updatedAt": {"S": now}, "version": {"N": "1"},
    }


def build_peers():
    dest = CACHE / "peers"
    lock = (PEERS_SRC / "package-lock.json").read_bytes()
    marker = dest / ".built"
    if marker.exists() and (dest / "package-lock.json").read_bytes() == lock:
        return dest
    print("[bench] installing and compiling the peers (npm ci, tsc)", file=sys.stderr)
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(PEERS_SRC, dest, ignore=shutil.ignore_patterns("node_modules", "dist"))
    subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=dest, check=True,
                   stdout=subprocess.DEVNULL)
    subprocess.run(["npx", "tsc", "-p", "."], cwd=dest, check=True)
    marker.touch()
    return dest


def bootstrap(function):
    """The release binary of `function`, unpacked from its zip."""
    archive = ROOT / "target" / "lambda" / function / "bootstrap.zip"
    if not archive.exists():
        sys.exit(f"{archive} missing: run scripts/build-release.sh first")
    dest = ROOT / "target" / "bench" / function
    dest.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(archive) as z:
        z.extract("bootstrap", dest)
    binary = dest / "bootstrap"
    binary.chmod(0o755)
    return binary, archive.stat().st_size


def event_for(function):
    events = ROOT / "events"
    for name in (f"{function}.json", f"{function}.invalid.json"):
        if (events / name).exists():
            return name, (events / name).read_bytes()
    sys.exit(f"no sample event for {function}")


def with_product(event_bytes, product_id):
    event = json.loads(event_bytes)
    old = event["pathParameters"]["id"]
    event["pathParameters"]["id"] = product_id
    event["rawPath"] = event["rawPath"].replace(old, product_id)
    event["requestContext"]["http"]["path"] = event["requestContext"]["http"]["path"].replace(old, product_id)
    return json.dumps(event).encode()


def time_wait_to_localstack():
    out = subprocess.run(["ss", "-tanH", "state", "time-wait", "( sport = :4566 or dport = :4566 )"],
                         capture_output=True, text=True).stdout
    return len([l for l in out.splitlines() if l.strip()])


def status_of(body):
    """An HTTP function's status code; what an SQS or scheduled function answered otherwise."""
    try:
        value = json.loads(body)
    except ValueError:
        return "?"
    if isinstance(value, dict) and "statusCode" in value:
        return value["statusCode"]
    if isinstance(value, dict) and "batchItemFailures" in value:
        return f"{len(value['batchItemFailures'])} failed"
    if isinstance(value, dict) and value.get("error"):
        return "error"
    return "ok"


def median(xs):
    return statistics.median(xs)


def p90(xs):
    return statistics.quantiles(xs, n=10)[8] if len(xs) > 1 else xs[0]


# ----------------------------------------------------------------- perf
def profile(env, event, count):
    print("[bench] building products-get with symbols (--profile profiling)", file=sys.stderr)
    subprocess.run(["cargo", "build", "--locked", "-q", "--profile", "profiling", "-p", "products-get"],
                   cwd=ROOT, check=True)
    binary = ROOT / "target" / "profiling" / "products-get"
    data = ROOT / "target" / "bench" / "perf.data"
    p = Process([str(binary)], env)
    try:
        p.runtime.invoke(event)
        for _ in range(20):
            p.runtime.invoke(event)
        data.unlink(missing_ok=True)
        rec = subprocess.Popen(["perf", "record", "-q", "-e", "cpu-clock", "-F", "4000", "-o", str(data),
                                "-p", str(p.proc.pid)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10  # perf attaches asynchronously: wait for its file
        while not (data.exists() and data.stat().st_size > 0) and time.monotonic() < deadline:
            time.sleep(0.05)
        for _ in range(count):
            p.runtime.invoke(event)
        rec.send_signal(2)
        rec.wait(timeout=60)
    finally:
        p.stop()
    report = subprocess.run(["perf", "report", "-i", str(data), "--stdio", "--no-children",
                             "--sort", "dso,sym", "--percent-limit", "0.01"],
                            capture_output=True, text=True).stdout
    rows = []
    for line in report.splitlines():
        m = re.match(r"\s*([\d.]+)%\s+(\S+)\s+\[[.k]\]\s+(.*)", line)
        if m:
            rows.append((float(m.group(1)), m.group(2), m.group(3).strip()))
    groups = {}
    for pct, dso, sym in rows:
        groups[classify(dso, sym)] = groups.get(classify(dso, sym), 0.0) + pct
    (OUT / "perf-products-get.txt").write_text(
        "perf record -e cpu-clock, products-get warm invocations, self time by symbol\n\n"
        + "\n".join(f"{pct:6.2f}%  {dso:24} {sym}" for pct, dso, sym in rows[:60]) + "\n")
    return sorted(groups.items(), key=lambda kv: -kv[1]), rows[:15]


def classify(dso, sym):
    if dso.startswith("[kernel") or sym.startswith("[k]"):
        return "kernel (syscalls, TCP loopback, scheduling)"
    if "libc" in dso or "ld-linux" in dso:
        return "libc (memcpy, malloc, syscall wrappers)"
    s = sym.lstrip("<").replace("_<", "")
    for prefix, group in [
        ("zx_", "ours (zx_* crates)"), ("products_get", "ours (zx_* crates)"),
        ("aws_smithy", "AWS SDK (smithy runtime, serde)"), ("aws_sdk", "AWS SDK (smithy runtime, serde)"),
        ("aws_sigv4", "AWS SDK: SigV4 signing"), ("aws_runtime", "AWS SDK (smithy runtime, serde)"),
        ("aws_lc", "crypto (aws-lc: SigV4 HMAC, SHA-256)"), ("aws_config", "AWS SDK (smithy runtime, serde)"),
        ("hyper", "HTTP (hyper, h2, http)"), ("http", "HTTP (hyper, h2, http)"), ("h2", "HTTP (hyper, h2, http)"),
        ("tokio", "tokio runtime"), ("mio", "tokio runtime"),
        ("lambda_runtime", "Lambda runtime (lambda_runtime, lambda_http)"),
        ("lambda_http", "Lambda runtime (lambda_runtime, lambda_http)"),
        ("aws_lambda_events", "Lambda runtime (lambda_runtime, lambda_http)"),
        ("serde", "serde / serde_json"), ("tracing", "tracing (JSON log line)"),
        ("alloc", "allocation and std"), ("core", "allocation and std"), ("std", "allocation and std"),
    ]:
        if s.startswith(prefix):
            return group
    if "aws_lc" in s or "sha256" in s.lower() or "hmac" in s.lower():
        return "crypto (aws-lc: SigV4 HMAC, SHA-256)"
    if s.startswith("0x"):
        return "unresolved"
    return "other crates"


# ----------------------------------------------------------------- charts and report
def charts(cold, peer_cold, warm_rows, soak):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = ["products-get", "plain Node.js", "NestJS"]
    firsts = [median([r["first"] for r in peer_cold[n]]) for n in names]
    peaks = [median([r["peak_kib"] for r in peer_cold[n]]) / 1024 for n in names]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    axes[0].bar(names, firsts, color=["#c0392b", "#7f8c8d", "#2c3e50"])
    axes[0].set_yscale("log")
    axes[0].set_ylabel("ms (log scale)")
    axes[0].set_title("Cold start: exec → first response (median)")
    for i, v in enumerate(firsts):
        axes[0].text(i, v, f"{v:.1f}", ha="center", va="bottom")
    axes[1].bar(names, peaks, color=["#c0392b", "#7f8c8d", "#2c3e50"])
    axes[1].set_ylabel("MiB")
    axes[1].set_title("Peak RSS at first response (median)")
    for i, v in enumerate(peaks):
        axes[1].text(i, v, f"{v:.1f}", ha="center", va="bottom")
    fig.tight_layout()
    fig.savefig(OUT / "cold-start-vs-peers.png", dpi=110)
    plt.close(fig)

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    p50 = [warm_rows[n]["p50"] for n in names]
    p99 = [warm_rows[n]["p99"] for n in names]
    x = range(len(names))
    axes[0].bar([i - 0.2 for i in x], p50, width=0.4, label="p50")
    axes[0].bar([i + 0.2 for i in x], p99, width=0.4, label="p99")
    axes[0].set_xticks(list(x), names)
    axes[0].set_ylabel("ms")
    axes[0].set_title("Warm round trip per invocation")
    axes[0].legend()
    cpu = [warm_rows[n]["cpu_per_1000"] for n in names]
    axes[1].bar(names, cpu, color=["#c0392b", "#7f8c8d", "#2c3e50"])
    axes[1].set_ylabel("CPU seconds")
    axes[1].set_title("CPU per 1,000 warm invocations")
    for i, v in enumerate(cpu):
        axes[1].text(i, v, f"{v:.2f}", ha="center", va="bottom")
    fig.tight_layout()
    fig.savefig(OUT / "warm-vs-peers.png", dpi=110)
    plt.close(fig)

    fns = sorted(cold)
    fig, ax = plt.subplots(figsize=(10, 5))
    ax.barh(fns, [median([r["init"] for r in cold[f]]) for f in fns], color="#c0392b")
    ax.axvline(10, color="black", linestyle="--", linewidth=1, label="budget 10 ms")
    ax.set_xlabel("init, ms (median)")
    ax.set_title("Init (exec → first GET /next) of every release function")
    ax.legend()
    fig.tight_layout()
    fig.savefig(OUT / "init-per-function.png", dpi=110)
    plt.close(fig)

    if soak:
        fig, ax = plt.subplots(figsize=(8, 3.5))
        ax.plot([n for n, _ in soak], [kib / 1024 for _, kib in soak], marker="o", color="#c0392b")
        ax.set_xlabel("warm invocations")
        ax.set_ylabel("RSS, MiB")
        ax.set_title("products-get RSS over warm invocations")
        fig.tight_layout()
        fig.savefig(OUT / "rss-soak.png", dpi=110)
        plt.close(fig)


def machine():
    cpu = "unknown CPU"
    for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem = proc_meminfo()
    node = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
    rustc = subprocess.run(["rustc", "--version"], capture_output=True, text=True).stdout.strip()
    localstack = re.search(r"^LS_VERSION=(\S+)", (ROOT / "scripts" / "stack.sh").read_text(), re.M)
    return (f"{cpu}, {os.cpu_count()} cores, {mem} GiB RAM, Linux {platform.release()}; {rustc}; "
            f"Node.js {node}; LocalStack {localstack.group(1) if localstack else '?'} "
            f"(host mode, keep-alive launcher)")


def proc_meminfo():
    for line in pathlib.Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal"):
            return round(int(line.split()[1]) / 1024 / 1024)
    return "?"


def main():
    in_venv("bench")
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--warm", type=int, default=1000)
    parser.add_argument("--soak", type=int, default=10000)
    parser.add_argument("--perf", action="store_true")
    parser.add_argument("--no-peers", action="store_true")
    parser.add_argument("--stub-dynamodb", action="store_true",
                        help="only products-get and the peers, against an in-memory DynamoDB")
    parser.add_argument("functions", nargs="*")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    functions = args.functions or sorted(p.name for p in (ROOT / "functions").iterdir())

    env = stack_env()
    keys = subprocess.run(["cargo", "run", "-q", "--locked", "-p", "zx-app", "--bin", "zx-admin", "--",
                           "jwt-keygen"], cwd=ROOT, check=True, capture_output=True, text=True).stdout.split()
    env.update(JWT_PRIVATE_KEY=keys[0], JWT_PUBLIC_KEYS=keys[1], AWS_LAMBDA_FUNCTION_NAME="bench",
               AWS_LAMBDA_FUNCTION_MEMORY_SIZE="256", AWS_LAMBDA_FUNCTION_VERSION="$LATEST",
               AWS_LAMBDA_LOG_STREAM_NAME="bench", AWS_LAMBDA_LOG_GROUP_NAME="/aws/lambda/bench",
               RUST_LOG="warn", STORE="dynamodb")
    env.pop("DATABASE_URL", None)  # a DynamoDB deployment: the release functions have no Postgres

    run = time.strftime("%Y%m%d%H%M%S")
    # The run's own tables, queues and topic (deleted at the end): the sample events write
    # (a registration, reservations, messages), and the shop's stack stays as it was.
    prefix = f"zxbench{run}-"
    stack_aws(env, prefix)
    tables = {"USERS_TABLE": "zhixuan-users", "PRODUCTS_TABLE": "zhixuan-products",
              "ORDERS_TABLE": "zhixuan-orders"}
    env.update({var: prefix + name for var, name in tables.items()})
    queues = f"{env['AWS_ENDPOINT_URL']}/queue/{env['AWS_REGION']}/000000000000/{prefix}"
    env.update(INVENTORY_QUEUE_URL=queues + "zhixuan-inventory", ORDER_QUEUE_URL=queues + "zhixuan-orders",
               INVENTORY_DLQ_URL=queues + "zhixuan-inventory-dlq", ORDER_DLQ_URL=queues + "zhixuan-orders-dlq",
               ORDER_EVENTS_TOPIC_ARN=f"arn:aws:sns:{env['AWS_REGION']}:000000000000:{prefix}zhixuan-order-events",
               ACCOUNT_NOTICES_TOPIC_ARN=f"arn:aws:sns:{env['AWS_REGION']}:000000000000:{prefix}zhixuan-account-notices")
    peer_table = f"zxbench{run}-peer-products"
    product_id = uuid7()
    item = product_item(product_id)
    products_table = env["PRODUCTS_TABLE"]
    dynamodb(env, "PutItem", {"TableName": products_table,
                              "Item": dict(item, pk={"S": f"PRODUCT#{product_id}"})})
    dynamodb(env, "CreateTable", {"TableName": peer_table, "BillingMode": "PAY_PER_REQUEST",
                                  "AttributeDefinitions": [{"AttributeName": "productId", "AttributeType": "S"}],
                                  "KeySchema": [{"AttributeName": "productId", "KeyType": "HASH"}]})
    try:
        dynamodb(env, "PutItem", {"TableName": peer_table, "Item": item})
        _, get_event = event_for("products-get")
        get_event = with_product(get_event, product_id)
        # The catalogue read as the peers do it: DynamoDB on every invocation, no cache.
        no_cache = {k: v for k, v in env.items() if k != "CACHE_URL"}
        if args.stub_dynamodb:
            stub_comparison(args, env, no_cache, peer_table, get_event)
            return

        cold, sizes, event_names = {}, {}, {}
        for f in functions:
            binary, sizes[f] = bootstrap(f)
            name, event = event_for(f)
            event_names[f] = name
            if f == "products-get":
                event = get_event
            # Its own rate-limit counters: the same client calling 20 times a function of a group
            # would otherwise reach the group's per-minute limit (429) within the run.
            fenv = dict(env, CACHE_KEY_PREFIX=f"{prefix}{f}:")
            cold[f] = [cold_start([str(binary)], event, fenv) for _ in range(args.runs)]
            print(f"[bench] cold {f:22} init p50 {median([r['init'] for r in cold[f]]):6.2f} ms"
                  f"  first p50 {median([r['first'] for r in cold[f]]):7.2f} ms"
                  f"  peak {median([r['peak_kib'] for r in cold[f]]) / 1024:5.1f} MiB", file=sys.stderr)

        results = {"machine": machine(), "runs": args.runs, "warm_n": args.warm, "soak_n": args.soak,
                   "zip_bytes": sizes, "events": event_names,
                   "cold": {f: {"init_p50": median([r["init"] for r in rs]), "init_p90": p90([r["init"] for r in rs]),
                                "first_p50": median([r["first"] for r in rs]), "first_p90": p90([r["first"] for r in rs]),
                                "peak_kib_p50": median([r["peak_kib"] for r in rs]),
                                "status": status_of(rs[0]["body"])}
                            for f, rs in cold.items()}}

        rust_get = str(bootstrap("products-get")[0])
        contenders = {"products-get": ([rust_get], no_cache, None)}
        if not args.no_peers:
            peers = build_peers()
            peer_env = dict(env, PRODUCTS_TABLE=peer_table, AWS_SDK_LOAD_CONFIG="0")
            contenders["plain Node.js"] = (["node", "bootstrap.js", "./dist/plain.js"], peer_env, peers)
            contenders["NestJS"] = (["node", "bootstrap.js", "./dist/nest.js"], peer_env, peers)
        peer_cold, warm_rows = {}, {}
        tw_before = time_wait_to_localstack()
        for name, (command, cenv, cwd) in contenders.items():
            peer_cold[name] = [cold_start(command, get_event, cenv, cwd) for _ in range(args.runs)]
            for r in peer_cold[name]:
                status = json.loads(r["body"]).get("statusCode")
                if status != 200:
                    raise RuntimeError(f"{name} answered {r['body'][:200]!r}")
            warm_rows[name] = warm(command, get_event, cenv, args.warm, cwd)
            print(f"[bench] {name:14} cold first p50 {median([r['first'] for r in peer_cold[name]]):7.2f} ms"
                  f"  warm p50 {warm_rows[name]['p50']:.3f} ms  cpu/1000 {warm_rows[name]['cpu_per_1000']:.3f} s",
                  file=sys.stderr)
        tw_after_warm = time_wait_to_localstack()
        tw_before_soak = time_wait_to_localstack()
        soak = warm([rust_get], get_event, no_cache, args.soak, sample_every=1000)
        tw_after_soak = time_wait_to_localstack()
        results.update(peer_cold={n: {"first_p50": median([r["first"] for r in rs]),
                                      "first_p90": p90([r["first"] for r in rs]),
                                      "init_p50": median([r["init"] for r in rs]),
                                      "peak_kib_p50": median([r["peak_kib"] for r in rs])}
                                  for n, rs in peer_cold.items()},
                       warm={n: {k: v for k, v in w.items() if k != "samples"} for n, w in warm_rows.items()},
                       soak=soak["samples"], soak_cpu_per_1000=soak["cpu_per_1000"], time_wait={"before": tw_before, "after_warm": tw_after_warm,
                                                         "before_soak": tw_before_soak,
                                                         "after_soak": tw_after_soak})
        if args.perf:
            groups, top = profile(no_cache, get_event, args.soak)
            results["perf"] = {"groups": groups, "top": top}
        (OUT / "results.json").write_text(json.dumps(results, indent=2) + "\n")
        if not args.no_peers:
            charts(cold, peer_cold, warm_rows, soak["samples"])
        write_report(results)
    finally:
        dynamodb(env, "DeleteTable", {"TableName": peer_table})
        stack_aws(env, prefix, "--delete")


def write_report(r):
    lines = [f"Measured {time.strftime('%Y-%m-%d')} by `scripts/bench-report.py` in one run on: {r['machine']}.",
             "", f"### Cold start of every release function ({r['runs']} starts each)", "",
             "| function | zip bytes | init p50 | init p90 | first response p50 | first p90 | peak RSS p50 | event (status) |",
             "|---|---:|---:|---:|---:|---:|---:|---|"]
    for f, c in sorted(r["cold"].items()):
        lines.append(f"| {f} | {r['zip_bytes'][f]:,} | {c['init_p50']:.2f} ms | {c['init_p90']:.2f} ms | "
                     f"{c['first_p50']:.2f} ms | {c['first_p90']:.2f} ms | {c['peak_kib_p50'] / 1024:.1f} MiB | "
                     f"`{r['events'][f]}` ({c['status']}) |")
    if "peer_cold" in r and "plain Node.js" in r["peer_cold"]:
        pc, w = r["peer_cold"], r["warm"]
        rust, plain, nest = "products-get", "plain Node.js", "NestJS"
        lines += ["", "### `GET /api/v1/products/{id}`: products-get against the peers (same item, DynamoDB every time)",
                  "", "| | init p50 | first response p50 | first p90 | peak RSS p50 | warm p50 | warm p99 | CPU s / 1,000 | RSS after warm |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for n in (rust, plain, nest):
            lines.append(f"| {n} | {pc[n]['init_p50']:.1f} ms | {pc[n]['first_p50']:.1f} ms | {pc[n]['first_p90']:.1f} ms | "
                         f"{pc[n]['peak_kib_p50'] / 1024:.1f} MiB | {w[n]['p50']:.3f} ms | {w[n]['p99']:.3f} ms | "
                         f"{w[n]['cpu_per_1000']:.3f} | {w[n]['rss_after_kib'] / 1024:.1f} MiB |")
        ratio = lambda a, b: a / b if b else float("inf")
        checks = [
            ("first response vs plain Node.js", ratio(pc[plain]["first_p50"], pc[rust]["first_p50"]), "≥ 15×", 15, True),
            ("first response vs NestJS", ratio(pc[nest]["first_p50"], pc[rust]["first_p50"]), "≥ 40×", 40, True),
            ("peak RSS, share of plain Node.js", ratio(pc[rust]["peak_kib_p50"], pc[plain]["peak_kib_p50"]), "≤ 0.4", 0.4, False),
            ("warm CPU per invocation, share of plain Node.js", ratio(w[rust]["cpu_per_1000"], w[plain]["cpu_per_1000"]), "≤ 0.2", 0.2, False),
        ]
        lines += ["", "| budget | measured | target | met |", "|---|---:|---|---|"]
        for label, value, target, bound, at_least in checks:
            met = value >= bound if at_least else value <= bound
            lines.append(f"| {label} | {value:.2f} | {target} | {'yes' if met else '**no**'} |")
        soak = r["soak"] or [(0, 0)]
        after = [kib for n, kib in soak if n >= 1000]
        spread = (max(after) - min(after)) / 1024 if after else 0
        inits = max(c["init_p50"] for c in r["cold"].values())
        lines.append(f"| RSS over {r['soak_n']:,} warm invocations (1,000 → {soak[-1][0]:,}) | ±{spread / 2:.2f} MiB "
                     f"(spread {spread:.2f} MiB) | ± 1 MB | {'yes' if spread <= 1.0 else '**no**'} |")
        lines.append(f"| slowest init (median) | {inits:.2f} ms | ≤ 10 ms | {'yes' if inits <= 10 else '**no**'} |")
        tw = r["time_wait"]
        lines += ["", f"Connection reuse towards LocalStack (`ss -tan state time-wait '( sport = :4566 or dport = :4566 )'`, "
                      f"either side): {tw['before_soak']} sockets in TIME_WAIT before the {r['soak_n']:,} warm invocations of "
                      f"products-get (one DynamoDB GetItem each), {tw['after_soak']} after; a new connection per call would "
                      f"leave about one per call for 60 s. (Each cold start, whose process is killed, leaves one; "
                      f"{tw['before']} before the warm runs of the three contenders, {tw['after_warm']} after.)"]
        lines += ["", f"CPU of products-get over the {r['soak_n']:,}-invocation run (finer than the "
                  f"10 ms ticks of the {r['warm_n']:,}-invocation run): {r['soak_cpu_per_1000']:.3f} s per 1,000, "
                  f"{ratio(r['soak_cpu_per_1000'], w[plain]['cpu_per_1000']):.3f} of plain Node.js's."]
        lines += ["", "RSS of products-get, sampled every 1,000 warm invocations (MiB): "
                  + ", ".join(f"{kib / 1024:.2f}" for _, kib in soak) + "."]
    if "perf" in r:
        lines += ["", f"### Where a warm products-get invocation spends its CPU (`perf record -e cpu-clock`, {r['soak_n']:,} invocations)",
                  "", "| group | share of samples |", "|---|---:|"]
        for group, pct in r["perf"]["groups"]:
            lines.append(f"| {group} | {pct:.1f}% |")
        lines += ["", "Top symbols: `docs/bench/perf-products-get.txt`."]
    lines += ["", "Charts: ![cold start](bench/cold-start-vs-peers.png) ![warm](bench/warm-vs-peers.png) "
              "![init](bench/init-per-function.png) ![rss](bench/rss-soak.png)"]
    text = "\n".join(lines) + "\n"
    (OUT / "report.md").write_text(text)
    doc = ROOT / "docs" / "benchmarks.md"
    body = doc.read_text()
    start, end = "<!-- report:start -->", "<!-- report:end -->"
    if start in body and end in body:
        body = body[: body.index(start) + len(start)] + "\n" + text + body[body.index(end):]
        doc.write_text(body)
    print(text)


if __name__ == "__main__":
    main()
