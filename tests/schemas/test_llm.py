import json

import pytest

from schemas.llm import ANSWER_MODELS, CitedAnswer, LLMAnswer, llm_json_schema, schema_fingerprint

FORBIDDEN = {"allOf", "anyOf", "oneOf", "uniqueItems", "multipleOf", "not", "if", "patternProperties"}


def walk(node):
    if isinstance(node, dict):
        yield node
        for v in node.values():
            yield from walk(v)
    elif isinstance(node, list):
        for v in node:
            yield from walk(v)


@pytest.mark.parametrize("model", list(ANSWER_MODELS.values()), ids=list(ANSWER_MODELS))
def test_schema_is_compact_bounded_and_free_of_unsupported_keywords(model):
    schema = llm_json_schema(model)
    assert len(schema_fingerprint(model)) < 4000
    for node in walk(schema):
        assert not FORBIDDEN & set(node), node
        if node.get("type") == "array":
            assert "maxItems" in node
        if node.get("type") == "string" and "enum" not in node:
            assert "maxLength" in node


@pytest.mark.parametrize("model", list(ANSWER_MODELS.values()), ids=list(ANSWER_MODELS))
def test_schema_compiles_with_xgrammar(model):
    xgr = pytest.importorskip("xgrammar")
    vocab = [f"<t{i}>" for i in range(32)] + list('abcdefghijklmnopqrstuvwxyz{}[]":,0123456789 .-_')
    compiler = xgr.GrammarCompiler(xgr.TokenizerInfo(vocab))
    compiler.compile_json_schema(json.dumps(llm_json_schema(model)))


def test_cited_answer_holds_sentence_numbers_and_counts_only():
    from pydantic import ValidationError

    answer = CitedAnswer.model_validate_json(
        '{"lesions":[{"organ":"lung","sentences":[5,6],"count":2,"count_exact":false}],'
        '"normal":["liver"],"resected":["gallbladder"]}')
    assert answer.lesions[0].sentences == [5, 6] and answer.normal == ["liver"]
    for bad in ('"sentences":[]', '"sentences":[0]', '"sentences":[1,2,3,4,5,6,7,8,9]', '"quote":"x","sentences":[1]'):
        with pytest.raises(ValidationError):
            CitedAnswer.model_validate_json(
                '{"lesions":[{"organ":"lung",' + bad + ',"count":1,"count_exact":true}],"normal":[],"resected":[]}')


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


def test_longest_citing_answer_is_a_fraction_of_the_quoting_budget():
    """The citing format's worst case (every array full, the largest numbers) is a quarter of the budget."""
    from pathlib import Path

    from schemas.llm import ANSWER_TOKEN_BUDGET, MAX_LESIONS, MAX_ORGANS, MAX_SENTENCES

    llama_cpp = pytest.importorskip("llama_cpp")
    gguf = Path.home() / ".cache" / "rsuper" / "models" / "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
    if not gguf.is_file():
        pytest.skip("embedded model not joined yet")
    tokenizer = llama_cpp.Llama(model_path=str(gguf), vocab_only=True, verbose=False)
    item = {"organ": "adrenal_gland", "sentences": [MAX_SENTENCES] * 3, "count": 99, "count_exact": False}
    text = json.dumps({"lesions": [item] * MAX_LESIONS, "normal": ["adrenal_gland"] * MAX_ORGANS,
                       "resected": ["ovary_adnexa"] * 4}, separators=(",", ":"))
    CitedAnswer.model_validate_json(text)
    assert len(tokenizer.tokenize(text.encode(), add_bos=False)) < ANSWER_TOKEN_BUDGET / 4
