"""The `persona` command line. Thin: each command maps its options onto one library call.

    persona init NAME                         scaffold identities/NAME.yaml and editable templates/
    persona validate identities/              check specs (exit 1 on any problem; --format github for CI)
    persona run JOB                           the whole pipeline from one job file (persona.job)
    persona generate SPEC / train RUN / eval OUTPUT / report RUN   the same, stage by stage
    persona chat OUTPUT / export OUTPUT       talk to a trained model / write it as merged weights
    persona render SPEC --template NAME       print the exact prompt that would be sent
    persona schema                            print the spec's JSON Schema
    persona ls                                identities and templates found, and where from

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
from persona.errors import PersonaError
from persona.judges import JudgeSettings
from persona.options import add_options, assignments
from persona.train import TrainSettings
from persona.progress import progress_bar

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

TemplatesOption = Annotated[
    Optional[Path],
    typer.Option("--templates", help="Folder searched for templates before the built-ins [default: ./templates]."),
]


def _err(message: str) -> None:
    typer.echo(message, err=True)


def _fail(error: PersonaError, code: int = 1) -> None:
    _err(f"error: {error.message}")
    if error.hint:
        _err(f"hint: {error.hint}")
    raise typer.Exit(code)


# the commands that load models or train: an installed version known to break them is named before they start
# (persona.versions); validate, render, schema, ls, init and report never import the ML stack
ML_COMMANDS = {"generate", "judge", "build", "train", "refine", "eval", "run", "chat", "export"}


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
    _setup_logging()  # every command: persona's warnings on stderr, third-party progress bars off


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
    from persona.spec import check_file, find_spec_files

    if format not in ("text", "github"):
        _fail(PersonaError(f"--format {format!r} is not one of 'text', 'github'", hint="use --format text or github"), 2)
    files = find_spec_files(paths)
    problems: dict = {}
    invalid = 0
    for file in files:
        found = check_file(file)  # never raises: whatever goes wrong in one file is a problem of that file
        invalid += any(p.is_error for p in found)
        for problem in found:  # a base file shared by several specs reports its problems once
            problems.setdefault(problem, None)
    for problem in sorted(problems):
        typer.echo(problem.format() if format == "text" else problem.format_github())
    n = len(files)
    summary = f"{n} spec file{'s' if n != 1 else ''} checked: {n - invalid} valid, {invalid} invalid"
    errors = sum(p.is_error for p in problems)
    counts = [f"{count} {word}{'s' if count != 1 else ''}"
              for count, word in ((errors, "problem"), (len(problems) - errors, "warning")) if count]
    if counts:
        summary += f" ({', '.join(counts)})"
    _err(summary)
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
    from persona.templates import render_template

    spec = load_spec(spec_path)
    variables: dict = {}
    if template in ("violating", "probes"):
        variables["target"] = spec.target(target) if target else spec.targets()[0]
    if template == "probes":
        variables["n"] = 5
        variables["topics"] = list(spec.probes.topics)
    variables.update(assignments(var, "--var", 'e.g. --var prompt="Who made you?"',
                                  parse=lambda value: int(value) if value.isdigit() else value))
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
    from persona.spec import display_path, find_spec_files, load_spec
    from persona.templates import builtin_dir, list_templates

    if identities is not None and not identities.is_dir():
        raise PersonaError(f"identities folder '{identities}' not found",
                           hint="pass a folder of identity specs, e.g. --identities identities/")
    identities = identities or Path("identities")
    folders = [identities] if identities.is_dir() else []
    folders.append(builtin_dir("identities"))
    seen: set[Path] = set()
    typer.echo("identities:")
    for folder in folders:
        source = "built-in" if folder == builtin_dir("identities") else "project"
        if folder.resolve() in seen:
            continue
        seen.add(folder.resolve())
        for file in find_spec_files([folder]):
            try:
                spec = load_spec(file, allow_component=True)
                about = f"{spec.kind}: {spec.identity.name}" if spec.identity else spec.kind
            except PersonaError:
                about = "INVALID (run persona validate)"
            typer.echo(f"  {display_path(file):<48} {about:<24} [{source}]")
    typer.echo("templates:")
    for info in list_templates(templates):
        note = " (overrides the built-in)" if info.overrides_builtin else ""
        typer.echo(f"  {info.name:<14} {display_path(info.path):<48} [{info.source}]{note}")


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
    chosen = _given(JudgeSettings, judge_settings)
    if chosen.judge is not None or chosen.flags():
        judge_name, judge_options = _judge_choice(chosen.judge or file.judge, chosen)
    else:
        judge_name, judge_options = _judge_choice(file.judge, chosen)
        judge_options = {**judge_options, **file.judge_options}
    build = file.build_settings(build_settings)
    pairwise = file.pairwise if chosen.pairwise is None else chosen.pairwise
    spec = load_spec(spec_path)
    if dry_run:
        _print_dry_run(spec, run_config, judge_name or "none")
        return
    from persona.pipeline import generate as run_generate

    with progress_bar() as on_progress:
        summary = run_generate(spec, run_config, on_progress, judge=judge_name, judge_options=judge_options,
                               build=build, pairwise=pairwise)
    minutes, seconds = divmod(int(summary.seconds), 60)
    _err(f"wrote {summary.responses} responses ({summary.conforming} conforming, {summary.violating} violating, "
         f"{summary.demonstrations} demonstrations, {summary.replay} replay) "
         f"for {summary.prompts_train + summary.prompts_eval} prompts ({summary.prompts_train} train, "
         f"{summary.prompts_eval} eval) to {summary.run_dir}/ in {minutes}m{seconds:02d}s: "
         f"{summary.requests_made} backend requests, {summary.tokens:,} tokens generated")
    if summary.precision:
        _err("local models computed in " + "; ".join(sorted(set(summary.precision.values()))))
    if summary.build is not None:
        _print_build(summary.build, summary.judgements_made)
        _err(f"next: persona train {summary.run_dir}")
    else:
        _err(f"next: persona judge {summary.run_dir}")


def _print_build(report, judged_now: int | None = None) -> None:
    pairs = report.pairs
    kto = report.kto
    agreement = f"{report.judge_agreement:.1%}" if report.judge_agreement is not None else "n/a"
    if judged_now is not None:
        _err(f"judged with {report.judge or 'the judge'}: {judged_now} new judgements, {report.unjudged} responses unjudged")
    sft = {split: sum((report.sft.get(split) or {}).values()) for split in ("train", "eval")}
    cover = report.coverage.get("train") or {}
    _err(f"sft rows: {sft['train']} train + {sft['eval']} eval ({', '.join(f'{n} {k}' for k, n in (report.sft.get('train') or {}).items()) or 'none'}); "
         f"{cover.get('covered', 0)} of {cover.get('prompts', 0)} train prompts have an accepted answer")
    _err(f"dpo/ipo pairs: {pairs.get('train', 0)} train + {pairs.get('eval', 0)} eval; acceptance rate "
         f"{report.acceptance_rate:.1%} of {report.candidates} violating responses; judge agreement {agreement}")
    _err(f"kto rows: train {kto['train']['desirable']} desirable / {kto['train']['undesirable']} undesirable "
         f"(weights {report.kto_weights['desirable_weight']} / {report.kto_weights['undesirable_weight']}), "
         f"eval {kto['eval']['desirable']} / {kto['eval']['undesirable']}")
    if not pairs.get("train"):
        why = "; ".join(f"{n} {reason}" for reason, n in report.dropped.items()) or "no violating responses"
        _err(f"warning: no DPO/IPO pairs in the train split ({why}); SFT is unaffected")
    if report.swap_consistency is not None:
        _err(f"pairwise check: swap consistency {report.swap_consistency:.1%}; pairs kept only when both orders agree")
    if report.length:
        _err(f"length balance: chosen {report.length['chosen_mean_chars']:.0f} chars vs rejected "
             f"{report.length['rejected_mean_chars']:.0f}; chosen longer in {report.length['chosen_longer_share']:.0%} of pairs")
    _err(f"datasets written to {report.paths['sft']}/, {report.paths['dpo']}/ and {report.paths['kto']}/ "
         "(load with datasets.load_dataset)")


def _judge_choice(judge: str, settings: JudgeSettings) -> tuple[str | None, dict]:
    """--judge and its options -> (judge name or None for 'none', options for the judge)."""
    from persona.judges import judge_options

    if judge == "none":
        return None, {}
    return judge, judge_options(judge, **settings.flags())


def _given(cls, values: dict):
    """The settings `cls` with the options given on the command line (None: not given, the field's default)."""
    return cls(**{k: v for k, v in values.items() if v is not None})


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
    chosen = _given(JudgeSettings, judge_settings)
    judge_name, options = _judge_choice(chosen.judge or "rules", chosen)
    if judge_name is None:
        raise PersonaError("--judge none judges nothing", hint="pick offline, rules or llm")
    if calibrate:
        from persona.calibration import calibrate as run_calibration
        from persona.judges import load_judge

        with progress_bar() as on_progress:
            report = run_calibration(load_judge(judge_name, **options), on_progress)
        typer.echo(f"{'judge':<40} {'n':>4} {'accuracy':>9} {'kappa':>6} {'unjudged':>9}")
        typer.echo(f"{report.judge:<40} {report.n:>4} {report.accuracy:>9.1%} {report.kappa:>6.3f} {report.unjudged:>9}")
        for name, (n, accuracy) in report.by_identity.items():
            typer.echo(f"  {name:<38} {n:>4} {accuracy:>9.1%}")
        for name, note, label, overall, rationale in report.mistakes:
            shown = "n/a" if overall is None else f"{overall:.1f}"
            typer.echo(f"  miss: {name}: {note} (labelled {'in' if label else 'out of'} character, "
                       f"scored {shown}: {rationale[:90]})")
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

    chosen = _given(JudgeSettings, judge_settings)
    options = _judge_choice(chosen.judge, chosen)[1] if chosen.judge else None
    report = build_run(run_dir, _given(BuildSettings, build_settings), chosen.judge, options,
                       str(spec) if spec else None, bool(chosen.pairwise))
    _print_build(report)


@command()
def stats(
    run_dir: Annotated[Path, typer.Argument(metavar="RUN_DIR", help="A run folder from persona generate.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the numbers as JSON.")] = False,
) -> None:
    """Counts, acceptance rate, score distributions and tokens spent in a run folder.

    Example:  persona stats runs/brand
    """
    import json as json_module

    from persona.stats import run_stats

    numbers = run_stats(run_dir)
    if as_json:
        typer.echo(json_module.dumps(numbers, indent=2))
        return
    p, r, t = numbers["prompts"], numbers["responses"], numbers["tokens"]
    typer.echo(f"run {numbers['run_dir']} (identity {numbers['identity']})")
    typer.echo(f"prompts     {p['train'] + p['eval']:>6}  ({p['train']} train, {p['eval']} eval)")
    typer.echo(f"responses   {sum(r.values()):>6}  ({', '.join(f'{n} {kind}' for kind, n in r.items())})")
    for name, counts in numbers["judgements"].items():
        typer.echo(f"judgements  {counts.get('ok', 0) + counts.get('unjudged', 0):>6}  by {name} "
                   f"({counts.get('unjudged', 0)} unjudged)")
    typer.echo(f"tokens      {t['prompt'] + t['completion']:>6,}  ({t['prompt']:,} prompt, {t['completion']:,} generated)")
    old = numbers["superseded"]
    if old["prompts"] or old["responses"]:
        typer.echo(f"superseded  {old['prompts'] + old['responses']:>6}  ({old['prompts']} prompts, {old['responses']} "
                   "responses of earlier generations, kept in the stores for resuming; not counted above)")
    b = numbers["build"]
    if b is None:
        typer.echo("datasets    none yet (persona build RUN_DIR)")
        return
    typer.echo(f"pairs       {sum(b['pairs'].values()):>6}  ({b['pairs'].get('train', 0)} train, {b['pairs'].get('eval', 0)} eval)"
               f"; acceptance rate {b['acceptance_rate']:.1%}; dropped {b['dropped']}")
    agreement = b.get("judge_agreement")
    typer.echo(f"judge       {b['judge']}; agreement with intended kind {agreement:.1%}" if agreement is not None
               else f"judge       {b['judge']}")
    for kind in ("conforming", "violating"):
        bins = b["histograms"].get(kind, [0] * 10)
        top = max(bins) or 1
        typer.echo(f"scores of {kind} responses (overall 0-10):")
        for i, n in enumerate(bins):
            typer.echo(f"  {i:>2}-{i + 1:<2} {'#' * round(30 * n / top):<30} {n}")


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

    chosen = _given(TrainSettings, settings)
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
                                    on_trained=lambda result: _say_trained(result, "sft", say))
            _err(f"wrote {done.rounds.folder}/rounds.json; next: persona eval {done.model}")
            return
        result = train_with(source, chosen, *training_log(_err, method, chosen.start))
    except Interrupted as e:
        say(f"interrupted: checkpoint saved in {e.checkpoint}/; run the same command with --resume to continue"
            if e.checkpoint else "interrupted before the first step; nothing to resume")
        raise typer.Exit(130)
    _say_trained(result, method, say)


def _say_trained(result, method: str, say) -> None:
    losses = [m["loss"] for m in result.metrics if "loss" in m]
    speed = f", {result.tokens} tokens at {result.tokens_per_second:.0f} tokens/s" if result.tokens_per_second else ""
    say(f"trained {method} for {len(losses)} logged steps in {result.seconds:.0f}s{speed} "
        f"(loss {losses[0]:.4f} -> {losses[-1]:.4f}); wrote {result.output_dir}/"
        + (f" and {result.merged_dir}/" if result.merged_dir else "") if losses else
        f"trained {method}; wrote {result.output_dir}/")
    if result.reward:
        r = result.reward
        accuracy = "n/a (no eval split)" if r["eval_pairwise_accuracy"] is None else f"{100 * r['eval_pairwise_accuracy']:.1f}%"
        say(f"reward model: pairwise accuracy {accuracy} on {r['eval_pairs']} held-out pairs; "
            f"judge with --judge reward:{result.output_dir}")


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

    refine_settings = _given(RefineSettings, settings)
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

    spec_path = spec or _spec_of_model(model_path, run_dir)
    settings = _given(EvalSettings, settings)
    settings.precision()  # a dtype the device cannot run fails before any model loads
    with progress_bar() as on_progress:
        m = evaluate(model_path, spec_path, run_dir, base, out, settings,
                     str(templates) if templates else None, on_progress)
    typer.echo(_eval_table(m))
    from persona.run import EvalFolder, TrainOutput

    folder = EvalFolder(out) if out else TrainOutput(model_path).eval
    _err(f"wrote {folder.metrics_file} and {folder.answers.path} in {m['seconds']:.0f}s")


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
    for problem in problems:
        _err(problem.format())
    if problems:
        raise PersonaError(f"{job.spec} has {len(problems)} problem{'s' if len(problems) != 1 else ''}",
                           hint=f"fix them; persona validate {job.spec} checks it")
    _err(f"{job_file}: every key checked; {job.spec} is valid")
    with progress_bar() as on_progress:
        done = run_job(job, _err, on_progress)
    summary = done["generate"]
    if summary.build is not None:
        _print_build(summary.build, summary.judgements_made)
    for stage, result in done.items():
        if stage.startswith("eval ") and isinstance(result, dict):
            typer.echo(f"{stage}:")
            typer.echo(_eval_table(result))
    if len(done.get("evals") or {}) > 1:
        typer.echo(_side_by_side(done["evals"]))
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

    def answer(text: str) -> None:
        for piece in session.reply(text):
            typer.echo(piece, nl=False)
            sys.stdout.flush()
        typer.echo()

    if prompt is not None:
        answer(prompt)
        return
    _err(f"chatting with {model_path} (/reset forgets the conversation, /exit or Ctrl-D ends it)")
    while True:
        sys.stderr.write("you> ")
        sys.stderr.flush()
        line = sys.stdin.readline()
        if not line or line.strip() in ("/exit", "/quit"):
            break
        text = line.strip()
        if text == "/reset":
            session.reset()
            _err("(conversation forgotten)")
        elif text:
            answer(text)


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
    if not data.trained:
        _err("no training metrics in this run folder: the report leaves out training and eval (run persona train)")
    elif not any(t.eval for t in data.trained):
        _err("no eval results yet: the report leaves out base vs trained (run persona eval on a trained model)")
    if markdown:
        typer.echo(summary_markdown(data))
    _err(f"wrote {path}")


def _spec_of_model(model_path: Path, run_dir: Path | None) -> str:
    from persona.models import check_trained
    from persona.run import RunFolder

    run = RunFolder(run_dir) if run_dir else check_trained(model_path).run()
    if run is None:
        raise PersonaError(f"cannot tell which spec {model_path} was trained for",
                           hint="pass --spec identities/NAME.yaml")
    return run.spec_path()


def _eval_table(m: dict) -> str:
    """The verdict in words, then the eval's rows, base vs trained, one line each (the same rows as the model
    card and the report), each with its sample size."""
    from persona.metrics import format_value, metric_rows, pct

    lines = [f"verdict ({m['judge']} judge):"] + [f"  {line}" for line in m.get("verdict", [])] + [""]
    prompted = m.get("baseline") == "prompt"
    if prompted:
        lines.append(f"baseline: the base model prompted with {m.get('baseline_prompt')!r}")
    lines.append(f"{'':<46} {'n':>5} {'base+prompt' if prompted else 'base':>11} {'trained':>10}")
    lines += [f"{row.label:<46} {row.n if row.n is not None else '':>5} {format_value(row.base, row.unit):>11} "
              f"{format_value(row.trained, row.unit):>10}" for row in metric_rows(m)]
    w = m["win_rate"]
    if w["win"] is not None:
        lines.append(f"trained vs base on held-out probes: win {pct(w['win'])}, tie {pct(w['tie'])}, "
                     f"loss {pct(w['loss'])} ({w['method']})")
    defaults = m.get("template_default") or {}
    for label in ("base", "trained"):
        if label in defaults:
            lines.append(f"{label} model's template default system prompt: {defaults[label]!r}")
    precision = m.get("precision") or {}
    computed = (f"; answers in {precision['generation']}, scores in {precision['scoring']} on {precision['device']}"
                if precision else "")
    lines.append(f"perplexity change {100 * m['retention']['perplexity_change']:+.1f}%; judge {m['judge']}; "
                 f"{m['items']} prompts per model{computed}")
    return "\n".join(lines)


def _side_by_side(evals: dict) -> str:
    """Several trained models' evals in one table: the base's column (of the first), then each model's."""
    from persona.metrics import format_value, metric_rows

    rows = {name: {row.name: row for row in metric_rows(m)} for name, m in evals.items()}
    first = metric_rows(next(iter(evals.values())))
    width = max(10, *(len(name) for name in evals))
    lines = ["side by side (held-out sets; each model's own n as above):",
             f"{'':<46} {'n':>5} {'base':>{width}} " + " ".join(f"{name:>{width}}" for name in evals)]
    for row in first:
        cells = [format_value(rows[name][row.name].trained, row.unit) if row.name in rows[name] else "-"
                 for name in evals]
        lines.append(f"{row.label:<46} {row.n if row.n is not None else '':>5} "
                     f"{format_value(row.base, row.unit):>{width}} " + " ".join(f"{c:>{width}}" for c in cells))
    return "\n".join(lines)


def _print_dry_run(spec, run_config, judge: str = "rules") -> None:
    from persona.pipeline import dry_run

    plan = dry_run(spec, run_config)
    rule = "-" * 72
    typer.echo(f"{rule}\nsystem prompt for conforming responses (templates: conforming)\n{rule}\n{plan.system_prompt}")
    typer.echo(f"{rule}\nsystem prompt for violating responses, e.g. (templates: violating)\n{rule}\n{plan.violating_example}")
    typer.echo(f"{rule}\nprobe-synthesis request, e.g. (templates: probes)\n{rule}\n{plan.probes_example}")
    typer.echo(f"{rule}\nplan for {plan.run_dir}/ (nothing is called in a dry run)\n{rule}")
    typer.echo(f"prompts: {plan.seed_prompts} from the spec, {plan.builtin_probes} built-in probes, "
               f"up to {plan.synthesis_requests * run_config.prompts_per_target} synthesized "
               f"-> at most {plan.max_prompts} after --limit/dedup")
    violating = ("1 plain request with n={k} to the target model".format(k=run_config.k) if run_config.violating == "plain"
                 else f"{run_config.k} violating")
    skipped = ("" if run_config.conforming_for_demonstrated or not run_config.demonstrations
               else "; no conforming request for prompts that have demonstrations")
    if run_config.backend in ("hf", "vllm") or run_config.replay or run_config.violating == "plain":
        typer.echo(f"precision: {plan.precision}")
    typer.echo(f"requests: {plan.synthesis_requests} probe-synthesis + at most {plan.response_requests} response "
               f"requests (1 conforming with n={run_config.k} and {violating} per prompt, and {run_config.replay_count} "
               f"replay answers from the target model{skipped}), fewer for work already in the run folder")
    from persona.judges import judge_class

    kind = judge.partition(":")[0]
    cost = "nothing is judged, no datasets are built" if kind == "none" else judge_class(kind).cost
    typer.echo(f"judge: {judge} ({cost})")


class _Stderr:
    """Looks sys.stderr up at each write, so log lines go through the progress bar's redirection."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def _setup_logging() -> None:
    import logging

    logger = logging.getLogger("persona")
    if not logger.handlers:
        handler = logging.StreamHandler(_Stderr())
        handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO if os.environ.get("PERSONA_VERBOSE") else logging.WARNING)
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")  # persona shows its own progress
    import warnings

    for module in ("transformers", "trl", "peft", "accelerate"):  # their deprecations are for their callers' code
        warnings.filterwarnings("ignore", category=FutureWarning, module=module)
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=module)


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
