"""The science pool's LLM extraction: stored cost summed over the shard stores."""

from __future__ import annotations

from pathlib import Path

from train.science import extraction
from train.science.protocol import PRESETS, ScienceSettings

REPO = Path(__file__).resolve().parents[3]


def test_extraction_cost_sums_the_stored_llm_time_of_every_shard(tmp_path, monkeypatch):
    import asyncio

    monkeypatch.syspath_prepend(str(REPO / "tests" / "extract"))
    from llm_fakes import ANSWERS, KIDNEY_REPORT, LIVER_REPORT, ScriptedBackend, add_reports

    from extract.backends.base import Completion, SamplingConfig
    from extract.engine import EngineConfig, run_extraction
    from extract.prompting import load_prompt
    from extract.store import Store

    settings = ScienceSettings.model_validate(
        {**PRESETS["smoke"], "scale": "smoke", "work_dir": tmp_path, "extract_workers": 2})
    texts = [{"a": LIVER_REPORT}, {"b": KIDNEY_REPORT, "c": LIVER_REPORT + " "}]
    tokens, seconds = [60, 20, 10], [4.0, 2.5, 1.5]
    for path, shard in zip(extraction.shard_stores(settings), texts):
        path.parent.mkdir(parents=True, exist_ok=True)
        with Store(path) as store:
            add_reports(store, shard)
            answers = [Completion(ANSWERS[t.strip()], "stop", 100, tokens.pop(), latency_s=seconds.pop())
                       for t in shard.values()]
            backend = ScriptedBackend(answers, max_concurrency=1)
            asyncio.run(run_extraction(store, backend, load_prompt(), SamplingConfig(), EngineConfig(progress=False)))
    cost = extraction.extraction_cost(settings)
    assert cost["output_tokens_per_report"] == 30  # (10 + 20 + 60) / 3: both shards counted
    assert cost["llm_seconds"] == 8.0 and cost["llm_seconds_per_report"] == 2.7
