"""quality_rows.py - what quality_table.sh and quality_bf16.sh read back (see quality_common.sh).

rows(out): one dict per line of OUT/runs.txt, in order: name, args, log (generate's summary), images,
seconds, and evaluate.py's accuracy, fid, psnr, ssim and identical (images with PSNR >= 100 dB against
their reference). machine(): (CPU model, cores, CMake build type) for the table's heading.
"""
import json
import platform
import re
import subprocess


def rows(out):
    result = []
    for line in open(f"{out}/runs.txt"):
        if not line.strip():
            continue
        name, args, log = line.split("|", 2)
        t = re.search(r"generated (\d+) images .* in ([\d.]+) s", log)
        ev = json.load(open(f"{out}/{name}.eval.json"))
        result.append(dict(name=name, args=args.strip(), log=log, images=int(t.group(1)), seconds=float(t.group(2)),
                           accuracy=ev.get("accuracy"), fid=ev.get("fid_fmnist"), psnr=ev.get("psnr_mean"),
                           ssim=ev.get("ssim_mean"),
                           identical=sum(1 for v in ev.get("per_image", {}).values() if v.get("psnr", 0) >= 100)))
    return result


def machine():
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")),
               platform.machine())
    cores = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
    build = next((l.split("=", 1)[1].strip() for l in open("build/CMakeCache.txt")
                  if l.startswith("CMAKE_BUILD_TYPE:")), "?")
    return cpu, cores, build
