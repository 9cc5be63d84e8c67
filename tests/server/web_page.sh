#!/usr/bin/env bash
# web_page.sh BUILD_DIR [infinity] - the web page of `scalekv serve` in a real headless browser: the server runs the
# demo model; Debian's chromium opens /?class_label=3&seed=5&kv_policy=scalekv&kv_budget=10%25&autorun=1,
# which prefills the form and generates at once, streaming a preview per scale. Checked: GET / is
# server/web/index.html byte for byte (the compiled-in copy is intact), the page showed at least one
# preview, its stats line names the policy and budget, and the final <img id="final"> holds a PNG within
# 1 level per pixel of `scalekv generate` with the same label, seed and policy. A screenshot of the page
# after the generation is kept as BUILD_DIR/test-artifacts/web_page.png.
# With `infinity`: a tiny Infinity model with the tiny T5 of scripts/make_t5_golden.py ($SKV_T5_GOLDEN); the
# page shows a prompt box, /?prompt=...&size=88x44&... types a prompt and picks a non-default size, and the
# final image equals `generate --t5 --prompt ... --h-div-w 0.5` (screenshot web_page_infinity.png).
#
# How the browser waits: `chromium --dump-dom --virtual-time-budget=N` dumps the DOM as soon as the
# page's load event has fired and virtual time has run out, and neither waits for a streaming fetch()
# (it dumps with the page still "queued"). So chromium runs with --remote-debugging-pipe and a small
# Chrome DevTools Protocol client in Python's standard library drives it: navigate, poll (wall clock,
# bounded) until img#final has data-done="1" or #error shows, then take the DOM and a screenshot.
# Exit 77 (ctest: skipped) where chromium is not installed.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BUILD=$(cd "${1:?usage: web_page.sh BUILD_DIR [infinity]}" && pwd)
MODE=${2:-var}
SKV=$BUILD/bin/scalekv
PNG_DIFF=$BUILD/bin/skv_png_diff

CHROMIUM=$(command -v chromium || command -v chromium-browser || true)
[ -n "$CHROMIUM" ] || { echo "SKIP: chromium is not installed (Debian: apt-get install chromium)"; exit 77; }
for b in python3 curl; do
  command -v "$b" > /dev/null || { echo "SKIP: $b is not installed"; exit 77; }
done
if [ ! -x "$SKV" ] || [ ! -x "$PNG_DIFF" ]; then
  echo "FAIL: $SKV or $PNG_DIFF is missing (build scalekv and skv_png_diff)"
  exit 1
fi

T=$(mktemp -d "${TMPDIR:-/tmp}/skv_web_XXXXXX")
SERVER_PID=
cleanup() {
  if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2> /dev/null; then
    kill "$SERVER_PID" 2> /dev/null || true
    for _ in $(seq 50); do kill -0 "$SERVER_PID" 2> /dev/null || break; sleep 0.1; done
    kill -9 "$SERVER_PID" 2> /dev/null || true
  fi
  rm -rf "$T"
}
trap cleanup EXIT
fail() {
  echo "FAIL: $*" >&2
  if [ -f "$T/serve.log" ]; then echo "--- server log:" >&2; tail -n 20 "$T/serve.log" >&2; fi
  exit 1
}

# What runs: the model, the page's query, the same image from the command line, the screenshot's name.
KV=(--kv-policy scalekv --kv-budget 10%)
if [ "$MODE" = infinity ]; then
  G=${SKV_T5_GOLDEN:-$BUILD/t5-golden}/sharded
  [ -f "$G/config.json" ] || fail "no tiny T5 at $G (ctest's t5_golden_make fixture writes it)"
  "$SKV" random-checkpoint --model "$ROOT/tests/t5/infinity-t5tiny.config.json" --out "$T/m" --seed 3 > /dev/null ||
    fail "random-checkpoint failed"
  MODEL=(--model "$T/m/infinity-t5tiny.config.json" --weights "$T/m/infinity-t5tiny.model.safetensors"
         --vae "$T/m/infinity-t5tiny.vae.safetensors" --t5 "$G")
  QUERY="prompt=a%20red%20fox%20in%20the%20snow&size=88x44&seed=5&kv_policy=scalekv&kv_budget=10%25&autorun=1"
  GEN=("${MODEL[@]}" --prompt "a red fox in the snow" --h-div-w 0.5 --seed 5 "${KV[@]}")
  SHOT=web_page_infinity.png
else
  MODEL=()  # the demo model
  QUERY="class_label=3&seed=5&kv_policy=scalekv&kv_budget=10%25&autorun=1"
  GEN=(--labels 3 --seed 5 "${KV[@]}")
  SHOT=web_page.png
fi

# The server on a free port; wait (bounded) for the port file, then for /ready.
"$SKV" serve "${MODEL[@]}" --port 0 --port-file "$T/port" --kv-memory 64MiB > "$T/serve.log" 2>&1 &
SERVER_PID=$!
# Every wait is bounded; together they stay under ctest's TIMEOUT (180 s). A normal run takes seconds.
SECONDS=0
until [ -s "$T/port" ]; do
  kill -0 "$SERVER_PID" 2> /dev/null || fail "the server exited before listening"
  [ "$SECONDS" -lt 20 ] || fail "no port file after 20 s"
  sleep 0.1
done
PORT=$(cat "$T/port")
BASE=http://127.0.0.1:$PORT
SECONDS=0
until [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$BASE/ready" || true)" = 200 ]; do
  kill -0 "$SERVER_PID" 2> /dev/null || fail "the server exited while warming up"
  [ "$SECONDS" -lt 30 ] || fail "GET /ready is not 200 after 30 s"
  sleep 0.1
done
echo "server ready on port $PORT"

# The page the server sends is the source file, byte for byte.
curl -sf --max-time 10 "$BASE/" -o "$T/served.html" || fail "GET / failed"
cmp -s "$T/served.html" "$ROOT/server/web/index.html" ||
  fail "GET / differs from server/web/index.html (rebuild, or the page has a CMake at-variable pattern)"

# The browser: run the page, wait for the final image, keep the DOM and a screenshot.
URL="$BASE/?$QUERY"
ARTIFACTS=$BUILD/test-artifacts
mkdir -p "$ARTIFACTS"
rm -f "$ARTIFACTS/$SHOT"
timeout 60 python3 - "$CHROMIUM" "$URL" "$T" "$ARTIFACTS/$SHOT" <<'PY' || fail "the browser run failed"
# A minimal Chrome DevTools Protocol client over --remote-debugging-pipe: chromium reads commands on its
# fd 3 and writes answers and events on its fd 4, each message JSON ending in a NUL byte.
import base64, fcntl, json, os, select, signal, subprocess, sys, time

chromium, url, work, shot = sys.argv[1:5]
DEADLINE = time.monotonic() + 50  # the whole browser run; the generation itself takes under a second
signal.signal(signal.SIGTERM, lambda *_: sys.exit("killed (SIGTERM): the browser run took too long"))

# Chromium's helpers outlive its main process briefly; as their subreaper we reap them (no zombies).
try:
    import ctypes
    ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
except (OSError, AttributeError):
    pass

to_r, to_w = os.pipe()      # commands: we write, chromium reads on fd 3
from_r, from_w = os.pipe()  # answers: chromium writes on fd 4, we read

def child_fds():  # in the child, before exec: its pipe ends onto fds 3 and 4 (via fds >= 10: no overlap)
    a, b = fcntl.fcntl(to_r, fcntl.F_DUPFD, 10), fcntl.fcntl(from_w, fcntl.F_DUPFD, 10)
    os.dup2(a, 3)
    os.dup2(b, 4)

log = open(os.path.join(work, "chromium.log"), "wb")
proc = subprocess.Popen(
    [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--remote-debugging-pipe",
     "--user-data-dir=" + os.path.join(work, "profile"), "--no-first-run", "--no-default-browser-check",
     "--disable-extensions", "--disable-background-networking", "--disable-dev-shm-usage", "--hide-scrollbars",
     "--window-size=900,700", "about:blank"],
    stdin=subprocess.DEVNULL, stdout=log, stderr=log, preexec_fn=child_fds, pass_fds=(3, 4),
    start_new_session=True)
os.close(to_r)
os.close(from_w)
buf = b""
next_id = 0

def left():
    t = DEADLINE - time.monotonic()
    if t <= 0:
        raise TimeoutError("the browser run passed its time limit")
    return t

def send(method, params=None, session=None):
    global next_id
    next_id += 1
    msg = {"id": next_id, "method": method, "params": params or {}}
    if session:
        msg["sessionId"] = session
    os.write(to_w, json.dumps(msg).encode() + b"\0")
    return next_id

def call(method, params=None, session=None, timeout=20):
    """Sends a command and returns its result (events in between are dropped)."""
    global buf
    want = send(method, params, session)
    end = min(DEADLINE, time.monotonic() + timeout)
    while True:
        while b"\0" in buf:
            raw, buf = buf.split(b"\0", 1)
            m = json.loads(raw)
            if m.get("id") == want:
                if "error" in m:
                    raise RuntimeError(f"{method}: {m['error']}")
                return m.get("result", {})
        t = end - time.monotonic()
        if t <= 0:
            raise TimeoutError(f"{method}: no answer from chromium")
        r, _, _ = select.select([from_r], [], [], t)
        if r:
            chunk = os.read(from_r, 1 << 20)
            if not chunk:
                raise RuntimeError(f"{method}: chromium closed the pipe (exit {proc.poll()})")
            buf += chunk

def evaluate(session, expr):
    res = call("Runtime.evaluate", {"expression": expr, "returnByValue": True}, session)
    if "exceptionDetails" in res:
        raise RuntimeError(f"{expr}: {res['exceptionDetails']}")
    return res["result"].get("value")

try:
    target = call("Target.createTarget", {"url": "about:blank"})["targetId"]
    session = call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
    call("Page.enable", session=session)
    call("Emulation.setDeviceMetricsOverride",
         {"width": 900, "height": 700, "deviceScaleFactor": 1, "mobile": False}, session)
    call("Page.navigate", {"url": url}, session)
    state = None
    while True:  # wall-clock polling of the page's own completion flags
        state = evaluate(session, """(() => {
            const f = document.getElementById('final'), e = document.getElementById('error'),
                  s = document.getElementById('status');
            return {done: !!f && f.dataset.done === '1', error: e && !e.hidden ? e.textContent : '',
                    status: s ? s.textContent : ''};
        })()""")
        if state and (state["done"] or state["error"]):
            break
        time.sleep(min(0.2, left()))
    if state["error"]:
        sys.exit(f"the page shows an error: {state['error']} (status: {state['status']})")
    print("page:", state["status"])
    html = evaluate(session, "document.documentElement.outerHTML")
    with open(os.path.join(work, "dom.html"), "w") as f:
        f.write(html)
    png = call("Page.captureScreenshot", {"format": "png"}, session)["data"]
    with open(shot, "wb") as f:
        f.write(base64.b64decode(png))
    try:
        call("Browser.close", timeout=5)
    except Exception:
        pass
except (TimeoutError, RuntimeError) as e:
    sys.exit(f"{e}\n--- chromium log:\n" + open(os.path.join(work, "chromium.log"), errors="replace").read()[-3000:])
finally:
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # chromium's own process group (start_new_session)
    except ProcessLookupError:
        pass
    reap_until = time.monotonic() + 5
    while time.monotonic() < reap_until:
        try:
            if os.waitpid(-1, os.WNOHANG)[0] == 0:
                time.sleep(0.05)
        except ChildProcessError:
            break
PY

# From the DOM: the final image's PNG, how many previews the page showed, the stats line.
python3 - "$T/dom.html" "$T/web" <<'PY' || fail "the dumped DOM does not hold a finished image"
import base64, html.parser, os, sys
class P(html.parser.HTMLParser):
    final, stats, in_stats = None, "", False
    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "img" and a.get("id") == "final":
            P.final = a
        self.in_stats = a.get("id") == "stats"
    def handle_data(self, data):
        if self.in_stats:
            P.stats += data
p = P()
p.feed(open(sys.argv[1]).read())
f = P.final
assert f is not None, "no <img id=final>"
assert f.get("data-done") == "1", f"img#final has no data-done=1: {dict((k, v[:40]) for k, v in f.items())}"
prefix = "data:image/png;base64,"
src = f.get("src") or ""
assert src.startswith(prefix), f"img#final src is not a PNG data: URL: {src[:60]}"
previews = int(f.get("data-previews") or 0)
assert previews >= 1, f"the page showed {previews} previews"
for want in ("KV peak", "policy scalekv", "budget 10%"):
    assert want in P.stats, f"the stats line lacks '{want}': {P.stats}"
png = base64.b64decode(src[len(prefix):], validate=True)
assert png[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
os.makedirs(sys.argv[2])
open(os.path.join(sys.argv[2], "final.png"), "wb").write(png)
print(f"final image: {len(png)} bytes of PNG, {previews} previews; stats: {P.stats}")
PY

# The same image from the command line; png_diff wants the same file names in both folders.
timeout 40 "$SKV" generate "${GEN[@]}" --out "$T/gen" > "$T/gen.log" 2>&1 ||
  { cat "$T/gen.log" >&2; fail "scalekv generate failed"; }
shopt -s nullglob
gen_pngs=("$T"/gen/*.png)
[ ${#gen_pngs[@]} = 1 ] || fail "scalekv generate wrote ${#gen_pngs[@]} PNGs, expected 1"
mv "$T/web/final.png" "$T/web/$(basename "${gen_pngs[0]}")"
"$PNG_DIFF" "$T/gen" "$T/web" 1 || fail "the page's final image differs from scalekv generate's"
echo "screenshot: $ARTIFACTS/$SHOT"
echo "PASS"
