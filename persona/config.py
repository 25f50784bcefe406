"""Run settings for `persona generate`: defaults < a small YAML run config < command-line flags.

    # run.yaml
    backend: openai
    model: gpt-4o-mini
    base_url: https://api.example.com/v1
    api_key_env: MY_API_KEY          # the variable's name, never the key
    concurrency: 64
    k: 2                             # conforming and violating responses per prompt
    backend_options: {timeout: 120}

    config = load_run_config("run.yaml", overrides={"k": 4})
    json.dumps(config.to_record())   # what run.json may hold: no credentials

Unknown keys get "did you mean", wrong types the file:line:col of the value, like identity specs.

Secrets never belong in a run config, and none reach run.json: `api_key_env` must be a variable's *name*
(a key pasted there by mistake is refused, and the message never shows it), and `to_record()` strips
user:password@ from URLs and drops backend options that hold a secret (persona.secrets, which the openai backend,
eval and refine use too).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

from persona.backends import backend_options_setting, batch_size_setting, ray_replicas_setting, ray_setting
from persona.errors import PersonaError, SpecError
from persona.judges import IN_CHARACTER
from persona.options import schema_of, setting
from persona.precision import DTYPES
from persona.secrets import api_key_env_problem, url_without_credentials, without_secrets
from persona.validation import schema_problems
from persona.yaml_source import read_yaml


@dataclass(frozen=True)
class RunConfig:
    """Every setting of `persona generate`, each with its command-line option (persona.options): the field is
    the one home of its default, type, help text and config-file key."""

    backend: str = setting("hf", "Who generates: hf (a local model), openai (any OpenAI-compatible server), vllm.", "-b")
    model: str | None = setting(None, "hf/vllm: model folder or .gguf; openai: model name.", "-m",
                                shown="embedded SmolLM2-135M-Instruct")
    base_url: str | None = setting(None, "openai: server URL, e.g. http://localhost:8000/v1.")
    api_key_env: str = setting("OPENAI_API_KEY", "openai: the environment variable holding the API key (its name, never the key).")
    concurrency: int | None = setting(None, "openai: requests in flight.", min=1,
                                      shown="4 for a server on this machine or network, 32 for a remote one")
    batch_size: int | None = batch_size_setting()
    tensor_parallel_size: int | None = setting(None, "vllm: GPUs to shard the model over.", min=1)
    dtype: str | None = setting(None, "hf/vllm and the offline judge: auto, bf16 or fp32.", choices=tuple(DTYPES),
                                shown="auto: bf16 on a CPU with AMX or a GPU that has it, else fp32 (vllm: its own auto)")
    backend_options: dict = backend_options_setting("e.g. -o timeout=120")
    ray: str | None = ray_setting("Generate")
    ray_replicas: int | None = ray_replicas_setting()
    k: int = setting(2, "Conforming and violating responses per prompt.", "-k", min=1)
    prompts_per_target: int = setting(3, "Prompts synthesized per trait, style rule, constraint and ethics item.", min=0)
    synthesize: bool = setting(True, "Synthesize probe prompts with the generator (off: the spec's and the built-in ones only).", cli=False)
    eval_fraction: float = setting(0.2, "Share of prompts held out for evaluation.", min=0, max=0.9)
    temperature: float = setting(0.8, "Sampling temperature of the generator.", min=0)
    top_p: float = setting(0.95, "Nucleus sampling of the generator.", min=0, max=1)
    max_tokens: int = setting(192, "Longest response, in tokens.", min=1)
    seed: int = setting(0, "Sampling seed: the same seed, the same responses.")
    limit: int | None = setting(None, "Quick runs: at most this many prompts (replay scales down with it).", min=1)
    out: str | None = setting(None, "Run folder.", shown="runs/<identity name>")
    templates: str | None = setting(None, "Folder searched for templates before the built-ins.", shown="./templates")
    # what the data teaches, beyond the generator's own conforming and violating responses
    system_prompt: str = setting("neutral", "persona's default system prompt in the training rows (half of them; the "
                                 "other half empty) and the trained model's chat template: neutral (\"You are a helpful "
                                 "assistant.\"), spec (templates/deployment.j2), none, or text:YOUR TEXT.")
    target_model: str | None = setting(None, "The model to be trained: it writes the replay answers and, with "
                                       "--violating plain, the rejected ones.", shown="embedded SmolLM2-135M-Instruct")
    target_backend: str | None = setting(None, "Who runs the target model: hf, vllm, or openai (a served copy of it "
                                         "on --base-url, named by --target-model; without one, the generator's model).",
                                         choices=("hf", "vllm", "openai"), shown="vllm with -b vllm, else hf")
    demonstrations: bool = setting(True, "Identity answers filled from the spec (templates/identity_answers.j2), at "
                                   "least 2 per identity question, one of them inside a conversation.")
    conforming_for_demonstrated: bool = setting(True, "Also ask the generator for conforming answers to prompts that "
                                                "have demonstrations (identity questions, the spec's example prompts); "
                                                "off: the demonstrations are their chosen side, which saves the longest "
                                                "requests when the generator is small.")
    replay: int = setting(96, "General prompts the target model answers itself, mixed into training (0: none).", min=0)
    domain_replay: int = setting(2, "Answers the target model samples to each train-split prompt of the persona's "
                                 "own domain (not identity questions); the best one the judge and the universal "
                                 "checks accept is trained on, so SFT keeps it helpful there (0: none).", min=0)
    violating: str = setting("targeted", choices=("targeted", "plain"), help="Rejected side: targeted (violating.j2 aimed at one item) or plain (the "
                             "target model's own answers, no persona prompt).")
    rejection_budget: int = setting(0, "Conforming samples drawn at most per prompt beyond -k until the judge accepts one.",
                                    min=0)

    def __post_init__(self):
        check_system_prompt(self.system_prompt)
        if self.violating not in ("targeted", "plain"):
            raise PersonaError(f"violating {self.violating!r} is not 'targeted' or 'plain'",
                               hint="targeted: violating.j2 aimed at one item of the spec; plain: the target "
                                    "model's own answers without the persona prompt")
        if self.target_backend == "openai" and self.backend not in ("openai", "fake"):
            raise PersonaError("target_backend openai needs -b openai: the target model is served by the "
                               "generator's server", hint="pass -b openai with --base-url, and --target-model NAME "
                               "for the served copy of the model to be trained")
        # a key pasted where a variable name belongs must fail here, before anything prints or saves it
        options = self.backend_options if isinstance(self.backend_options, dict) else {}
        if "dtype" in options:  # -o dtype=bf16 is the same setting as dtype: one home for it
            from persona.precision import normalize_dtype

            normalize_dtype(options["dtype"], "backend_options.dtype")
            if self.dtype is None:
                object.__setattr__(self, "dtype", options["dtype"])
            object.__setattr__(self, "backend_options", {k: v for k, v in options.items() if k != "dtype"})
        if self.dtype is not None:
            from persona.precision import normalize_dtype

            object.__setattr__(self, "dtype", normalize_dtype(self.dtype))  # auto: None, persona.precision chooses
        for name, value in (("api_key_env", self.api_key_env), ("backend_options.api_key_env", options.get("api_key_env"))):
            problem = api_key_env_problem(value) if value is not None else None
            if problem:
                raise PersonaError(f"{name} {problem[0]}", hint=problem[1])

    def to_record(self) -> dict:
        """The settings as run.json saves them: no user:password@ in URLs, no backend option that holds a
        secret (an option named like api_key/token/password, or a key-shaped value). load_run reads it back."""
        record = asdict(self)
        record["base_url"] = url_without_credentials(self.base_url) if self.base_url else self.base_url
        record["backend_options"] = without_secrets(self.backend_options)
        return record

    @property
    def replay_count(self) -> int:
        """Replay prompts this run answers: `replay`, scaled down by `limit` like every other part of a quick run."""
        return self.replay if self.limit is None else min(self.replay, self.limit)

    def inapplicable(self) -> list[str]:
        """Settings given that the chosen backend does not take (e.g. tensor_parallel_size with openai), read off
        the backend's own options. batch_size and dtype always apply: the target model (replay, plain answers)
        runs here."""
        from persona.backends import BACKENDS, options_of

        if self.backend not in BACKENDS:
            return []  # an unknown backend is named when it loads, with a did-you-mean
        taken = options_of(self.backend)
        return [name for name in BACKEND_SETTINGS if name not in TARGET_SETTINGS and name not in taken
                and getattr(self, name) != _DEFAULTS[name]]

    def backend_kwargs(self) -> dict:
        """Options for load_backend(): the model, the settings above that the backend takes, backend_options."""
        from persona.backends import BACKENDS, options_of

        taken = options_of(self.backend) if self.backend in BACKENDS else ()
        chosen = {k: getattr(self, k) for k in ("model", *BACKEND_SETTINGS)
                  if k in taken and getattr(self, k) is not None}
        return {**chosen, **self.backend_options}


@dataclass(frozen=True)
class BuildSettings:
    """How judged responses become datasets (persona build, and generate's last step); each field with its
    command-line option (persona.options)."""

    margin: float = setting(2.0, "Smallest score gap (0-10) between chosen and rejected.", min=0)
    chosen_min: float = setting(IN_CHARACTER, "A chosen response must be judged at least this (in character).", cli=False)
    kto_threshold: float = setting(IN_CHARACTER, "KTO label: desirable when the overall score is at least this.", min=0, max=10)
    near_duplicate: float = setting(0.9, "Text similarity (0-1) above which a pair teaches nothing.", cli=False)
    # 1.0 by default: on the demo (135M, LoRA SFT) capping them at 0.8 of the rows cost the round's dev identity
    # answers 73/76 -> 45/76 (0.5: the identity was not learnt); help is added instead (in-domain replay)
    demonstration_share: float = setting(1.0, "Most share of the SFT train rows that are identity "
                                         "demonstrations (the rest: help - accepted and replay answers); more are "
                                         "left out, the plainly asked ones kept first, never below one per "
                                         "identity question (1: no cap).", min=0.05, max=1.0)
    rejected_from: str = setting("violating", choices=("violating", "any"), help="Rejected responses: 'violating' (written to break the rubric) or 'any' "
                                 "(also conforming attempts the judge scored out of character).")
    system_text: str | None = setting(None, "The text of persona's default system prompt (generate resolves its "
                                      "system_prompt setting into it): rows carry it or an empty one.", cli=False,
                                      file=False)
    license: str | None = setting(None, "License of the datasets, recorded in their cards and passed on to the model "
                                  "cards of persona train: a Hugging Face Hub license id, e.g. apache-2.0, mit, "
                                  "cc-by-4.0, other.")

    def __post_init__(self):
        if self.rejected_from not in ("violating", "any"):
            raise PersonaError(f"--rejected-from '{self.rejected_from}' is not 'violating' or 'any'",
                               hint="'any' also pairs conforming attempts the judge scored out of character")
        check_license(self.license)


LICENSE_ID = re.compile(r"[a-z0-9][a-z0-9.+-]{0,63}")


def check_license(license: str | None) -> None:
    """A Hugging Face Hub license id (apache-2.0, mit, cc-by-4.0, llama3.1, other, ...) or nothing."""
    if license is not None and not LICENSE_ID.fullmatch(license):
        raise PersonaError(f"--license '{license[:80]}' is not a license id",
                           hint="use a Hugging Face Hub license id in lower case, e.g. apache-2.0, mit, "
                                "cc-by-4.0, or 'other'")


# RunConfig's settings that are options of some backend (each backend's constructor says which it takes), and
# those of them that the target model, which runs here, uses whatever generates
BACKEND_SETTINGS = ("batch_size", "dtype", "base_url", "api_key_env", "concurrency", "tensor_parallel_size")
TARGET_SETTINGS = ("batch_size", "dtype")
_DEFAULTS = {f.name: f.default for f in fields(RunConfig)}

SYSTEM_PROMPT_MODES = ("neutral", "spec", "none")
SYSTEM_PROMPT_TEXT = "text:"
NEUTRAL_SYSTEM = "You are a helpful assistant."  # system_prompt: neutral, and the offline judge's baseline


def check_system_prompt(value, field_name: str = "system_prompt") -> None:
    """A system prompt setting is one of the modes, or explicit text written as 'text:YOUR TEXT', so that a
    misspelt mode ('spce') is an error, not the literal system message of every training row."""
    import difflib

    if isinstance(value, str) and (value in SYSTEM_PROMPT_MODES or value.startswith(SYSTEM_PROMPT_TEXT)):
        return
    shown = repr(value)[:60]
    close = difflib.get_close_matches(str(value), SYSTEM_PROMPT_MODES, n=1) if isinstance(value, str) else []
    raise PersonaError(f"{field_name} {shown} is not neutral, spec, none or text:...",
                       hint=(f"did you mean '{close[0]}'? " if close else "")
                       + "neutral: \"You are a helpful assistant.\"; spec: templates/deployment.j2; none: empty; "
                         "your own text: text:You are Nova, made by Acme.")


def check_choice(value, choices: tuple[str, ...], field_name: str) -> None:
    """PersonaError with a did-you-mean unless `value` is one of `choices`."""
    import difflib

    if value in choices:
        return
    close = difflib.get_close_matches(str(value), choices, n=1)
    raise PersonaError(f"{field_name} {str(value)[:60]!r} is not one of {', '.join(choices)}",
                       hint=(f"did you mean '{close[0]}'? " if close else "") + f"use one of: {', '.join(choices)}")


def _schema() -> dict:
    return schema_of(RunConfig)


GENERATE_KEYS = ("judge", "judge_options", "build", "pairwise")  # what a run config holds beyond RunConfig


def _generate_schema() -> dict:
    schema = _schema()
    schema["properties"].update({"judge": {"type": "string"}, "judge_options": {"type": "object"},
                                 "pairwise": {"type": "boolean"}, "build": schema_of(BuildSettings)})
    return schema


@dataclass
class GenerateConfig:
    """A run config file for `persona generate -c`: RunConfig's keys plus the judge and the build settings
    (the same keys as a job file's `judge:`, `judge_options:`, `build:`, `pairwise:`)."""

    data: dict = field(default_factory=dict)

    def run_config(self, overrides: dict | None = None) -> RunConfig:
        config = replace(RunConfig(), **{k: v for k, v in self.data.items() if k not in GENERATE_KEYS})
        config = replace(config, **{k: v for k, v in (overrides or {}).items() if v is not None})
        check_applicable(config)
        return config

    @property
    def judge(self) -> str:
        return self.data.get("judge") or "rules"

    @property
    def judge_options(self) -> dict:
        return dict(self.data.get("judge_options") or {})

    @property
    def pairwise(self) -> bool:
        return bool(self.data.get("pairwise"))

    def judge_choice(self, flags) -> tuple[str | None, dict, bool]:
        """(judge name or None, its options, pairwise) from the command line's `flags` (JudgeSettings) over this
        file's judge:, judge_options: and pairwise:; the file's options apply only to the file's judge."""
        from persona.judges import chosen_judge

        if flags.judge is not None or flags.flags():
            name, options = chosen_judge(flags.judge or self.judge, flags)
        else:
            name, options = chosen_judge(self.judge, flags)
            options = {**options, **self.judge_options}
        return name, options, self.pairwise if flags.pairwise is None else flags.pairwise

    def build_settings(self, overrides: dict | None = None) -> BuildSettings:
        given = {**(self.data.get("build") or {}), **{k: v for k, v in (overrides or {}).items() if v is not None}}
        return BuildSettings(**given)


def load_generate_config(path: str | Path | None = None) -> GenerateConfig:
    """The run config file of `persona generate -c` (nothing: every default), every key checked at its
    file:line:col before any work."""
    return GenerateConfig(_read_config(path, _generate_schema()) if path is not None else {})


def load_run_config(path: str | Path | None = None, overrides: dict | None = None) -> RunConfig:
    config = RunConfig()
    if path is not None:
        data = _read_config(path, _schema())
        config = replace(config, **data)
    # RunConfig.__post_init__ checks the overrides (command-line flags) the same way
    config = replace(config, **{k: v for k, v in (overrides or {}).items() if v is not None})
    check_applicable(config)
    return config


def _read_config(path: str | Path, schema: dict) -> dict:
    """The mapping in a YAML config file, every key checked against `schema` and persona's own rules, each
    problem at its file:line:col."""
    try:
        doc = read_yaml(Path(path), str(path))
    except SpecError as e:  # a syntax error: the hint is the command's, not persona validate's
        raise SpecError(e.problems, then="run the command again") from None
    if doc.data is None:
        doc.data = {}
    problems = schema_problems(doc, schema)
    if not problems:  # each field's type is right: look for keys where names belong
        options = doc.data.get("backend_options") or {}
        for path, value in ((("api_key_env",), doc.data.get("api_key_env")),
                            (("backend_options", "api_key_env"), options.get("api_key_env"))):
            problem = api_key_env_problem(value) if value is not None else None
            if problem:
                problems.append(doc.problem(path, *problem))
        if "system_prompt" in doc.data:
            try:
                check_system_prompt(doc.data["system_prompt"])
            except PersonaError as e:
                problems.append(doc.problem(("system_prompt",), e.message.partition(" ")[2], e.hint))
        build = doc.data.get("build") or {}
        if "license" in build:
            try:
                check_license(build["license"])
            except PersonaError as e:
                problems.append(doc.problem(("build", "license"), e.message.partition(" ")[2], e.hint))
    if problems:
        raise SpecError(problems, then="run the command again")
    return doc.data


def check_applicable(config: RunConfig) -> None:
    """Settings the chosen backend would silently ignore are an error (e.g. tensor_parallel_size with openai)."""
    from persona.backends import BACKENDS, options_of

    unused = config.inapplicable()
    if unused:
        takers = {name: [b for b in BACKENDS if b not in ("fake", "ray") and name in options_of(b)] for name in unused}
        raise PersonaError(f"{', '.join(unused)} {'does' if len(unused) == 1 else 'do'} not apply to the "
                           f"{config.backend} backend",
                           hint="drop " + ("it" if len(unused) == 1 else "them") + ", or pick the backend that takes "
                                + ("it" if len(unused) == 1 else "them") + ": "
                                + ", ".join(f"{name}: {' or '.join(takers[name])}" for name in unused))