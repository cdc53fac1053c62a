#!/usr/bin/env python3
"""Cold-start benchmark of the release Lambda binaries, against a mock Lambda Runtime API.

For each function: start its `bootstrap` (from `cargo lambda build --release`) N times, each
time measuring
  init   = process start -> first GET /runtime/invocation/next  (Lambda's "Init Duration")
  first  = that GET -> the first invocation's response            (lazy connections included)
then print median and p90 per function. Needs the local stack (`scripts/stack.sh up`) and its
environment (`eval "$(scripts/stack.sh env)"`). Loopback, plain HTTP: no TLS handshake, which
real AWS endpoints add to the first invocation.

  scripts/bench-cold-start.py [--runs 20] [function ...]
"""

import argparse
import http.server
import json
import os
import pathlib
import statistics
import subprocess
import sys
import threading
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
EVENTS = {
    "health": "health.json",
    "users-validate": "users-validate.json",
    "users-me": "users-me.json",
    "users-register": "users-register.invalid.json",
    "products-get": "products-get.json",
    "products-list": "products-list.json",
    "stock-get": "stock-get.json",
}


class Runtime(http.server.BaseHTTPRequestHandler):
    """One invocation per process: hands out the event once, records the timings."""

    event = b"{}"
    first_next = None
    response_at = None
    served = False
    done = threading.Event()

    def log_message(self, *args):
        pass

    def do_GET(self):
        if not self.path.endswith("/invocation/next"):
            self.send_error(404)
            return
        cls = type(self)
        if cls.served:
            # Second poll: the function is idle; hold it until the benchmark kills the process.
            cls.done.wait(10)
            self.close_connection = True
            return
        cls.first_next = time.perf_counter()
        cls.served = True
        self.send_response(200)
        self.send_header("Lambda-Runtime-Aws-Request-Id", "bench-request")
        self.send_header("Lambda-Runtime-Deadline-Ms", str(int(time.time() * 1000) + 30_000))
        self.send_header("Lambda-Runtime-Invoked-Function-Arn", "arn:aws:lambda:us-east-1:000000000000:function:bench")
        self.send_header("Lambda-Runtime-Trace-Id", "Root=1-00000000-000000000000000000000000")
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(cls.event)))
        self.end_headers()
        self.wfile.write(cls.event)

    def do_POST(self):
        length = int(self.headers.get("Content-Length", 0))
        self.rfile.read(length)
        cls = type(self)
        if "/response" in self.path or "/error" in self.path:
            cls.response_at = time.perf_counter()
            cls.done.set()
        self.send_response(202)
        self.send_header("Content-Length", "0")
        self.end_headers()


def run_once(binary, event, env):
    handler = type("H", (Runtime,), {"event": event, "served": False, "first_next": None,
                                     "response_at": None, "done": threading.Event()})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    env = dict(env, AWS_LAMBDA_RUNTIME_API=f"127.0.0.1:{server.server_address[1]}")
    started = time.perf_counter()
    proc = subprocess.Popen([binary], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ok = handler.done.wait(30)
    proc.kill()
    proc.wait()
    server.shutdown()
    if not ok or handler.first_next is None or handler.response_at is None:
        raise RuntimeError(f"{binary}: no response")
    return (handler.first_next - started) * 1000, (handler.response_at - handler.first_next) * 1000


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("functions", nargs="*", default=list(EVENTS))
    args = parser.parse_args()
    env = dict(os.environ)
    if "JWT_PUBLIC_KEYS" not in env:
        keys = subprocess.run(["cargo", "run", "-q", "-p", "zx-app", "--bin", "zx-admin", "--", "jwt-keygen"],
                              cwd=ROOT, check=True, capture_output=True, text=True).stdout.split()
        env.update(JWT_PRIVATE_KEY=keys[0], JWT_PUBLIC_KEYS=keys[1])
    env.update(AWS_LAMBDA_FUNCTION_NAME="bench", AWS_LAMBDA_FUNCTION_MEMORY_SIZE="256",
               AWS_LAMBDA_FUNCTION_VERSION="$LATEST", AWS_LAMBDA_LOG_STREAM_NAME="bench",
               AWS_LAMBDA_LOG_GROUP_NAME="/aws/lambda/bench", RUST_LOG="warn")
    print(f"{'function':16} {'size KiB':>9} {'init p50':>9} {'init p90':>9} {'first p50':>10} {'first p90':>10}  (ms, {args.runs} runs)")
    for name in args.functions:
        binary = ROOT / "target" / "lambda" / name / "bootstrap"
        if not binary.exists():
            sys.exit(f"{binary} missing: run cargo lambda build --release first")
        event = (ROOT / "events" / EVENTS[name]).read_bytes()
        inits, firsts = zip(*(run_once(str(binary), event, env) for _ in range(args.runs)))
        q = lambda xs, p: statistics.quantiles(xs, n=10)[p - 1] if len(xs) > 1 else xs[0]
        print(f"{name:16} {binary.stat().st_size // 1024:9d} {statistics.median(inits):9.1f} {q(inits, 9):9.1f} "
              f"{statistics.median(firsts):10.1f} {q(firsts, 9):10.1f}")


if __name__ == "__main__":
    main()
