"""The benchmark harness behind scripts/bench (which installs and builds first).

Everything runs on loopback and is started and stopped here: a canned upstream (nginx
answering a fixed chat completion), nginx as a plain reverse proxy over it (the original
set-up's configuration, with as many workers as the gateway has event loops), a private Redis,
and the gateway with authentication, weighted routing, a quota, metering into its SQLite
ledger and the cache, over the same upstream: the pass-through path (temperature 0.7, not
cacheable), the cache-miss path (every body different) and the cache-hit path. wrk measures each with the
same connections and duration; a table goes to stdout, and with --json one JSON object on the
last line.
"""
import argparse
import glob
import json
import random
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

MODEL = "qwen2.5-0.5b-instruct"
KEY = "tg-bench-key"
BATCH_KEY = "tg-bench-batch-key"
CANNED = (
    '{"id":"chatcmpl-bench","object":"chat.completion","created":1764460800,"model":"qwen2.5-0.5b-instruct",'
    '"choices":[{"index":0,"message":{"role":"assistant","content":"Hello! How can I help you today?"},'
    '"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":9,"total_tokens":18}}'
)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _port_free(port):
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def wait_port(port, timeout=20):
    end = time.time() + timeout
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


class Procs:
    def __init__(self):
        self.procs = []

    def start(self, args, **kw):
        p = subprocess.Popen(args, stdout=kw.pop("stdout", subprocess.DEVNULL), stderr=kw.pop("stderr", subprocess.DEVNULL), **kw)
        self.procs.append(p)
        return p

    def stop_all(self):
        for p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()


def nginx_conf(tmp, name, workers, server_block, upstream=""):
    d = os.path.join(tmp, name)
    os.makedirs(d, exist_ok=True)
    os.chmod(tmp, 0o755)
    os.chmod(d, 0o755)
    conf = f"""
worker_processes {workers};
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 8192; }}
http {{
    access_log off;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    keepalive_requests 1000000;
    {upstream}
    {server_block}
}}
"""
    path = os.path.join(d, "nginx.conf")
    with open(path, "w") as f:
        f.write(conf)
    return path


def wrk_script(tmp, body, headers):
    path = os.path.join(tmp, f"wrk-{abs(hash((body, tuple(headers))))}.lua")
    lines = ['wrk.method = "POST"', f"wrk.body = {json.dumps(body)}", 'wrk.headers["Content-Type"] = "application/json"']
    for k, v in headers:
        lines.append(f'wrk.headers["{k}"] = "{v}"')
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


def wrk_varying_script(tmp, headers):
    """Every request a different cacheable body: the cache-miss path."""
    path = os.path.join(tmp, "wrk-miss.lua")
    lines = ['wrk.method = "POST"', 'wrk.headers["Content-Type"] = "application/json"']
    for k, v in headers:
        lines.append(f'wrk.headers["{k}"] = "{v}"')
    lines += [
        "local counter = 0",
        # Lua's math.random is not seeded by wrk: every run would send the same bodies, and a
        # second run against the same Redis would measure hits. The salt comes from here.
        f"local salt = '{random.randrange(1, 1_000_000_000)}'",
        "request = function()",
        "  counter = counter + 1",
        f"  local body = '{{\"model\":\"{MODEL}\",\"temperature\":0,\"messages\":[{{\"role\":\"user\",\"content\":\"question ' .. salt .. '-' .. counter .. '\"}}]}}'",
        "  return wrk.format(nil, nil, nil, body)",
        "end",
    ]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


def to_ms(value, unit):
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def cpu_seconds(pids):
    """CPU time (user + system) used so far by the processes `pids` and their children's
    threads, from /proc."""
    ticks = 0
    for pid in pids:
        for task in glob.glob(f"/proc/{pid}/task/*/stat"):
            try:
                with open(task) as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                ticks += int(fields[11]) + int(fields[12])
            except (OSError, IndexError, ValueError):
                pass
    return ticks / os.sysconf("SC_CLK_TCK")


def settle(pids, timeout=30.0):
    """Waits until `pids` use (almost) no CPU: the gateway's ledger writes its rows behind the
    requests (an idle-priority thread, then a catch-up thread), so without this one part's rows
    would be charged to the next part's CPU and slow its requests."""
    last = cpu_seconds(pids)
    end = time.time() + timeout
    while time.time() < end:
        time.sleep(0.3)
        now = cpu_seconds(pids)
        if now - last < 0.01:
            return
        last = now


def process_tree(pid):
    """`pid` and its children (nginx's master and workers)."""
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    return [pid] + [int(p) for p in out]


def run_wrk(url, script, connections, duration, threads=1, measure=None):
    """wrk against `url`; with `measure` (pids), also the CPU those processes used per request."""
    before = cpu_seconds(measure) if measure else 0
    out = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--latency", "-s", script, url],
        capture_output=True, text=True, check=True,
    ).stdout
    used = cpu_seconds(measure) - before if measure else None
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    pct = {}
    for p, v, u in re.findall(r"^\s+(\d+)%\s+([\d.]+)(us|ms|s|m)\s*$", out, re.M):
        pct[int(p)] = to_ms(v, u)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: (.*)", out)
    return {"rps": rps, "p50_ms": pct.get(50), "p99_ms": pct.get(99),
            "non2xx": int(errors.group(1)) if errors else 0, "socket_errors": sock.group(1) if sock else None,
            "cpu_us": used * 1e6 / max(1, requests) if used is not None else None}


def _stream_request(host, path, body, headers):
    head = f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    for k, v in headers:
        head += f"{k}: {v}\r\n"
    return head.encode() + b"\r\n" + body


async def _stream(reader, writer, request, start_at, clock, gauge, timeout=60):
    """One streamed request on a connection opened beforehand: waits until `start_at` seconds
    after `clock`, writes the request, reads to [DONE]. Returns (seconds from the write to the
    first `data:` byte, whether the stream ended with [DONE])."""
    import asyncio
    await asyncio.sleep(max(0.0, start_at - (time.perf_counter() - clock)))
    sent = time.perf_counter()
    writer.write(request)
    gauge["now"] += 1
    gauge["peak"] = max(gauge["peak"], gauge["now"])
    buf = b""
    ttft = None
    done = False
    try:
        while True:
            chunk = await asyncio.wait_for(reader.read(65536), timeout)
            if not chunk:
                break
            buf = buf + chunk if ttft is None else buf[-16:] + chunk
            if ttft is None and b"data:" in buf:
                ttft = time.perf_counter() - sent
            if b"[DONE]" in buf:
                done = True
                break
    finally:
        gauge["now"] -= 1
        writer.close()
    return ttft, done


def stream_ttfts(port, headers, n, body, ramp):
    """`n` streams, each on its own connection opened beforehand (connecting is not what is
    measured); the requests start evenly spread over `ramp` seconds. Returns the first-token
    times of the streams that completed, and the most streams in flight at once."""
    import asyncio

    async def main():
        opened = await asyncio.gather(*[asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 60) for _ in range(n)],
                                      return_exceptions=True)
        conns = [c for c in opened if not isinstance(c, BaseException)]
        request = _stream_request("127.0.0.1", "/v1/chat/completions", body, headers)
        gauge = {"now": 0, "peak": 0}
        clock = time.perf_counter()
        results = await asyncio.gather(*[_stream(r, w, request, ramp * i / max(1, n - 1), clock, gauge)
                                         for i, (r, w) in enumerate(conns)], return_exceptions=True)
        return [r[0] for r in results if isinstance(r, tuple) and r[1] and r[0] is not None], gauge["peak"]
    return asyncio.run(main())


def pct(values, p):
    v = sorted(values)
    return v[min(len(v) - 1, max(0, int(round(p / 100 * len(v) + 0.5)) - 1))] if v else float("nan")


def run_hey(url, seconds, concurrency, headers, body):
    """hey for `seconds` with `concurrency` clients: req/s, mean latency, share of 200 answers."""
    args = ["hey", "-z", f"{seconds}s", "-c", str(concurrency), "-m", "POST", "-T", "application/json", "-d", body]
    for k, v in headers:
        args += ["-H", f"{k}: {v}"]
    out = subprocess.run(args + [url], capture_output=True, text=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    mean = float(re.search(r"Average:\s+([\d.]+) secs", out).group(1))
    codes = {int(c): int(n) for c, n in re.findall(r"\[(\d{3})\]\s+(\d+) responses", out)}
    failed = 0
    errors = re.search(r"Error distribution:(.*)", out, re.S)
    if errors:
        failed = sum(int(n) for n in re.findall(r"^\s+\[(\d+)\]", errors.group(1), re.M))
    total = sum(codes.values()) + failed
    return {"rps": rps, "mean_s": mean, "success": codes.get(200, 0) / max(1, total), "requests": total}


# Part 4: overload — the gateway holds the queue (README "When the GPUs are full").

async def _http_client(port, body, headers, stop_at, out, department, lane_timeout):
    """One client on one keep-alive connection: POST, read the whole answer, again, until
    `stop_at` (perf_counter); the request in flight then is still answered. A 503 with
    Retry-After is waited out (at most 1 s), as the OpenAI SDKs do. Appends
    (department, status, seconds, has Retry-After, end time) per request to `out`."""
    import asyncio
    reader = writer = None
    request = _stream_request("127.0.0.1", "/v1/chat/completions", body, headers)
    try:
        while time.perf_counter() < stop_at:
            if writer is None:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            sent = time.perf_counter()
            writer.write(request)
            status, retry_after, close = 0, None, False
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), lane_timeout + 60)
                lines = head.decode("latin-1").split("\r\n")
                status = int(lines[0].split()[1])
                length, chunked = 0, False
                for line in lines[1:]:
                    name, _, value = line.partition(":")
                    name, value = name.strip().lower(), value.strip()
                    if name == "content-length":
                        length = int(value)
                    elif name == "transfer-encoding" and "chunked" in value.lower():
                        chunked = True
                    elif name == "retry-after":
                        retry_after = value
                    elif name == "connection" and value.lower() == "close":
                        close = True
                if chunked:
                    while True:
                        size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                        await reader.readexactly(size + 2)
                        if size == 0:
                            break
                else:
                    await reader.readexactly(length)
            except (asyncio.IncompleteReadError, asyncio.TimeoutError, ConnectionError, ValueError, IndexError):
                status, close = 0, True
            end = time.perf_counter()
            out.append((department, status, end - sent, retry_after is not None, end))
            if close:
                writer.close()
                writer = None
            if status in (429, 503) and retry_after is not None:
                await asyncio.sleep(min(1.0, float(retry_after)))
    finally:
        if writer is not None:
            writer.close()


def overload_run(port, clients, seconds, lane_timeout):
    """`clients`: (department, count, body, headers). Runs them all for `seconds`; returns the
    per-request records and the measured span (from the start to the last answer)."""
    import asyncio

    async def main():
        out = []
        start = time.perf_counter()
        stop_at = start + seconds
        tasks = []
        for department, count, body, headers in clients:
            for _ in range(count):
                tasks.append(_http_client(port, body, headers, stop_at, out, department, lane_timeout))
        await asyncio.gather(*tasks, return_exceptions=True)
        return out, start
    out, start = asyncio.run(main())
    return out, start


def overload_summary(records, start, seconds):
    """Per department: requests, success share, p50/p99 of successful answers, completions/s,
    shed (503), and the largest time a refused request took."""
    by = {}
    for department, status, took, retry_after, end in records:
        d = by.setdefault(department, {"n": 0, "ok": [], "shed": 0, "shed_no_retry_after": 0, "other": 0, "max_refusal_s": 0.0})
        d["n"] += 1
        if status == 200:
            d["ok"].append(took)
        elif status in (429, 503):
            d["shed"] += 1
            d["max_refusal_s"] = max(d["max_refusal_s"], took)
            if not retry_after:
                d["shed_no_retry_after"] += 1
        else:
            d["other"] += 1
    result = {}
    for department, d in by.items():
        result[department] = {
            "requests": d["n"], "success": len(d["ok"]) / max(1, d["n"]),
            "p50_s": pct(d["ok"], 50), "p99_s": pct(d["ok"], 99), "completions_per_s": len(d["ok"]) / seconds,
            "completions": len(d["ok"]), "shed": d["shed"], "shed_without_retry_after": d["shed_no_retry_after"],
            "failed": d["other"], "max_refusal_s": d["max_refusal_s"],
        }
    result["_goodput"] = sum(len(d["ok"]) for d in by.values()) / seconds
    return result


def overload_part(args, procs, tmp, key_hashes):
    """Eight simulated instances of 10 concurrent decodes each (the article's calibration: about
    0.2 s a request); customer-service (interactive, 3/4 to GPU0) with 10 clients alone, then
    with a batch department flooding with 300 clients; through nginx (the original set-up) and
    through the gateway, in one run. Returns the figures."""
    base = free_port()
    while any(not _port_free(base + i) for i in range(8)):
        base = free_port()
    fleet = procs.start([args.tollgate, "sim", "--instances", "8", "--base-port", str(base), "--gpus", "4",
                         "--ttft-ms", "90", "--tokens-per-second", "50", "--capacity", "10", "--default-tokens", "8"])
    ng_port = free_port()
    servers = "".join(f"server 127.0.0.1:{base + i} max_fails=3 fail_timeout=30s; " for i in range(8))
    conf = nginx_conf(tmp, "overload-nginx", args.loops, f"""
    server {{
        listen 127.0.0.1:{ng_port} backlog=4096;
        location / {{
            proxy_pass http://qwen;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
        }}
    }}""", upstream=f"upstream qwen {{ {servers} keepalive 512; }}")
    procs.start(["nginx", "-p", tmp, "-c", conf, "-g", "daemon off;"])
    cs_hash, batch_hash = key_hashes
    gw, gw_port = start_gateway(
        procs, args, tmp, "overload", cs_hash, [(f"qwen-{i}", f"http://127.0.0.1:{base + i}", i % 4) for i in range(8)],
        top="health: {probe_interval: 1s, metrics_path: /metrics}\nadmission: {min_share: 10%}\n",
        pool="    max_in_flight: 10\n",
        department=f"""    priority: interactive
    route:
      - {{match: {{gpu: "0"}}, weight: 3}}
      - {{match: {{}}, weight: 1}}
  - name: batch
    priority: batch
    keys: [{{sha256: {batch_hash}}}]
""", name_override="customer-service")
    for i in range(8):
        wait_port(base + i)
    wait_port(ng_port)
    wait_port(gw_port)
    body = json.dumps({"model": MODEL, "temperature": 0.7, "messages": [{"role": "user", "content": "Where is my parcel?"}]}).encode()
    cs_gw = [("Authorization", f"Bearer {KEY}")]
    batch_gw = [("Authorization", f"Bearer {BATCH_KEY}")]
    seconds, lane_timeout = args.overload_seconds, 120
    # Warm-up: connections on both paths.
    overload_run(ng_port, [("customer-service", 10, body, [])], 2, lane_timeout)
    overload_run(gw_port, [("customer-service", 10, body, cs_gw)], 2, lane_timeout)
    runs = {}
    import sqlite3
    ledger = os.path.join(tmp, "overload", "ledger.sqlite")

    def ledger_rows():
        db = sqlite3.connect(ledger)
        try:
            return db.execute("SELECT count(*) FROM usage").fetchone()[0]
        finally:
            db.close()
    time.sleep(0.5)  # the warm-up's rows reach the ledger (every 100 ms)
    rows_before = ledger_rows()
    for name, port, cs_h, b_h in (("nginx", ng_port, [], []), ("gateway", gw_port, cs_gw, batch_gw)):
        alone, start = overload_run(port, [("customer-service", 10, body, cs_h)], seconds / 2, lane_timeout)
        runs[name + " alone"] = overload_summary(alone, start, seconds / 2)
        flood, start = overload_run(port, [("customer-service", 10, body, cs_h), ("batch", 300, body, b_h)], seconds, lane_timeout)
        runs[name + " flood"] = overload_summary(flood, start, seconds)
        runs[name + " flood"]["_sent"] = {d: sum(1 for r in flood if r[0] == d) for d in ("customer-service", "batch")}
        runs[name + " alone"]["_sent"] = {"customer-service": len(alone)}
    # The gateway's ledger: every request it received has its row (SIGTERM drains and flushes).
    gw.send_signal(signal.SIGTERM)
    gw.wait(timeout=60)
    db = sqlite3.connect(ledger)
    shed_rows = db.execute("SELECT error_code, count(*) FROM usage WHERE error_code IS NOT NULL GROUP BY error_code").fetchall()
    db.close()
    fleet.terminate()
    return {"runs": runs, "ledger_rows": ledger_rows() - rows_before, "ledger_error_codes": dict(shed_rows), "seconds": seconds}


def print_overload(o):
    runs, seconds = o["runs"], o["seconds"]
    print(f"\nOverload: 8 simulated instances × 10 concurrent decodes (TTFT 90 ms, 8 tokens at 50/s); customer-service "
          f"(interactive, 3/4 to GPU0) 10 clients alone ({seconds / 2:g} s), then with batch flooding 300 clients ({seconds:g} s):")
    print(f"{'run':<18}{'department':<18}{'requests':>9}{'success':>9}{'p50 s':>8}{'p99 s':>8}{'compl/s':>9}{'shed':>6}{'no R-A':>7}{'failed':>7}")
    for run, r in runs.items():
        for d in ("customer-service", "batch"):
            if d not in r:
                continue
            x = r[d]
            print(f"{run:<18}{d:<18}{x['requests']:>9}{x['success'] * 100:>8.1f}%{x['p50_s']:>8.3f}{x['p99_s']:>8.3f}"
                  f"{x['completions_per_s']:>9.1f}{x['shed']:>6}{x['shed_without_retry_after']:>7}{x['failed']:>7}")
        print(f"{'':<18}{'pool goodput':<18}{'':>9}{'':>9}{'':>8}{'':>8}{r['_goodput']:>9.1f}")
    ga, gf, nf = runs["gateway alone"]["customer-service"], runs["gateway flood"]["customer-service"], runs["nginx flood"]["customer-service"]
    batch = runs["gateway flood"].get("batch", {"completions": 0})
    total = gf["completions"] + batch["completions"]
    sent = runs["gateway alone"]["_sent"]["customer-service"] + sum(runs["gateway flood"]["_sent"].values())
    checks = [
        ("customer-service p50 under flood ≤ 1.25× alone", gf["p50_s"] <= 1.25 * ga["p50_s"], f"{gf['p50_s']:.3f} s vs {ga['p50_s']:.3f} s ({gf['p50_s'] / ga['p50_s']:.2f}×)"),
        ("customer-service p99 under flood ≤ 1.5× alone", gf["p99_s"] <= 1.5 * ga["p99_s"], f"{gf['p99_s']:.3f} s vs {ga['p99_s']:.3f} s ({gf['p99_s'] / ga['p99_s']:.2f}×)"),
        ("goodput ≥ 0.95× nginx", runs["gateway flood"]["_goodput"] >= 0.95 * runs["nginx flood"]["_goodput"],
         f"{runs['gateway flood']['_goodput']:.1f}/s vs {runs['nginx flood']['_goodput']:.1f}/s"),
        ("batch ≥ 10% of completions", batch["completions"] >= 0.1 * max(1, total), f"{batch['completions']} of {total}"),
        ("every request answered, or refused with Retry-After within its lane timeout",
         all(x["failed"] == 0 and x["shed_without_retry_after"] == 0 for run in ("gateway alone", "gateway flood") for k, x in runs[run].items() if not k.startswith("_")),
         "; ".join(f"{k}: {x['failed']} failed, {x['shed']} shed (max {x['max_refusal_s']:.2f} s)" for k, x in runs["gateway flood"].items() if not k.startswith("_"))),
        ("nothing unaccounted in the ledger", o["ledger_rows"] == sent,
         f"{o['ledger_rows']} rows for {sent} requests sent; error codes {o['ledger_error_codes']}"),
    ]
    print(f"\nvs nginx under the flood: customer-service p50 {nf['p50_s']:.3f} s, p99 {nf['p99_s']:.3f} s")
    for name, ok, detail in checks:
        print(f"  [{'ok' if ok else 'MISSED'}] {name}: {detail}")
    return {"overload_cs_alone_p50_s": round(ga["p50_s"], 3), "overload_cs_flood_p50_s": round(gf["p50_s"], 3),
            "overload_cs_flood_p99_s": round(gf["p99_s"], 3), "overload_nginx_cs_flood_p50_s": round(nf["p50_s"], 3),
            "overload_nginx_cs_flood_p99_s": round(nf["p99_s"], 3),
            "overload_goodput": round(runs["gateway flood"]["_goodput"], 1), "overload_nginx_goodput": round(runs["nginx flood"]["_goodput"], 1),
            "overload_batch_share": round(batch["completions"] / max(1, total), 3),
            "overload_checks_passed": sum(1 for _, ok, _ in checks if ok), "overload_checks": len(checks)}


def rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return None


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def start_gateway(procs, args, tmp, name, key_hash, instances, pool="", department="", top="", redis_port=None, name_override="bench"):
    """Writes a gateway configuration under tmp/name — one pool of `instances` (name, url,
    gpu label or None) serving MODEL, one department `bench` with the benchmark key, plus the
    given YAML lines — and starts `tollgate serve` on it with its own ledger. Returns
    (process, port)."""
    port, admin = free_port(), free_port()
    directory = os.path.join(tmp, name)
    os.makedirs(directory)
    listed = "\n".join(
        f'      - {{name: {n}, url: "{url}"' + (f', labels: {{gpu: "{gpu}"}}' if gpu is not None else "") + "}"
        for n, url, gpu in instances)
    with open(os.path.join(directory, "gateway.yaml"), "w") as f:
        f.write(f"""listen: {{host: 127.0.0.1, port: {port}}}
admin: {{host: 127.0.0.1, port: {admin}}}
event_loops: {args.loops}
{top}pools:
  - name: qwen
    models: [{MODEL}]
{pool}    instances:
{listed}
departments:
  - name: {name_override}
    keys: [{{sha256: {key_hash}}}]
{department}""")
    command = [args.tollgate, "serve", "--config", directory, "--log-level", "warning",
               "--database", os.path.join(directory, "ledger.sqlite"), "--migrations", os.path.join(ROOT, "migrations")]
    if redis_port:
        command += ["--redis", f"redis://127.0.0.1:{redis_port}"]
    return procs.start(command), port


def throughput_table(args, results, one_direct, one_nginx, one_gw, rss):
    """Prints the wrk table and the one-connection latencies; returns their JSON fields."""
    nginx_rps, direct_rps = results["nginx"]["rps"], results["direct"]["rps"]
    print(f"\nwrk -t1 -c{args.connections} -d{args.duration}s, one POST /v1/chat/completions body; "
          f"gateway with {args.loops} event loops, nginx proxy with {args.loops} workers\n")
    print(f"{'path':<36}{'req/s':>10}{'× nginx':>9}{'× direct':>10}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}{'CPU µs/req':>12}")
    names = {"direct": "direct to the upstream", "nginx": "nginx reverse proxy", "reference": "bare SwiftNIO forwarder (reference)",
             "raw": "raw-bytes SwiftNIO forwarder (ref.)",
             "pass": "gateway pass-through (T=0.7)", "miss": "gateway cache miss (all different)", "hit": "gateway cache hit"}
    for k in ("direct", "nginx", "reference", "raw", "pass", "miss", "hit"):
        if k not in results:
            continue
        r = results[k]
        cpu = f"{r['cpu_us']:>12.1f}" if r.get("cpu_us") is not None else f"{'':>12}"
        print(f"{names[k]:<36}{r['rps']:>10.0f}{r['rps'] / nginx_rps:>9.2f}{r['rps'] / direct_rps:>10.2f}"
              f"{r['p50_ms']:>9.3f}{r['p99_ms']:>9.3f}{r['non2xx']:>8}{cpu}")
    print("(CPU µs/req: the proxy's own processes, user + system, over the run; the bare forwarder is SwiftNIO's HTTP")
    print(" codecs and a keep-alive pool with nothing else, the floor of the gateway's design on this machine; the raw-bytes")
    print(" forwarder has no HTTP codecs — the gateway's head parser, head bytes forwarded as they came, one write per direction)")
    added_p50 = (one_gw["p50_ms"] - one_direct["p50_ms"]) * 1000
    added_p99 = (one_gw["p99_ms"] - one_direct["p99_ms"]) * 1000
    nginx_p50 = (one_nginx["p50_ms"] - one_direct["p50_ms"]) * 1000
    nginx_p99 = (one_nginx["p99_ms"] - one_direct["p99_ms"]) * 1000
    print(f"\nadded latency at one connection over direct: gateway p50 {added_p50:.0f} µs, p99 {added_p99:.0f} µs; "
          f"nginx p50 {nginx_p50:.0f} µs, p99 {nginx_p99:.0f} µs")
    print(f"cache: hit path {results['hit']['rps'] / results['miss']['rps']:.2f}x the miss path")
    print(f"gateway peak RSS: {rss:.1f} MB")
    return {
        "direct_rps": round(direct_rps), "nginx_rps": round(nginx_rps), "pass_rps": round(results["pass"]["rps"]),
        "reference_rps": round(results["reference"]["rps"]),
        "nginx_cpu_us": round(results["nginx"]["cpu_us"], 1), "reference_cpu_us": round(results["reference"]["cpu_us"], 1),
        "pass_cpu_us": round(results["pass"]["cpu_us"], 1), "miss_cpu_us": round(results["miss"]["cpu_us"], 1),
        "hit_cpu_us": round(results["hit"]["cpu_us"], 1),
        "direct_p50_ms": results["direct"]["p50_ms"], "direct_p99_ms": results["direct"]["p99_ms"],
        "nginx_p50_ms": results["nginx"]["p50_ms"], "nginx_p99_ms": results["nginx"]["p99_ms"],
        "pass_p50_ms": results["pass"]["p50_ms"], "pass_p99_ms": results["pass"]["p99_ms"],
        "miss_rps": round(results["miss"]["rps"]), "miss_p50_ms": results["miss"]["p50_ms"], "miss_p99_ms": results["miss"]["p99_ms"],
        "hit_rps": round(results["hit"]["rps"]), "hit_p50_ms": results["hit"]["p50_ms"], "hit_p99_ms": results["hit"]["p99_ms"],
        "added_p50_us": round(added_p50), "added_p99_us": round(added_p99),
        "nginx_added_p50_us": round(nginx_p50), "nginx_added_p99_us": round(nginx_p99),
        "rss_mb": round(rss, 1),
        **({"raw_rps": round(results["raw"]["rps"]), "raw_cpu_us": round(results["raw"]["cpu_us"], 1)} if "raw" in results else {}),
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tollgate", required=True)
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--loops", type=int, default=2, help="gateway event loops = nginx proxy workers")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--streams", type=int, default=1000, help="concurrent streams of the second part (0 skips it)")
    ap.add_argument("--stream-ramp", type=float, default=1.0,
                    help="seconds over which the streams' requests start (each lasts longer, so all are in flight at once)")
    ap.add_argument("--article-seconds", type=int, default=30, help="length of each hey run of the third part (0 skips it)")
    ap.add_argument("--overload-seconds", type=float, default=20, help="length of the flood in the overload part")
    ap.add_argument("--parts", default="throughput,streams,article",
                    help="comma-separated parts to run: throughput (wrk table), streams, article, overload")
    args = ap.parse_args()
    parts = set(args.parts.split(","))
    if not parts <= {"throughput", "streams", "article", "overload"}:
        ap.error(f"unknown part in --parts: {args.parts}")
    if "streams" not in parts:
        args.streams = 0
    if "article" not in parts:
        args.article_seconds = 0
    # 1,000 streams need 2,000+ sockets in the gateway (client and upstream side) and in the client.
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))

    tmp = tempfile.mkdtemp(prefix="tollgate-bench-")
    procs = Procs()
    results = {}
    try:
        # 1. Canned upstream.
        up_port = free_port()
        canned = nginx_conf(tmp, "upstream", 1, f"""
    server {{
        listen 127.0.0.1:{up_port} backlog=4096;
        location / {{ default_type application/json; return 200 '{CANNED}'; }}
    }}""")
        procs.start(["nginx", "-p", tmp, "-c", canned, "-g", "daemon off;"])
        # 2. nginx reverse proxy, as the original set-up (keep-alive to the upstream added, as any tuned set-up has).
        px_port = free_port()
        proxy = nginx_conf(tmp, "proxy", args.loops, f"""
    server {{
        listen 127.0.0.1:{px_port} backlog=4096;
        client_max_body_size 10M;
        location / {{
            proxy_pass http://qwen;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_set_header Host $host;
            proxy_set_header X-Real-IP $remote_addr;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
        }}
    }}""", upstream=f"upstream qwen {{ server 127.0.0.1:{up_port} max_fails=3 fail_timeout=30s; keepalive 256; }}")
        nginx_proxy = procs.start(["nginx", "-p", tmp, "-c", proxy, "-g", "daemon off;"])
        # 2b. The bare SwiftNIO forwarder over the same upstream: what forwarding alone costs on SwiftNIO.
        ref_port = free_port()
        reference = procs.start([args.tollgate, "reference-proxy", "--port", str(ref_port), "--upstream-port", str(up_port),
                                 "--loops", str(args.loops)])
        # 2c. The forwarder without NIO's HTTP codecs (raw bytes, the gateway's head parser): the
        #     floor of a raw-bytes data plane (binaries before it had no --raw: the line is left out).
        raw_port, raw_ref = None, None
        help_text = subprocess.run([args.tollgate, "reference-proxy", "--help"], capture_output=True, text=True).stdout
        if "--raw" in help_text:
            raw_port = free_port()
            raw_ref = procs.start([args.tollgate, "reference-proxy", "--raw", "--port", str(raw_port), "--upstream-port", str(up_port),
                                   "--loops", str(args.loops)])
        # 3. Redis for the cache and the quota counters, on a private port.
        redis_port = free_port()
        procs.start(["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        # 4. The gateway: auth, weighted routing (four instances on two "GPUs", all the canned upstream),
        #    metering into its ledger, a token quota far above what the run uses, the cache.
        key_hash = subprocess.run([args.tollgate, "hash-key", KEY], capture_output=True, text=True, check=True).stdout.strip()
        gateway, gw_port = start_gateway(
            procs, args, tmp, "gateway", key_hash, [(f"i{i}", f"http://127.0.0.1:{up_port}", i % 2) for i in range(4)],
            top="health: {probe_interval: 5s}\n",
            department="""    quota: {tokens_per_month: 1000000000000}
    route:
      - {match: {gpu: "0"}, weight: 3}
      - {match: {}, weight: 1}
""", redis_port=redis_port)
        for port in (up_port, px_port, ref_port, redis_port, gw_port) + ((raw_port,) if raw_port else ()):
            wait_port(port)

        body = json.dumps({"model": MODEL, "temperature": 0.7, "messages": [{"role": "user", "content": "Hello, who are you?"}]})
        plain = wrk_script(tmp, body, [])
        keyed = wrk_script(tmp, body, [("Authorization", f"Bearer {KEY}")])
        cacheable = json.dumps({"model": MODEL, "temperature": 0, "messages": [{"role": "user", "content": "What are your opening hours?"}]})
        hit_script = wrk_script(tmp, cacheable, [("Authorization", f"Bearer {KEY}")])
        miss_script = wrk_varying_script(tmp, [("Authorization", f"Bearer {KEY}")])
        if "throughput" in parts:
            # Warm-up: connections, caches, page faults.
            for url, script in ((f"http://127.0.0.1:{px_port}/v1/chat/completions", plain), (f"http://127.0.0.1:{gw_port}/v1/chat/completions", keyed)):
                run_wrk(url, script, args.connections, 2)

            c, d = args.connections, args.duration
            gw_pids = [gateway.pid]
            results["direct"] = run_wrk(f"http://127.0.0.1:{up_port}/v1/chat/completions", plain, c, d)
            results["nginx"] = run_wrk(f"http://127.0.0.1:{px_port}/v1/chat/completions", plain, c, d,
                                       measure=process_tree(nginx_proxy.pid))
            run_wrk(f"http://127.0.0.1:{ref_port}/v1/chat/completions", plain, c, 2)  # its upstream connections
            results["reference"] = run_wrk(f"http://127.0.0.1:{ref_port}/v1/chat/completions", plain, c, d, measure=[reference.pid])
            if raw_port:
                run_wrk(f"http://127.0.0.1:{raw_port}/v1/chat/completions", plain, c, 2)  # its upstream connections
                results["raw"] = run_wrk(f"http://127.0.0.1:{raw_port}/v1/chat/completions", plain, c, d, measure=[raw_ref.pid])
            # Each gateway part starts once the ledger has written the rows of the one before.
            settle(gw_pids)
            results["pass"] = run_wrk(f"http://127.0.0.1:{gw_port}/v1/chat/completions", keyed, c, d, measure=gw_pids)
            settle(gw_pids)
            results["miss"] = run_wrk(f"http://127.0.0.1:{gw_port}/v1/chat/completions", miss_script, c, d, measure=gw_pids)
            run_wrk(f"http://127.0.0.1:{gw_port}/v1/chat/completions", hit_script, 1, 1)  # store the entry
            settle(gw_pids)
            results["hit"] = run_wrk(f"http://127.0.0.1:{gw_port}/v1/chat/completions", hit_script, c, d, measure=gw_pids)
            one_direct = run_wrk(f"http://127.0.0.1:{up_port}/v1/chat/completions", plain, 1, d)
            one_nginx = run_wrk(f"http://127.0.0.1:{px_port}/v1/chat/completions", plain, 1, d)
            settle(gw_pids)
            one_gw = run_wrk(f"http://127.0.0.1:{gw_port}/v1/chat/completions", keyed, 1, d)
            rss = rss_mb(gateway.pid)

        # Part 2: concurrent streams at 50 tokens/s through a simulated instance: added TTFT, RSS.
        streams = {}
        if args.streams > 0:
            sim_port = free_port()
            # Every stream lasts longer than the ramp, so all of them are in flight at once at its end.
            stream_tokens = max(10, int((args.stream_ramp + 0.2) * 50))
            sim = procs.start([args.tollgate, "sim", "--instances", "1", "--base-port", str(sim_port), "--ttft-ms", "100",
                               "--tokens-per-second", "50", "--capacity", "0", "--default-tokens", str(stream_tokens)])
            st_gw, st_port = start_gateway(procs, args, tmp, "streams", key_hash, [("s", f"http://127.0.0.1:{sim_port}", None)])
            # The same streams through nginx (proxy_buffering off, as SSE needs) and the bare
            # SwiftNIO forwarder: what any proxy adds on this machine under this load.
            sn_port, sr_port = free_port(), free_port()
            sconf = nginx_conf(tmp, "streamproxy", args.loops, f"""
    server {{
        listen 127.0.0.1:{sn_port} backlog=4096;
        location / {{
            proxy_pass http://sim;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
        }}
    }}""", upstream=f"upstream sim {{ server 127.0.0.1:{sim_port}; keepalive 256; }}")
            stream_nginx = procs.start(["nginx", "-p", tmp, "-c", sconf, "-g", "daemon off;"])
            stream_ref = procs.start([args.tollgate, "reference-proxy", "--port", str(sr_port), "--upstream-port", str(sim_port),
                                      "--loops", str(args.loops)])
            for port in (sim_port, st_port, sn_port, sr_port):
                wait_port(port)
            sbody = json.dumps({"model": MODEL, "stream": True, "temperature": 0.7, "messages": [{"role": "user", "content": "Tell me a story"}]}).encode()
            keyed_headers = [("Authorization", f"Bearer {KEY}")]
            targets = (("direct", sim_port, []), ("nginx", sn_port, []), ("reference", sr_port, []), ("gateway", st_port, keyed_headers))
            for _, port, headers in targets:
                stream_ttfts(port, headers, 50, sbody, 0.1)  # warm-up
            streams = {"n": args.streams, "tokens": stream_tokens, "paths": {}}
            for name, port, headers in targets:
                times, peak = stream_ttfts(port, headers, args.streams, sbody, args.stream_ramp)
                streams["paths"][name] = {"ok": len(times), "peak": peak, "p50_ms": pct(times, 50) * 1000, "p99_ms": pct(times, 99) * 1000}
            streams["rss_mb"] = rss_mb(st_gw.pid)
            stream_nginx.terminate()
            stream_ref.terminate()
            sim.terminate()
            st_gw.terminate()

        # Part 3: the original article's experiment: hey -c 100 against one simulated instance with
        # realistic latency and capacity (about 48 req/s), and against eight behind the gateway.
        article = {}
        if args.article_seconds > 0:
            base = free_port()
            while any(not _port_free(base + i) for i in range(8)):
                base = free_port()
            fleet = procs.start([args.tollgate, "sim", "--instances", "8", "--base-port", str(base), "--gpus", "4",
                                 "--ttft-ms", "90", "--tokens-per-second", "50", "--capacity", "12", "--default-tokens", "8"])
            ar_gw, ar_port = start_gateway(
                procs, args, tmp, "article", key_hash, [(f"qwen-{i}", f"http://127.0.0.1:{base + i}", i % 4) for i in range(8)],
                pool="    policy: least_in_flight\n")
            for i in range(8):
                wait_port(base + i)
            wait_port(ar_port)
            abody = json.dumps({"model": MODEL, "temperature": 0.7, "messages": [{"role": "user", "content": "Hello"}]})
            one = run_hey(f"http://127.0.0.1:{base}/v1/chat/completions", args.article_seconds, 100, [], abody)
            eight = run_hey(f"http://127.0.0.1:{ar_port}/v1/chat/completions", args.article_seconds, 100,
                            [("Authorization", f"Bearer {KEY}")], abody)
            article = {"one": one, "eight": eight}
            fleet.terminate()
            ar_gw.terminate()

        # Part 4: overload (README "When the GPUs are full").
        overload = {}
        if "overload" in parts:
            batch_hash = subprocess.run([args.tollgate, "hash-key", BATCH_KEY], capture_output=True, text=True, check=True).stdout.strip()
            overload = overload_part(args, procs, tmp, (key_hash, batch_hash))
    finally:
        procs.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)

    summary = {}
    if results:
        summary.update(throughput_table(args, results, one_direct, one_nginx, one_gw, rss))
    if streams:
        paths = streams["paths"]
        direct = paths["direct"]
        print(f"\n{streams['n']} streams at 50 tokens/s ({streams['tokens']} tokens each, simulated TTFT 100 ms), one connection each "
              f"opened beforehand, requests started evenly over {args.stream_ramp:g} s; time to first token from the request's write:")
        print(f"{'path':<36}{'p50 ms':>9}{'p99 ms':>9}{'added p50':>11}{'added p99':>11}{'completed':>11}{'peak':>7}")
        labels = {"direct": "direct to the instance", "nginx": "nginx (proxy_buffering off)",
                  "reference": "bare SwiftNIO forwarder (reference)", "gateway": "gateway"}
        for name in ("direct", "nginx", "reference", "gateway"):
            r = paths[name]
            print(f"{labels[name]:<36}{r['p50_ms']:>9.1f}{r['p99_ms']:>9.1f}{r['p50_ms'] - direct['p50_ms']:>11.1f}"
                  f"{r['p99_ms'] - direct['p99_ms']:>11.1f}{r['ok']:>7}/{streams['n']:<3}{r['peak']:>7}")
        print(f"gateway RSS after the streams: {streams['rss_mb']:.1f} MB")
        gw = paths["gateway"]
        summary.update({"stream_added_ttft_p50_ms": round(gw["p50_ms"] - direct["p50_ms"], 2),
                        "stream_added_ttft_p99_ms": round(gw["p99_ms"] - direct["p99_ms"], 2),
                        "stream_nginx_added_ttft_p99_ms": round(paths["nginx"]["p99_ms"] - direct["p99_ms"], 2),
                        "stream_reference_added_ttft_p99_ms": round(paths["reference"]["p99_ms"] - direct["p99_ms"], 2),
                        "stream_rss_mb": round(streams["rss_mb"], 1), "streams_completed": gw["ok"],
                        "streams_peak_in_flight": gw["peak"]})
    if article:
        one, eight = article["one"], article["eight"]
        print(f"\nThe original article's experiment (hey -c 100, {args.article_seconds} s; simulated instances of ~48 req/s):")
        print(f"{'':34}{'req/s':>9}{'success':>10}{'mean s':>9}   article (4090D GPUs)")
        print(f"{'one instance':34}{one['rps']:>9.0f}{one['success'] * 100:>9.1f}%{one['mean_s']:>9.2f}   48 req/s, 92.3%, 1.78 s")
        print(f"{'eight behind the gateway':34}{eight['rps']:>9.0f}{eight['success'] * 100:>9.1f}%{eight['mean_s']:>9.2f}   372 req/s, 99.8%, 1.62 s")
        print(f"{'ratio':34}{eight['rps'] / one['rps']:>9.2f}x")
        summary.update({"seed_one_rps": round(one["rps"], 1), "seed_one_success": round(one["success"], 4),
                        "seed_eight_rps": round(eight["rps"], 1), "seed_eight_success": round(eight["success"], 4),
                        "seed_ratio": round(eight["rps"] / one["rps"], 2)})
    if overload:
        summary.update(print_overload(overload))
    if args.json:
        print(json.dumps(summary))


if __name__ == "__main__":
    sys.exit(main())
