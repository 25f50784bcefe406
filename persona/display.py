"""What the commands print: summaries and tables as text, from the records the library returns (persona.cli prints
them; these functions print nothing). One function per thing shown, e.g.

    display.eval_table(metrics)        # the verdict and every metric row, base vs trained, with its n
    display.built(report)              # what a build made, a line each
"""

from __future__ import annotations


def generated(summary) -> list[str]:
    """What `persona generate` made and where, a line each, then the next command."""
    lines: list[str] = []
    out = lines.append
    minutes, seconds = divmod(int(summary.seconds), 60)
    out(f"wrote {summary.responses} responses ({summary.conforming} conforming, {summary.violating} violating, "
        f"{summary.demonstrations} demonstrations, {summary.replay} replay) "
        f"for {summary.prompts_train + summary.prompts_eval} prompts ({summary.prompts_train} train, "
        f"{summary.prompts_eval} eval) to {summary.run_dir}/ in {minutes}m{seconds:02d}s: "
        f"{summary.requests_made} backend requests, {summary.tokens:,} tokens generated")
    if summary.precision:
        out("local models computed in " + "; ".join(sorted(set(summary.precision.values()))))
    if summary.build is not None:
        lines.extend(built(summary.build, summary.judgements_made))
        out(f"next: persona train {summary.run_dir}")
    else:
        out(f"next: persona judge {summary.run_dir}")
    return lines


def built(report, judged_now: int | None = None) -> list[str]:
    """What a build made (persona build, and generate's last step), a line each."""
    lines: list[str] = []
    out = lines.append
    pairs = report.pairs
    kto = report.kto
    agreement = f"{report.judge_agreement:.1%}" if report.judge_agreement is not None else "n/a"
    if judged_now is not None:
        out(f"judged with {report.judge or 'the judge'}: {judged_now} new judgements, {report.unjudged} responses unjudged")
    sft = {split: sum((report.sft.get(split) or {}).values()) for split in ("train", "eval")}
    cover = report.coverage.get("train") or {}
    out(f"sft rows: {sft['train']} train + {sft['eval']} eval ({', '.join(f'{n} {k}' for k, n in (report.sft.get('train') or {}).items()) or 'none'}); "
        f"{cover.get('covered', 0)} of {cover.get('prompts', 0)} train prompts have an accepted answer")
    left_out = (report.demonstrations_left_out or {}).get("train")
    if left_out:
        out(f"identity demonstrations: {left_out} left out of SFT's train split, so they are at most "
            f"{report.settings.get('demonstration_share', 0.5):.0%} of its rows (--demonstration-share)")
    if report.domain:
        per = ", ".join(f"{t} {row['kept']}/{row['prompts']}" for t, row in report.domain.items())
        unseen = sum(row["unjudged_target"] for row in report.domain.values())
        out(f"in-domain help (the target model's own answers the judge and universal checks accept), prompts kept "
            f"per target: {per}" + (f"; {unseen} answers to baits left out: the judge did not score their rule"
                                    if unseen else ""))
    out(f"dpo/ipo pairs: {pairs.get('train', 0)} train + {pairs.get('eval', 0)} eval; acceptance rate "
        f"{report.acceptance_rate:.1%} of {report.candidates} violating responses; judge agreement {agreement}")
    reward = report.reward.get("train") or {}
    if reward:
        aimed = reward.get("targets") or {}
        out(f"reward model pairs: {reward.get('whole', 0)} whole-answer + {sum(aimed.values())} aimed at one of "
            f"{len(aimed)} targets (train)" + (f"; fewest: {min(aimed, key=aimed.get)} {min(aimed.values())}"
                                               if aimed else ""))
    out(f"kto rows: train {kto['train']['desirable']} desirable / {kto['train']['undesirable']} undesirable "
        f"(weights {report.kto_weights['desirable_weight']} / {report.kto_weights['undesirable_weight']}), "
        f"eval {kto['eval']['desirable']} / {kto['eval']['undesirable']}")
    if not pairs.get("train"):
        why = "; ".join(f"{n} {reason}" for reason, n in report.dropped.items()) or "no violating responses"
        out(f"warning: no DPO/IPO pairs in the train split ({why}); SFT is unaffected")
    if report.swap_consistency is not None:
        out(f"pairwise check: swap consistency {report.swap_consistency:.1%}; pairs kept only when both orders agree")
    if report.length:
        out(f"length balance: chosen {report.length['chosen_mean_chars']:.0f} chars vs rejected "
            f"{report.length['rejected_mean_chars']:.0f}; chosen longer in {report.length['chosen_longer_share']:.0%} of pairs")
    out(f"datasets written to {report.paths['sft']}/, {report.paths['dpo']}/ and {report.paths['kto']}/ "
        "(load with datasets.load_dataset)")
    return lines


def calibration_table(report) -> str:
    """A judge's calibration: accuracy and kappa overall and per identity, and each miss."""
    lines: list[str] = []
    out = lines.append
    out(f"{'judge':<40} {'n':>4} {'accuracy':>9} {'kappa':>6} {'unjudged':>9}")
    out(f"{report.judge:<40} {report.n:>4} {report.accuracy:>9.1%} {report.kappa:>6.3f} {report.unjudged:>9}")
    for name, (n, accuracy) in report.by_identity.items():
        out(f"  {name:<38} {n:>4} {accuracy:>9.1%}")
    for name, note, label, overall, rationale in report.mistakes:
        shown = "n/a" if overall is None else f"{overall:.1f}"
        out(f"  miss: {name}: {note} (labelled {'in' if label else 'out of'} character, "
            f"scored {shown}: {rationale[:90]})")
    if report.by_target:
        out(f"per target (hand-labelled, its score on that target only): {'n':>4} {'judged':>7} {'accuracy':>9} "
            f"{'p':>7}  verdict")
        for key, t in report.by_target.items():
            accuracy = "n/a" if t["accuracy"] is None else f"{t['accuracy']:.1%}"
            verdict = ("judged: beats chance" if t["beats_chance"] else
                       "not judged: no score" if not t["judged"] else "not judged: no better than chance")
            out(f"  {key:<55} {t['n']:>4} {t['judged']:>7} {accuracy:>9} {t['p']:>7.3f}  {verdict}")
        good = sum(t["beats_chance"] for t in report.by_target.values())
        out(f"{report.judge} judges {good} of {len(report.by_target)} targets better than chance")
    return "\n".join(lines)


def stats_text(numbers: dict) -> str:
    """`persona stats`: counts, acceptance rate, score histograms, tokens."""
    lines: list[str] = []
    out = lines.append
    p, r, t = numbers["prompts"], numbers["responses"], numbers["tokens"]
    out(f"run {numbers['run_dir']} (identity {numbers['identity']})")
    out(f"prompts     {p['train'] + p['eval']:>6}  ({p['train']} train, {p['eval']} eval)")
    out(f"responses   {sum(r.values()):>6}  ({', '.join(f'{n} {kind}' for kind, n in r.items())})")
    for name, counts in numbers["judgements"].items():
        out(f"judgements  {counts.get('ok', 0) + counts.get('unjudged', 0):>6}  by {name} "
            f"({counts.get('unjudged', 0)} unjudged)")
    out(f"tokens      {t['prompt'] + t['completion']:>6,}  ({t['prompt']:,} prompt, {t['completion']:,} generated)")
    old = numbers["superseded"]
    if old["prompts"] or old["responses"]:
        out(f"superseded  {old['prompts'] + old['responses']:>6}  ({old['prompts']} prompts, {old['responses']} "
            "responses of earlier generations, kept in the stores for resuming; not counted above)")
    b = numbers["build"]
    if b is None:
        out("datasets    none yet (persona build RUN_DIR)")
        return "\n".join(lines)
    out(f"pairs       {sum(b['pairs'].values()):>6}  ({b['pairs'].get('train', 0)} train, {b['pairs'].get('eval', 0)} eval)"
        f"; acceptance rate {b['acceptance_rate']:.1%}; dropped {b['dropped']}")
    agreement = b.get("judge_agreement")
    out(f"judge       {b['judge']}; agreement with intended kind {agreement:.1%}" if agreement is not None
               else f"judge       {b['judge']}")
    for kind in ("conforming", "violating"):
        bins = b["histograms"].get(kind, [0] * 10)
        top = max(bins) or 1
        out(f"scores of {kind} responses (overall 0-10):")
        for i, n in enumerate(bins):
            out(f"  {i:>2}-{i + 1:<2} {'#' * round(30 * n / top):<30} {n}")
    return "\n".join(lines)


def trained(result, method: str) -> list[str]:
    """What a training run did and wrote, a line each."""
    lines: list[str] = []
    out = lines.append
    losses = [m["loss"] for m in result.metrics if "loss" in m]
    speed = f", {result.tokens} tokens at {result.tokens_per_second:.0f} tokens/s" if result.tokens_per_second else ""
    out(f"trained {method} for {len(losses)} logged steps in {result.seconds:.0f}s{speed} "
        f"(loss {losses[0]:.4f} -> {losses[-1]:.4f}); wrote {result.output_dir}/"
        + (f" and {result.merged_dir}/" if result.merged_dir else "") if losses else
        f"trained {method}; wrote {result.output_dir}/")
    if result.reward:
        r = result.reward
        accuracy = "n/a (no eval split)" if r["eval_pairwise_accuracy"] is None else f"{100 * r['eval_pairwise_accuracy']:.1f}%"
        out(f"reward model: pairwise accuracy {accuracy} on {r['eval_pairs']} held-out pairs; "
            f"judge with --judge reward:{result.output_dir}")
        lines.extend(reward_targets(r.get("targets") or {}))
    return lines


def reward_targets(targets: dict) -> list[str]:
    """A reward model's held-out pairwise accuracy per target, and which targets its judge scores."""
    from persona.judges.reward import refusal

    if not targets:
        return []
    lines = ["  per target (held-out pairs aimed at it; the judge scores a target only where it beats chance):"]
    width = max(len(t) for t in targets)
    for target, numbers in targets.items():
        accuracy = numbers.get("eval_pairwise_accuracy")
        shown = "   n/a" if accuracy is None else f"{100 * accuracy:5.1f}%"
        why = refusal(numbers)
        lines.append(f"    {target:<{width}}  {shown} of {numbers.get('eval_pairs', 0):>3}  "
                     + ("scored" if why is None else f"not judged: {why}"))
    return lines


def eval_table(m: dict) -> str:
    """The verdict in words, then the eval's rows, base vs trained, one line each (the same rows as the model
    card and the report), each with its sample size."""
    from persona.metrics import format_value, metric_rows, pct

    lines = [f"verdict ({m['judge']} judge):"] + [f"  {line}" for line in m.get("verdict", [])] + [""]
    prompted = m.get("baseline") == "prompt"
    both = "prompted" in m  # --baseline both: base | base + prompt | trained
    if prompted or both:
        lines.append(f"{'baseline' if prompted else 'base+prompt'}: the base model prompted with "
                     f"{m.get('baseline_prompt')!r}")
    lines.append(f"{'':<46} {'n':>5} {'base+prompt' if prompted else 'base':>11} "
                 + (f"{'base+prompt':>11} " if both else "") + f"{'trained':>10}")
    for row in metric_rows(m):  # a label too long for its column gets a line of its own, the numbers below it
        label = row.label if len(row.label) <= 46 else ""
        if not label:
            lines.append(row.label)
        lines.append(f"{label:<46} {row.n if row.n is not None else '':>5} {format_value(row.base, row.unit):>11} "
                     + (f"{format_value(row.prompted, row.unit):>11} " if both else "")
                     + f"{format_value(row.trained, row.unit):>10}")
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


def side_by_side(evals: dict) -> str:
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


def dry_run_text(spec, run_config, judge: str = "rules") -> str:
    """The plan of `persona generate --dry-run`: the rendered prompts and the number of requests."""
    lines: list[str] = []
    out = lines.append
    from persona.pipeline import dry_run

    plan = dry_run(spec, run_config)
    rule = "-" * 72
    out(f"{rule}\nsystem prompt for conforming responses (templates: conforming)\n{rule}\n{plan.system_prompt}")
    out(f"{rule}\nsystem prompt for violating responses, e.g. (templates: violating)\n{rule}\n{plan.violating_example}")
    out(f"{rule}\nprobe-synthesis request, e.g. (templates: probes)\n{rule}\n{plan.probes_example}")
    out(f"{rule}\nplan for {plan.run_dir}/ (nothing is called in a dry run)\n{rule}")
    out(f"prompts: {plan.seed_prompts} from the spec, {plan.builtin_probes} built-in probes, "
        f"up to {plan.synthesis_requests * run_config.prompts_per_target} synthesized "
        f"-> at most {plan.max_prompts} after --limit/dedup")
    violating = ("1 plain request with n={k} to the target model".format(k=run_config.k) if run_config.violating == "plain"
                 else f"{run_config.k} violating")
    skipped = ("" if run_config.conforming_for_demonstrated or not run_config.demonstrations
               else "; no conforming request for prompts that have demonstrations")
    from persona.backends import backend_class

    if backend_class(run_config.backend).local or run_config.replay or run_config.violating == "plain":
        out(f"precision: {plan.precision}")
    out(f"requests: {plan.synthesis_requests} probe-synthesis + at most {plan.response_requests} response "
        f"requests (1 conforming with n={run_config.k} and {violating} per prompt, and {run_config.replay_count} "
        f"replay answers from the target model{skipped}), fewer for work already in the run folder")
    from persona.judges import judge_class

    kind = judge.partition(":")[0]
    cost = "nothing is judged, no datasets are built" if kind == "none" else judge_class(kind).cost
    out(f"judge: {judge} ({cost})")
    return "\n".join(lines)


def validated(files: int, invalid: int, problems: list) -> str:
    """persona validate's last line: files checked, valid and invalid, problems and warnings."""
    summary = f"{files} spec file{'s' if files != 1 else ''} checked: {files - invalid} valid, {invalid} invalid"
    errors = sum(p.is_error for p in problems)
    counts = [f"{count} {word}{'s' if count != 1 else ''}"
              for count, word in ((errors, "problem"), (len(problems) - errors, "warning")) if count]
    return summary + (f" ({', '.join(counts)})" if counts else "")


def job_results(done: dict) -> str:
    """persona run's results: each eval run now or current, then every evaluated model side by side."""
    lines = []
    for stage, result in done.items():
        if stage.startswith("eval ") and isinstance(result, dict):
            lines += [f"{stage}:", eval_table(result)]
    if len(done.get("evals") or {}) > 1:
        lines.append(side_by_side(done["evals"]))
    return "".join(line + "\n" for line in lines)


def report_gaps(data) -> list[str]:
    """What a report leaves out, and the command that fills it in."""
    if not data.trained:
        return ["no training metrics in this run folder: the report leaves out training and eval (run persona train)"]
    if not any(t.eval for t in data.trained):
        return ["no eval results yet: the report leaves out base vs trained (run persona eval on a trained model)"]
    return []


def test_results(results: dict) -> str:
    """persona test: each failing test with what it broke, then pass rates per target and the universal checks."""
    lines = [f"{results['passed']} of {results['judged']} judged tests pass"
             + (f" ({100 * results['pass_rate']:.1f}%)" if results["pass_rate"] is not None else "")
             + (f"; {results['not_judged']} not judged (a rubric and no judge that reads it)"
                if results["not_judged"] else "") + f" - {results['spec']} on {results['model']}"]
    for row in results["tests"]:
        if row["status"] == "fail":
            lines.append(f"FAIL {row['test']} [{', '.join(row['targets'])}]: {'; '.join(row['failures'])}")
            lines.append(f"     answer: {' '.join(row['answer'].split())[:160]!r}")
    lines.append(f"{'target':<26} {'kind':<11} {'tests':>5} {'passed':>7}")
    for target, row in results["by_target"].items():
        shown = "not tested" if not row["tests"] else "not judged" if row["rate"] is None else \
            f"{row['passed']}/{row['judged']}"
        lines.append(f"{target:<26} {row['kind']:<11} {row['tests']:>5} {shown:>7}")
    lines.append("universal checks (answers flagged): " + ", ".join(
        f"{name.replace('_', '-')} {row['flagged']}/{row['n']}" for name, row in results["universal"].items()))
    return "\n".join(lines)



def listing(identities, templates=None) -> str:
    """`persona ls`: the identities found (in `identities`, then the built-ins) and the templates, each with where it
    comes from."""
    from persona.errors import PersonaError
    from persona.spec import display_path, find_spec_files, load_spec
    from persona.templates import builtin_dir, list_templates

    lines = ["identities:"]
    folders = [identities] if identities.is_dir() else []
    folders.append(builtin_dir("identities"))
    seen = set()
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
            lines.append(f"  {display_path(file):<48} {about:<24} [{source}]")
    lines.append("templates:")
    for info in list_templates(templates):
        note = " (overrides the built-in)" if info.overrides_builtin else ""
        lines.append(f"  {info.name:<14} {display_path(info.path):<48} [{info.source}]{note}")
    return "\n".join(lines) + "\n"
