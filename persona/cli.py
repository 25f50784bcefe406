"""The `persona` command line. Thin: each command maps its options onto one library call.

    persona init NAME                         scaffold identities/NAME.yaml and editable templates/
    persona validate identities/              check specs (exit 1 on any problem; --format github for CI)
    persona run JOB                           the whole pipeline from one job file (persona.job)
    persona generate SPEC / train RUN / eval OUTPUT / report RUN   the same, stage by stage
    persona chat OUTPUT / export OUTPUT       talk to a trained model / write it as merged weights
    persona render SPEC --template NAME       print the exact prompt that would be sent
    persona test OUTPUT_OR_URL SPEC           the spec's behaviour tests: a gate for a trained or deployed model
    persona schema / ls                       the spec's JSON Schema / identities and templates found, and where from

Only this module prints or picks exit codes: the library raises PersonaError(message, hint). Data goes
to stdout, messages to stderr. Heavy imports stay inside the commands, so `persona --help` is fast.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from persona.config import BuildSettings, RunConfig
from persona.eval import EvalSettings
from persona.refine import RefineSettings
from persona import display
from persona.errors import PersonaError
from persona.judges import JudgeSettings, chosen_judge
from persona.options import add_options, assignments, given
from persona.behaviour import TestSettings
from persona.train import TrainSettings
from persona.progress import progress_bar, setup_logging

app = typer.Typer(
    name="persona",
    help=(
        "Turn a written identity into a model that holds it.\n\n"
        "\b\nQuickstart:\n"
        "  persona init mybot                 # identities/mybot.yaml + templates/ to edit\n"
        "  persona validate identities/       # check every spec (exit 1 on problems; for CI)\n"
        "  persona run jobs/demo.yaml         # the whole pipeline from one job file\n"
        "\b\nOr stage by stage:\n"
        "  persona generate identities/mybot.yaml   # prompts, answers, judgements, datasets\n"
        "  persona train runs/mybot                 # SFT (LoRA) on the run's demonstrations\n"
        "  persona eval runs/mybot/train-sft        # base vs trained on held-out questions\n"
        "  persona report runs/mybot                # one HTML page\n"
        "\b\nAfter training:\n"
        "  persona chat runs/mybot/train-sft        # talk to it (streaming)\n"
        "  persona export runs/mybot/train-sft --out models/mybot   # merged weights for vLLM / transformers"
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,  # tracebacks could show locals (API keys); main() prints errors itself
    rich_markup_mode=None,
)

TemplatesOption = Annotated[Optional[Path], typer.Option("--templates", help="Folder searched for templates before the built-ins [default: ./templates].")]


def _err(message: str) -> None:  # a message on stderr (nothing for an empty one)
    if message:
        typer.echo(message, err=True)


def _fail(error: PersonaError, code: int = 1) -> None:
    _err(f"error: {error.message}" + (f"\nhint: {error.hint}" if error.hint else ""))
    raise typer.Exit(code)


# the commands that load models or train: an installed version known to break them is named before they start
# (persona.versions); validate, render, schema, ls, init and report never import the ML stack
ML_COMMANDS = {"generate", "judge", "build", "train", "refine", "eval", "test", "run", "chat", "export"}


def command(name: str | None = None, code: int = 1, interrupted: str = "interrupted"):
    """`app.command`, with the CLI's one error boundary: a PersonaError becomes "error: ... / hint: ..." and
    exit `code` (no traceback), Ctrl-C prints `interrupted` (formatted with the command's arguments: what is
    kept and how to resume) and exits 130."""
    import functools

    def wrap(function):
        loads_models = (name or function.__name__) in ML_COMMANDS

        @functools.wraps(function)  # typer reads the options from the wrapped signature
        def run(*args, **kwargs):
            try:
                if loads_models:  # an installed version known to break them, named before they start
                    from persona.versions import check_versions

                    check_versions()
                return function(*args, **kwargs)
            except PersonaError as e:
                _fail(e, code)
            except KeyboardInterrupt:
                _err(interrupted.format(**kwargs))
                raise typer.Exit(130)

        return app.command(name)(run)

    return wrap


def _version(value: bool) -> None:
    if value:
        from persona import __version__

        typer.echo(f"persona {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    setup_logging()  # every command: persona's warnings on stderr, third-party progress bars off


@command(code=2)
def validate(
    paths: Annotated[list[Path], typer.Argument(help="Spec files, or folders searched for *.yaml / *.yml.")],
    format: Annotated[str, typer.Option("--format", help="text: file:line:col lines; github: Actions annotations.")] = "text",
) -> None:
    """Check identity specs against the schema and persona's rules. Exit 0 if all are valid, 1 if not.

    One line per problem: file:line:col: path: message (hint: ...). Warnings (marked "warning:") are
    shown but do not make a spec invalid. Every file is checked on its own: one broken file does not
    stop the others.

    Example:  persona validate identities/ --format github
    """
    from persona.spec import check_files

    if format not in ("text", "github"):
        _fail(PersonaError(f"--format {format!r} is not one of 'text', 'github'", hint="use --format text or github"), 2)
    files, problems, invalid = check_files(paths)
    for problem in problems:
        typer.echo(problem.format() if format == "text" else problem.format_github())
    _err(display.validated(len(files), invalid, problems))
    if invalid:
        raise typer.Exit(1)


@command()
def render(
    spec_path: Annotated[Path, typer.Argument(metavar="SPEC", help="The identity spec file.")],
    template: Annotated[str, typer.Option("--template", "-t", help="Template name (see `persona ls`).")] = "conforming",
    target: Annotated[Optional[str], typer.Option(help="Trait/constraint id for 'violating' and 'probes' [default: the first].")] = None,
    var: Annotated[Optional[list[str]], typer.Option("--var", help="Extra template variable NAME=VALUE (repeatable).")] = None,
    templates: TemplatesOption = None,
) -> None:
    """Print the exact prompt a template produces for a spec.

    Example:  persona render identities/brand.yaml --template violating --target warm

    Example:  persona render identities/aster.yaml -t judge --var prompt="Who made you?" --var response="OpenAI."
    """
    from persona.spec import load_spec
    from persona.templates import render_template, template_variables

    spec = load_spec(spec_path)
    variables = {**template_variables(spec, template, target),
                 **assignments(var, "--var", 'e.g. --var prompt="Who made you?"',
                               parse=lambda value: int(value) if value.isdigit() else value)}
    typer.echo(render_template(template, templates_dir=templates, spec=spec, **variables), nl=False)


@command()
def schema() -> None:
    """Print the identity spec's JSON Schema (draft 2020-12), for editors and other tools.

    Example:  persona schema > identity.schema.json, then start a spec with
    # yaml-language-server: $schema=identity.schema.json
    """
    from importlib import resources

    typer.echo(resources.files("persona").joinpath("identity.schema.json").read_text("utf-8"), nl=False)


@command("ls")
def list_things(
    identities: Annotated[Optional[Path], typer.Option(help="Folder of identity specs [default: ./identities, when there is one].")] = None,
    templates: TemplatesOption = None,
) -> None:
    """List the identities and templates persona finds, and where each comes from.

    Example:  persona ls --templates my_templates/
    """
    if identities is not None and not identities.is_dir():
        raise PersonaError(f"identities folder '{identities}' not found",
                           hint="pass a folder of identity specs, e.g. --identities identities/")
    typer.echo(display.listing(identities or Path("identities"), templates), nl=False)


@command()
def init(
    name: Annotated[str, typer.Argument(help="Identity name: lowercase letters, digits, '-' or '_'.")],
    directory: Annotated[Path, typer.Option("--dir", help="Project folder to write into.")] = Path("."),
    force: Annotated[bool, typer.Option(help="Overwrite files that already exist.")] = False,
) -> None:
    """Start a new identity: write identities/NAME.yaml, a job file jobs/NAME.yaml, identity.schema.json and
    copies of the built-in templates (templates/*.j2) to edit.

    Example:  persona init mybot && persona validate identities/mybot.yaml
    """
    from persona.scaffold import scaffold_project

    written, skipped = scaffold_project(name, directory, force=force)
    for path in skipped:
        _err(f"kept existing {path} (use --force to overwrite)")
    _err(f"wrote {len(written)} file{'s' if len(written) != 1 else ''}: " + ", ".join(map(str, written)))
    spec_file = directory / "identities" / f"{name}.yaml"
    _err(f"next: edit {spec_file}, then persona validate {spec_file} and persona run {directory / 'jobs' / (name + '.yaml')}")


@command(interrupted="interrupted: finished records are kept; run the same command again to resume")
@add_options(JudgeSettings, into="judge_settings")
@add_options(BuildSettings, into="build_settings")
@add_options(RunConfig)
def generate(
    spec_path: Annotated[Path, typer.Argument(metavar="SPEC", help="The identity spec file.")],
    config: Annotated[Optional[Path], typer.Option("--config", "-c", help="YAML run config (any setting below, and judge:, judge_options:, build:, pairwise:); flags override it.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show the rendered prompts and the number of requests; call nothing.")] = False,
    settings: dict = None,
    build_settings: dict = None,
    judge_settings: dict = None,
) -> None:
    """Generate probe prompts, responses (conforming, violating, demonstrations, replay), judgements, and
    SFT / DPO / KTO datasets.

    Runs on the embedded default model with no API key and no GPU; re-running skips finished work.

    Example:  persona generate identities/brand.yaml --limit 20

    Example:  persona generate identities/aster.yaml -b openai -m gpt-4o-mini --concurrency 64
    """
    from persona.config import load_generate_config
    from persona.spec import load_spec

    backend_options = settings.pop("backend_options") or {}
    file = load_generate_config(config)  # every key checked at its line, before any work
    run_config = file.run_config(settings)
    if backend_options:
        from dataclasses import replace

        run_config = replace(run_config, backend_options={**run_config.backend_options, **backend_options})
    judge_name, judge_options, pairwise = file.judge_choice(given(JudgeSettings, judge_settings))
    build = file.build_settings(build_settings)
    spec = load_spec(spec_path)
    if dry_run:
        typer.echo(display.dry_run_text(spec, run_config, judge_name or "none"))
        return
    from persona.pipeline import generate as run_generate

    with progress_bar() as on_progress:
        summary = run_generate(spec, run_config, on_progress, judge=judge_name, judge_options=judge_options,
                               build=build, pairwise=pairwise)
    _err("\n".join(display.generated(summary)))


@command("judge")
@add_options(JudgeSettings, skip=("pairwise",), into="judge_settings")
def judge_command(
    run_dir: Annotated[Optional[Path], typer.Argument(metavar="RUN_DIR", help="A run folder from persona generate.")] = None,
    calibrate: Annotated[bool, typer.Option("--calibrate", help="Measure the judge on persona's labelled calibration set instead.")] = False,
    spec: Annotated[Optional[Path], typer.Option(help="The run's spec, if it moved [default: from run.json].")] = None,
    judge_settings: dict = None,
) -> None:
    """Score a run's responses with a judge (only what this judge has not scored yet), or calibrate a judge.

    Example:  persona judge runs/brand --judge rules

    Example:  persona judge --calibrate --judge offline
    """
    chosen = given(JudgeSettings, judge_settings)
    judge_name, options = chosen_judge(chosen.judge or "rules", chosen)
    if judge_name is None:
        raise PersonaError("--judge none judges nothing", hint="pick offline, rules or llm")
    if calibrate:
        from persona.calibration import calibrate as run_calibration
        from persona.judges import load_judge

        with progress_bar() as on_progress:
            report = run_calibration(load_judge(judge_name, **options), on_progress, with_targets=True)
        typer.echo(display.calibration_table(report))
        return
    if run_dir is None:
        raise PersonaError("name a run folder, or use --calibrate", hint="e.g. persona judge runs/brand")
    from persona.pipeline import judge_run

    with progress_bar() as on_progress:
        made, counts = judge_run(run_dir, judge_name, options, str(spec) if spec else None, on_progress)
    from persona.run import RunFolder

    _err(f"judged {made} responses with {counts['judge']} ({counts['ok']} scored, {counts['unjudged']} unjudged "
         f"in this run); judgements in {RunFolder(run_dir).store('judgements').path}; rebuild the datasets with: "
         f"persona build {run_dir}")


@command()
@add_options(JudgeSettings, into="judge_settings", shown={"judge": "the last judge run", "pairwise": "off"})
@add_options(BuildSettings, into="build_settings")
def build(
    run_dir: Annotated[Path, typer.Argument(metavar="RUN_DIR", help="A run folder from persona generate.")],
    spec: Annotated[Optional[Path], typer.Option(help="The run's spec, if it moved [default: from run.json].")] = None,
    build_settings: dict = None,
    judge_settings: dict = None,
) -> None:
    """Build the DPO/IPO pairs and KTO rows of a run from its judged responses (with --judge: whose judgements).

    Example:  persona build runs/brand --margin 3
    """
    from persona.pipeline import build_run

    chosen = given(JudgeSettings, judge_settings)
    options = chosen_judge(chosen.judge, chosen)[1] if chosen.judge else None
    report = build_run(run_dir, given(BuildSettings, build_settings), chosen.judge, options,
                       str(spec) if spec else None, bool(chosen.pairwise))
    _err("\n".join(display.built(report)))


@command()
def stats(
    run_dir: Annotated[Path, typer.Argument(metavar="RUN_DIR", help="A run folder from persona generate.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the numbers as JSON.")] = False,
) -> None:
    """Counts, acceptance rate, score distributions and tokens spent in a run folder.

    Example:  persona stats runs/brand
    """
    import json

    from persona.stats import run_stats

    numbers = run_stats(run_dir)
    typer.echo(json.dumps(numbers, indent=2) if as_json else display.stats_text(numbers))


@command("train", interrupted="interrupted (no checkpoint for the step in progress); --resume continues from the last one saved")
@add_options(TrainSettings)
def train_command(
    source: Annotated[Path, typer.Argument(metavar="RUN_DIR_OR_DATASET", help="A run folder, a dataset folder or a .jsonl file in TRL's format.")],
    settings: dict = None,
) -> None:
    """Fine-tune a model on a run's datasets with TRL: SFT, DPO, IPO, KTO, or a reward model (LoRA by default).
    Without --method, the recipe: SFT, then one on-policy DPO round from it (persona refine), whose model is the
    one to evaluate; --set and -c apply to the SFT step.

    Example:  persona train runs/brand            (SFT -> runs/brand/train-sft, then runs/brand/refine-dpo/)

    Example:  persona train runs/brand --method ipo --set beta=0.5 --set max_steps=100

    Example:  torchrun --standalone --nproc_per_node 2 -m persona train runs/brand   (several processes)
    """
    from persona.progress import training_log
    from persona.recipe import recipe_applies, train_recipe
    from persona.train import Interrupted, is_main_process, train_with

    chosen = given(TrainSettings, settings)
    say = _err if is_main_process() else (lambda text: None)  # a multi-process launch reports once, errors from any
    recipe, why_not = recipe_applies(source) if chosen.method is None else (False, "")
    if why_not:
        say(why_not)
    method = chosen.method or "sft"
    try:
        if recipe:
            say("the recipe: SFT, then one on-policy DPO round from it (--method sft trains SFT alone)")
            with progress_bar() as on_progress:
                done = train_recipe(source, chosen,
                                    logs=lambda m, s: training_log(_err, m, s), on_progress=on_progress, say=_err,
                                    on_trained=lambda result: [say(line) for line in display.trained(result, "sft")])
            _err(f"wrote {done.rounds.folder}/rounds.json; next: persona eval {done.model}")
            return
        result = train_with(source, chosen, *training_log(_err, method, chosen.start))
    except Interrupted as e:
        say(f"interrupted: checkpoint saved in {e.checkpoint}/; run the same command with --resume to continue"
            if e.checkpoint else "interrupted before the first step; nothing to resume")
        raise typer.Exit(130)
    for line in display.trained(result, method):
        say(line)


@command("refine", interrupted="interrupted: the answers so far are kept; run the same command again to resume")
@add_options(RefineSettings)
def refine_command(
    start: Annotated[Path, typer.Argument(metavar="TRAINED", help="A persona train output to refine (typically RUN_DIR/train-sft).")],
    output_dir: Annotated[Optional[Path], typer.Option(help="The round's folder [default: next to TRAINED, refine-METHOD].")] = None,
    setting: Annotated[Optional[list[str]], typer.Option("--set", help="A training setting NAME=VALUE (repeatable), e.g. --set loss_type=[sigmoid,sft].")] = None,
    overwrite: Annotated[bool, typer.Option(help="Start the rounds over: their answers, labels, pairs and training.")] = False,
    templates: Annotated[Optional[Path], typer.Option(help="Templates folder of the run [default: ./templates].")] = None,
    settings: dict = None,
) -> None:
    """On-policy rounds: the trained model answers the run's train questions (in training-only attack contexts too)
    and general prompts, its answers are labelled by the identity and leak checks, and it is trained with DPO,
    IPO or KTO on its own passing vs failing answers (or GRPO / RLOO with those checks as the reward), with
    itself as the reference; a dev split decides which rounds are kept.

    Example:  persona refine runs/brand/train-sft

    Example:  persona refine runs/brand/train-sft --method ipo -k 6 --set learning_rate=1e-4

    Example:  persona refine runs/brand/train-sft --rounds 3

    Example:  persona refine runs/brand/train-sft --method grpo --set max_steps=80

    Example:  persona refine runs/brand/train-sft -b vllm -o max_model_len=2048   (in the vLLM environment)
    """
    from persona.progress import training_log
    from persona.refine import refine

    refine_settings = given(RefineSettings, settings)
    overrides = assignments(setting, "--set", "e.g. --set learning_rate=5e-5")
    show, begin = training_log(_err, refine_settings.method, start)
    with progress_bar() as on_progress:
        result = refine(start, refine_settings, output_dir, overrides, overwrite, on_progress, show, begin, _err,
                        str(templates) if templates else None)
    _err(f"wrote {result.folder}/rounds.json; next: persona eval {result.output_dir}")


@command("eval", interrupted="interrupted: answers so far are kept; run the same command again to resume")
@add_options(EvalSettings)
def eval_command(
    model_path: Annotated[Path, typer.Argument(metavar="MODEL_OR_ADAPTER", help="The output folder of persona train (adapter or full model).")],
    spec: Annotated[Optional[Path], typer.Option(help="The identity spec [default: the spec of the run the model was trained on].")] = None,
    run_dir: Annotated[Optional[Path], typer.Option("--run", help="Run folder whose held-out prompts to use [default: the training run].")] = None,
    base: Annotated[Optional[str], typer.Option(help="Base model to compare with [default: the one it was trained from].")] = None,
    out: Annotated[Optional[Path], typer.Option(help="Where to write [default: MODEL_OR_ADAPTER/eval].")] = None,
    templates: Annotated[Optional[Path], typer.Option(help="Templates folder of the run [default: ./templates].")] = None,
    settings: dict = None,
) -> None:
    """Base vs trained on held-out prompts: adherence, origin identity, robustness under attack, retention.

    Example:  persona eval runs/aster/train-dpo

    Example:  persona eval runs/aster/train-kto --judge offline --out runs/aster/eval-kto-offline

    Example:  persona eval runs/aster/train-sft --baseline prompt --out runs/aster/train-sft/eval-vs-prompt
    """
    from persona.eval import evaluate
    from persona.models import spec_of_trained
    from persona.run import EvalFolder, TrainOutput

    spec_path = spec or spec_of_trained(model_path, run_dir)
    settings = given(EvalSettings, settings)
    settings.precision()  # a dtype the device cannot run fails before any model loads
    with progress_bar() as on_progress:
        m = evaluate(model_path, spec_path, run_dir, base, out, settings,
                     str(templates) if templates else None, on_progress)
    typer.echo(display.eval_table(m))
    folder = EvalFolder(out) if out else TrainOutput(model_path).eval
    _err(f"wrote {folder.metrics_file} and {folder.answers.path} in {m['seconds']:.0f}s")


@command("test", interrupted="interrupted: the answers so far are kept; run the same command again to resume")
@add_options(JudgeSettings, skip=("pairwise",), into="judge_settings", shown={"judge": "none: rubrics not judged"})
@add_options(TestSettings)
def test_command(
    target: Annotated[str, typer.Argument(metavar="MODEL_OR_ENDPOINT", help="A persona train output, a base model (name, folder, .gguf, or 'base' for the embedded one), or an OpenAI-compatible endpoint URL.")],
    spec_path: Annotated[Path, typer.Argument(metavar="SPEC", help="The identity spec whose tests: to run.")],
    junit: Annotated[Optional[Path], typer.Option(help="Also copy the JUnit XML here (for CI) [default: OUT/junit.xml only].")] = None,
    settings: dict = None,
    judge_settings: dict = None,
) -> None:
    """Run the spec's behaviour tests against a model or a deployed endpoint: pass/fail per test and per target,
    the universal checks, JUnit XML; exit 1 below --min-pass.

    Example:  persona test runs/brand/train-sft identities/brand.yaml --min-pass 0.8

    Example:  persona test http://localhost:8000/v1 identities/brand.yaml -m nova --junit junit.xml
    """
    from persona.behaviour import gate, rubric_judge, run_tests

    test_settings = given(TestSettings, settings)
    with progress_bar() as on_progress:
        results = run_tests(target, spec_path, test_settings, rubric_judge(given(JudgeSettings, judge_settings)),
                            on_progress, junit)
    typer.echo(display.test_results(results))
    _err(f"wrote {results['folder']}/results.json and junit.xml" + (f", and {junit}" if junit else ""))
    gate(results, test_settings.min_pass)


@command("run", interrupted="interrupted: finished work is kept; run persona run {job_file} again to resume")
def run_command(
    job_file: Annotated[Path, typer.Argument(metavar="JOB", help="A job file (YAML), e.g. jobs/demo.yaml.")],
) -> None:
    """Run the whole pipeline from one job file: validate, generate + judge + build, train (one method or a
    sequence), eval, report. Stages whose output is current are skipped; a rerun resumes.

    Example:  persona run jobs/demo.yaml
    """
    from persona.job import load_job, run_job
    from persona.spec import check_file

    job = load_job(job_file)
    problems = [p for p in check_file(job.spec) if p.is_error]
    _err("\n".join(p.format() for p in problems) or f"{job_file}: every key checked; {job.spec} is valid")
    if problems:
        raise PersonaError(f"{job.spec} has {len(problems)} problem{'s' if len(problems) != 1 else ''}",
                           hint=f"fix them; persona validate {job.spec} checks it")
    with progress_bar() as on_progress:
        done = run_job(job, _err, on_progress)
    summary = done["generate"]
    for line in display.built(summary.build, summary.judgements_made) if summary.build is not None else []:
        _err(line)
    typer.echo(display.job_results(done), nl=False)
    if "report" in done:
        _err(f"wrote {done['report']}")


@command()
def chat(
    model_path: Annotated[Path, typer.Argument(metavar="OUTPUT", help="The output folder of persona train (adapter or full model).")],
    prompt: Annotated[Optional[str], typer.Option(help="Ask this one question, print the answer and exit (for scripts).")] = None,
    system: Annotated[Optional[str], typer.Option(help="A system message for every turn [default: none: the saved template's default, as in training].")] = None,
    max_tokens: Annotated[int, typer.Option(min=1, help="Longest answer, in tokens.")] = 256,
    temperature: Annotated[float, typer.Option(min=0, help="0: greedy, what persona eval sees; higher samples.")] = 0.0,
    base: Annotated[Optional[str], typer.Option(help="The adapter's base model, if it moved [default: the one it was trained on].")] = None,
) -> None:
    """Chat with a trained model in the terminal, answers streamed as they are generated. /reset forgets the
    conversation, /exit (or Ctrl-D) ends it.

    Example:  persona chat runs/brand/train-sft

    Example:  persona chat runs/brand/train-sft --prompt "Who made you?"
    """
    from persona.chat import ChatSession

    session = ChatSession.load(model_path, base, system=system, max_tokens=max_tokens, temperature=temperature)

    def write(text: str) -> None:  # the answer, streamed to stdout as it is generated
        typer.echo(text, nl=False)
        sys.stdout.flush()

    def ask(label: str) -> str:  # the user's next line ("" at the end of input)
        print(label, end="", file=sys.stderr, flush=True)
        return sys.stdin.readline()

    if prompt is not None:
        return session.converse(iter([prompt]), write)
    _err(f"chatting with {model_path} (/reset forgets the conversation, /exit or Ctrl-D ends it)")
    session.converse(iter(lambda: ask("you> "), ""), write, _err)


@command()
def export(
    model_path: Annotated[Path, typer.Argument(metavar="OUTPUT", help="The output folder of persona train (adapter or full model).")],
    out: Annotated[Path, typer.Option(help="The folder to write the merged model into.")],
    overwrite: Annotated[bool, typer.Option(help="Replace what is in --out.")] = False,
) -> None:
    """Write a trained model as one plain folder - merged weights, tokenizer, the chat template training saved,
    the model card - ready for vLLM, `transformers serve` or from_pretrained.

    Example:  persona export runs/brand/train-sft --out models/brand && vllm serve models/brand
    """
    from persona.export import export_model

    written = export_model(model_path, out, overwrite)
    _err(f"wrote {written}/ (merged weights, tokenizer and chat template); load it with "
         f"AutoModelForCausalLM.from_pretrained('{written}') or serve it with: vllm serve {written}")


@command()
def report(
    run_dir: Annotated[Path, typer.Argument(metavar="RUN_DIR", help="A run folder (with train-*/ and their eval/ inside).")],
    out: Annotated[Optional[Path], typer.Option(help="The HTML file to write [default: RUN_DIR/report.html].")] = None,
    markdown: Annotated[bool, typer.Option(help="Also print the method comparison as a Markdown table.")] = False,
) -> None:
    """Write one self-contained HTML page: dataset statistics, training curves, base vs trained, answers.

    Example:  persona report runs/aster --markdown
    """
    from persona.report import collect, summary_markdown, write_report

    path = write_report(run_dir, out)
    data = collect(run_dir)
    _err("\n".join(display.report_gaps(data)))
    if markdown:
        typer.echo(summary_markdown(data))
    _err(f"wrote {path}")


def main() -> None:
    """Console-script entry point: never shows a traceback for a user error, and respects NO_COLOR."""
    if os.environ.get("NO_COLOR"):
        os.environ.setdefault("TERM", "dumb")
    try:
        from persona.versions import check_versions

        check_versions(("typer",))  # an old typer cannot even build the command line
        app()
    except PersonaError as e:  # a command forgot to catch one: still no traceback
        _err(f"error: {e.message}")
        if e.hint:
            _err(f"hint: {e.hint}")
        sys.exit(1)
    except KeyboardInterrupt:
        _err("interrupted")
        sys.exit(130)
