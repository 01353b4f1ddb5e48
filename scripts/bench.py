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
import json
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
        "local salt = tostring(math.random(1, 1000000000))",
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


def run_wrk(url, script, connections, duration, threads=1):
    out = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--latency", "-s", script, url],
        capture_output=True, text=True, check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    pct = {}
    for p, v, u in re.findall(r"^\s+(\d+)%\s+([\d.]+)(us|ms|s|m)\s*$", out, re.M):
        pct[int(p)] = to_ms(v, u)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: (.*)", out)
    return {"rps": rps, "p50_ms": pct.get(50), "p99_ms": pct.get(99),
            "non2xx": int(errors.group(1)) if errors else 0, "socket_errors": sock.group(1) if sock else None}


def rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tollgate", required=True)
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--loops", type=int, default=2, help="gateway event loops = nginx proxy workers")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

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
        procs.start(["nginx", "-p", tmp, "-c", proxy, "-g", "daemon off;"])
        # 3. Redis for the cache and the quota counters, on a private port.
        redis_port = free_port()
        procs.start(["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        # 4. The gateway: auth, weighted routing (four instances on two "GPUs", all the canned upstream),
        #    metering into its ledger, a token quota far above what the run uses, the cache.
        gw_port, admin_port = free_port(), free_port()
        key_hash = subprocess.run([args.tollgate, "hash-key", KEY], capture_output=True, text=True, check=True).stdout.strip()
        gw_dir = os.path.join(tmp, "gateway")
        os.makedirs(gw_dir)
        instances = "\n".join(
            f'      - {{name: i{i}, url: "http://127.0.0.1:{up_port}", labels: {{gpu: "{i % 2}"}}}}' for i in range(4))
        with open(os.path.join(gw_dir, "gateway.yaml"), "w") as f:
            f.write(f"""listen: {{host: 127.0.0.1, port: {gw_port}}}
admin: {{host: 127.0.0.1, port: {admin_port}}}
event_loops: {args.loops}
health: {{probe_interval: 5s}}
pools:
  - name: qwen
    models: [{MODEL}]
    instances:
{instances}
departments:
  - name: bench
    keys: [{{sha256: {key_hash}}}]
    quota: {{tokens_per_month: 1000000000000}}
    route:
      - {{match: {{gpu: "0"}}, weight: 3}}
      - {{match: {{}}, weight: 1}}
""")
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        gateway = procs.start([args.tollgate, "serve", "--config", gw_dir, "--log-level", "warning",
                               "--database", os.path.join(tmp, "ledger.sqlite"), "--migrations", os.path.join(root, "migrations"),
                               "--redis", f"redis://127.0.0.1:{redis_port}"])
        for port in (up_port, px_port, redis_port, gw_port):
            wait_port(port)

        body = json.dumps({"model": MODEL, "temperature": 0.7, "messages": [{"role": "user", "content": "Hello, who are you?"}]})
        plain = wrk_script(tmp, body, [])
        keyed = wrk_script(tmp, body, [("Authorization", f"Bearer {KEY}")])
        cacheable = json.dumps({"model": MODEL, "temperature": 0, "messages": [{"role": "user", "content": "What are your opening hours?"}]})
        hit_script = wrk_script(tmp, cacheable, [("Authorization", f"Bearer {KEY}")])
        miss_script = wrk_varying_script(tmp, [("Authorization", f"Bearer {KEY}")])
        # Warm-up: connections, caches, page faults.
        for url, script in ((f"http://127.0.0.1:{px_port}/v1/chat/completions", plain), (f"http://127.0.0.1:{gw_port}/v1/chat/completions", keyed)):
            run_wrk(url, script, args.connections, 2)

        c, d = args.connections, args.duration
        results["direct"] = run_wrk(f"http://127.0.0.1:{up_port}/v1/chat/completions", plain, c, d)
        results["nginx"] = run_wrk(f"http://127.0.0.1:{px_port}/v1/chat/completions", plain, c, d)
        results["pass"] = run_wrk(f"http://127.0.0.1:{gw_port}/v1/chat/completions", keyed, c, d)
        results["miss"] = run_wrk(f"http://127.0.0.1:{gw_port}/v1/chat/completions", miss_script, c, d)
        run_wrk(f"http://127.0.0.1:{gw_port}/v1/chat/completions", hit_script, 1, 1)  # store the entry
        results["hit"] = run_wrk(f"http://127.0.0.1:{gw_port}/v1/chat/completions", hit_script, c, d)
        one_direct = run_wrk(f"http://127.0.0.1:{up_port}/v1/chat/completions", plain, 1, d)
        one_nginx = run_wrk(f"http://127.0.0.1:{px_port}/v1/chat/completions", plain, 1, d)
        one_gw = run_wrk(f"http://127.0.0.1:{gw_port}/v1/chat/completions", keyed, 1, d)
        rss = rss_mb(gateway.pid)
    finally:
        procs.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)

    nginx_rps, direct_rps = results["nginx"]["rps"], results["direct"]["rps"]
    print(f"\nwrk -t1 -c{args.connections} -d{args.duration}s, one POST /v1/chat/completions body; "
          f"gateway with {args.loops} event loops, nginx proxy with {args.loops} workers\n")
    print(f"{'path':<34}{'req/s':>10}{'× nginx':>9}{'× direct':>10}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}")
    names = {"direct": "direct to the upstream", "nginx": "nginx reverse proxy", "pass": "gateway pass-through (T=0.7)",
             "miss": "gateway cache miss (all different)", "hit": "gateway cache hit"}
    for k in ("direct", "nginx", "pass", "miss", "hit"):
        r = results[k]
        print(f"{names[k]:<34}{r['rps']:>10.0f}{r['rps'] / nginx_rps:>9.2f}{r['rps'] / direct_rps:>10.2f}"
              f"{r['p50_ms']:>9.3f}{r['p99_ms']:>9.3f}{r['non2xx']:>8}")
    added_p50 = (one_gw["p50_ms"] - one_direct["p50_ms"]) * 1000
    added_p99 = (one_gw["p99_ms"] - one_direct["p99_ms"]) * 1000
    nginx_p50 = (one_nginx["p50_ms"] - one_direct["p50_ms"]) * 1000
    nginx_p99 = (one_nginx["p99_ms"] - one_direct["p99_ms"]) * 1000
    print(f"\nadded latency at one connection over direct: gateway p50 {added_p50:.0f} µs, p99 {added_p99:.0f} µs; "
          f"nginx p50 {nginx_p50:.0f} µs, p99 {nginx_p99:.0f} µs")
    print(f"cache: hit path {results['hit']['rps'] / results['miss']['rps']:.2f}x the miss path")
    print(f"gateway peak RSS: {rss:.1f} MB")
    summary = {
        "direct_rps": round(direct_rps), "nginx_rps": round(nginx_rps), "pass_rps": round(results["pass"]["rps"]),
        "direct_p50_ms": results["direct"]["p50_ms"], "direct_p99_ms": results["direct"]["p99_ms"],
        "nginx_p50_ms": results["nginx"]["p50_ms"], "nginx_p99_ms": results["nginx"]["p99_ms"],
        "pass_p50_ms": results["pass"]["p50_ms"], "pass_p99_ms": results["pass"]["p99_ms"],
        "miss_rps": round(results["miss"]["rps"]), "miss_p50_ms": results["miss"]["p50_ms"], "miss_p99_ms": results["miss"]["p99_ms"],
        "hit_rps": round(results["hit"]["rps"]), "hit_p50_ms": results["hit"]["p50_ms"], "hit_p99_ms": results["hit"]["p99_ms"],
        "added_p50_us": round(added_p50), "added_p99_us": round(added_p99),
        "nginx_added_p50_us": round(nginx_p50), "nginx_added_p99_us": round(nginx_p99),
        "rss_mb": round(rss, 1),
    }
    if args.json:
        print(json.dumps(summary))


if __name__ == "__main__":
    sys.exit(main())
