"""`persona test MODEL_OR_ENDPOINT SPEC`: run a spec's behaviour tests (its `tests:`) against a trained output, a
base model, or any OpenAI-compatible endpoint - a deployed model - and report pass and fail per test and per
target, the universal checks on every answer, and JUnit XML for CI. The regression gate a team runs on its
assistant.

    results = run_tests("runs/brand/train-sft", "identities/brand.yaml")
    results["passed"], results["judged"], results["by_target"]["no-investment-advice"]

A test passes when every machine assertion holds and, where it has a `rubric:`, a judge model that can read
rubrics (--judge llm) says the answer does what it asks. A test with only a rubric and no such judge is "not
judged": counted apart, never as passed. Answers are greedy, without a system message (the model as deployed),
and saved as they come (TestFolder): a rerun asks only what is missing; --rerun asks everything again (a
deployment that changed).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from persona.assertions import machine_failures
from persona.errors import PersonaError
from persona.options import setting


@dataclass(frozen=True)
class TestSettings:
    """Every setting of `persona test`, each with its command-line option."""

    __test__ = False  # not a pytest test class

    model: str | None = setting(None, "An endpoint's model name.", "-m", shown="the first model the server lists")
    api_key_env: str = setting("OPENAI_API_KEY", "An endpoint's API key: the environment variable holding it (its "
                               "name; EMPTY for a local server without authentication).")
    base: str | None = setting(None, "A trained adapter's base model, if it moved.", shown="the one it was trained on")
    max_tokens: int = setting(200, "Longest answer, in tokens.", min=1)
    batch_size: int | None = setting(None, "hf: sequences per generation batch.", min=1)
    repetition_penalty: float = setting(1.0, "A model here (not an endpoint): the repetition penalty; 1.0 is plain "
                                        "greedy decoding, what a server such as vllm serve or transformers serve "
                                        "does unless told otherwise (persona generate and eval use 1.1).", min=1.0)
    min_pass: float | None = setting(None, "Exit 1 when fewer than this share (0-1) of the judged tests pass.",
                                     min=0.0, max=1.0)
    out: str | None = setting(None, "Where the answers, results.json and junit.xml go.",
                              shown="OUTPUT/tests/SPEC for a trained output, else persona-tests/SPEC/MODEL")
    rerun: bool = setting(False, "Ask every test again instead of reusing saved answers.")


def is_endpoint(target: str) -> bool:
    return str(target).startswith(("http://", "https://"))


def _answering(target: str, settings: TestSettings):
    """(backend, the model's name in answer keys): an endpoint through the openai backend, a trained output or a
    base model (a name, folder or .gguf; `base` or `embedded` for the embedded default) here."""
    from persona.answering import answering_backend, load_model
    from persona.run import TrainOutput

    if is_endpoint(target):
        from persona.backends import load_backend

        model = settings.model or _first_model(target, settings.api_key_env)
        backend = load_backend("openai", model=model, base_url=target, api_key_env=settings.api_key_env)
        return backend, f"{backend.base_url} {model}"
    output = TrainOutput(target)
    if Path(target).is_dir() and output.settings_file.is_file():
        from persona.models import trained_fingerprint

        loaded = load_model("trained", target, settings.base)
        return (answering_backend("hf", {}, loaded=loaded, batch_size=settings.batch_size,
                                  repetition_penalty=settings.repetition_penalty),
                f"{target} {trained_fingerprint(target)}")
    name = None if target in ("base", "embedded") else target
    loaded = load_model("base", None, name)
    return answering_backend("hf", {}, loaded=loaded, batch_size=settings.batch_size,
                             repetition_penalty=settings.repetition_penalty), loaded[2]


def _first_model(base_url: str, api_key_env: str) -> str:
    """The first model an OpenAI-compatible server lists (GET /models)."""
    import os

    import openai

    from persona.secrets import url_without_credentials

    try:
        client = openai.OpenAI(base_url=base_url, api_key=os.environ.get(api_key_env) or "EMPTY", timeout=30,
                               max_retries=1)
        models = [m.id for m in client.models.list()]
    except Exception as e:  # a server that is down or answers oddly: say which, never the key
        raise PersonaError(f"{url_without_credentials(base_url)}: could not list its models "
                           f"({type(e).__name__})", hint="name the model with -m NAME, or check the URL") from None
    if not models:
        raise PersonaError(f"{url_without_credentials(base_url)} lists no models", hint="name the model with -m NAME")
    return models[0]


def rubric_judge(judge_settings):
    """The judge that reads the tests' rubrics, from `--judge` (persona.judges.JudgeSettings); None for none."""
    from persona.judges import chosen_judge, load_judge

    if not judge_settings.judge or judge_settings.judge == "none":
        return None
    name, options = chosen_judge(judge_settings.judge, judge_settings)
    return load_judge(name, **options)


def gate(results: dict, min_pass: float | None) -> None:
    """--min-pass: a PersonaError when fewer than `min_pass` of the judged tests passed."""
    rate = results["pass_rate"] or 0.0
    if min_pass is not None and rate < min_pass:
        raise PersonaError(f"pass rate {100 * rate:.1f}% is below --min-pass {100 * min_pass:.1f}%",
                           hint="the failing tests are listed above")


def run_tests(target: str, spec_path: str | Path, settings: TestSettings = TestSettings(), judge=None,
              on_progress: Callable | None = None, junit: str | Path | None = None) -> dict:
    """Ask the spec's tests of `target` (see the module's docstring), write results.json and junit.xml into the
    test folder (and the XML to `junit` too) and return the results. `judge`: a judge object; one with a `rubric`
    method reads rubrics."""
    from persona.backends import Request, SamplingParams
    from persona.run import TestFolder
    from persona.spec import load_spec
    from persona.store import append_missing, input_key, now, write_atomic

    started = time.perf_counter()
    spec = load_spec(spec_path)
    if not spec.tests:
        raise PersonaError(f"{spec.path} has no tests", hint="add a tests: section (docs/guide.md, Behaviour tests); "
                                                             "persona validate checks it")
    folder = TestFolder(settings.out) if settings.out else TestFolder.default(target, spec.name)
    folder.path.mkdir(parents=True, exist_ok=True)
    with folder.lock():
        if settings.rerun:
            folder.answers.path.unlink(missing_ok=True)
        backend, model = _answering(target, settings)
        params = SamplingParams(n=1, temperature=0.0, top_p=1.0, max_tokens=settings.max_tokens, seed=0)
        requests = [Request(input_key("test", model, t.id, t.messages, params.to_dict()), t.messages, params)
                    for t in spec.tests]
        tests = {r.key: t for r, t in zip(requests, spec.tests)}

        def to_records(result) -> list[dict]:
            c = result.completions[0]
            return [{"id": result.request.key, "test": tests[result.request.key].id, "model": model, "text": c.text,
                     "finish_reason": c.finish_reason, "completion_tokens": c.completion_tokens, "created": now()}]

        try:
            done, _ = append_missing(folder.answers, requests, backend.complete, to_records, stage="tests",
                                     on_progress=on_progress)
        finally:
            backend.close()
        answers = {tests[r.key].id: done[r.key] for r in requests}
        results = grade(spec, answers, judge)
        results.update(model=str(target), spec=spec.name, spec_path=str(spec.path), settings=asdict(settings),
                       seconds=round(time.perf_counter() - started, 1), folder=str(folder.path))
        write_atomic(folder.results_file, json.dumps(results, indent=2, ensure_ascii=False) + "\n")
        write_atomic(folder.junit_file, junit_xml(results))
        if junit is not None:
            write_atomic(Path(junit), junit_xml(results))
    return results


def grade(spec, answers: dict[str, dict], judge=None) -> dict:
    """The results of the tests from their answers ({test id: answer record}): each test's status and failures,
    per-target and universal counts. Rubrics are read by `judge` when it can (a `rubric` method)."""
    from persona.assertions import UNIVERSAL, universal_flags

    rubric_reader = judge if judge is not None and hasattr(judge, "rubric") else None
    verdicts = rubric_reader.rubric(spec, [(t.id, t.messages, answers[t.id]["text"], t.rubric) for t in spec.tests
                                           if t.rubric]) if rubric_reader else {}
    rows = []
    for test in spec.tests:
        record = answers[test.id]
        failures = machine_failures(test, record["text"]) or []
        rubric = None
        if test.rubric:
            passed, why = verdicts.get(test.id, (None, "no judge that reads rubrics (--judge llm)"))
            rubric = {"passed": passed, "why": why}
            if passed is False:
                failures.append(f"rubric: {why}")
        judged = bool(test.assertions) or (rubric is not None and rubric["passed"] is not None)
        status = "fail" if failures else "pass" if judged else "not judged"
        rows.append({"test": test.id, "targets": list(test.targets), "status": status, "failures": failures,
                     "rubric": rubric, "prompt": test.prompt, "answer": record["text"], "source": test.source,
                     "universal": universal_flags(spec, test.messages, record["text"], record.get("finish_reason"))})
    by_target = {}
    for target in spec.targets():
        mine = [r for r in rows if target.id in r["targets"]]
        judged = [r for r in mine if r["status"] != "not judged"]
        by_target[target.id] = {"kind": target.kind, "tests": len(mine), "judged": len(judged),
                                "passed": sum(r["status"] == "pass" for r in judged),
                                "rate": round(sum(r["status"] == "pass" for r in judged) / len(judged), 4)
                                if judged else None}
    judged = [r for r in rows if r["status"] != "not judged"]
    passed = sum(r["status"] == "pass" for r in judged)
    universal = {name: {"n": len(rows), "flagged": sum(r["universal"][name] for r in rows)} for name in UNIVERSAL}
    return {"tests": rows, "judged": len(judged), "passed": passed, "failed": len(judged) - passed,
            "not_judged": len(rows) - len(judged), "pass_rate": round(passed / len(judged), 4) if judged else None,
            "by_target": by_target, "universal": universal,
            "judge": getattr(rubric_reader, "name", None)}


def junit_xml(results: dict) -> str:
    """JUnit XML: one testsuite for the spec, a testcase per test (classname: its targets), a failure with what it
    broke, or skipped when not judged."""
    from xml.sax.saxutils import escape, quoteattr

    lines = ['<?xml version="1.0" encoding="UTF-8"?>',
             f'<testsuite name={quoteattr("persona:" + results["spec"])} tests="{len(results["tests"])}" '
             f'failures="{results["failed"]}" skipped="{results["not_judged"]}" time="{results.get("seconds", 0)}">']
    for row in results["tests"]:
        head = f'  <testcase classname={quoteattr(results["spec"] + "." + "+".join(row["targets"]))} ' \
               f'name={quoteattr(row["test"])}'
        if row["status"] == "pass":
            lines.append(head + "/>")
        elif row["status"] == "fail":
            body = escape(f"prompt: {row['prompt']}\nanswer: {row['answer']}")
            lines += [head + ">", f'    <failure message={quoteattr("; ".join(row["failures"]))}>{body}</failure>',
                      "  </testcase>"]
        else:
            lines += [head + ">", '    <skipped message="not judged: a rubric and no judge that reads it"/>',
                      "  </testcase>"]
    lines.append("</testsuite>")
    return "\n".join(lines) + "\n"
