"""Size of the LLM-facing JSON schemas (citing, the default, and quoting) and the tokens of the same typical answers
in both formats (issues: compact schema; 20, fewer output tokens).

Tokens are counted with the embedded default model's own tokenizer (vocab only, no weights loaded).
Usage: .venv/bin/python benchmarks/bench_schema.py
"""

from __future__ import annotations

import json

from schemas.llm import ANSWER_MODELS, CitedAnswer, LLMAnswer, schema_fingerprint
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
# The same two reports' answers in the citing format (the liver lesion in sentence 1, the kidney mass in 3).
CITED_TYPICAL = {"lesions": [{"organ": "liver", "sentences": [1], "count": 1, "count_exact": True},
                             {"organ": "kidney", "sentences": [3], "count": 1, "count_exact": True}],
                 "normal": ["pancreas"], "resected": []}
CITED_NORMAL = {"lesions": [], "normal": ["liver", "pancreas", "spleen"], "resected": []}


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
    CitedAnswer.model_validate(CITED_TYPICAL)
    count = _tokenizer()
    for fmt, answers in (("cite", (("typical_abnormal", CITED_TYPICAL), ("normal", CITED_NORMAL))),
                         ("quote", (("typical_abnormal", TYPICAL), ("normal", NORMAL)))):
        for name, answer in answers:
            text = json.dumps(answer, separators=(",", ":"))
            print(json.dumps({"format": fmt, "answer": name, "chars": len(text),
                              "tokens": count(text) if count else None}))
    for fmt, model in ANSWER_MODELS.items():
        print(json.dumps({"format": fmt, "llm_schema_chars": len(schema_fingerprint(model)),
                          "llm_schema_tokens": count(schema_fingerprint(model)) if count else None}))
    print(json.dumps({"record_schema_chars": len(json.dumps(ExtractionPayload.model_json_schema(),
                                                            separators=(",", ":")))}))


if __name__ == "__main__":
    main()
