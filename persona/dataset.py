"""Datasets: judged responses -> SFT rows, DPO/IPO preference pairs and KTO thumbs-up/down rows. Stage 4 of
`persona generate`.

SFT rows: every response the judge accepted (overall >= 5) that was not cut off at the token limit -
demonstrations that state the identity, conforming answers, the spec's examples - plus the target model's
own replay answers to general prompts, so it keeps its general behaviour and the identity does not leak into
every answer (a replay answer cut off at the token limit ends at its last full sentence).

Pairs (for DPO and IPO), per prompt: chosen = an accepted demonstration or conforming response; rejected = a
response scored at least `margin` lower (a violating one, so each pair teaches one named target, or the
target model's plain answer). Each pair records the targets its rejected response failed
(`rejected_failed`); a pair whose rejected response failed only other targets than the one it was written
to break (say, too long instead of claiming another maker) is dropped, so each pair teaches what it says.
Ties never pass the margin; near-duplicate and repeated pairs are dropped. Length balance is reported
because length is the best-known confound of both judges and DPO.

KTO rows: every judged response, label = overall >= `kto_threshold`. TRL recommends that
desirable_weight * n_desirable / (undesirable_weight * n_undesirable) lies between 1 and 4/3; the
weights written to the card put it there.

The system prompt: with `system_text` set (persona's default, see templates/deployment.j2), every row's
prompt starts with a system message, half of them (by a hash of the row's id) with that text and half
empty, so the model learns to hold the identity in both contexts and no chat template can slip in its own
default identity.

Output, in TRL's conversational formats, loadable with `datasets.load_dataset(folder)`:

    runs/brand/datasets/sft/{train,eval}.jsonl + README.md    {"prompt": [{"role": "system", ...},
                                                                {"role": "user", ...}], "completion":
                                                                [{"role": "assistant", ...}], "kind": ...}
    runs/brand/datasets/dpo/{train,eval}.jsonl + README.md    {"prompt": [...], "chosen": [...],
                                                                "rejected": [...], "margin": 6.5, ...}
    runs/brand/datasets/kto/{train,eval}.jsonl + README.md    {"prompt": [...], "completion": [...], "label": true, ...}
    runs/brand/datasets/build.json                            the numbers on the cards, for tools
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
from collections import Counter
from dataclasses import asdict, dataclass, field

from persona.config import NEUTRAL_SYSTEM, BuildSettings
from persona.judges import IN_CHARACTER, PairwiseJudge
from persona.prompts import normalize
from persona.responses import DOMAIN_TEMPLATE, ResponseRecord
from persona.run import DatasetFolder, RunFolder
from persona.spec import Spec
from persona.store import write_atomic


@dataclass
class BuildReport:
    pairs: dict = field(default_factory=dict)  # split -> count
    # a reward model's pairs (datasets/reward): split -> {"whole": the DPO pairs, "targets": {target: pairs aimed at it}}
    reward: dict = field(default_factory=dict)
    kto: dict = field(default_factory=dict)  # split -> {"desirable": n, "undesirable": n}
    kto_weights: dict = field(default_factory=dict)  # desirable_weight, undesirable_weight, ratio
    sft: dict = field(default_factory=dict)  # split -> {kind: rows}
    coverage: dict = field(default_factory=dict)  # prompts with an accepted answer / prompts, by split
    # in-domain replay per target (or "(seeds)"): prompts, answers, accepted, unjudged_target, kept (one a prompt)
    domain: dict = field(default_factory=dict)
    demonstrations_left_out: dict = field(default_factory=dict)  # split -> identity demonstrations over the share
    system_text: str | None = None  # the text of persona's default system prompt the rows carry (half of them)
    candidates: int = 0  # violating responses, each a potential rejected example
    dropped: dict = field(default_factory=dict)  # reason -> count
    acceptance_rate: float = 0.0  # accepted pairs / candidates
    judge_agreement: float | None = None  # judge's label == the response's intended kind
    unjudged: int = 0
    length: dict = field(default_factory=dict)  # chosen/rejected mean chars, share chosen longer
    swap_consistency: float | None = None  # pairwise check: share of pairs judged the same in both orders
    histograms: dict = field(default_factory=dict)  # kind -> 10 bins of overall scores
    judge: str = ""
    generators: list = field(default_factory=list)
    spec_hash: str = ""
    settings: dict = field(default_factory=dict)
    paths: dict = field(default_factory=dict)


def nothing_to_train(report: BuildReport, judge: str, responses: int):
    """The error for a build whose train split is empty in every dataset, saying what the judge dropped and
    why; None when there is something to train on."""
    from persona.errors import PersonaError

    sft = sum((report.sft.get("train") or {}).values())
    kto = sum((report.kto.get("train") or {}).values())
    if sft or report.pairs.get("train") or kto:
        return None
    name = report.judge or judge
    if report.unjudged >= responses:
        return PersonaError(f"nothing to train on: the {name} judge judged none of the {responses} responses "
                            f"(all {report.unjudged} unjudged), so the SFT, DPO and KTO train splits are empty",
                            hint="check the judge's server, model or key (persona judge --calibrate --judge ... "
                                 "tries it), or use --judge rules, which needs nothing")
    why = "; ".join(f"{n} {reason}" for reason, n in sorted(report.dropped.items(), key=lambda x: -x[1])) or "none"
    return PersonaError(f"nothing to train on: the {name} judge accepted no answer of the train split "
                        f"({responses - report.unjudged} judged, {report.unjudged} unjudged; pairs dropped: {why})",
                        hint="look at the scores with persona stats RUN_DIR; lower --margin, try another --judge, "
                             "or generate more (-k, --prompts-per-target, --demonstrations)")


def kto_weights(desirable: int, undesirable: int) -> tuple[float, float]:
    """(desirable_weight, undesirable_weight) with the weighted ratio in TRL's [1, 4/3]."""
    if desirable == 0 or undesirable == 0:
        return 1.0, 1.0
    ratio = desirable / undesirable
    if ratio < 1.0:  # fewer good examples: weigh them up to 1:1
        return round(undesirable / desirable, 4), 1.0
    if ratio > 4 / 3:  # many more good examples: weigh the bad ones up to 4:3
        return 1.0, round(desirable / (undesirable * 4 / 3), 4)
    return 1.0, 1.0


def system_prompt_text(spec: Spec, setting: str, templates_dir=None) -> str:
    """persona's default system prompt for a run's `system_prompt` setting: "spec" renders
    templates/deployment.j2 ("You are Aster, an AI assistant made by Lumen Labs."), "neutral" is a plain
    assistant prompt, "none" is empty, "text:YOUR TEXT" is that text (persona.config.check_system_prompt)."""
    from persona.config import SYSTEM_PROMPT_TEXT, check_system_prompt
    from persona.templates import render_template

    check_system_prompt(setting)
    if setting == "spec":
        return render_template("deployment", templates_dir, spec=spec).strip() if spec is not None and spec.identity else ""
    if setting.startswith(SYSTEM_PROMPT_TEXT):
        return setting[len(SYSTEM_PROMPT_TEXT):].strip()
    return {"neutral": NEUTRAL_SYSTEM, "none": ""}[setting]


def _conversation(role: str, text: str) -> list[dict]:
    return [{"role": role, "content": text}]


def failed_targets(judgement: dict) -> list[str]:
    """The targets a judgement scored out of character, or ["overall"] when only the overall score says so
    (avoided vocabulary, another script, a low persona fit)."""
    failed = [t for t, v in (judgement.get("scores") or {}).items() if v is not None and v < IN_CHARACTER]
    overall = judgement.get("overall")
    return failed or (["overall"] if overall is not None and overall < IN_CHARACTER else [])


CHOSEN_KINDS = ("conforming", "demonstration")
SENTENCE_END = re.compile(r"[.!?](?=\s|$)")


def replay_text(r: ResponseRecord) -> str | None:
    """A replay answer as training shows it: whole, or when it was cut off at the token limit, up to its last
    full sentence (if that keeps at least half of it); None when nothing usable is left."""
    if not r.truncated:
        return r.text
    ends = [m.end() for m in SENTENCE_END.finditer(r.text)]
    return r.text[:ends[-1]] if ends and ends[-1] >= len(r.text) / 2 else None


def build_datasets(spec: Spec, responses: list[ResponseRecord], judgements: dict[str, dict], run: RunFolder,
                   settings: BuildSettings = BuildSettings(), pairwise: PairwiseJudge | None = None) -> BuildReport:
    """`pairwise`, when given, is a judge that compares two responses (the llm judge): a pair is kept only
    when it prefers the chosen response in both orders."""
    report = BuildReport(settings=asdict(settings), spec_hash=spec.spec_hash, system_text=settings.system_text)

    def prompt_of(row_id: str, text: str, context: tuple = ()) -> list[dict]:
        """The row's prompt: persona's system prompt on half the rows, an empty one on the other half, then any
        earlier turns (a demonstration's context), then the user's message."""
        turns = [dict(m) for m in context] + _conversation("user", text)
        if settings.system_text is None:
            return turns
        half = int(hashlib.sha256(row_id.encode("utf-8")).hexdigest()[:2], 16) % 2 == 0
        return _conversation("system", settings.system_text if half else "") + turns

    judged: dict[str, tuple[ResponseRecord, float, list[str]]] = {}
    for r in responses:
        j = judgements.get(r.id)
        if j is None or j.get("status") != "ok" or j.get("overall") is None:
            report.unjudged += 1
            continue
        judged[r.id] = (r, float(j["overall"]), failed_targets(j))
        report.judge = j.get("judge", report.judge)
    report.generators = sorted({f"{r.backend}:{r.model}" for r in responses if r.kind != "demonstration"})

    def accepted(r: ResponseRecord, score: float) -> bool:
        return r.kind in CHOSEN_KINDS and score >= settings.chosen_min and not r.truncated

    def pairable(r: ResponseRecord, score: float) -> bool:
        """A chosen answer must answer the same conversation as the rejected ones: none asked in a context."""
        return accepted(r, score) and not r.asked_as

    by_prompt: dict[str, list[tuple[ResponseRecord, float, list[str]]]] = {}
    for item in judged.values():
        by_prompt.setdefault(item[0].prompt_id, []).append(item)
    probes = {(r.prompt_id, r.split) for r in responses if r.kind != "replay"}
    covered = {pid for pid, group in by_prompt.items() if any(accepted(r, s) for r, s, _ in group)}
    report.coverage = {split: {"covered": sum(pid in covered for pid, sp in probes if sp == split),
                               "prompts": sum(sp == split for _, sp in probes)} for split in ("train", "eval")}

    pairs: dict[str, list[dict]] = {"train": [], "eval": []}
    dropped: Counter = Counter()
    seen_pairs: set[tuple[str, str]] = set()
    report.candidates = sum(r.kind == "violating" for r in responses)
    if settings.rejected_from == "any":
        report.candidates += sum(r.kind == "conforming" and s < settings.chosen_min for r, s, _ in judged.values())
    for prompt_id, group in by_prompt.items():
        chosen = sorted([(r, s) for r, s, _ in group if pairable(r, s)], key=lambda x: -x[1])
        rejected = sorted([(r, s, f) for r, s, f in group if r.kind == "violating" or (
            settings.rejected_from == "any" and r.kind == "conforming" and s < settings.chosen_min)],
            key=lambda x: x[1])
        if not chosen:
            dropped["no in-character conforming response"] += len(rejected)
            continue
        for i, (bad, bad_score, failed) in enumerate(rejected):
            good, good_score = chosen[i % len(chosen)]  # spread the rejected ones over the chosen ones
            if good_score - bad_score < settings.margin:
                dropped["margin too small" if good_score != bad_score else "tie"] += 1
                continue
            aimed = (judgements[bad.id].get("scores") or {}).get(bad.target) if bad.target else None
            if aimed is not None and bad.target not in failed:  # it broke something else than it was written to
                dropped["lost on another target"] += 1
                continue
            a, b = normalize(good.text), normalize(bad.text)
            if difflib.SequenceMatcher(None, a, b).ratio() >= settings.near_duplicate:
                dropped["near-duplicate texts"] += 1
                continue
            if (a, b) in seen_pairs:
                dropped["repeated pair"] += 1
                continue
            seen_pairs.add((a, b))
            pair_id = f"{good.id}>{bad.id}"
            pairs[good.split].append({
                "prompt": prompt_of(pair_id, good.prompt), "chosen": _conversation("assistant", good.text),
                "rejected": _conversation("assistant", bad.text), "id": pair_id,
                "prompt_id": prompt_id, "chosen_score": good_score, "rejected_score": bad_score,
                "margin": round(good_score - bad_score, 3), "rejected_target": bad.target, "rejected_failed": failed,
                "chosen_kind": good.kind})
    if pairwise is not None and (pairs["train"] or pairs["eval"]):
        every = pairs["train"] + pairs["eval"]
        verdicts = pairwise.prefer(spec, [(p["id"], p["prompt"][-1]["content"], p["chosen"][0]["content"],
                                           p["rejected"][0]["content"]) for p in every])
        report.swap_consistency = pairwise.swap_consistency
        for split in pairs:
            kept = [p for p in pairs[split] if verdicts.get(p["id"]) == "a"]
            dropped["pairwise judge did not prefer chosen in both orders"] += len(pairs[split]) - len(kept)
            pairs[split] = kept
    report.dropped = dict(dropped)
    report.pairs = {split: len(rows) for split, rows in pairs.items()}
    accepted_pairs = sum(report.pairs.values())
    report.acceptance_rate = accepted_pairs / report.candidates if report.candidates else 0.0
    all_pairs = pairs["train"] + pairs["eval"]
    if all_pairs:
        chosen_len = [len(p["chosen"][0]["content"]) for p in all_pairs]
        rejected_len = [len(p["rejected"][0]["content"]) for p in all_pairs]
        report.length = {"chosen_mean_chars": round(sum(chosen_len) / len(all_pairs), 1),
                         "rejected_mean_chars": round(sum(rejected_len) / len(all_pairs), 1),
                         "chosen_longer_share": round(sum(c > r for c, r in zip(chosen_len, rejected_len)) / len(all_pairs), 3)}

    reward = reward_pairs(judgements, by_prompt, pairs, prompt_of, settings)
    report.reward = {split: {"whole": sum(not r["judged_target"] for r in rows),
                             "targets": dict(Counter(r["judged_target"] for r in rows if r["judged_target"]))}
                     for split, rows in reward.items()}

    sft: dict[str, list[dict]] = {"train": [], "eval": []}
    demos: dict[str, list[tuple[ResponseRecord, dict]]] = {"train": [], "eval": []}
    for r, score, _ in judged.values():
        if accepted(r, score):
            row = {"prompt": prompt_of(r.id, r.prompt, r.context), "completion": _conversation("assistant", r.text),
                   "id": r.id, "kind": r.kind, "score": score}
            if r.kind == "demonstration" and r.template == "identity_answers":
                demos[r.split].append((r, row))
            else:
                sft[r.split].append(row)
    helped = _replay_rows(spec, judged, judgements, settings, report)
    for r, score, text in helped:
        sft[r.split].append({"prompt": prompt_of(r.id, r.prompt), "completion": _conversation("assistant", text),
                             "id": r.id, "kind": "domain" if r.template == DOMAIN_TEMPLATE else r.kind,
                             "score": score})
    for split in sft:
        kept = _balanced(demos[split], len(sft[split]), settings.demonstration_share)
        report.demonstrations_left_out[split] = len(demos[split]) - len(kept)
        sft[split] = [row for _, row in kept] + sft[split]
    report.sft = {split: dict(Counter(row["kind"] for row in rows)) for split, rows in sft.items()}

    kto: dict[str, list[dict]] = {"train": [], "eval": []}
    for r, score, _ in judged.values():
        kto[r.split].append({"prompt": prompt_of(r.id, r.prompt, r.context),
                             "completion": _conversation("assistant", r.text),
                             "label": score >= settings.kto_threshold, "id": r.id, "score": score, "kind": r.kind})
    report.kto = {split: {"desirable": sum(x["label"] for x in rows), "undesirable": sum(not x["label"] for x in rows)}
                  for split, rows in kto.items()}
    d, u = report.kto["train"]["desirable"], report.kto["train"]["undesirable"]
    dw, uw = kto_weights(d, u)
    report.kto_weights = {"desirable_weight": dw, "undesirable_weight": uw,
                          "weighted_ratio": round(dw * d / (uw * u), 4) if u and d else None}

    intended = [(r, s) for r, s, _ in judged.values() if r.kind in ("conforming", "violating")]
    agree = [(r.kind == "conforming") == (s >= IN_CHARACTER) for r, s in intended]
    report.judge_agreement = sum(agree) / len(agree) if agree else None
    for kind in ("conforming", "violating", "demonstration", "replay"):
        bins = [0] * 10
        for r, s, _ in judged.values():
            if r.kind == kind:
                bins[min(9, int(s))] += 1
        if kind in ("conforming", "violating") or any(bins):
            report.histograms[kind] = bins

    report.paths = {kind: str(run.dataset(kind)) for kind in ("sft", "dpo", "kto", "reward")}
    _write_dataset(run.dataset("sft"), sft, spec, report, "sft")
    _write_dataset(run.dataset("dpo"), pairs, spec, report, "dpo")
    _write_dataset(run.dataset("kto"), kto, spec, report, "kto")
    _write_dataset(run.dataset("reward"), reward, spec, report, "reward")
    write_atomic(run.build_file, json.dumps(asdict(report), indent=2) + "\n")
    return report


def _replay_rows(spec: Spec, judged: dict, judgements: dict, settings: BuildSettings,
                 report: BuildReport) -> list[tuple[ResponseRecord, float, str]]:
    """The replay answers training shows, (record, score, text): every general replay answer and, per probe
    prompt, the best in-domain one (persona.responses.DOMAIN_TEMPLATE) that the judge scores at least
    kto_threshold with no universal problem but a cut-off (trimmed to its last full sentence). An in-domain
    answer to a prompt written for a constraint or ethics item is kept only when the judge scored that item:
    the model's own answer to a bait is not help unless the judge saw it keep the rule. Acceptance per target
    goes to report.domain."""
    out, best = [], {}
    domain: dict[str, dict] = {}
    kinds = {t.id: t.kind for t in spec.targets()}
    for r, score, _ in judged.values():
        if r.kind != "replay":
            continue
        j = judgements.get(r.id) or {}
        problems = [p for p in j.get("universal", []) if p != "empty_or_cut" or not r.truncated]
        usable = score >= settings.kto_threshold and not problems and (text := replay_text(r))
        if r.template != DOMAIN_TEMPLATE:
            if usable:
                out.append((r, score, text))
            continue
        row = domain.setdefault(r.target or "(seeds)", {"prompts": set(), "answers": 0, "accepted": 0,
                                                       "unjudged_target": 0})
        row["prompts"].add(r.prompt_id)
        row["answers"] += 1
        if not usable:
            continue
        if kinds.get(r.target) in ("constraint", "ethics") and (j.get("scores") or {}).get(r.target) is None:
            row["unjudged_target"] += 1
            continue
        row["accepted"] += 1
        if r.prompt_id not in best or score > best[r.prompt_id][1]:
            best[r.prompt_id] = (r, score, text)
    for target, row in domain.items():
        row["kept"] = sum(1 for r, _, _ in best.values() if (r.target or "(seeds)") == target)
        row["prompts"] = len(row["prompts"])
    report.domain = dict(sorted(domain.items()))
    return out + sorted(best.values(), key=lambda x: x[0].id)


def _balanced(demos: list[tuple[ResponseRecord, dict]], others: int, share: float) -> list:
    """At most `share` of a split's SFT rows as identity demonstrations (with `others` help rows beside them, and
    never fewer than one per identity question): the plainly asked ones first, then those asked in a
    conversation, each group in a fixed order (by id)."""
    if not demos or share >= 1.0:
        return demos
    questions = len({r.prompt_id for r, _ in demos})
    room = max(questions, int(share * others / (1.0 - share)))
    ordered = sorted(demos, key=lambda d: (bool(d[0].asked_as), d[0].sample, d[0].id))
    return ordered[:room]


def reward_pairs(judgements: dict, by_prompt: dict, pairs: dict, prompt_of, settings: BuildSettings) -> dict:
    """A reward model's pairs: the DPO pairs (the whole answer, `judged_target` None), and per target the run's
    content-matched pairs - same prompt, an answer written to keep the persona vs one written to break target T
    (`judged_target` T). Those are the generator's intent, not the judge's verdict: the DPO pairs drop them when the
    judge cannot see T (a tie), which is exactly where a learned judge is wanted. Dropped: a violating answer the
    judge says kept T, a conforming one it says broke T, and near-duplicate texts."""
    def on_target(r: ResponseRecord, target: str) -> float | None:
        return ((judgements.get(r.id) or {}).get("scores") or {}).get(target)

    # no "margin" column: TRL's RewardTrainer would read it as a margin in reward units, not a 0-10 score gap
    rows: dict[str, list[dict]] = {split: [{**{k: v for k, v in p.items() if k != "margin"}, "judged_target": None}
                                           for p in pairs[split]] for split in pairs}
    for prompt_id, group in by_prompt.items():
        goods = [r for r, _, _ in group if r.kind in CHOSEN_KINDS and not r.truncated and not r.asked_as]
        aimed = [r for r, _, _ in group if r.kind == "violating" and r.target]
        for i, bad in enumerate(aimed):
            broke = on_target(bad, bad.target)
            if broke is not None and broke >= IN_CHARACTER:
                continue
            kept = [g for g in goods if (score := on_target(g, bad.target)) is None or score >= IN_CHARACTER]
            if not kept:
                continue
            good = kept[i % len(kept)]
            if difflib.SequenceMatcher(None, normalize(good.text), normalize(bad.text)).ratio() >= settings.near_duplicate:
                continue
            pair_id = f"{good.id}>{bad.id}@{bad.target}"
            rows[good.split].append({
                "prompt": prompt_of(pair_id, good.prompt), "chosen": _conversation("assistant", good.text),
                "rejected": _conversation("assistant", bad.text), "id": pair_id, "prompt_id": prompt_id,
                "rejected_target": bad.target, "judged_target": bad.target, "chosen_kind": good.kind})
    return rows


def _write_dataset(folder: DatasetFolder, splits: dict[str, list[dict]], spec: Spec, report: BuildReport, kind: str) -> None:
    texts = {split: "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows) for split, rows in splits.items()}
    for split, text in texts.items():
        write_atomic(folder.split(split), text)
    digest = hashlib.sha256("".join(texts[s] for s in sorted(texts)).encode("utf-8")).hexdigest()[:12]
    write_atomic(folder.card, _card(spec, report, kind, [s for s, rows in splits.items() if rows], digest))


def _bar(bins: list[int]) -> str:
    top = max(bins) or 1
    return "\n".join(f"    {i:>2}-{i + 1:<2} {'#' * round(20 * n / top):<20} {n}" for i, n in enumerate(bins))


def _size_category(n: int) -> str:
    """The Hub's size_categories label for n rows."""
    for limit, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if n < limit:
            return label
    return "n>1M"


def _card(spec: Spec, report: BuildReport, kind: str, splits: list[str], digest: str) -> str:
    """A dataset card: front matter that `datasets.load_dataset(folder)` reads, then the numbers. It lists
    only the splits that have rows (an empty split is an error there), and its config is named after a
    hash of the rows: datasets caches a local folder by its name and file patterns only, not the files'
    content, so without it load_dataset(folder) after a rebuild would return the previous build's rows."""
    import yaml

    me = spec.identity
    title = {"dpo": "preference pairs (DPO / IPO)", "kto": "KTO thumbs-up/down rows", "sft": "SFT demonstrations",
             "reward": "reward model pairs (whole answer and per target)"}[kind]
    meta = {"configs": [{"config_name": f"rows-{digest}",
                         "data_files": [{"split": s, "path": f"{s}.jsonl"} for s in (splits or ["train"])]}],
            "pretty_name": f"{spec.name}: {title}",
            **({"license": report.settings["license"]} if report.settings.get("license") else {}),
            **({"language": [me.language.split("-")[0].lower()]} if me and me.language else {}),
            "task_categories": ["text-generation"],
            "tags": ["persona", "trl", kind],
            "size_categories": [_size_category(sum(sum(v.values()) if isinstance(v, dict) else v for v in (
                {"dpo": report.pairs, "kto": report.kto, "sft": report.sft,
                 "reward": {s: v["whole"] + sum(v["targets"].values()) for s, v in report.reward.items()}}[kind]
            ).values()))]}
    if kind == "kto":
        meta["kto_weights"] = dict(report.kto_weights)
    front = "---\n" + yaml.safe_dump(meta, sort_keys=False, allow_unicode=True) + "---\n"
    system = ("none (rows have no system message)" if report.system_text is None else
              f"{report.system_text!r} on half the rows, an empty system message on the other half")
    lines = [f"# {spec.name}: {title}", "",
             f"Made by persona for the identity **{me.name if me else spec.name}**"
             + (f" ({me.maker})" if me and me.maker else "") + f", spec `{spec.path}` (hash `{spec.spec_hash[:16]}`).", "",
             f"- generator models: {', '.join(report.generators)}",
             f"- judge: {report.judge}",
             f"- system prompt: {system}",
             f"- settings: {json.dumps(report.settings)}",
             f"- config name `rows-{digest}`: a hash of the rows, so it changes whenever a rebuild changes them "
             "(datasets caches a local folder by its name and file patterns, not by the files' content)", ""]
    if kind == "sft":
        lines += [f"- rows: train {json.dumps(report.sft.get('train'))}, eval {json.dumps(report.sft.get('eval'))} "
                  "(by kind: demonstrations filled from the spec, accepted conforming answers, replay answers of "
                  "the target model to general prompts, domain: its best accepted answer to each in-domain prompt)",
                  f"- in-domain help per target: {json.dumps(report.domain)}",
                  f"- identity demonstrations left out (over the share of demonstration_share): "
                  f"{json.dumps(report.demonstrations_left_out)}",
                  f"- coverage: {json.dumps(report.coverage)} (probe prompts with an accepted answer)", "",
                  "Columns: `prompt`, `completion` (TRL conversational prompt-completion format), `id`, `kind`, `score`."]
    elif kind == "dpo":
        lines += [f"- pairs: {report.pairs.get('train', 0)} train, {report.pairs.get('eval', 0)} eval "
                  "(the eval split holds prompts training never sees)",
                  f"- acceptance rate: {report.acceptance_rate:.1%} of {report.candidates} violating responses became a rejected example",
                  f"- dropped: {json.dumps(report.dropped)}",
                  *([f"- pairwise check: swap consistency {report.swap_consistency:.1%} (preferences kept only "
                     "when both orders agree)"] if report.swap_consistency is not None else []),
                  f"- length balance: {json.dumps(report.length)}", "",
                  "Columns: `prompt`, `chosen`, `rejected` (TRL conversational format), `id`, `prompt_id`, "
                  "`chosen_score`, `rejected_score`, `margin`, `rejected_target` (the trait or constraint the "
                  "rejected response was written to break), `rejected_failed` (the targets the judge failed it "
                  "on), `chosen_kind`."]
    else:
        w = report.kto_weights
        lines += [f"- rows: train {json.dumps(report.kto.get('train'))}, eval {json.dumps(report.kto.get('eval'))}",
                  f"- KTOConfig weights: desirable_weight={w.get('desirable_weight')}, "
                  f"undesirable_weight={w.get('undesirable_weight')} (weighted ratio {w.get('weighted_ratio')}; "
                  "TRL recommends 1 to 4/3)", "",
                  "Columns: `prompt`, `completion`, `label` (TRL unpaired preference format), `id`, `score`, `kind`."]
    lines += ["", "Judge agreement with the intended kind (conforming >= 5, violating < 5): "
              + (f"{report.judge_agreement:.1%}" if report.judge_agreement is not None else "n/a")
              + f"; unjudged responses: {report.unjudged}.", "", "Overall scores of conforming responses:", "",
              _bar(report.histograms.get("conforming", [0] * 10)), "", "Overall scores of violating responses:", "",
              _bar(report.histograms.get("violating", [0] * 10)), ""]
    return front + "\n".join(lines)
