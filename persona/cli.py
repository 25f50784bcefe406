"""The `persona` command line. Thin: each command maps its options onto one library call.

    persona init NAME                         scaffold identities/NAME.yaml and editable templates/
    persona validate identities/              check specs (exit 1 on any problem; --format github for CI)
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

from persona.errors import PersonaError

app = typer.Typer(
    name="persona",
    help=(
        "Turn a written identity into a model that holds it.\n\n"
        "\b\nQuickstart:\n"
        "  persona init mybot                 # identities/mybot.yaml + templates/ to edit\n"
        "  persona validate identities/       # check every spec (exit 1 on problems; for CI)\n"
        "  persona render identities/mybot.yaml --template conforming\n"
        "  persona ls                         # identities and templates, and where from\n"
        "  persona schema                     # JSON Schema for editor autocompletion"
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
    pass


@app.command()
def validate(
    paths: Annotated[list[Path], typer.Argument(help="Spec files, or folders searched for *.yaml / *.yml.")],
    format: Annotated[str, typer.Option("--format", help="text: file:line:col lines; github: Actions annotations.")] = "text",
) -> None:
    """Check identity specs against the schema and persona's rules. Exit 0 if all are valid, 1 if not.

    One line per problem: file:line:col: path: message (hint: ...).

    Example:  persona validate identities/ --format github
    """
    from persona.spec import check_file, display_path, find_spec_files

    if format not in ("text", "github"):
        _fail(PersonaError(f"--format {format!r} is not one of 'text', 'github'", hint="use --format text or github"), 2)
    try:
        files = find_spec_files(paths)
    except PersonaError as e:
        _fail(e, 2)
    problems: dict = {}
    invalid = 0
    for file in files:
        found = check_file(file)
        invalid += bool(found)
        for problem in found:  # a base file shared by several specs reports its problems once
            problems.setdefault(problem, None)
    for problem in sorted(problems):
        typer.echo(problem.format() if format == "text" else problem.format_github())
    n = len(files)
    summary = f"{n} spec file{'s' if n != 1 else ''} checked: {n - invalid} valid, {invalid} invalid"
    if problems:
        summary += f" ({len(problems)} problem{'s' if len(problems) != 1 else ''})"
    _err(summary)
    if invalid:
        raise typer.Exit(1)


@app.command()
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

    try:
        spec = load_spec(spec_path)
        variables: dict = {}
        if template in ("violating", "probes"):
            variables["target"] = spec.target(target) if target else spec.targets()[0]
        if template == "probes":
            variables["n"] = 5
            variables["topics"] = list(spec.probes.topics)
        for item in var or []:
            name, sep, value = item.partition("=")
            if not sep or not name.isidentifier():
                raise PersonaError(f"--var {item!r} is not NAME=VALUE", hint='e.g. --var prompt="Who made you?"')
            variables[name] = int(value) if value.isdigit() else value
        typer.echo(render_template(template, templates_dir=templates, spec=spec, **variables), nl=False)
    except PersonaError as e:
        _fail(e)


@app.command()
def schema() -> None:
    """Print the identity spec's JSON Schema (draft 2020-12), for editors and other tools.

    Example:  persona schema > identity.schema.json, then start a spec with
    # yaml-language-server: $schema=identity.schema.json
    """
    from importlib import resources

    typer.echo(resources.files("persona").joinpath("identity.schema.json").read_text("utf-8"), nl=False)


@app.command("ls")
def list_things(
    identities: Annotated[Path, typer.Option(help="Folder of identity specs.")] = Path("identities"),
    templates: TemplatesOption = None,
) -> None:
    """List the identities and templates persona finds, and where each comes from.

    Example:  persona ls --templates my_templates/
    """
    from persona.spec import display_path, find_spec_files, load_spec
    from persona.templates import builtin_dir, list_templates

    try:
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
    except PersonaError as e:
        _fail(e)


@app.command()
def init(
    name: Annotated[str, typer.Argument(help="Identity name: lowercase letters, digits, '-' or '_'.")],
    directory: Annotated[Path, typer.Option("--dir", help="Project folder to write into.")] = Path("."),
    force: Annotated[bool, typer.Option(help="Overwrite files that already exist.")] = False,
) -> None:
    """Start a new identity: write identities/NAME.yaml, identity.schema.json and copies of the built-in
    templates (templates/*.j2) to edit.

    Example:  persona init mybot && persona validate identities/mybot.yaml
    """
    from persona.scaffold import scaffold_project

    try:
        written, skipped = scaffold_project(name, directory, force=force)
    except PersonaError as e:
        _fail(e)
    for path in skipped:
        _err(f"kept existing {path} (use --force to overwrite)")
    _err(f"wrote {len(written)} file{'s' if len(written) != 1 else ''}: " + ", ".join(map(str, written)))


@app.command()
def generate(
    spec_path: Annotated[Path, typer.Argument(metavar="SPEC", help="The identity spec file.")],
    backend: Annotated[Optional[str], typer.Option("--backend", "-b", help="hf (default: local model), openai, vllm.")] = None,
    model: Annotated[Optional[str], typer.Option("--model", "-m", help="hf/vllm: model folder or .gguf [default: embedded SmolLM2-135M-Instruct]; openai: model name.")] = None,
    base_url: Annotated[Optional[str], typer.Option(help="openai: server URL, e.g. http://localhost:8000/v1.")] = None,
    api_key_env: Annotated[Optional[str], typer.Option(help="openai: environment variable holding the API key [default: OPENAI_API_KEY].")] = None,
    config: Annotated[Optional[Path], typer.Option("--config", "-c", help="YAML run config; flags override it.")] = None,
    out: Annotated[Optional[Path], typer.Option(help="Run folder [default: runs/<identity name>].")] = None,
    limit: Annotated[Optional[int], typer.Option(help="At most this many prompts (quick runs).", min=1)] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show the rendered prompts and the number of requests; call nothing.")] = False,
    k: Annotated[Optional[int], typer.Option("-k", help="Conforming and violating responses per prompt [default: 2].", min=1)] = None,
    prompts_per_target: Annotated[Optional[int], typer.Option(help="Prompts synthesized per trait/constraint/... [default: 3].", min=0)] = None,
    eval_fraction: Annotated[Optional[float], typer.Option(help="Share of prompts held out for eval [default: 0.2].", min=0, max=0.9)] = None,
    temperature: Annotated[Optional[float], typer.Option(min=0)] = None,
    top_p: Annotated[Optional[float], typer.Option(min=0, max=1)] = None,
    max_tokens: Annotated[Optional[int], typer.Option(help="Longest response, in tokens [default: 192].", min=1)] = None,
    seed: Annotated[Optional[int], typer.Option()] = None,
    concurrency: Annotated[Optional[int], typer.Option(help="openai: requests in flight [default: 32].", min=1)] = None,
    batch_size: Annotated[Optional[int], typer.Option(help="hf: sequences per batch [default: 8].", min=1)] = None,
    tensor_parallel_size: Annotated[Optional[int], typer.Option(help="vllm: GPUs to shard the model over.", min=1)] = None,
    option: Annotated[Optional[list[str]], typer.Option("--backend-option", "-o", help="Other backend option KEY=VALUE (repeatable), e.g. -o timeout=120.")] = None,
    templates: TemplatesOption = None,
) -> None:
    """Generate probe prompts and conforming + violating responses into a resumable run folder.

    Runs on the embedded default model with no API key and no GPU; re-running skips finished work.

    Example:  persona generate identities/brand.yaml --limit 20

    Example:  persona generate identities/aster.yaml -b openai -m gpt-4o-mini --concurrency 64
    """
    from persona.config import load_run_config
    from persona.spec import load_spec

    _setup_logging()
    try:
        backend_options = {}
        for item in option or []:
            name, sep, value = item.partition("=")
            if not sep or not name.isidentifier():
                raise PersonaError(f"--backend-option {item!r} is not KEY=VALUE", hint="e.g. -o timeout=120")
            backend_options[name] = _parse_value(value)
        overrides = dict(backend=backend, model=model, base_url=base_url, api_key_env=api_key_env,
                         out=str(out) if out else None, limit=limit, k=k, prompts_per_target=prompts_per_target,
                         eval_fraction=eval_fraction, temperature=temperature, top_p=top_p, max_tokens=max_tokens,
                         seed=seed, concurrency=concurrency, batch_size=batch_size,
                         tensor_parallel_size=tensor_parallel_size, templates=str(templates) if templates else None)
        run_config = load_run_config(config, overrides)
        if backend_options:
            from dataclasses import replace

            run_config = replace(run_config, backend_options={**run_config.backend_options, **backend_options})
        spec = load_spec(spec_path)
        if dry_run:
            _print_dry_run(spec, run_config)
            return
        from persona.generate import generate as run_generate

        with _progress_bar() as on_progress:
            summary = run_generate(spec, run_config, on_progress)
    except PersonaError as e:
        _fail(e)
    except KeyboardInterrupt:
        _err("interrupted: finished records are kept; run the same command again to resume")
        raise typer.Exit(130)
    minutes, seconds = divmod(int(summary.seconds), 60)
    _err(f"wrote {summary.responses} responses ({summary.conforming} conforming, {summary.violating} violating) "
         f"for {summary.prompts_train + summary.prompts_eval} prompts ({summary.prompts_train} train, "
         f"{summary.prompts_eval} eval) to {summary.run_dir}/ in {minutes}m{seconds:02d}s: "
         f"{summary.requests_made} backend requests, {summary.tokens:,} tokens generated")


def _parse_value(value: str):
    """'12' -> 12, '0.5' -> 0.5, 'true' -> True, anything else stays text."""
    import json

    try:
        return json.loads(value)
    except ValueError:
        return value


def _print_dry_run(spec, run_config) -> None:
    from persona.generate import dry_run

    plan = dry_run(spec, run_config)
    rule = "-" * 72
    typer.echo(f"{rule}\nsystem prompt for conforming responses (templates: conforming)\n{rule}\n{plan.system_prompt}")
    typer.echo(f"{rule}\nsystem prompt for violating responses, e.g. (templates: violating)\n{rule}\n{plan.violating_example}")
    typer.echo(f"{rule}\nprobe-synthesis request, e.g. (templates: probes)\n{rule}\n{plan.probes_example}")
    typer.echo(f"{rule}\nplan for {plan.run_dir}/ (nothing is called in a dry run)\n{rule}")
    typer.echo(f"prompts: {plan.seed_prompts} from the spec, {plan.builtin_probes} built-in probes, "
               f"up to {plan.synthesis_requests * run_config.prompts_per_target} synthesized "
               f"-> at most {plan.max_prompts} after --limit/dedup")
    typer.echo(f"requests: {plan.synthesis_requests} probe-synthesis + at most {plan.response_requests} response "
               f"requests (1 conforming with n={run_config.k} and {run_config.k} violating per prompt), "
               f"fewer for work already in the run folder")


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
        logger.propagate = False
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


class _progress_bar:
    """A rich progress bar on stderr per stage: counts, rate, tokens and ETA. Starts at the first update,
    so a run that fails early or has nothing to do prints no empty bar."""

    def __enter__(self):
        self.progress = None
        self.tasks: dict[str, int] = {}
        self.tokens: dict[str, int] = {}
        return self.update

    def _start(self):
        from rich.console import Console
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                   TimeRemainingColumn)

        self.progress = Progress(
            TextColumn("{task.description:<9}"), BarColumn(bar_width=24), MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"), TextColumn("{task.fields[tokens]:,} tok"),
            TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(), console=Console(stderr=True))
        self.progress.__enter__()

    def update(self, stage: str, done: int, total: int, tokens: int) -> None:
        if self.progress is None:
            self._start()
        if stage not in self.tasks:
            self.tasks[stage] = self.progress.add_task(stage, total=total, rate="", tokens=0)
            self.tokens[stage] = 0
        self.tokens[stage] += tokens
        elapsed = self.progress.tasks[self.tasks[stage]].elapsed or 0
        rate = f"{done / elapsed:.2f} req/s {self.tokens[stage] / elapsed:.0f} tok/s" if elapsed > 0 and done else ""
        self.progress.update(self.tasks[stage], completed=done, total=total, rate=rate, tokens=self.tokens[stage])

    def __exit__(self, *exc):
        if self.progress is not None:
            self.progress.__exit__(*exc)
        return False


def main() -> None:
    """Console-script entry point: never shows a traceback for a user error, and respects NO_COLOR."""
    if os.environ.get("NO_COLOR"):
        os.environ.setdefault("TERM", "dumb")
    try:
        app()
    except PersonaError as e:  # a command forgot to catch one: still no traceback
        _err(f"error: {e.message}")
        if e.hint:
            _err(f"hint: {e.hint}")
        sys.exit(1)
    except KeyboardInterrupt:
        _err("interrupted")
        sys.exit(130)
