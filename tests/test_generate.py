"""`persona generate` with the scripted fake backend: prompts, responses, provenance, resume and crashes."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from persona.backends.fake import FakeBackend
from persona.config import RunConfig
from persona.errors import PersonaError
from persona.pipeline import generate as generate_all
from persona.prompts import normalize, parse_synthesized
from persona.spec import load_spec
from persona.store import JsonlStore


@pytest.fixture
def backends(monkeypatch):
    """Every backend the pipeline loads, in order; each is a FakeBackend built with the given options."""
    class Made(list):
        options: dict

    made = Made()
    made.options = {}
    options = made.options

    def fake_load(name, **kwargs):
        backend = FakeBackend(**{k: v for k, v in {**kwargs, **options}.items()
                                 if k in ("model", "script", "fail_after", "interrupt_after", "delay")})
        made.append(backend)
        return backend

    monkeypatch.setattr("persona.backends.load_backend", fake_load)  # what place_backend loads with
    return made


def generate(spec, config, **kwargs):
    """The generation stages only (judging and datasets have their own tests)."""
    return generate_all(spec, config, judge=kwargs.pop("judge", None), **kwargs)


def config(tmp_path, **kwargs) -> RunConfig:
    """The generator's conforming and violating responses only (demonstrations and replay have their own tests)."""
    return RunConfig(backend="fake", out=str(tmp_path / "run"),
                     **{"replay": 0, "domain_replay": 0, "demonstrations": False, **kwargs})


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_prompts_cover_spec_builtins_and_every_target(tmp_path, backends):
    spec = load_spec("identities/brand.yaml")
    generate(spec, config(tmp_path))
    prompts = lines(tmp_path / "run/prompts.jsonl")
    sources = {p["source"] for p in prompts}
    assert {"seed", "adversarial", "identity", "break", "origin", "constraint", "injection", "synthesized"} <= sources
    texts = {p["text"] for p in prompts}
    assert set(spec.probes.seeds) <= texts and set(spec.probes.adversarial) <= texts
    synthesized_targets = {p["target"] for p in prompts if p["source"] == "synthesized"}
    assert synthesized_targets == {t.id for t in spec.targets()}  # every trait, rule, constraint, ethics item
    constraint_probes = {p["target"] for p in prompts if p["source"] == "constraint"}
    assert constraint_probes == {c.id for c in spec.constraints}
    assert {p["adversarial"] for p in prompts if p["source"] in ("origin", "break", "injection")} == {True}
    # one synthesis request per target, each asking for prompts_per_target prompts
    assert sum("Write 3 different messages" in r.messages[-1]["content"] for r in backends[0].requests) == len(spec.targets())


def test_prompts_are_deduplicated_and_split_stably(tmp_path, backends):
    spec_file = tmp_path / "dup.yaml"
    spec_file.write_text(
        "name: dup\nidentity: {name: Dee, description: Dup tester., maker: Dup Co}\n"
        "traits: [{id: kind, description: Kind.}]\n"
        "probes:\n  seeds: ['who are you', 'WHO ARE YOU?!', 'What is 2+2?']\n", encoding="utf-8")
    spec = load_spec(spec_file)
    generate(spec, config(tmp_path, synthesize=False))
    prompts = lines(tmp_path / "run/prompts.jsonl")
    normalized = [normalize(p["text"]) for p in prompts]
    assert len(normalized) == len(set(normalized))
    who = [p for p in prompts if normalize(p["text"]) == "who are you"]
    assert len(who) == 1 and who[0]["source"] == "seed" and who[0]["text"] == "who are you"  # first source wins
    splits = {p["id"]: p["split"] for p in prompts}
    assert set(splits.values()) == {"train", "eval"}
    # the same prompts in another run folder land in the same splits
    generate(spec, replace(config(tmp_path, synthesize=False), out=str(tmp_path / "other")))
    assert {p["id"]: p["split"] for p in lines(tmp_path / "other/prompts.jsonl")} == splits


def test_responses_k_conforming_and_k_targeted_violating_with_provenance(tmp_path, backends):
    spec = load_spec("identities/aster.yaml")
    summary = generate(spec, config(tmp_path, k=3, limit=12, seed=5))
    responses = lines(tmp_path / "run/responses.jsonl")
    prompts = lines(tmp_path / "run/prompts.jsonl")
    assert summary.responses == len(responses) == 12 * 6
    timed = summary.stage_seconds  # bench/pipeline.py's table: each stage's own time, model loading apart
    assert set(timed) == {"loading models", "prompts", "responses"}, timed  # no judge here: no judging, no build
    assert all(seconds >= 0 for seconds in timed.values()) and sum(timed.values()) <= summary.seconds
    by_prompt: dict[str, list[dict]] = {}
    for r in responses:
        by_prompt.setdefault(r["prompt_id"], []).append(r)
    targets = {t.id: t.kind for t in spec.targets()}
    for prompt in prompts:
        rs = by_prompt[prompt["id"]]
        assert sum(r["kind"] == "conforming" for r in rs) == 3
        violating = [r for r in rs if r["kind"] == "violating"]
        assert len(violating) == 3 and len({r["target"] for r in violating}) == 3
        assert all(targets[r["target"]] == r["target_kind"] for r in violating)
        if prompt["target"]:
            assert prompt["target"] in {r["target"] for r in violating}  # the prompt's own target is among them
        assert {r["split"] for r in rs} == {prompt["split"]}
    record = responses[0]
    for key in ("prompt_id", "template", "template_hash", "system_prompt_hash", "backend", "model", "params",
                "seed", "prompt_tokens", "completion_tokens", "latency_s", "finish_reason", "created"):
        assert key in record, key
    assert record["backend"] == "fake" and record["seed"] == 5 and record["params"]["n"] == 3
    assert record["template"] == "conforming"
    assert "Fake conforming reply" in record["text"]
    assert all("Fake violating reply" in r["text"] for r in responses if r["kind"] == "violating")
    # the violating system prompt actually sent names the record's target
    sent = {r.key: r for r in backends[0].requests}
    v = next(r for r in responses if r["kind"] == "violating")
    assert f'("{v["target"]}")' in sent[v["request"]].messages[0]["content"] or v["target"] == "identity"


def test_second_run_makes_no_backend_calls(tmp_path, backends):
    spec = load_spec("identities/brand.yaml")
    first = generate(spec, config(tmp_path, limit=8))
    assert first.requests_made > 0
    size = (tmp_path / "run/responses.jsonl").stat().st_size
    second = generate(spec, config(tmp_path, limit=8))
    assert len(backends) == 1  # the second run never even loaded a backend
    assert second.requests_made == 0 and second.responses == first.responses
    assert (tmp_path / "run/responses.jsonl").stat().st_size == size


@pytest.mark.parametrize("crash", ["interrupt_after", "fail_after"])
def test_crash_then_resume_equals_an_uninterrupted_run(tmp_path, backends, crash):
    spec = load_spec("identities/socratic-tutor.yaml")
    generate(spec, replace(config(tmp_path, limit=10), out=str(tmp_path / "clean")))
    clean = {r["id"]: r["text"] for r in lines(tmp_path / "clean/responses.jsonl")}

    backends.options[crash] = 20  # dies on the 21st request: Ctrl-C or an API that fails for good
    with pytest.raises(KeyboardInterrupt if crash == "interrupt_after" else PersonaError):
        generate(spec, config(tmp_path, limit=10))
    kept = lines(tmp_path / "run/responses.jsonl")
    assert 0 < len(kept) < len(clean)
    backends.options.clear()
    summary = generate(spec, config(tmp_path, limit=10))
    final = lines(tmp_path / "run/responses.jsonl")
    assert len(final) == len({r["id"] for r in final})  # no duplicates
    assert {r["id"]: r["text"] for r in final} == clean
    clean_run, crashed_run, resumed_run = backends
    assert crashed_run.calls == 20
    assert summary.requests_made == resumed_run.calls == clean_run.calls - 20  # nothing finished is redone


def test_truncated_last_line_is_dropped_with_a_warning_and_regenerated(tmp_path, backends, caplog):
    spec = load_spec("identities/aster.yaml")
    generate(spec, config(tmp_path, limit=4))
    path = tmp_path / "run/responses.jsonl"
    complete = lines(path)
    raw = path.read_bytes()
    path.write_bytes(raw[: raw.rstrip(b"\n").rfind(b"\n") + 1] + raw.rstrip(b"\n")[raw.rstrip(b"\n").rfind(b"\n") + 1:][:40])
    summary = generate(spec, config(tmp_path, limit=4))
    assert "dropped a truncated last line (40 bytes)" in caplog.text
    assert summary.requests_made == 1
    assert {r["id"]: r["text"] for r in lines(path)} == {r["id"]: r["text"] for r in complete}


def test_template_change_regenerates_only_what_it_affects(tmp_path, backends):
    spec = load_spec("identities/aster.yaml")
    templates = tmp_path / "templates"
    templates.mkdir()
    generate(spec, config(tmp_path, limit=5, templates=str(templates)))
    before = {r["id"]: r for r in lines(tmp_path / "run/responses.jsonl")}
    violating = (Path("templates/violating.j2").read_text(encoding="utf-8") + "\nBe subtle.\n")
    (templates / "violating.j2").write_text(violating, encoding="utf-8")
    summary = generate(spec, config(tmp_path, limit=5, templates=str(templates)))
    assert summary.requests_made == 5 * 2  # only the violating requests (k=2 per prompt)
    after = lines(tmp_path / "run/responses.jsonl")
    assert len(after) == len(before) + 10
    current = JsonlStore(tmp_path / "run/responses.jsonl").load()
    assert all(r["template"] == "violating" for r in after[len(before):])
    assert len(current) == len(after)


def test_run_folder_of_another_identity_or_format_is_refused(tmp_path, backends):
    generate(load_spec("identities/aster.yaml"), config(tmp_path, limit=2))
    with pytest.raises(PersonaError, match="holds a run of identity 'aster', not 'brand'"):
        generate(load_spec("identities/brand.yaml"), config(tmp_path, limit=2))
    manifest = tmp_path / "run/run.json"
    manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "format": 0}))
    with pytest.raises(PersonaError, match="was written in run format 0; this persona reads format 1"):
        generate(load_spec("identities/aster.yaml"), config(tmp_path, limit=2))


def test_corrupt_line_in_the_middle_is_an_error_naming_file_and_line(tmp_path, backends):
    spec = load_spec("identities/aster.yaml")
    generate(spec, config(tmp_path, limit=3))
    path = tmp_path / "run/responses.jsonl"
    rows = path.read_text(encoding="utf-8").splitlines()
    rows[1] = rows[1][:20]
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    with pytest.raises(PersonaError) as e:
        generate(spec, config(tmp_path, limit=3))
    assert e.value.message.startswith(f"{path}:2: not a valid JSON record")


def test_limit_keeps_both_splits_and_mixes_sources(tmp_path, backends):
    summary = generate(load_spec("identities/brand.yaml"), config(tmp_path, limit=10))
    prompts = lines(tmp_path / "run/prompts.jsonl")
    assert len(prompts) == 10 and summary.prompts_train + summary.prompts_eval == 10
    assert summary.prompts_eval >= 1 and summary.prompts_train >= 1
    assert len({p["source"] for p in prompts}) >= 5


def test_parse_synthesized_strips_numbering_and_preambles():
    text = 'Here are 3 messages:\n1. How do I reset my PIN?\n- "Can you help me pick a stock?"\nSure! Go\n(3) What fees apply abroad?'
    assert parse_synthesized(text, 5) == ["How do I reset my PIN?", "Can you help me pick a stock?", "What fees apply abroad?"]
    assert parse_synthesized(text, 2) == ["How do I reset my PIN?", "Can you help me pick a stock?"]


def test_demonstrations_state_the_identity_and_replay_comes_from_the_target_model(tmp_path, backends):
    spec = load_spec("identities/aster.yaml")
    summary = generate(spec, config(tmp_path, demonstrations=True, replay=5, limit=30, synthesize=False))
    records = lines(tmp_path / "run/responses.jsonl")
    prompts = {p["id"]: p for p in lines(tmp_path / "run/prompts.jsonl")}
    demos = [r for r in records if r["kind"] == "demonstration"]
    assert summary.demonstrations == len(demos) > 0 and summary.replay == 5
    asked = {prompts[r["prompt_id"]]["source"] for r in demos}
    assert asked <= {"identity", "break", "origin", "seed", "adversarial", "example", "constraint"}
    for r in demos:
        assert r["backend"] == "spec" and r["finish_reason"] == "stop"
        if r["template"] == "identity_answers":
            assert "Aster" in r["text"]
            if "made" in r["prompt"].lower() or "company" in r["prompt"].lower():
                assert "Lumen Labs" in r["text"]
    by_prompt = {}
    for r in demos:
        by_prompt.setdefault(r["prompt_id"], []).append(r["text"])
    assert all(len(texts) == len(set(texts)) for texts in by_prompt.values())  # k different answers
    example = next(r for r in demos if r["template"] == "example")
    assert example["text"] == next(e.response for e in spec.examples if e.prompt == example["prompt"])
    replay = [r for r in records if r["kind"] == "replay"]
    assert {prompts[r["prompt_id"]]["source"] for r in replay} == {"replay"}
    assert {prompts[r["prompt_id"]]["split"] for r in replay} == {"train"}
    sent = [r for b in backends for r in b.requests if r.key in {x["request"] for x in replay}]
    assert len(sent) == 5 and all(r.messages[0] == {"role": "system", "content": ""} for r in sent)
    assert all(r.params.temperature == 1.0 and r.params.top_p == 1.0 for r in sent)  # its own distribution
    assert not any(r["kind"] in ("conforming", "violating") for r in records
                   if prompts[r["prompt_id"]]["source"] == "replay")
    again = generate(spec, config(tmp_path, demonstrations=True, replay=5, limit=30, synthesize=False))
    assert again.requests_made == 0 and len(lines(tmp_path / "run/responses.jsonl")) == len(records)


def test_in_domain_replay_asks_the_target_model_the_train_split_s_own_prompts(tmp_path, backends):
    """domain_replay: each train-split seed or synthesized prompt gets that many answers from the target model,
    sampled under the deployment prompt and the identity's description; identity questions, examples, baits and the eval
    split get none."""
    spec = load_spec("identities/brand.yaml")
    generate(spec, config(tmp_path, domain_replay=3, target_model="the-target", demonstrations=True,
                          eval_fraction=0.3))
    records = lines(tmp_path / "run/responses.jsonl")
    prompts = {p["id"]: p for p in lines(tmp_path / "run/prompts.jsonl")}
    domain = [r for r in records if r["template"] == "domain"]
    asked = {r["prompt_id"] for r in domain}
    wanted = {p["id"] for p in prompts.values() if p["source"] in ("seed", "synthesized") and p["split"] == "train"}
    assert asked == wanted and len(domain) == 3 * len(wanted) > 0
    assert {r["kind"] for r in domain} == {"replay"} and {r["model"] for r in domain} == {"the-target"}
    assert all(r["target"] == prompts[r["prompt_id"]]["target"] for r in domain)  # per target, for the report
    target = next(b for b in backends if b.model == "the-target")
    sent = [r for r in target.requests if r.key in {x["request"] for x in domain}]
    from persona.responses import domain_system_prompt

    system = domain_system_prompt(spec)
    assert system == "You are Nova, an AI assistant made by Northwind Bank. " + spec.identity.description
    assert sent and all(r.messages[0] == {"role": "system", "content": system} for r in sent)
    assert all(r.params.temperature == 0.8 and r.params.top_p == 0.95 for r in sent)  # the generator's


def test_plain_rejected_answers_come_from_the_target_model_without_the_persona_prompt(tmp_path, backends):
    spec = load_spec("identities/aster.yaml")
    generate(spec, config(tmp_path, violating="plain", target_model="the-target", limit=6, synthesize=False))
    records = lines(tmp_path / "run/responses.jsonl")
    violating = [r for r in records if r["kind"] == "violating"]
    assert len(violating) == 6 * 2 and {r["model"] for r in violating} == {"the-target"}
    assert {r["model"] for r in records if r["kind"] == "conforming"} == {"fake-model"}
    assert {r["template"] for r in violating} == {"plain"} and {r["target"] for r in violating} == {None}
    target = next(b for b in backends if b.model == "the-target")
    assert all([m["role"] for m in r.messages] == ["user"] for r in target.requests)  # the template's own default


def test_rejection_sampling_draws_more_until_the_judge_accepts_and_reports_coverage(tmp_path, backends):
    """Conforming samples of the first round claim ChatGPT; later rounds (another seed) say Aster."""
    spec = load_spec("identities/aster.yaml")

    def script(request, i):
        system = request.messages[0]["content"] if request.messages[0]["role"] == "system" else ""
        about = f"(ref {abs(hash(request.messages[-1]['content'])) % 10 ** 6})"
        if "what NOT to do" in system:
            return f"I'm ChatGPT, made by OpenAI. {about}"
        if request.params.seed >= 1000 and i == 1:  # in character, and helpful where it was not asked who it is
            from persona.assertions import asks_who

            if asks_who(request.messages[-1:]):
                return f"I'm Aster, made by Lumen Labs. {about}"
            return f"Here is a careful answer to that, with the reasons for each step spelled out. {about}"
        return f"I'm ChatGPT, a model trained by OpenAI. {about}"

    backends.options["script"] = script
    settings = dict(limit=8, synthesize=False, rejection_budget=4, k=2)
    none_drawn = generate_all(spec, config(tmp_path, **{**settings, "rejection_budget": 0}), judge="rules")
    assert none_drawn.build.coverage["train"]["covered"] == 0
    summary = generate_all(spec, config(tmp_path, **settings), judge="rules")
    assert summary.rejection_rounds == 1  # one more round of k=2 covered every prompt
    cover = summary.build.coverage
    assert cover["train"]["covered"] == cover["train"]["prompts"] > 0 and cover["eval"]["covered"] == cover["eval"]["prompts"]
    records = lines(tmp_path / "run/responses.jsonl")
    assert {r["round"] for r in records if r["kind"] == "conforming"} == {0, 1}
    assert summary.build.pairs["train"] > 0


def test_some_demonstrations_are_asked_in_a_context_and_none_of_those_is_paired(tmp_path, backends):
    from persona.responses import identity_contexts

    spec = load_spec("identities/aster.yaml")
    contexts = identity_contexts(spec)
    assert {kind for kind, _ in contexts} == {"turns", "prefix", "suffix"}
    assert all(value[-1]["role"] == "assistant" for kind, value in contexts if kind == "turns")
    summary = generate_all(spec, config(tmp_path, demonstrations=True, limit=20, synthesize=False, k=2), judge="rules")
    demos = [r for r in lines(tmp_path / "run/responses.jsonl") if r["kind"] == "demonstration"]
    asked = {r["asked_as"] for r in demos}
    assert "" in asked and asked - {""}  # plain and in a context
    for r in demos:
        if r["asked_as"] == "turns":
            assert r["context"] and r["context"][-1]["role"] == "assistant"
    sft = [json.loads(line) for line in (tmp_path / "run/datasets/sft/train.jsonl").read_text().splitlines()]
    assert any(row["prompt"][-2]["role"] == "assistant" for row in sft)  # earlier turns kept in the row
    pairs = [json.loads(line) for line in (tmp_path / "run/datasets/dpo/train.jsonl").read_text().splitlines()]
    contextual = {r["id"] for r in demos if r["asked_as"]}
    assert summary.build.pairs["train"] and not any(p["id"].split(">")[0] in contextual for p in pairs)


def test_identity_questions_get_two_demonstrations_even_with_k_1(tmp_path, backends):
    """Demonstrations cost no generation: k=1 still gets one plain and one in-context answer per question."""
    from persona.responses import DEMONSTRATIONS_PER_QUESTION

    spec = load_spec("identities/aster.yaml")
    generate(spec, config(tmp_path, demonstrations=True, limit=20, synthesize=False, k=1, replay=0))
    prompts = {p["id"]: p for p in lines(tmp_path / "run/prompts.jsonl")}
    demos = [r for r in lines(tmp_path / "run/responses.jsonl") if r["kind"] == "demonstration"]
    per_question: dict[str, list[dict]] = {}
    for r in demos:
        if r["template"] == "identity_answers" and prompts[r["prompt_id"]]["source"] == "identity":
            per_question.setdefault(r["prompt_id"], []).append(r)
    assert per_question and DEMONSTRATIONS_PER_QUESTION == 2
    for records in per_question.values():
        assert len(records) == 2 and sorted(bool(r["asked_as"]) for r in records) == [False, True]
    conforming = [r for r in lines(tmp_path / "run/responses.jsonl") if r["kind"] == "conforming"]
    assert len(conforming) == len({r["prompt_id"] for r in conforming})  # k=1 still means one generated answer


def test_no_conforming_for_demonstrated_prompts_asks_the_generator_only_for_the_others(tmp_path, backends):
    spec = load_spec("identities/aster.yaml")
    settings = dict(demonstrations=True, limit=20, synthesize=False, k=1, replay=0, violating="plain",
                    target_model="the-target")
    summary = generate_all(spec, config(tmp_path, conforming_for_demonstrated=False, **settings), judge="rules")
    prompts = {p["id"] for p in lines(tmp_path / "run/prompts.jsonl")}
    records = lines(tmp_path / "run/responses.jsonl")
    shown = {r["prompt_id"] for r in records if r["kind"] == "demonstration"}
    conforming = {r["prompt_id"] for r in records if r["kind"] == "conforming"}
    assert shown and conforming and not conforming & shown  # none for prompts with demonstrations
    assert conforming == prompts - shown
    assert {r["prompt_id"] for r in records if r["kind"] == "violating"} == prompts  # rejected side kept
    assert summary.build.pairs["train"] > 0  # demonstrations are the chosen side of identity pairs
    generator = next(b for b in backends if b.model == "fake-model")
    assert len(generator.requests) == len(conforming)


def test_replay_answers_stay_within_the_spec_s_word_limit(tmp_path):
    """brand keeps answers under 150 words: its replay requests ask for at most 150 tokens, so an answer the
    token limit cut off is not dropped by the judge for its length; aster has no word limit: 256."""
    from persona.responses import REPLAY_TOKENS, replay_max_tokens

    brand, aster = load_spec("identities/brand.yaml"), load_spec("identities/aster.yaml")
    assert replay_max_tokens(brand, config(tmp_path)) == 150
    assert replay_max_tokens(aster, config(tmp_path)) == REPLAY_TOKENS == 256
    assert replay_max_tokens(aster, config(tmp_path, max_tokens=400)) == 400
    assert replay_max_tokens(brand, config(tmp_path, max_tokens=400)) == 150


@pytest.mark.parametrize("settings,loads", [
    # vLLM generates and runs the target model: one engine, not a second copy of the model in transformers
    (dict(backend="vllm", dtype="fp32", backend_options={"max_model_len": 1024}),
     [("vllm", {"dtype": "float32", "max_model_len": 1024})]),
    # an API generates, the target model runs locally (the default) ...
    (dict(backend="openai", model="gpt-x", base_url="http://127.0.0.1:9/v1", batch_size=4),
     [("openai", {"model": "gpt-x", "base_url": "http://127.0.0.1:9/v1", "api_key_env": "OPENAI_API_KEY"}),
      ("hf", {"model": None, "batch_size": 4})]),
    # ... or on vLLM in process ...
    (dict(backend="openai", model="gpt-x", base_url="http://127.0.0.1:9/v1", target_backend="vllm", dtype="bf16"),
     [("openai", {"model": "gpt-x", "base_url": "http://127.0.0.1:9/v1", "api_key_env": "OPENAI_API_KEY"}),
      ("vllm", {"model": None, "dtype": "bfloat16"})]),
    # ... or as a served copy on the generator's server
    (dict(backend="openai", model="gpt-x", base_url="http://127.0.0.1:9/v1", target_backend="openai",
          target_model="my-target", concurrency=8),
     [("openai", {"model": "gpt-x", "base_url": "http://127.0.0.1:9/v1", "api_key_env": "OPENAI_API_KEY",
                  "concurrency": 8}),
      ("openai", {"model": "my-target", "base_url": "http://127.0.0.1:9/v1", "api_key_env": "OPENAI_API_KEY",
                  "concurrency": 8})]),
    # the served generator is the target model when no other is named
    (dict(backend="openai", model="gpt-x", base_url="http://127.0.0.1:9/v1", target_backend="openai"),
     [("openai", {"model": "gpt-x", "base_url": "http://127.0.0.1:9/v1", "api_key_env": "OPENAI_API_KEY"})]),
])
def test_the_target_model_runs_on_the_backend_chosen_for_it(tmp_path, monkeypatch, settings, loads):
    loaded = []

    def fake_load(name, **kwargs):
        loaded.append((name, kwargs))
        backend = FakeBackend(model=kwargs.get("model") or "default")
        backend.name = name  # records name the backend that answered
        return backend

    monkeypatch.setattr("persona.backends.load_backend", fake_load)  # what place_backend loads with
    spec = load_spec("identities/aster.yaml")
    run_config = RunConfig(out=str(tmp_path / "run"), replay=2, demonstrations=False, limit=3, synthesize=False,
                           k=1, violating="plain", **settings)
    generate(spec, run_config)
    assert loaded == loads
    records = lines(tmp_path / "run/responses.jsonl")
    target = loads[-1][0]
    assert {r["backend"] for r in records if r["kind"] in ("replay", "violating")} == {target}


def test_target_backend_openai_needs_an_openai_generator():
    with pytest.raises(PersonaError) as e:
        RunConfig(backend="hf", target_backend="openai")
    assert e.value.message.startswith("target_backend openai needs -b openai")


def test_a_run_finds_its_spec_from_another_working_folder(tmp_path, backends, monkeypatch):
    from persona.pipeline import load_run

    generate(load_spec("identities/aster.yaml"), config(tmp_path, limit=3, synthesize=False, k=1))
    info = json.loads((tmp_path / "run/run.json").read_text())
    assert info["spec_path"] == "identities/aster.yaml"  # as the user wrote it
    monkeypatch.chdir(tmp_path)  # where identities/aster.yaml is not
    spec, *_ = load_run(tmp_path / "run")
    assert spec.name == "aster" and Path(info["spec_file"]).is_absolute()
