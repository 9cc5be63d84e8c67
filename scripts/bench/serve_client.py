#!/usr/bin/env python3
"""serve_client.py - an open-loop Poisson load client for `scalekv serve` (scripts/bench/serve.sh runs it).

  serve_client.py --url http://127.0.0.1:PORT --rate 20 --requests 200 [--seed 1] [--labels 0-9]
                  [--timeout 600] [--json OUT.json] [--tag KEY=VALUE ...]

Open loop: the arrival times are drawn up front (exponential gaps of mean 1/rate, seeded, the first at 0)
and each POST /v1/images/generations {"class_label": L, "seed": S} is sent at its arrival time whether or
not the earlier ones have been answered: one thread per request, started by a dispatcher that sleeps until
the next arrival. So a slow server makes requests pile up (queue time grows) instead of slowing the
arrivals down, which is what a closed-loop client hides. Each request gets its own connection.

Why our own client: `hey` is closed-loop (a fixed number of workers, each sending its next request when its
previous one is answered: fixed concurrency, not Poisson arrivals), so it cannot show latency against
offered load. `aiperf` targets LLM token APIs (chat/completions, tokens/s, time to first token) and would
be a pip install in CI; this file needs the Python standard library only (http.client, threading), so the
benchmark has no dependency beyond the server itself.

Per request it records the scheduled and actual send time (seconds after the first), the HTTP status,
the client-measured latency (send to the whole body read) and, for a 200, the answer's `scalekv` fields
(seconds, queue_seconds, kv_peak_bytes, max_batch). A 429 counts as rejected, not as a latency; other 4xx,
5xx and transport errors (timeouts, resets) are counted apart. At the end it scrapes GET /metrics for
scalekv_kv_bytes_peak / scalekv_kv_bytes_capacity (replica 0) and a few counters. While it runs it also
samples /metrics every --poll seconds (scalekv_requests_running / _waiting) as a cross-check.

The JSON summary (stdout, and --json): images_per_s = images answered / (last answer - first send);
latency_p50_s / latency_p99_s (client-measured, 2xx only); queue_p50_s / queue_p99_s (scalekv.queue_seconds);
server_seconds_p50_s (scalekv.seconds, arrival at the server to the final image); max_batch (the most
requests one answer shared a scale step with: the engine's concurrency, exact); client_in_flight_max (the
most requests sent and not yet answered: queued ones included); max_in_flight = the larger of the two;
status counts; kv_peak_bytes / kv_cap_bytes from /metrics. Percentiles interpolate linearly between closest
ranks (numpy's default, as `scalekv bench serve` does). Exit status 0 when every request got an answer
(any status), 1 when a transport error happened, 2 on bad arguments.
"""
import argparse
import http.client
import json
import os
import random
import re
import sys
import threading
import time
import urllib.parse


def percentile(values, p):
    """Linear interpolation between closest ranks (numpy's default); None for no values."""
    if not values:
        return None
    v = sorted(values)
    pos = (len(v) - 1) * p / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (pos - lo)


def parse_labels(text):
    """'0-9' -> [0..9]; '1,3,5' -> [1,3,5]; '0-4,7' -> [0..4, 7]."""
    out = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        if "-" in part:
            a, b = part.split("-", 1)
            out += list(range(int(a), int(b) + 1))
        else:
            out.append(int(part))
    if not out:
        raise ValueError(f"--labels '{text}' names no label")
    return out


def parse_metrics(text):
    """Prometheus text -> {name{labels}: value} for the samples (comments skipped)."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.match(r"^(\S+?(?:\{[^}]*\})?)\s+(\S+)", line)
        if m:
            try:
                out[m.group(1)] = float(m.group(2))
            except ValueError:
                pass
    return out


class Client:
    def __init__(self, args):
        u = urllib.parse.urlparse(args.url)
        if u.scheme != "http" or not u.hostname:
            raise ValueError(f"--url '{args.url}': give http://HOST:PORT")
        self.host, self.port = u.hostname, u.port or 80
        self.timeout = args.timeout
        self.lock = threading.Lock()
        self.in_flight = 0
        self.in_flight_max = 0
        self.records = []
        self.t0 = None

    def get(self, path, timeout=10):
        conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        try:
            conn.request("GET", path)
            r = conn.getresponse()
            return r.status, r.read().decode("utf-8", "replace")
        finally:
            conn.close()

    def one(self, i, scheduled, label, seed):
        rec = {"i": i, "label": label, "seed": seed, "scheduled_s": scheduled}
        body = json.dumps({"class_label": label, "seed": seed})
        conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        with self.lock:
            self.in_flight += 1
            self.in_flight_max = max(self.in_flight_max, self.in_flight)
        sent = time.perf_counter()
        rec["sent_s"] = sent - self.t0
        try:
            conn.request("POST", "/v1/images/generations", body=body,
                         headers={"Content-Type": "application/json", "Connection": "close"})
            r = conn.getresponse()
            data = r.read()
            done = time.perf_counter()
            rec["status"] = r.status
            rec["latency_s"] = done - sent
            rec["done_s"] = done - self.t0
            try:
                j = json.loads(data)
            except ValueError:
                j = None
                rec["error"] = f"the answer is not JSON ({len(data)} bytes)"
            if r.status == 200 and isinstance(j, dict):
                rec["images"] = len(j.get("data") or [])
                rec["scalekv"] = {k: v for k, v in (j.get("scalekv") or {}).items()
                                  if k in ("seconds", "queue_seconds", "kv_peak_bytes", "kv_planned_peak_bytes",
                                           "max_batch", "id", "policy", "budget", "width", "height")}
                if not rec["images"] or not (j["data"][0] or {}).get("b64_json"):
                    rec["error"] = "a 200 without data[0].b64_json"
            elif isinstance(j, dict) and isinstance(j.get("error"), dict):
                rec["error"] = str(j["error"].get("message", ""))[:300]
        except Exception as e:  # timeouts, resets, refused connections: counted as transport errors
            done = time.perf_counter()
            rec["status"] = None
            rec["done_s"] = done - self.t0
            rec["error"] = f"{type(e).__name__}: {e}"
        finally:
            conn.close()
            with self.lock:
                self.in_flight -= 1
                self.records.append(rec)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", required=True, help="the server, http://HOST:PORT")
    ap.add_argument("--rate", type=float, required=True, help="mean arrivals per second (Poisson)")
    g = ap.add_mutually_exclusive_group(required=True)
    g.add_argument("--requests", type=int, help="how many requests")
    g.add_argument("--duration", type=float, help="send arrivals for this many seconds")
    ap.add_argument("--seed", type=int, default=1, help="seeds the arrival times; request i gets seed SEED+i")
    ap.add_argument("--labels", default="0-9", help="class labels, cycled over the requests (0-9, 1,3,5)")
    ap.add_argument("--timeout", type=float, default=600, help="socket timeout per request, seconds")
    ap.add_argument("--poll", type=float, default=0.25, help="sample /metrics every this many seconds (0: never)")
    ap.add_argument("--json", help="also write the summary here")
    ap.add_argument("--records", action="store_true", help="keep every request's record in the JSON")
    ap.add_argument("--tag", action="append", default=[], help="KEY=VALUE copied into the summary (repeatable)")
    args = ap.parse_args()
    try:
        if args.rate <= 0:
            raise ValueError("--rate must be > 0 (open loop needs arrivals)")
        labels = parse_labels(args.labels)
        client = Client(args)
    except ValueError as e:
        print(f"serve_client.py: {e}", file=sys.stderr)
        return 2

    rng = random.Random(args.seed)
    arrivals, t = [], 0.0
    while True:
        if args.requests is not None and len(arrivals) >= args.requests:
            break
        if args.duration is not None and t >= args.duration:
            break
        arrivals.append(t)
        t += rng.expovariate(args.rate)

    polled = {"running_max": 0, "waiting_max": 0, "samples": 0}
    stop_poll = threading.Event()

    def poll():
        while not stop_poll.wait(args.poll):
            try:
                st, text = client.get("/metrics", timeout=5)
            except Exception:
                continue
            if st != 200:
                continue
            m = parse_metrics(text)
            polled["samples"] += 1
            polled["running_max"] = max(polled["running_max"], int(m.get('scalekv_requests_running{replica="0"}', 0)))
            polled["waiting_max"] = max(polled["waiting_max"], int(m.get('scalekv_requests_waiting{replica="0"}', 0)))

    threads = []
    client.t0 = time.perf_counter()
    poller = threading.Thread(target=poll, daemon=True) if args.poll > 0 else None
    if poller:
        poller.start()
    for i, at in enumerate(arrivals):
        delay = client.t0 + at - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        th = threading.Thread(target=client.one, args=(i, at, labels[i % len(labels)], args.seed + i), daemon=True)
        th.start()
        threads.append(th)
    for th in threads:
        th.join()
    stop_poll.set()
    if poller:
        poller.join()

    metrics = {}
    try:
        st, text = client.get("/metrics")
        if st == 200:
            metrics = parse_metrics(text)
    except Exception as e:
        print(f"serve_client.py: GET /metrics failed: {e}", file=sys.stderr)

    recs = sorted(client.records, key=lambda r: r["i"])
    ok = [r for r in recs if r.get("status") == 200]
    lat = [r["latency_s"] for r in ok]
    skv = [r.get("scalekv") or {} for r in ok]
    queue = [s["queue_seconds"] for s in skv if isinstance(s.get("queue_seconds"), (int, float))]
    server_s = [s["seconds"] for s in skv if isinstance(s.get("seconds"), (int, float))]
    batches = [s["max_batch"] for s in skv if isinstance(s.get("max_batch"), int)]
    images = sum(r.get("images", 0) for r in ok)
    first_send = min((r["sent_s"] for r in recs), default=0.0)
    last_done = max((r["done_s"] for r in ok), default=first_send)
    wall = last_done - first_send
    lateness = [r["sent_s"] - r["scheduled_s"] for r in recs]
    status = {}
    for r in recs:
        k = str(r.get("status")) if r.get("status") is not None else "transport_error"
        status[k] = status.get(k, 0) + 1
    count = lambda lo, hi: sum(1 for r in recs if r.get("status") is not None and lo <= r["status"] < hi)
    errors = {}
    for r in recs:
        if r.get("error"):
            errors[r["error"]] = errors.get(r["error"], 0) + 1
    max_batch = max(batches) if batches else None
    kv_peak = metrics.get('scalekv_kv_bytes_peak{replica="0"}')
    kv_cap = metrics.get('scalekv_kv_bytes_capacity{replica="0"}')
    out = {
        "url": args.url, "rate": args.rate, "requests": len(arrivals), "seed": args.seed, "labels": args.labels,
        "offered_seconds": arrivals[-1] if arrivals else 0.0,
        "completed": len(ok), "images": images, "rejected_429": status.get("429", 0),
        "status_2xx": count(200, 300), "status_4xx": count(400, 500), "status_5xx": count(500, 600),
        "transport_errors": status.get("transport_error", 0), "status": status, "errors": errors,
        "seconds": wall, "images_per_s": images / wall if wall > 0 else 0.0,
        "latency_p50_s": percentile(lat, 50), "latency_p99_s": percentile(lat, 99),
        "latency_mean_s": sum(lat) / len(lat) if lat else None, "latency_max_s": max(lat) if lat else None,
        "queue_p50_s": percentile(queue, 50), "queue_p99_s": percentile(queue, 99),
        "server_seconds_p50_s": percentile(server_s, 50), "server_seconds_p99_s": percentile(server_s, 99),
        "max_batch": max_batch, "max_batch_missing": len(ok) - len(batches),
        "client_in_flight_max": client.in_flight_max,
        "max_in_flight": max(max_batch or 0, client.in_flight_max),
        "polled_running_max": polled["running_max"], "polled_waiting_max": polled["waiting_max"],
        "polled_samples": polled["samples"],
        "send_lateness_p99_s": percentile(lateness, 99), "send_lateness_max_s": max(lateness) if lateness else None,
        "request_kv_peak_bytes_max": max((s.get("kv_peak_bytes", 0) for s in skv), default=None),
        "kv_peak_bytes": kv_peak, "kv_cap_bytes": kv_cap,
        "metrics": {k: v for k, v in metrics.items() if k.startswith("scalekv_") and "_bucket" not in k},
    }
    for t in args.tag:
        k, _, v = t.partition("=")
        out[k] = v
    if args.records:
        out["records"] = recs
    text = json.dumps(out, indent=1)
    if args.json:
        tmp = args.json + ".tmp"
        with open(tmp, "w") as f:
            f.write(text + "\n")
        os.replace(tmp, args.json)
    short = {k: out[k] for k in ("rate", "requests", "completed", "rejected_429", "status_5xx", "transport_errors",
                                 "images_per_s", "latency_p50_s", "latency_p99_s", "queue_p50_s", "max_batch",
                                 "client_in_flight_max", "kv_peak_bytes", "kv_cap_bytes")}
    print(json.dumps(short))
    return 1 if out["transport_errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
