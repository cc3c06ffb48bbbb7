"""Size of the LLM-facing JSON schema and the tokens of typical filled answers (issue: compact schema).

Tokens are counted with the embedded default model's own tokenizer (vocab only, no weights loaded).
Usage: .venv/bin/python benchmarks/bench_schema.py
"""

from __future__ import annotations

import json

from schemas.llm import LLMAnswer, schema_fingerprint
from schemas.records import ExtractionPayload

# A typical abnormal answer: three organ statements and two lesions.
TYPICAL = {
    "organs": [
        {"organ": "liver", "side": "both", "state": "lesion", "quote": "LIVER: 1.4 cm hypodense lesion in segment 6"},
        {"organ": "pancreas", "side": "both", "state": "no_lesion", "quote": "PANCREAS: Unremarkable."},
        {"organ": "kidney", "side": "left", "state": "lesion", "quote": "2.1 x 1.8 cm enhancing left renal mass"},
    ],
    "lesions": [
        {"organ": "liver", "side": "none", "location": "segment 6", "count": 1, "count_exact": True,
         "size": "1.4 cm", "size_bound": "none", "attenuation": "hypo", "kind": "cyst", "certainty": "definite",
         "quote": "1.4 cm hypodense lesion in segment 6, likely a cyst"},
        {"organ": "kidney", "side": "left", "location": "upper pole", "count": 1, "count_exact": True,
         "size": "2.1 x 1.8 cm", "size_bound": "none", "attenuation": "hyper", "kind": "renal_cell_carcinoma",
         "certainty": "definite", "quote": "2.1 x 1.8 cm enhancing left renal mass in the upper pole"},
    ],
}
NORMAL = {"organs": [{"organ": o, "side": "both", "state": "no_lesion", "quote": f"{o.upper()}: Unremarkable."}
                     for o in ("liver", "pancreas", "spleen")], "lesions": []}


def _tokenizer():
    try:
        from llama_cpp import Llama

        from extract.model import ensure_model
    except ImportError:
        return None
    path, _ = ensure_model()
    llm = Llama(model_path=str(path), vocab_only=True, verbose=False)
    return lambda text: len(llm.tokenize(text.encode(), add_bos=False))


def main() -> None:
    LLMAnswer.model_validate(TYPICAL)
    count = _tokenizer()
    for name, answer in (("typical_abnormal", TYPICAL), ("normal", NORMAL)):
        text = json.dumps(answer, separators=(",", ":"))
        print(json.dumps({"answer": name, "chars": len(text), "tokens": count(text) if count else None}))
    print(json.dumps({
        "llm_schema_chars": len(schema_fingerprint()),
        "llm_schema_tokens": count(schema_fingerprint()) if count else None,
        "record_schema_chars": len(json.dumps(ExtractionPayload.model_json_schema(), separators=(",", ":"))),
    }))


if __name__ == "__main__":
    main()
