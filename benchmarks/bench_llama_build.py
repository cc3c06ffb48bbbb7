"""Decode speed of the installed llama-cpp-python build on the embedded default model (one JSON line).

Compares CPU builds (scripts/install_llama_cpp.sh with different LLAMA_CMAKE_ARGS): run it once per venv.
The prompt is fixed synthetic text, greedy decoding, no grammar, so two builds do the same work.

    python benchmarks/bench_llama_build.py --threads 2 --tokens 128 --repeats 3

Wall times depend on the machine and its load; say which machine gave them.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from extract.model import ensure_model  # noqa: E402

#: About 400 prompt tokens of report-like text (written here), so prompt processing is measured too.
PROMPT = " ".join(
    f"Finding {i}: a {4 + i % 9} mm nodule in segment {1 + i % 8} of the liver, unchanged from the prior study."
    for i in range(20)
) + " Summarise the findings as a list."


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tokens", type=int, default=128, help="output tokens per repeat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--gguf", type=Path, help="model file (default: the embedded default model)")
    args = parser.parse_args()

    import llama_cpp

    path = args.gguf or ensure_model()[0]
    llm = llama_cpp.Llama(model_path=str(path), n_ctx=2048, n_threads=args.threads, n_threads_batch=args.threads,
                          seed=0, verbose=False)
    prompt_tokens = llm.tokenize(PROMPT.encode())
    prefill_s, decode_tps = [], []
    for _ in range(args.repeats):
        llm.reset()
        start = time.perf_counter()
        produced = 0
        for _token in llm.generate(prompt_tokens, temp=0.0):
            produced += 1
            if produced == 1:  # the first token comes after the whole prompt is evaluated
                first = time.perf_counter()
                prefill_s.append(first - start)
            if produced >= args.tokens:
                break
        decode_tps.append((produced - 1) / (time.perf_counter() - first))
    print(json.dumps({
        "llama_cpp_python": llama_cpp.__version__,
        "system_info": llama_cpp.llama_print_system_info().decode().strip(),
        "model": path.name, "threads": args.threads,
        "prompt_tokens": len(prompt_tokens),
        "prefill_tokens_per_s": round(len(prompt_tokens) / statistics.median(prefill_s), 1),
        "decode_tokens_per_s": round(statistics.median(decode_tps), 2),
        "repeats": args.repeats,
    }))


if __name__ == "__main__":
    main()
