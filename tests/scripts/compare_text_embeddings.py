#!/usr/bin/env python3
"""compare_text_embeddings.py REF OURS [TOL] - two text-embeddings files (scripts/encode_prompts.py format) hold the
same thing: identical metadata, tensor names, dtypes and lens, and kv_compact within TOL (default 1e-4) of REF
relative to each prompt's largest |value|. Prints the worst relative difference; exit 1 on any mismatch."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "scripts"))
import safetensors_io  # noqa: E402


def main():
    ref_path, ours_path = sys.argv[1], sys.argv[2]
    tol = float(sys.argv[3]) if len(sys.argv) > 3 else 1e-4
    ref, ref_meta = safetensors_io.load(ref_path, with_metadata=True)
    ours, ours_meta = safetensors_io.load(ours_path, with_metadata=True)
    bad = []
    if ref_meta != ours_meta:
        bad.append(f"metadata differ:\n  ref  {ref_meta}\n  ours {ours_meta}")
    if sorted(ref) != sorted(ours):
        bad.append(f"tensors differ: {sorted(ref)} vs {sorted(ours)}")
    for k in ref:
        if k in ours and (ref[k].dtype != ours[k].dtype or ref[k].shape != ours[k].shape):
            bad.append(f"{k}: {ref[k].dtype}{list(ref[k].shape)} vs {ours[k].dtype}{list(ours[k].shape)}")
    worst = 0.0
    if not bad:
        if ref["lens"].tolist() != ours["lens"].tolist():
            bad.append(f"lens differ: {ref['lens'].tolist()} vs {ours['lens'].tolist()}")
        else:
            at = 0
            for i, n in enumerate(ref["lens"].tolist()):
                r, o = ref["kv_compact"][at:at + n], ours["kv_compact"][at:at + n]
                rel = float((r - o).abs().max() / r.abs().max())
                worst = max(worst, rel)
                if not rel <= tol:
                    bad.append(f"prompt {i}: max|diff|/max|ref| = {rel:.3g} > {tol}")
                at += n
    if bad:
        print(f"compare_text_embeddings: {ours_path} differs from {ref_path}:\n" + "\n".join(bad))
        sys.exit(1)
    print(f"compare_text_embeddings: {ours_path} == {ref_path} ({len(ref['lens'])} prompts, {ref['kv_compact'].shape[0]} "
          f"tokens; worst max|diff|/max|ref| {worst:.3g})")


if __name__ == "__main__":
    main()
