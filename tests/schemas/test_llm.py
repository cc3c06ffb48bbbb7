import json

import pytest

from schemas.llm import LLMAnswer, llm_json_schema, schema_fingerprint

FORBIDDEN = {"allOf", "anyOf", "oneOf", "uniqueItems", "multipleOf", "not", "if", "patternProperties"}


def walk(node):
    if isinstance(node, dict):
        yield node
        for v in node.values():
            yield from walk(v)
    elif isinstance(node, list):
        for v in node:
            yield from walk(v)


def test_schema_is_compact_bounded_and_free_of_unsupported_keywords():
    schema = llm_json_schema()
    assert len(schema_fingerprint()) < 4000
    for node in walk(schema):
        assert not FORBIDDEN & set(node), node
        if node.get("type") == "array":
            assert "maxItems" in node
        if node.get("type") == "string" and "enum" not in node:
            assert "maxLength" in node


def test_schema_compiles_with_xgrammar():
    xgr = pytest.importorskip("xgrammar")
    vocab = [f"<t{i}>" for i in range(32)] + list('abcdefghijklmnopqrstuvwxyz{}[]":,0123456789 .-_')
    compiler = xgr.GrammarCompiler(xgr.TokenizerInfo(vocab))
    compiler.compile_json_schema(json.dumps(llm_json_schema()))


def test_bad_json_raises_validation_error():
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        LLMAnswer.model_validate_json('{"organs": [')


def test_a_line_break_copied_into_a_quote_is_read_not_refused():
    # tests/extract/reading/test_convert.py converts the same answer
    from pydantic import ValidationError

    from schemas.llm import parse_llm_answer

    quote = "2.1 cm hypodense mass in the pancreatic\nneck."
    answer = {"organs": [], "lesions": [{
        "organ": "pancreas", "side": "none", "location": "", "count": 1, "count_exact": True, "size": "2.1 cm",
        "size_bound": "none", "attenuation": "unknown", "kind": "nodule", "certainty": "definite", "quote": quote}]}
    text = json.dumps(answer).replace("\\n", "\n")  # the raw control character llama.cpp's grammar lets through
    assert "\n" in text and "\\n" not in text
    with pytest.raises(ValidationError):
        LLMAnswer.model_validate_json(text)
    assert parse_llm_answer(text).lesions[0].quote == quote
    with pytest.raises(ValidationError):  # still JSON and still the schema
        parse_llm_answer(text[:-2])
    with pytest.raises(ValidationError):
        parse_llm_answer(text.replace('"nodule"', '"tumour"'))


def test_longest_answer_the_schema_allows_fits_the_token_budget():
    """A model that repeats entries until every array and string is full of report-like words still ends
    inside the budget (measured with the embedded model's tokenizer)."""
    from pathlib import Path

    from schemas.llm import ANSWER_TOKEN_BUDGET, MAX_LESIONS, MAX_ORGANS, LLMLesion, LLMOrgan

    llama_cpp = pytest.importorskip("llama_cpp")
    gguf = Path.home() / ".cache" / "rsuper" / "models" / "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
    if not gguf.is_file():
        pytest.skip("embedded model not joined yet")
    tokenizer = llama_cpp.Llama(model_path=str(gguf), vocab_only=True, verbose=False)

    words = "hypodense lesion in the right lobe of the liver measuring 3.6 x 3.3 x 3.1 cm, previously 2.2 cm "

    def longest(model, field):
        return (words * 4)[: model.model_fields[field].metadata[0].max_length]

    organ = {"organ": "adrenal_gland", "quote": longest(LLMOrgan, "quote"), "side": "right", "state": "no_lesion"}
    item = {"organ": "adrenal_gland", "quote": longest(LLMLesion, "quote"), "side": "right",
            "location": longest(LLMLesion, "location"), "size": longest(LLMLesion, "size"),
            "size_bound": "subcentimeter", "count": 99, "count_exact": False, "attenuation": "heterogeneous",
            "kind": "pancreatic_neuroendocrine_tumor", "certainty": "probable"}
    text = json.dumps({"organs": [organ] * MAX_ORGANS, "lesions": [item] * MAX_LESIONS})
    LLMAnswer.model_validate_json(text)
    assert len(tokenizer.tokenize(text.encode(), add_bos=False)) < ANSWER_TOKEN_BUDGET
