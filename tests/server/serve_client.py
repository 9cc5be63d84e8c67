#!/usr/bin/env python3
"""serve_client.py - the HTTP client of the server tests (Python stdlib only: http.client, json, base64).

  serve_client.py post   PORT BODY OUTDIR [KEY]  POST /v1/images/generations; writes image j as
                                                 OUTDIR/NNNN_cC.png, or NNNN.png for a text prompt (generate's
                                                 names); prints the scalekv object
  serve_client.py stream PORT BODY OUTDIR        the same with "stream": true: checks one partial_image event per
                                                 scale but the last for every image, in scale order, then one
                                                 completed event per image; writes the completed PNGs
  serve_client.py drop   PORT BODY               starts a streamed request and closes the connection after the
                                                 first partial_image event (a client that goes away mid-stream)
  serve_client.py metric PORT NAME               prints the value of one /metrics sample (e.g.
                                                 'scalekv_kv_bytes_used{replica="0"}'); 0 when absent
  serve_client.py halfclose PORT BODY OUTDIR     sends the request, then shuts down its sending side (FIN) and
                                                 reads the answer with http.client's parser (1xx skipped): must
                                                 be 200 with the images (a stream when BODY says so); writes them
  serve_client.py close PORT BODY                sends the request, then closes the socket (FIN, nothing unread):
                                                 a client that gives up while its request waits
  serve_client.py stall PORT BODY GOFILE         a client that stops reading: tiny receive buffer and MSS, sends a
                                                 streamed request and reads nothing until GOFILE exists; then the
                                                 server must have ended the connection (reset, or EOF) before the
                                                 stream completed
Every call sends 'Authorization: Bearer $SKV_API_KEY' when that variable is set (post: or KEY).
Exit 1 with a message on any unexpected answer.
"""
import base64
import http.client
import json
import os
import socket
import sys


def fail(msg):
    print(f"FAIL: {msg}", file=sys.stderr)
    sys.exit(1)


def auth():
    key = os.environ.get("SKV_API_KEY")
    return {"Authorization": f"Bearer {key}"} if key else {}


def conn(port, timeout=120):
    return http.client.HTTPConnection("127.0.0.1", int(port), timeout=timeout)


def write_images(outdir, images, labels):
    """Image j as generate names it: NNNN_cC.png for VAR class labels, NNNN.png for Infinity (labels None)."""
    os.makedirs(outdir, exist_ok=True)
    for j, b64 in enumerate(images):
        name = f"{j:04d}.png" if labels is None else f"{j:04d}_c{labels[j]}.png"
        with open(os.path.join(outdir, name), "wb") as f:
            f.write(base64.b64decode(b64))


def post(port, body, outdir, key=None):
    c = conn(port)
    headers = {"Content-Type": "application/json", **auth()}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    c.request("POST", "/v1/images/generations", body=body, headers=headers)
    r = c.getresponse()
    data = r.read()
    if r.status != 200:
        fail(f"POST {body} -> {r.status} {data[:300]!r}")
    d = json.loads(data)
    s = d["scalekv"]
    labels = s.get("class_labels")  # absent for Infinity (a text prompt)
    if labels is not None and len(d["data"]) != len(labels):
        fail(f"{len(d['data'])} images for {len(labels)} labels")
    write_images(outdir, [x["b64_json"] for x in d["data"]], labels)
    print(json.dumps(s))


def events(resp):
    """Yields (event, data) of a text/event-stream response."""
    name, data = None, []
    while True:
        line = resp.readline()
        if not line:
            return
        line = line.decode().rstrip("\n")
        if line == "":
            if name is not None or data:
                yield name, "\n".join(data)
            name, data = None, []
        elif line.startswith("event: "):
            name = line[7:]
        elif line.startswith("data: "):
            data.append(line[6:])


def start_stream(port, body):
    b = json.loads(body)
    b["stream"] = True
    c = conn(port)
    c.connect()
    c.raw_sock = c.sock  # the response takes the socket over (Connection: close): keep it to drop it
    c.request("POST", "/v1/images/generations", body=json.dumps(b), headers={"Content-Type": "application/json", **auth()})
    r = c.getresponse()
    if r.status != 200 or not r.getheader("Content-Type", "").startswith("text/event-stream"):
        fail(f"stream -> {r.status} {r.getheader('Content-Type')} {r.read()[:300]!r}")
    return c, r


def stream(port, body, outdir):
    c, r = start_stream(port, body)
    partial = {}  # image index -> scales seen
    done = {}
    for name, data in events(r):
        d = json.loads(data)
        if name == "image_generation.partial_image":
            j = d["image_index"]
            seen = partial.setdefault(j, [])
            if d["scale"] != len(seen) or d["scales_done"] != d["scale"] + 1:
                fail(f"image {j}: partial event for scale {d['scale']} after {len(seen)} scales")
            if not (0 < d["tokens_done"] < d["tokens_total"]):
                fail(f"tokens_done {d['tokens_done']} of {d['tokens_total']}")
            base64.b64decode(d["b64_json"])
            seen.append(d["scale"])
            num_scales = d["num_scales"]
        elif name == "image_generation.completed":
            done[d["image_index"]] = d
        else:
            fail(f"unexpected event {name}: {data[:300]}")
    if not done:
        fail("no completed event")
    n = len(done)
    for j in range(n):
        if len(partial.get(j, [])) != num_scales - 1:
            fail(f"image {j}: {len(partial.get(j, []))} previews for {num_scales} scales (want one per scale but the last)")
    labels = done[0]["scalekv"].get("class_labels")
    write_images(outdir, [done[j]["b64_json"] for j in range(n)], labels)
    print(json.dumps({"images": n, "previews_per_image": num_scales - 1, "scalekv": done[0]["scalekv"]}))


def drop(port, body):
    c, r = start_stream(port, body)
    for name, _ in events(r):
        if name == "image_generation.partial_image":
            c.raw_sock.shutdown(socket.SHUT_RDWR)  # gone, mid-stream
            c.raw_sock.close()
            print("dropped after the first preview")
            return
    fail("the stream ended before its first preview")


def metric(port, name):
    c = conn(port, 10)
    c.request("GET", "/metrics", headers=auth())
    text = c.getresponse().read().decode()
    for line in text.splitlines():
        if line.startswith(name + " "):
            print(line.split()[-1])
            return
    print(0)


def raw_request(port, body, sock=None):
    s = sock or socket.socket()
    s.settimeout(120)
    s.connect(("127.0.0.1", int(port)))
    b = body.encode()
    head = (f"POST /v1/images/generations HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(b)}\r\n")
    for k, v in auth().items():
        head += f"{k}: {v}\r\n"
    s.sendall(head.encode() + b"\r\n" + b)
    return s


def halfclose(port, body, outdir):
    s = raw_request(port, body)
    s.shutdown(socket.SHUT_WR)  # FIN: done sending, still reading
    r = http.client.HTTPResponse(s, method="POST")
    r.begin()  # skips interim 1xx responses (the server's probe after our FIN)
    if r.status != 200:
        fail(f"half-closed client: {r.status} {r.read()[:300]!r}")
    if json.loads(body).get("stream"):
        done = {}
        previews = 0
        for name, data in events(r):
            d = json.loads(data)
            if name == "image_generation.completed":
                done[d["image_index"]] = d
            elif name == "image_generation.partial_image":
                previews += 1
            else:
                fail(f"half-closed client: unexpected event {name}: {data[:300]}")
        if not done:
            fail("half-closed client: the stream has no completed event")
        write_images(outdir, [done[j]["b64_json"] for j in range(len(done))], done[0]["scalekv"]["class_labels"])
        print(f"half-closed stream: {len(done)} images, {previews} previews")
    else:
        d = json.loads(r.read())
        write_images(outdir, [x["b64_json"] for x in d["data"]], d["scalekv"]["class_labels"])
        print(f"half-closed client: 200 with {len(d['data'])} images")


def close(port, body):
    raw_request(port, body).close()


def stall(port, body, gofile):
    import time
    b = json.loads(body)
    b["stream"] = True
    s = socket.socket()
    # Before connecting: a small receive window and a small MSS (the server's send buffer is sized from
    # the MSS: tens of KB instead of MBs on loopback), so the server's writes stall soon.
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 536)
    raw_request(port, json.dumps(b), s)
    print("stall: request sent; not reading", flush=True)
    t0 = time.time()
    while not os.path.exists(gofile):
        if time.time() - t0 > 120:
            fail("stall: no go-ahead within 120 s")
        time.sleep(0.1)
    s.settimeout(30)  # a connection the server still holds would deliver the whole stream (or block)
    got = b""
    how = "EOF"
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            got += chunk
    except ConnectionResetError:
        how = "reset"
    except socket.timeout:
        fail(f"stall: the connection is still open ({len(got)} bytes read in 30 s)")
    if b"image_generation.completed" in got:
        fail(f"stall: the server kept the connection and completed the stream ({len(got)} bytes)")
    print(f"stall: the server ended the connection ({how} after {len(got)} bytes)")


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    {"post": post, "stream": stream, "drop": drop, "metric": metric, "halfclose": halfclose, "close": close,
     "stall": stall}[cmd](*args)
