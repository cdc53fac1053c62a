#!/usr/bin/env python3
"""Load curves through the local gateway (release build), both backends (issue 18, item 3).

  scripts/load-report.py [--steps 1,2,4,8,16,32,64,128,256] [--seconds 10] [--stores dynamodb,postgres]

For each store: `scripts/run.sh --release` (the gateway runs every function's deployed builder
in-process, with its pollers and the relay), then `zx-load` (tools/load, release) sends the mix
80 % listings, 10 % product reads, 5 % logins, 5 % orders from closed-loop clients, each from
its own loopback address, for --seconds per step. While each step runs, the CPU time of every
process of the system (the gateway, LocalStack, DynamoDB Local, Postgres, Redis, the load
driver) is sampled from /proc; at the step that bends, a `perf record` of the gateway shows
where its time goes. Per-client limits and the open-order cap are raised for the run (the
curve measures capacity, not policy), bcrypt runs at cost 10 as deployed.

Writes docs/bench/load-<store>.json, docs/bench/load-throughput.png, load-latency.png and
load-cpu.png, and the tables into docs/benchmarks.md between the load-report markers.
Sends only to 127.0.0.1; bounded by its steps.
"""

import argparse
import json
import os
import pathlib
import signal
import subprocess
import sys
import time
import urllib.request

from zxlocal import ROOT, in_venv

OUT = ROOT / "docs" / "bench"
TICK = os.sysconf("SC_CLK_TCK")
PORT = 3070


def pids_of(pattern):
    out = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def cpu_of(pids):
    total = 0
    for pid in pids:
        try:
            fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            pass
    return total / TICK


PROCESSES = {
    "gateway (all functions)": "target/release/local-gateway",
    "LocalStack": "localstack-[0-9.]+/venv/bin/python",
    "DynamoDB Local (Java)": "DynamoDBLocal",
    "Postgres": "postgres:|bin/postgres ",
    "Redis": "redis-server",
    "load driver": "target/release/zx-load",
}


def snapshot():
    return {name: cpu_of(pids_of(pattern)) for name, pattern in PROCESSES.items()}


def wait_for_gateway(proc, deadline):
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit("run.sh exited before the gateway answered")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{PORT}/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise SystemExit("the gateway did not answer")


def profile_gateway(seconds, out_path):
    pid = pids_of("target/release/local-gateway")
    if not pid:
        return None
    data = out_path.with_suffix(".data")
    rec = subprocess.run(["perf", "record", "-F", "499", "-o", str(data), "-p", str(pid[0]), "--",
                          "sleep", str(seconds)], capture_output=True, text=True)
    if rec.returncode != 0:
        return f"perf record failed: {rec.stderr.strip()[:200]}"
    rep = subprocess.run(["perf", "report", "-i", str(data), "--stdio", "--sort", "dso",
                          "--percent-limit", "1"], capture_output=True, text=True)
    data.unlink(missing_ok=True)
    lines = [l for l in rep.stdout.splitlines() if l.strip() and not l.startswith("#")]
    out_path.write_text("\n".join(lines) + "\n")
    return "\n".join(lines[:12])


def run_store(store, steps, seconds, profile_at):
    env = dict(os.environ, STORE=store, GATEWAY_PORT=str(PORT), RUST_LOG="info",
               ORDER_MAX_OPEN="1000", RATE_LIMIT_USERS="100000",
               RATE_LIMIT_PRODUCTS="100000", RATE_LIMIT_ORDERS="100000",
               RATE_LIMIT_LOGIN="100000", RATE_LIMIT_LOGIN_IP="100000",
               RATE_LIMIT_REGISTER="100000", RATE_LIMIT_SEARCH="100000",
               LOGIN_DELAY_AFTER="1000", LOGIN_LOCK_AFTER="1000", DEMO_PRODUCTS="300",
               ZX_KEEP_STACK="1")
    log = open(ROOT / ".local" / f"load-{store}-run.log", "w")
    run = subprocess.Popen(["scripts/run.sh", "--release"], cwd=ROOT, env=env, stdout=log,
                           stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for_gateway(run, time.time() + 1800)
        driver = subprocess.Popen([str(ROOT / "target/release/zx-load"), "--base",
                                   f"http://127.0.0.1:{PORT}", "--steps",
                                   ",".join(map(str, steps)), "--seconds", str(seconds)],
                                  cwd=ROOT, stdout=subprocess.PIPE, text=True)
        rows = []
        before = snapshot()
        profile = None
        for line in driver.stdout:
            row = json.loads(line)
            if "ready" in row:
                # Registration (bcrypt, 2 per customer) is not part of any step.
                before = snapshot()
                continue
            after = snapshot()
            row["cpu_seconds"] = {k: round(after[k] - before.get(k, 0), 2) for k in after}
            rows.append(row)
            print(f"[load] {store} {row['clients']} clients: {row['per_second']:.0f}/s",
                  file=sys.stderr)
            # The driver pauses 2 s between steps: the next step's CPU starts after it.
            time.sleep(2)
            before = snapshot()
            if profile is None and rows and row["clients"] == profile_at // 2:
                # The next step is the one to profile: record while it runs.
                profile = profile_gateway(min(seconds - 1, 8), OUT / f"perf-gateway-{store}.txt")
        driver.wait()
        return {"store": store, "steps": rows, "perf": profile}
    finally:
        try:
            os.killpg(run.pid, signal.SIGINT)
            run.wait(timeout=60)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(run.pid, signal.SIGKILL)
        log.close()


def charts(results):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for r in results:
        xs = [s["clients"] for s in r["steps"]]
        ax.plot(xs, [s["per_second"] for s in r["steps"]], marker="o", label=r["store"])
    ax.set_xscale("log", base=2)
    ax.set_xlabel("concurrent clients")
    ax.set_ylabel("requests / s (all classes)")
    ax.set_title("Throughput through the local gateway (release)")
    ax.legend()
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(OUT / "load-throughput.png", dpi=110)
    plt.close(fig)

    classes = ["browse", "product", "login", "order"]
    fig, axes = plt.subplots(1, len(results), figsize=(6 * len(results), 4), squeeze=False)
    for ax, r in zip(axes[0], results):
        xs = [s["clients"] for s in r["steps"]]
        for c in classes:
            p50 = [s["classes"].get(c, {}).get("p50_ms", 0) for s in r["steps"]]
            p99 = [s["classes"].get(c, {}).get("p99_ms", 0) for s in r["steps"]]
            line, = ax.plot(xs, p50, marker="o", label=f"{c} p50")
            ax.plot(xs, p99, linestyle="--", color=line.get_color(), label=f"{c} p99")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("concurrent clients")
        ax.set_ylabel("ms")
        ax.set_title(f"Latency per class ({r['store']})")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(OUT / "load-latency.png", dpi=110)
    plt.close(fig)

    fig, axes = plt.subplots(1, len(results), figsize=(6 * len(results), 4), squeeze=False)
    for ax, r in zip(axes[0], results):
        xs = [str(s["clients"]) for s in r["steps"]]
        bottom = [0.0] * len(xs)
        for name in PROCESSES:
            share = [100 * s["cpu_seconds"].get(name, 0) / s["seconds"] for s in r["steps"]]
            if max(share) < 1:
                continue
            ax.bar(xs, share, bottom=bottom, label=name)
            bottom = [b + v for b, v in zip(bottom, share)]
        ax.axhline(100 * os.cpu_count(), color="black", linewidth=0.8, linestyle=":")
        ax.set_xlabel("concurrent clients")
        ax.set_ylabel("% of one core")
        ax.set_title(f"CPU by process ({r['store']}; {os.cpu_count()} cores = dotted line)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(OUT / "load-cpu.png", dpi=110)
    plt.close(fig)


def table(r):
    lines = ["| clients | requests/s | listing p50 / p99 ms | product p50 / p99 | login p50 / p99 | order p50 / p99 | non-2xx | busiest processes (% of a core) |",
             "|---:|---:|---|---|---|---|---|---|"]
    for s in r["steps"]:
        cells = []
        for c in ["browse", "product", "login", "order"]:
            k = s["classes"].get(c, {})
            cells.append(f"{k.get('p50_ms', 0):.1f} / {k.get('p99_ms', 0):.1f}")
        bad = {}
        for c, k in s["classes"].items():
            for status, n in k.get("statuses", {}).items():
                if not status.startswith("2"):
                    bad[f"{c} {status}"] = n
        cpu = sorted(s["cpu_seconds"].items(), key=lambda kv: -kv[1])[:3]
        busiest = ", ".join(f"{n} {100 * v / s['seconds']:.0f}" for n, v in cpu if v > 0)
        lines.append(f"| {s['clients']} | {s['per_second']:.0f} | " + " | ".join(cells) +
                     f" | {', '.join(f'{k}: {v}' for k, v in bad.items()) or 'none'} | {busiest} |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", default="1,2,4,8,16,32,64,128,256")
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--stores", default="dynamodb,postgres")
    parser.add_argument("--profile-at", type=int, default=32,
                        help="profile the gateway during the step with this many clients")
    args = parser.parse_args()
    in_venv("bench")
    steps = [int(s) for s in args.steps.split(",")]
    print("[load] building the release gateway, zx-admin and zx-load", file=sys.stderr)
    subprocess.run(["cargo", "build", "--locked", "--release", "-q", "-p", "zx-local-gateway",
                    "-p", "zx-app", "--bins", "-p", "zx-load"], cwd=ROOT, check=True)
    results = []
    for store in args.stores.split(","):
        result = run_store(store, steps, args.seconds, args.profile_at)
        (OUT / f"load-{store}.json").write_text(json.dumps(result, indent=1))
        results.append(result)
    charts(results)
    report = ["<!-- load-report:start -->",
              f"Measured by `scripts/load-report.py --steps {args.steps} --seconds {args.seconds}` "
              f"on {time.strftime('%Y-%m-%d')} ({os.cpu_count()} cores; the load driver, the gateway "
              "and the local stack share them).", ""]
    for r in results:
        report += [f"**{r['store']}**", "", table(r), ""]
        if r.get("perf"):
            report += [f"Where the gateway's time went at {args.profile_at} clients (`perf`, "
                       "by shared object):", "", "```", r["perf"], "```", ""]
    report += ["![throughput](bench/load-throughput.png)", "",
               "![latency per class](bench/load-latency.png)", "",
               "![CPU by process](bench/load-cpu.png)", "<!-- load-report:end -->"]
    bench = ROOT / "docs" / "benchmarks.md"
    text = bench.read_text()
    block = "\n".join(report)
    if "<!-- load-report:start -->" in text:
        head, rest = text.split("<!-- load-report:start -->", 1)
        tail = rest.split("<!-- load-report:end -->", 1)[1]
        text = head + block + tail
    else:
        text = text.rstrip() + "\n\n## Load curves through the gateway (issue 18)\n\n" + block + "\n"
    bench.write_text(text)
    print("[load] written: docs/benchmarks.md, docs/bench/load-*.json, load-*.png", file=sys.stderr)


if __name__ == "__main__":
    main()
