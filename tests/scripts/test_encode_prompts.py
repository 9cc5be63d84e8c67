#!/usr/bin/python3
"""scripts/encode_prompts.py without its optional dependencies must fail with a clear message.

Where transformers is installed this test has nothing to check without a Flan-T5-XL download and exits
77 (skip); otherwise it runs the script on a prompts file and expects exit status 2 and a message that
names the missing packages and how to get them. Bad input (no prompts) is reported first, either way.
"""
import os
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(REPO, "scripts", "encode_prompts.py")


def run(args):
    return subprocess.run([sys.executable, SCRIPT] + args, capture_output=True, text=True)


def main():
    with tempfile.TemporaryDirectory() as d:
        empty = os.path.join(d, "empty.txt")
        open(empty, "w").close()
        p = run([empty, "--t5", "x", "--out", os.path.join(d, "o.safetensors")])
        assert p.returncode == 2 and "no prompts" in p.stderr, p.stderr
        try:
            import transformers  # noqa: F401
            print("SKIP: transformers is installed; the missing-dependency message cannot be checked")
            sys.exit(77)
        except ImportError:
            pass
        prompts = os.path.join(d, "p.txt")
        with open(prompts, "w") as f:
            f.write("a cat on a mat\n\nalien spaceship\n")
        p = run([prompts, "--t5", "google/flan-t5-xl", "--out", os.path.join(d, "o.safetensors")])
        print(p.stderr.strip())
        assert p.returncode == 2, p.returncode
        assert "transformers" in p.stderr and "pip install" in p.stderr, p.stderr
        assert not os.path.exists(os.path.join(d, "o.safetensors"))
    print("ok")


if __name__ == "__main__":
    main()
