#!/usr/bin/env python3
"""The API as a contract, checked against the running local gateway (part of scripts/test.sh):

1. docs/openapi.json is a valid OpenAPI 3.1 document (openapi-spec-validator) and is exactly
   what GET /api/v1/openapi.json serves;
2. the docs page (GET /docs) renders every operation in Debian's headless Chromium with every
   other origin unreachable (tests/browser/docs-page.mjs), and takes a screenshot
   (.local/docs-page.png; `--screenshot docs/docs-page.png` refreshes the documented one);
3. Schemathesis generates requests for every operation, with a customer's token and with an
   admin's, and checks not_a_server_error, status_code_conformance, content_type_conformance,
   response_schema_conformance, response_headers_conformance, ignored_auth, use_after_free
   and ensure_resource_availability (examples, coverage, fuzzing and stateful phases).

The gateway runs on its own tables, queues and cache keys (deleted afterwards), with the
per-client limits raised so the fuzzer is not throttled (429 is documented, so it would only
cut coverage) and a fixed seed (ZX_FUZZ_SEED) so a run can be repeated. Needs the local stack
(scripts/stack.sh up). Ends with one line:

    api-check: N cases, F failures (customer n, admin m), T s; docs page: K operations, offline

    scripts/api-check.py [--examples 50] [--no-browser] [--screenshot docs/docs-page.png]
"""

import argparse
import json
import os
import pathlib
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

from zxlocal import ROOT, in_venv, stack_aws, stack_env
# The four, and those of Schemathesis's other checks that hold here: documented
# headers, authentication never ignored, deleted resources gone, created ones readable.
CHECKS = os.environ.get("ZX_FUZZ_CHECKS", "not_a_server_error,status_code_conformance,"
                        "content_type_conformance,response_schema_conformance,"
                        "response_headers_conformance,ignored_auth,use_after_free,"
                        "ensure_resource_availability")
MIN_CASES = 1000


def log(message):
    print(f"[api-check] {message}", file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call(base, method, path, body=None, token=None, expect=None):
    headers = {"content-type": "application/json"} if body is not None else {}
    if token:
        headers["authorization"] = f"Bearer {token}"
    request = urllib.request.Request(base + path, method=method, headers=headers,
                                     data=None if body is None else json.dumps(body).encode())
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            status, data = response.status, response.read()
    except urllib.error.HTTPError as error:
        status, data = error.code, error.read()
    if expect is not None and status != expect:
        raise SystemExit(f"{method} {path}: expected {expect}, got {status}: {data[:300]!r}")
    return status, data


def has_cjk_font():
    if shutil.which("fc-list") is None:
        return True  # cannot tell: do not install anything
    fonts = subprocess.run(["fc-list", ":lang=zh"], capture_output=True, text=True).stdout
    return bool(fonts.strip())


def ensure_chromium():
    path = os.environ.get("CHROMIUM", "/usr/bin/chromium")
    # The page's title is in Chinese too: without a CJK font the screenshot shows boxes.
    if os.path.exists(path) and has_cjk_font():
        return path
    log("installing Debian's chromium and a CJK font (apt-get)")
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    install = sudo + ["apt-get", "install", "-y", "--no-install-recommends", "chromium", "fonts-wqy-zenhei"]
    if subprocess.run(install, stdout=subprocess.DEVNULL).returncode != 0:
        subprocess.run(sudo + ["apt-get", "update"], check=True, stdout=subprocess.DEVNULL)
        subprocess.run(install, check=True, stdout=subprocess.DEVNULL)
    return path


def browser_check(base, operations, screenshot):
    chromium = ensure_chromium()
    browser_dir = ROOT / "tests" / "browser"
    if not (browser_dir / "node_modules" / "playwright-core").exists():
        log("npm ci (playwright-core) in tests/browser")
        subprocess.run(["npm", "ci", "--ignore-scripts", "--no-audit", "--no-fund", "--loglevel=error"],
                       cwd=browser_dir, check=True)
    out = subprocess.run(["node", str(browser_dir / "docs-page.mjs"), base, str(screenshot)],
                         cwd=ROOT, capture_output=True, text=True, timeout=180,
                         env=dict(os.environ, CHROMIUM=chromium))
    if out.returncode != 0:
        raise SystemExit(f"browser check failed:\n{out.stdout}\n{out.stderr}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    problems = []
    if result["operations"] != operations:
        problems.append(f"the page lists {result['operations']} operations, the description has {operations}")
    if result["blocked"]:
        problems.append(f"the page asked for other origins: {result['blocked']}")
    if result["errors"]:
        problems.append(f"the page logged errors: {result['errors']}")
    if problems:
        raise SystemExit("docs page: " + "; ".join(problems))
    log(f"docs page: {result['operations']} operations by tag {result['tags']}; screenshot {screenshot}")
    return result


def schemathesis(venv_bin, base, role, token, examples, seed):
    """One Schemathesis run; returns (cases, failures, output)."""
    st = venv_bin / "schemathesis"
    report = pathlib.Path(os.environ.get("TMPDIR", "/tmp")) / f"zx-api-check-{role}-{os.getpid()}"
    command = [str(st), "run", f"{base}/api/v1/openapi.json",
               "--checks", CHECKS,
               "--phases", "examples,coverage,fuzzing,stateful",
               "--max-examples", str(examples),
               "--seed", str(seed),
               # One worker: with two, Schemathesis 4.32 on CPython 3.11 sometimes fails inside
               # itself (a KeyError or "AST constructor recursion depth mismatch" in its generator).
               "--workers", os.environ.get("ZX_FUZZ_WORKERS", "1"),
               "--request-timeout", "30",
               "--header", f"Authorization: Bearer {token}",
               "--report", "junit", "--report-dir", str(report),
               "--no-color"]
    report.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    # In its own directory: Schemathesis keeps a cache (.schemathesis/) where it runs.
    out = subprocess.run(command, cwd=report, capture_output=True, text=True,
                         env=dict(os.environ, SCHEMATHESIS_TELEMETRY="false", HYPOTHESIS_STORAGE_DIRECTORY=str(report / "hypothesis")))
    elapsed = time.monotonic() - started
    text = out.stdout + out.stderr
    (ROOT / ".local" / f"api-check-schemathesis-{role}.txt").write_text(text)
    cases = re.search(r"Test cases:\s*(\d+) generated", text)
    if not cases:
        raise SystemExit(f"schemathesis ({role}) printed no case count (exit {out.returncode}):\n{text[-4000:]}")
    failures = 0 if out.returncode == 0 else max(1, len(re.findall(r"^_+ .* _+$", text, re.M)))
    log(f"schemathesis ({role}): {cases.group(1)} cases, exit {out.returncode}, {elapsed:.0f} s")
    if out.returncode == 0:
        shutil.rmtree(report, ignore_errors=True)
    return int(cases.group(1)), failures, text


def main():
    venv_bin = pathlib.Path(in_venv("api"))
    parser = argparse.ArgumentParser()
    parser.add_argument("--examples", type=int, default=int(os.environ.get("ZX_FUZZ_EXAMPLES", "50")),
                        help="Schemathesis --max-examples per operation and phase")
    parser.add_argument("--seed", type=int, default=int(os.environ.get("ZX_FUZZ_SEED", "20261125")))
    parser.add_argument("--no-browser", action="store_true")
    parser.add_argument("--screenshot", default=str(ROOT / ".local" / "docs-page.png"),
                        help="where the docs page's screenshot goes (docs/docs-page.png is the documented one)")
    args = parser.parse_args()
    started = time.monotonic()

    log("building the local gateway and zx-admin")
    subprocess.run(["cargo", "build", "--locked", "-q", "-p", "zx-local-gateway", "-p", "zx-app", "--bins"],
                   cwd=ROOT, check=True)
    target = pathlib.Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "debug"

    env = stack_env()
    keys = subprocess.run([str(target / "zx-admin"), "jwt-keygen"], check=True,
                          capture_output=True, text=True).stdout.split()
    run = f"zxapi{time.strftime('%Y%m%d%H%M%S')}{secrets.token_hex(2)}-"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    queues = f"{env['AWS_ENDPOINT_URL']}/queue/{env.get('AWS_REGION', 'us-east-1')}/000000000000/{run}"
    env.update(
        STORE="dynamodb", JWT_PRIVATE_KEY=keys[0], JWT_PUBLIC_KEYS=keys[1], JWT_EXPIRES_IN="1h",
        USERS_TABLE=f"{run}zhixuan-users", PRODUCTS_TABLE=f"{run}zhixuan-products",
        ORDERS_TABLE=f"{run}zhixuan-orders",
        INVENTORY_QUEUE_URL=queues + "zhixuan-inventory", ORDER_QUEUE_URL=queues + "zhixuan-orders",
        INVENTORY_DLQ_URL=queues + "zhixuan-inventory-dlq", ORDER_DLQ_URL=queues + "zhixuan-orders-dlq",
        ORDER_EVENTS_TOPIC_ARN=f"arn:aws:sns:{env.get('AWS_REGION', 'us-east-1')}:000000000000:{run}zhixuan-order-events",
        ACCOUNT_NOTICES_TOPIC_ARN=f"arn:aws:sns:{env.get('AWS_REGION', 'us-east-1')}:000000000000:{run}zhixuan-account-notices",
        CACHE_KEY_PREFIX=run, GATEWAY_PORT=str(port), BCRYPT_COST="4", RUST_LOG="warn",
        RATE_LIMIT_USERS="100000", RATE_LIMIT_PRODUCTS="100000", RATE_LIMIT_ORDERS="100000",
        RATE_LIMIT_LOGIN="100000", RATE_LIMIT_LOGIN_IP="100000", RATE_LIMIT_REGISTER="100000",
    )
    env.pop("DATABASE_URL", None)
    stack_aws(env, run)
    gateway = None
    log_path = ROOT / ".local" / "api-check-gateway.log"
    log_path.parent.mkdir(exist_ok=True)
    try:
        admin_password = "Zx-" + secrets.token_urlsafe(12)
        subprocess.run([str(target / "zx-admin"), "ensure-admin", "admin@api-check.local", "apicheck_admin"],
                       env=dict(env, ADMIN_PASSWORD=admin_password), check=True, stdout=subprocess.DEVNULL)
        subprocess.run([str(target / "zx-admin"), "seed-catalogue", "30"], env=env, check=True,
                       stdout=subprocess.DEVNULL)
        with open(log_path, "wb") as gateway_log:
            gateway = subprocess.Popen([str(target / "local-gateway")], cwd=ROOT, env=env,
                                       stdout=gateway_log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while True:
            try:
                if call(base, "GET", "/health")[0] == 200:
                    break
            except OSError:
                pass
            if gateway.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the gateway did not start; see {log_path}")
            time.sleep(0.3)

        # 1. The description: valid OpenAPI 3.1, and what the function serves.
        validator = venv_bin / "openapi-spec-validator"
        subprocess.run([str(validator), str(ROOT / "docs" / "openapi.json")], check=True,
                       stdout=subprocess.DEVNULL)
        _, served = call(base, "GET", "/api/v1/openapi.json", expect=200)
        if served != (ROOT / "docs" / "openapi.json").read_bytes():
            raise SystemExit("docs/openapi.json differs from GET /api/v1/openapi.json: "
                             "run `cargo run -p zx-app --bin zx-admin -- openapi docs/openapi.json`")
        document = json.loads(served)
        operations = sum(1 for item in document["paths"].values() for m in item
                         if m in ("get", "put", "post", "delete", "patch"))
        log(f"docs/openapi.json: valid OpenAPI {document['openapi']}, {operations} operations, as served")

        # 2. The docs page in a browser.
        page = None if args.no_browser else browser_check(base, operations, pathlib.Path(args.screenshot).resolve())

        # 3. Schemathesis with a customer's token and an admin's.
        call(base, "POST", "/api/v1/users/register",
             {"username": "apicheck_customer", "email": "customer@api-check.local", "password": "customer-pass-1"},
             expect=201)
        tokens = {}
        for role, email, password in [("customer", "customer@api-check.local", "customer-pass-1"),
                                      ("admin", "admin@api-check.local", admin_password)]:
            _, body = call(base, "POST", "/api/v1/users/login", {"email": email, "password": password}, expect=200)
            tokens[role] = json.loads(body)["token"]
        fuzz_started = time.monotonic()
        results = {role: schemathesis(venv_bin, base, role, token, args.examples, args.seed)
                   for role, token in tokens.items()}
        fuzz_seconds = time.monotonic() - fuzz_started
        cases = sum(r[0] for r in results.values())
        failures = sum(r[1] for r in results.values())
        for role, (_, failed, text) in results.items():
            if failed:
                print(f"----- schemathesis ({role}) -----\n{text[-20000:]}", file=sys.stderr)
        if cases < MIN_CASES:
            print(f"only {cases} cases generated (at least {MIN_CASES} required): raise --examples",
                  file=sys.stderr)
            failures += 1
        docs = "skipped" if page is None else f"{page['operations']} operations, offline"
        print(f"api-check: {cases} cases, {failures} failures "
              f"(customer {results['customer'][0]}, admin {results['admin'][0]}), "
              f"fuzzing {fuzz_seconds:.0f} s, total {time.monotonic() - started:.0f} s; docs page: {docs}")
        return 1 if failures else 0
    finally:
        if gateway is not None:
            gateway.terminate()
            try:
                gateway.wait(timeout=10)
            except subprocess.TimeoutExpired:
                gateway.kill()
        stack_aws(env, run, "--delete")


if __name__ == "__main__":
    sys.exit(main())
