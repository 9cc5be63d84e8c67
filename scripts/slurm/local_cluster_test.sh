#!/usr/bin/env bash
# local_cluster_test.sh BUILD_DIR - a real one-node Slurm cluster on this machine, for one test:
# munged, slurmctld and slurmd run from a temporary folder (their own config, key, socket, state,
# spool, logs and free ports: nothing under /etc is read or changed, and a cluster already on the
# machine is left alone), then scripts/slurm/generate.sbatch is submitted with 2 tasks on a tiny
# random-weight model. Checked: the job completes, every label has its PNG and the PNGs equal a TP 1
# run, the batch log and one log per rank exist and are named by job and rank; a second job with a
# corrupt weights file fails and its rank logs name the failing rank. The daemons are stopped on
# every exit.
# local_cluster_test.sh BUILD_DIR serve - the same cluster, then scripts/slurm/serve.sbatch with 2 tasks
# (TP 2, the demo model): its batch log prints the URL, /health and /ready answer, a request's PNG equals
# `scalekv generate` on one rank, and `scancel --signal=TERM --batch` (what --signal=B:TERM@120 does
# before the time limit) drains it: the job ends COMPLETED with exit code 0:0 and its log says it drained.
# Exit 77 (ctest: skipped) where slurm-wlm/munge are not installed or the user is not root.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BUILD=$(cd "${1:?usage: local_cluster_test.sh BUILD_DIR}" && pwd)
MODE=${2:-generate}
[[ "$MODE" == generate || "$MODE" == serve ]] || { echo "usage: local_cluster_test.sh BUILD_DIR [generate|serve]"; exit 2; }
SKV=$BUILD/bin/scalekv
PNG_DIFF=$BUILD/bin/skv_png_diff

for b in munged mungekey slurmctld slurmd sbatch squeue scontrol srun python3 pgrep; do
  command -v "$b" > /dev/null || { echo "SKIP: $b is not installed (scripts/setup.sh installs slurm-wlm and munge)"; exit 77; }
done
[ "$(id -u)" = 0 ] || { echo "SKIP: slurmd must run as root for this test"; exit 77; }
[ -x "$SKV" ] || { echo "FAIL: $SKV is missing"; exit 1; }

T=$(mktemp -d /tmp/skv_slurm_XXXXXX)
chmod 755 "$T"
mkdir -p "$T/munge" "$T/state" "$T/spool" "$T/log" "$T/submit" "$T/tmp"
chmod 700 "$T/munge"
JOBS=()

# The processes of this cluster: every daemon (and fork) has $T on its command line, the job's
# processes too; slurmstepd ("slurmstepd: [job.step]") works in a folder under $T.
ours() {
  local p cwd
  for p in $(pgrep -f "$T" 2> /dev/null) $(pgrep -f '^slurmstepd: \[' 2> /dev/null); do
    [ "$p" = $$ ] && continue
    cwd=$(readlink "/proc/$p/cwd" 2> /dev/null)
    if [[ "$cwd" == "$T"* ]] || [[ "$(tr '\0' ' ' < "/proc/$p/cmdline" 2> /dev/null)" == *"$T"* ]]; then echo "$p"; fi
  done
}

our_steps() {
  local p
  for p in $(pgrep -f '^slurmstepd: \[' 2> /dev/null); do
    [[ "$(readlink "/proc/$p/cwd" 2> /dev/null)" == "$T"* ]] && echo "$p"
  done
}

cleanup() {
  local rc=$? left="" i
  for j in "${JOBS[@]}"; do scancel "$j" 2> /dev/null; done
  # Let running steps finish their PMIx clean-up (a few seconds after a failure) before slurmd goes.
  for i in $(seq 150); do
    [ -z "$(our_steps)" ] && break
    sleep 0.2
  done
  for d in slurmd slurmctld munged; do
    [ -f "$T/$d.pid" ] && kill "$(cat "$T/$d.pid")" 2> /dev/null
  done
  for i in $(seq 100); do
    left=$(ours)
    [ -z "$left" ] && break
    sleep 0.1
  done
  [ -n "$left" ] && kill -9 $left 2> /dev/null
  if [ "$rc" -ne 0 ] && [ "$rc" -ne 77 ]; then
    echo "--- daemon logs (tail) ---"
    tail -n 20 "$T"/log/*.log 2> /dev/null
  fi
  [ -n "${SKV_SLURM_KEEP:-}" ] && { echo "kept $T"; exit "$rc"; }
  rm -rf "$T"
  exit "$rc"
}
trap cleanup EXIT
fail() {
  echo "FAIL: $*"
  exit 1
}

# wait_job ID: until the job leaves the queue (at most 120 s); prints its final state and exit code.
wait_job() {
  for _ in $(seq 600); do
    [ -z "$(squeue -h -j "$1" -o %T 2> /dev/null)" ] && break
    sleep 0.2
  done
  scontrol show job "$1" | grep -oE "JobState=[A-Z_]+|Reason=[^ ]+|ExitCode=[0-9:]+" | tr '\n' ' '
}

# http METHOD URL [BODY]: prints the status code, then the body (python3's stdlib: no curl needed).
http() {
  python3 - "$@" << 'PY'
import sys, urllib.request, urllib.error
method, url = sys.argv[1], sys.argv[2]
body = sys.argv[3].encode() if len(sys.argv) > 3 else None
req = urllib.request.Request(url, data=body, method=method, headers={"Content-Type": "application/json"})
try:
    with urllib.request.urlopen(req, timeout=60) as r:
        code, data = r.status, r.read()
except urllib.error.HTTPError as e:
    code, data = e.code, e.read()
except OSError as e:
    code, data = 0, str(e).encode()
sys.stdout.write(f"{code}\n{data.decode(errors='replace')}")
PY
}

# test_serve: serve.sbatch with 2 tasks (TP 2, demo model); a request's PNG equals one-rank generate;
# scancel --signal=TERM --batch drains it and the job completes with 0:0.
test_serve() {
  local jid log url="" st code
  cd "$T/submit" || fail "no submit dir"
  jid=$(sbatch --parsable --ntasks=2 --time=5 --export="ALL,SKV_ROOT=$ROOT,SKV_BIN=$SKV,LOG_DIR=$T/logs" \
    "$ROOT/scripts/slurm/serve.sbatch" --kv-memory 64MiB --drain-timeout 20) || fail "sbatch refused the serve job"
  JOBS+=("$jid")
  log=slurm-scalekv-serve-$jid.out
  show_logs() {
    echo "--- batch log $log"
    cat "$log" 2> /dev/null
    for r in 0 1; do
      echo "--- rank $r log"
      cat "$T/logs/scalekv-serve-$jid-rank$r.log" 2> /dev/null
    done
  }
  # The URL line, within 90 s (the job may wait for the node, then loads the model on both ranks).
  for _ in $(seq 450); do
    url=$(grep -oE "serving on http://[^ ]+/" "$log" 2> /dev/null | head -n 1 | sed 's/^serving on //')
    [ -n "$url" ] && break
    [ -z "$(squeue -h -j "$jid" -o %T 2> /dev/null)" ] && { show_logs; fail "job $jid ended before serving: $(wait_job "$jid")"; }
    sleep 0.2
  done
  [ -n "$url" ] || { show_logs; fail "no 'serving on http://' line in $log after 90 s"; }
  echo "job $jid: $url"
  code=$(http GET "${url}health" | head -n 1)
  [ "$code" = 200 ] || { show_logs; fail "GET /health answered $code"; }
  for _ in $(seq 150); do
    code=$(http GET "${url}ready" | head -n 1)
    [ "$code" = 200 ] && break
    sleep 0.2
  done
  [ "$code" = 200 ] || { show_logs; fail "GET /ready answered $code after 30 s"; }
  http POST "${url}v1/images/generations" '{"class_label":3,"seed":5}' > "$T/answer.txt"
  code=$(head -n 1 "$T/answer.txt")
  [ "$code" = 200 ] || { show_logs; fail "POST /v1/images/generations answered: $(head -c 500 "$T/answer.txt")"; }
  mkdir -p "$T/served"
  tail -n +2 "$T/answer.txt" | python3 -c '
import base64, json, sys
j = json.load(sys.stdin)
open(sys.argv[1], "wb").write(base64.b64decode(j["data"][0]["b64_json"]))' "$T/served/0000_c3.png" ||
    fail "the answer has no data[0].b64_json: $(head -c 500 "$T/answer.txt")"
  "$SKV" generate --labels 3 --seed 5 --out "$T/ref" > /dev/null || fail "the one-rank reference generate failed"
  [ -f "$T/ref/0000_c3.png" ] || fail "the reference generate wrote no $T/ref/0000_c3.png"
  "$PNG_DIFF" "$T/ref" "$T/served" 1 || { show_logs; fail "the served TP 2 PNG differs from one-rank generate"; }

  # Slurm's early warning (--signal=B:TERM@120) is SIGTERM to the batch shell alone: the same as this.
  scancel --signal=TERM --batch "$jid" || fail "scancel --signal=TERM --batch $jid failed"
  st=$(wait_job "$jid")
  echo "job $jid (after scancel --signal=TERM --batch): $st"
  show_logs
  grep -q "JobState=COMPLETED" <<< "$st" && grep -q "ExitCode=0:0" <<< "$st" || fail "job $jid did not complete with 0:0: $st"
  grep -q "SIGTERM: draining: sent SIGTERM to world rank 0" "$log" || fail "$log does not say rank 0 was told to drain"
  grep -q "^scalekv serve: drained and stopped" "$log" || fail "$log does not say the server drained"
  grep -q "srun exited with 0" "$log" || fail "srun did not exit 0"
  grep -qs "^error:" "$T/logs/scalekv-serve-$jid"-rank*.log && fail "a rank log of job $jid has an error"
  echo "PASS"
}

# Two distinct free ports: both sockets are held open while the second is chosen, so the kernel
# cannot hand out the same port twice (two separate calls can, and then slurmctld and slurmd collide).
free_ports() {
  python3 -c 'import socket
ss = [socket.socket() for _ in range(2)]
for s in ss: s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in ss))'
}

# --- munge: own key, socket, pid and log --------------------------------------------------------
mungekey --create --keyfile="$T/munge/munge.key" || fail "mungekey failed"
chmod 600 "$T/munge/munge.key"
munged --force --socket="$T/munge/munge.sock" --key-file="$T/munge/munge.key" --pid-file="$T/munged.pid" \
  --log-file="$T/log/munged.log" --seed-file="$T/munge/seed" || fail "munged did not start (see $T/log/munged.log)"

# --- slurm.conf for this node ---------------------------------------------------------------------
NODE=$(hostname -s)
CPUS=$(nproc)
(( CPUS < 2 )) && CPUS=2  # two tasks; config_overrides lets the config win over the hardware
# A port that was free when chosen may be taken by another process (another test) before a daemon
# binds it: then the daemons are stopped and started again on new ports, up to three times.
write_conf() {
cat > "$T/slurm.conf" << EOF
ClusterName=skvtest
SlurmctldHost=$NODE(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$T/munge/munge.sock
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$T/state
SlurmdSpoolDir=$T/spool
SlurmctldPidFile=$T/slurmctld.pid
SlurmdPidFile=$T/slurmd.pid
SlurmctldLogFile=$T/log/slurmctld.log
SlurmdLogFile=$T/log/slurmd.log
SlurmdParameters=config_overrides
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
MinJobAge=600
KillWait=2
TmpFS=$T/tmp
SlurmctldDebug=info
SlurmdDebug=info
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$CPUS State=UNKNOWN
PartitionName=test Nodes=$NODE Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
EOF
}
export SLURM_CONF=$T/slurm.conf
port_taken() { grep -qs "Address already in use" "$T/log/slurmctld.log" "$T/log/slurmd.log"; }
stop_daemons() {
  local f p
  for f in "$T/slurmd.pid" "$T/slurmctld.pid"; do
    p=$(cat "$f" 2> /dev/null) && kill "$p" 2> /dev/null
  done
  for _ in $(seq 50); do
    pgrep -f "$SLURM_CONF" > /dev/null || return 0
    sleep 0.2
  done
  pkill -KILL -f "$SLURM_CONF"
}
for attempt in 1 2 3; do
  read -r CTLD_PORT SLURMD_PORT < <(free_ports)
  write_conf
  slurmctld -f "$SLURM_CONF" || fail "slurmctld did not start"
  slurmd -f "$SLURM_CONF" -N "$NODE" || fail "slurmd did not start"
  state=""
  for _ in $(seq 100); do
    state=$(sinfo -h -n "$NODE" -o %T 2> /dev/null)
    [ "$state" = idle ] && break
    port_taken && break
    sleep 0.2
  done
  [ "$state" = idle ] && break
  port_taken || break
  echo "slurm: a port was taken (attempt $attempt: slurmctld :$CTLD_PORT, slurmd :$SLURMD_PORT); new ports"
  stop_daemons
  for f in "$T/log/slurmctld.log" "$T/log/slurmd.log"; do [ -f "$f" ] && mv "$f" "$f.$attempt"; done
done
[ "$state" = idle ] || fail "node $NODE is '$state', not idle, after 20 s"
echo "slurm: node $NODE idle (slurmctld :$CTLD_PORT, slurmd :$SLURMD_PORT, config $SLURM_CONF)"
[[ "$(srun --mpi=list 2>&1)" == *pmix* ]] || fail "this Slurm has no pmix MPI plugin (srun --mpi=list)"

# --- serve mode: its own test, then done ----------------------------------------------------------
[ "$MODE" = serve ] && { test_serve; exit; }

# --- a tiny model ---------------------------------------------------------------------------------
cat > "$T/tiny.config.json" << EOF
{"family": "var", "depth": 2, "embed_dim": 64, "num_heads": 4, "patch_nums": [1, 2, 3, 4], "V": 32, "Cvae": 8,
 "num_classes": 5, "ch": 32, "vae_ch_mult": [1, 2], "vae_num_res_blocks": 1, "image_size": 8,
 "cfg": 1.5, "top_k": 3, "top_p": 0.0}
EOF
"$SKV" random-checkpoint --model "$T/tiny.config.json" --out "$T" --seed 9 > /dev/null || fail "random-checkpoint failed"
MODEL_ENV="SKV_ROOT=$ROOT,SKV_BIN=$SKV,MODEL=$T/tiny.config.json,WEIGHTS=$T/tiny.var.safetensors,VAE=$T/tiny.vae.safetensors"

# --- the job: 2 tasks, TP 2 -----------------------------------------------------------------------
cd "$T/submit" || fail "no submit dir"
jid=$(sbatch --parsable --ntasks=2 --time=5 --export="ALL,$MODEL_ENV,LABELS=0-4,SEED=3,OUT=$T/out,LOG_DIR=$T/logs" \
  "$ROOT/scripts/slurm/generate.sbatch") || fail "sbatch refused the job"
JOBS+=("$jid")
st=$(wait_job "$jid")
echo "job $jid: $st"
echo "--- batch log slurm-scalekv-generate-$jid.out"
cat "slurm-scalekv-generate-$jid.out" 2> /dev/null
for r in 0 1; do
  echo "--- rank $r log"
  cat "$T/logs/scalekv-generate-$jid-rank$r.log" 2> /dev/null || fail "no log for rank $r ($T/logs/scalekv-generate-$jid-rank$r.log)"
done
grep -q "JobState=COMPLETED" <<< "$st" && grep -q "ExitCode=0:0" <<< "$st" || fail "job $jid did not complete: $st"
[ -f "slurm-scalekv-generate-$jid.out" ] || fail "no batch log slurm-scalekv-generate-$jid.out"
grep -q "TP 2, 1 replica" "slurm-scalekv-generate-$jid.out" || fail "the batch log does not describe the job"
grep -q "generated 5 images" "$T/logs/scalekv-generate-$jid-rank0.log" || fail "rank 0 did not report 5 images"
n=$(ls "$T/out"/*.png 2> /dev/null | wc -l)
[ "$n" = 5 ] || fail "$n PNGs in $T/out, expected 5"
"$SKV" generate --model "$T/tiny.config.json" --weights "$T/tiny.var.safetensors" --vae "$T/tiny.vae.safetensors" \
  --labels 0-4 --seed 3 --out "$T/tp1" > /dev/null || fail "the TP 1 reference run failed"
"$PNG_DIFF" "$T/tp1" "$T/out" 1 || fail "the Slurm TP 2 images differ from TP 1"

# --- a job that must fail: rank 1 cannot read its weights --------------------------------------
# Both ranks get the same corrupt file; the first to fail calls MPI_Abort and srun ends the step.
head -c 300 "$T/tiny.var.safetensors" > "$T/corrupt.safetensors"
# (Valid labels: a request is checked before any file is loaded, so bad labels would fail first.)
jid2=$(sbatch --parsable --ntasks=2 --time=5 --export="ALL,$MODEL_ENV,WEIGHTS=$T/corrupt.safetensors,LABELS=0-4,OUT=$T/out2,LOG_DIR=$T/logs" \
  "$ROOT/scripts/slurm/generate.sbatch") || fail "sbatch refused the second job"
JOBS+=("$jid2")
st2=$(wait_job "$jid2")
echo "job $jid2 (corrupt weights): $st2"
cat "slurm-scalekv-generate-$jid2.out" 2> /dev/null
grep -q "JobState=FAILED" <<< "$st2" || fail "job $jid2 should have failed: $st2"
# grep reads the files itself: `cat | grep -q` under pipefail fails when grep exits before cat has written
# everything (SIGPIPE), the flake this check once had.
grep -qs "error: \[rank [01]/2\].*corrupt.safetensors" "$T/logs/scalekv-generate-$jid2"-rank*.log ||
  fail "no rank log of job $jid2 names the failing rank and file"
echo "PASS"
