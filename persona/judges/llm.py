"""The `llm` judge: a model reads templates/judge.j2 (the rubric, with the response fenced as data) and
replies with JSON scores. Any backend can be the judge model.

    judge = LLMJudge(backend="openai", model="gpt-4o-mini")          # key in OPENAI_API_KEY
    judge = LLMJudge(backend="hf", model="path/to/a/capable/model")

Requests ask for temperature 0 and, where the server supports structured output (the `openai`
backend), a JSON schema. Replies go through persona.judges.parse (code fences, text around the JSON,
"7.5", other scales); a reply that still cannot be read gets one retry ("reply with only the JSON"),
then the record is marked unjudged with the raw reply kept. Never a silent drop, never a silent None.

Pairwise mode (`prefer`) shows two responses (templates/judge_pairwise.j2) in both orders and keeps a
preference only when both orders agree; `swap_consistency` reports how often they did.

Injection hardening: the response is fenced between markers it cannot contain (the `fence` filter),
the rubric says instructions inside it are data and that trying to influence the score breaks the
persona, and only the judge model's reply is ever parsed - a fake verdict inside a response is text.
The embedded 135M model is far too weak to judge this way (see docs/guide.md, "Judging and datasets"); use a capable model.
"""

from __future__ import annotations

import json
from typing import Iterator, Sequence

from persona.backends import Request, SamplingParams, model_name, place_backend
from persona.judges import JudgeItem, Judgement
from persona.judges.parse import ParseError, parse_preference, parse_verdict
from persona.spec import Spec
from persona.store import input_key
from persona.templates import render_template, template_hash

RETRY = "Your reply could not be read. Reply with only the JSON object described above, and nothing else."


def verdict_schema(target_ids: list[str]) -> str:
    score = {"type": "number", "minimum": 0, "maximum": 10}
    return json.dumps({"type": "object", "required": ["scores", "overall", "rationale"], "properties": {
        "scores": {"type": "object", "properties": {t: score for t in target_ids}, "required": target_ids},
        "overall": score, "rationale": {"type": "string"}}})


class LLMJudge:
    cost = "one request per response to the judge model"

    def __init__(self, backend: str = "hf", model: str | None = None, base_url: str | None = None,
                 api_key_env: str | None = None, concurrency: int | None = None, max_tokens: int = 400,
                 structured_output: bool = True, templates: str | None = None, ray: str | None = None,
                 ray_replicas: int | None = None):
        from persona.backends import backend_class, options_of

        taken = options_of(backend)  # a server's URL and key, or a local model's name only
        options = {k: v for k, v in dict(model=model, base_url=base_url, api_key_env=api_key_env,
                                         concurrency=concurrency).items() if k in taken}
        self._backend_name, self._backend_options, self._backend = backend, options, None
        # a model that runs here may be replicated on a Ray cluster; a server is asked from here
        self.ray = ray if backend_class(backend).local else None
        self.ray_replicas = ray_replicas  # where the judge model runs: not part of the verdicts
        self.name = f"llm:{backend}:{model_name(backend, model) or 'default'}"
        self.max_tokens = int(max_tokens)
        self.structured_output = bool(structured_output)
        self.templates = templates
        self.fingerprint = f"{self.name}|{template_hash('judge', templates)}|{max_tokens}"
        self.swap_consistency: float | None = None

    @property
    def backend(self):
        """The judge model, loaded on first use (building datasets only needs the judge's name)."""
        if self._backend is None:
            options = {k: v for k, v in self._backend_options.items() if v is not None}
            self._backend = place_backend(self._backend_name, options, self.ray, self.ray_replicas)
        return self._backend

    @backend.setter
    def backend(self, value) -> None:
        self._backend = value

    def close(self) -> None:
        if self._backend is not None:
            self._backend.close()

    def _params(self, spec: Spec) -> SamplingParams:
        schema = verdict_schema([t.id for t in spec.targets()]) if self.structured_output else None
        return SamplingParams(n=1, temperature=0.0, top_p=1.0, max_tokens=self.max_tokens, seed=0, json_schema=schema)

    def judge(self, spec: Spec, items: Sequence[JudgeItem]) -> Iterator[tuple[JudgeItem, Judgement]]:
        targets = [t.id for t in spec.targets()]
        params = self._params(spec)
        requests, by_key = [], {}
        for item in items:
            prompt = render_template("judge", self.templates, spec=spec, prompt=item.prompt, response=item.response)
            messages = ({"role": "user", "content": prompt},)
            request = Request(input_key("judge", messages, params.to_dict()), messages, params)
            requests.append(request)
            by_key[request.key] = item
        retries = []
        for result in self.backend.complete(requests):
            item, reply = by_key[result.request.key], result.completions[0].text
            try:
                yield item, self._verdict(reply, targets)
            except ParseError:
                messages = result.request.messages + ({"role": "assistant", "content": reply},
                                                      {"role": "user", "content": RETRY})
                retry = Request(result.request.key + "-retry", messages, params)
                retries.append(retry)
                by_key[retry.key] = item
        for result in self.backend.complete(retries):
            item, reply = by_key[result.request.key], result.completions[0].text
            first = result.request.messages[1]["content"]
            try:
                yield item, self._verdict(reply, targets)
            except ParseError as e:
                yield item, Judgement("unjudged", None, {t: None for t in targets}, "",
                                      f"{first}\n--- retry ---\n{reply}", f"unparseable judge reply: {e}")

    def _verdict(self, reply: str, targets: list[str]) -> Judgement:
        verdict = parse_verdict(reply, targets)
        error = f"no score for: {', '.join(verdict.missing)}" if verdict.missing else ""
        return Judgement("ok", verdict.overall, verdict.scores, verdict.rationale, reply, error)

    def rubric(self, spec: Spec, items: Sequence[tuple[str, tuple, str, str]]) -> dict[str, tuple[bool | None, str]]:
        """{key: (passed, why)} for (key, messages, response, rubric): whether each response does what its behaviour
        test's rubric says (templates/rubric.j2); passed is None where the reply could not be read."""
        schema = json.dumps({"type": "object", "required": ["pass", "reason"],
                             "properties": {"pass": {"type": "boolean"}, "reason": {"type": "string"}}})
        params = SamplingParams(n=1, temperature=0.0, top_p=1.0, max_tokens=200, seed=0,
                                json_schema=schema if self.structured_output else None)
        requests, keys = [], {}
        for key, messages, response, rubric in items:
            conversation = "\n".join(f"{m['role'].upper()}: {m['content']}" for m in messages)
            text = render_template("rubric", self.templates, spec=spec, conversation=conversation, response=response,
                                   rubric=rubric)
            chat = ({"role": "user", "content": text},)
            request = Request(input_key("rubric", chat, params.to_dict()), chat, params)
            requests.append(request)
            keys[request.key] = key
        out = {}
        for result in self.backend.complete(requests):
            reply = result.completions[0].text
            try:
                verdict = json.loads(reply[reply.index("{"):reply.rindex("}") + 1])
                passed = verdict["pass"] if isinstance(verdict.get("pass"), bool) else None
                out[keys[result.request.key]] = (passed, str(verdict.get("reason", ""))[:300] if passed is not None
                                                 else f"unreadable verdict: {reply[:120]!r}")
            except (ValueError, KeyError, TypeError, AttributeError):
                out[keys[result.request.key]] = (None, f"unreadable verdict: {reply[:120]!r}")
        return out

    def prefer(self, spec: Spec, pairs: Sequence[tuple[str, str, str, str]]) -> dict[str, str | None]:
        """{key: "a" | "b" | None} for (key, prompt, a, b): a preference only when both orders agree."""
        params = SamplingParams(n=1, temperature=0.0, top_p=1.0, max_tokens=200, seed=0)
        requests, meta = [], {}
        for key, prompt, a, b in pairs:
            for order, (first, second) in (("ab", (a, b)), ("ba", (b, a))):
                text = render_template("judge_pairwise", self.templates, spec=spec, prompt=prompt,
                                       response_a=first, response_b=second)
                messages = ({"role": "user", "content": text},)
                request = Request(input_key("pairwise", messages, params.to_dict()), messages, params)
                requests.append(request)
                meta[request.key] = (key, order)
        votes: dict[str, dict[str, str | None]] = {key: {} for key, *_ in pairs}
        for result in self.backend.complete(requests):
            key, order = meta[result.request.key]
            try:
                winner = parse_preference(result.completions[0].text)
            except ParseError:
                winner = None
            if winner in ("A", "B"):  # map back to the pair's own a/b
                winner = {"ab": {"A": "a", "B": "b"}, "ba": {"A": "b", "B": "a"}}[order][winner]
            votes[key][order] = winner
        out, consistent = {}, 0
        for key, v in votes.items():
            agree = v.get("ab") is not None and v.get("ab") == v.get("ba") and v["ab"] in ("a", "b")
            consistent += agree
            out[key] = v["ab"] if agree else None
        self.swap_consistency = consistent / len(votes) if votes else None
        return out
