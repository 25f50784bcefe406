"""Datasets: judged responses -> DPO/IPO preference pairs and KTO thumbs-up/down rows. Stage 4 of `persona generate`.

Pairs (for DPO and IPO), per prompt: chosen = a conforming response the judge scored in character
(overall >= 5); rejected = a response scored at least `margin` lower (usually a violating one, so each
pair teaches one named target). Ties never pass the margin; near-duplicate pairs (chosen and rejected
almost the same text) and repeated pairs are dropped. Length balance is reported because length is
the best-known confound of both judges and DPO.

KTO rows: every judged response, label = overall >= `kto_threshold`. TRL recommends that
desirable_weight * n_desirable / (undesirable_weight * n_undesirable) lies between 1 and 4/3; the
weights written to the card put it there.

Output, in TRL's conversational formats, loadable with `datasets.load_dataset(folder)`:

    runs/brand/datasets/dpo/{train,eval}.jsonl + README.md    {"prompt": [{"role": "user", ...}],
                                                                "chosen": [{"role": "assistant", ...}],
                                                                "rejected": [...], "margin": 6.5, ...}
    runs/brand/datasets/kto/{train,eval}.jsonl + README.md    {"prompt": [...], "completion": [...], "label": true, ...}
    runs/brand/datasets/build.json                            the numbers on the cards, for tools
"""

from __future__ import annotations

import difflib
import hashlib
import json
from collections import Counter
from dataclasses import asdict, dataclass, field

from persona.judges import IN_CHARACTER, PairwiseJudge
from persona.prompts import normalize
from persona.responses import ResponseRecord
from persona.run import DatasetFolder, RunFolder
from persona.spec import Spec
from persona.store import write_atomic


@dataclass(frozen=True)
class BuildSettings:
    margin: float = 2.0  # chosen score - rejected score, at least
    chosen_min: float = IN_CHARACTER  # a chosen response must be judged in character
    kto_threshold: float = IN_CHARACTER
    near_duplicate: float = 0.9  # text similarity (0-1) above which a pair teaches nothing
    rejected_from: str = "violating"  # or "any": conforming attempts the judge scored out of character too

    def __post_init__(self):
        if self.rejected_from not in ("violating", "any"):
            from persona.errors import PersonaError

            raise PersonaError(f"--rejected-from '{self.rejected_from}' is not 'violating' or 'any'",
                               hint="'any' also pairs conforming attempts the judge scored out of character")


@dataclass
class BuildReport:
    pairs: dict = field(default_factory=dict)  # split -> count
    kto: dict = field(default_factory=dict)  # split -> {"desirable": n, "undesirable": n}
    kto_weights: dict = field(default_factory=dict)  # desirable_weight, undesirable_weight, ratio
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


def _conversation(role: str, text: str) -> list[dict]:
    return [{"role": role, "content": text}]


def build_datasets(spec: Spec, responses: list[ResponseRecord], judgements: dict[str, dict], run: RunFolder,
                   settings: BuildSettings = BuildSettings(), pairwise: PairwiseJudge | None = None) -> BuildReport:
    """`pairwise`, when given, is a judge that compares two responses (the llm judge): a pair is kept only
    when it prefers the chosen response in both orders."""
    report = BuildReport(settings=asdict(settings), spec_hash=spec.spec_hash)
    judged = {}
    for r in responses:
        j = judgements.get(r.id)
        if j is None or j.get("status") != "ok" or j.get("overall") is None:
            report.unjudged += 1
            continue
        judged[r.id] = (r, float(j["overall"]))
        report.judge = j.get("judge", report.judge)
    report.generators = sorted({f"{r.backend}:{r.model}" for r in responses})

    by_prompt: dict[str, list[tuple[ResponseRecord, float]]] = {}
    for r, score in judged.values():
        by_prompt.setdefault(r.prompt_id, []).append((r, score))
    pairs: dict[str, list[dict]] = {"train": [], "eval": []}
    dropped: Counter = Counter()
    seen_pairs: set[tuple[str, str]] = set()
    report.candidates = sum(r.kind == "violating" for r in responses)
    if settings.rejected_from == "any":
        report.candidates += sum(r.kind == "conforming" and s < settings.chosen_min for r, s in judged.values())
    for prompt_id, group in by_prompt.items():
        chosen = sorted([(r, s) for r, s in group if r.kind == "conforming" and s >= settings.chosen_min],
                        key=lambda x: -x[1])
        rejected = sorted([(r, s) for r, s in group if r.kind == "violating" or (
            settings.rejected_from == "any" and r.kind == "conforming" and s < settings.chosen_min)],
            key=lambda x: x[1])
        if not chosen:
            dropped["no in-character conforming response"] += len(rejected)
            continue
        for i, (bad, bad_score) in enumerate(rejected):
            good, good_score = chosen[i % len(chosen)]  # spread the rejected ones over the chosen ones
            if good_score - bad_score < settings.margin:
                dropped["margin too small" if good_score != bad_score else "tie"] += 1
                continue
            a, b = normalize(good.text), normalize(bad.text)
            if difflib.SequenceMatcher(None, a, b).ratio() >= settings.near_duplicate:
                dropped["near-duplicate texts"] += 1
                continue
            if (a, b) in seen_pairs:
                dropped["repeated pair"] += 1
                continue
            seen_pairs.add((a, b))
            pairs[good.split].append({
                "prompt": _conversation("user", good.prompt), "chosen": _conversation("assistant", good.text),
                "rejected": _conversation("assistant", bad.text), "id": f"{good.id}>{bad.id}",
                "prompt_id": prompt_id, "chosen_score": good_score, "rejected_score": bad_score,
                "margin": round(good_score - bad_score, 3), "rejected_target": bad.target})
    if pairwise is not None and (pairs["train"] or pairs["eval"]):
        every = pairs["train"] + pairs["eval"]
        verdicts = pairwise.prefer(spec, [(p["id"], p["prompt"][0]["content"], p["chosen"][0]["content"],
                                           p["rejected"][0]["content"]) for p in every])
        report.swap_consistency = pairwise.swap_consistency
        for split in pairs:
            kept = [p for p in pairs[split] if verdicts.get(p["id"]) == "a"]
            dropped["pairwise judge did not prefer chosen in both orders"] += len(pairs[split]) - len(kept)
            pairs[split] = kept
    report.dropped = dict(dropped)
    report.pairs = {split: len(rows) for split, rows in pairs.items()}
    accepted = sum(report.pairs.values())
    report.acceptance_rate = accepted / report.candidates if report.candidates else 0.0
    all_pairs = pairs["train"] + pairs["eval"]
    if all_pairs:
        chosen_len = [len(p["chosen"][0]["content"]) for p in all_pairs]
        rejected_len = [len(p["rejected"][0]["content"]) for p in all_pairs]
        report.length = {"chosen_mean_chars": round(sum(chosen_len) / len(all_pairs), 1),
                         "rejected_mean_chars": round(sum(rejected_len) / len(all_pairs), 1),
                         "chosen_longer_share": round(sum(c > r for c, r in zip(chosen_len, rejected_len)) / len(all_pairs), 3)}

    kto: dict[str, list[dict]] = {"train": [], "eval": []}
    for r, score in judged.values():
        kto[r.split].append({"prompt": _conversation("user", r.prompt), "completion": _conversation("assistant", r.text),
                             "label": score >= settings.kto_threshold, "id": r.id, "score": score, "kind": r.kind})
    report.kto = {split: {"desirable": sum(x["label"] for x in rows), "undesirable": sum(not x["label"] for x in rows)}
                  for split, rows in kto.items()}
    d, u = report.kto["train"]["desirable"], report.kto["train"]["undesirable"]
    dw, uw = kto_weights(d, u)
    report.kto_weights = {"desirable_weight": dw, "undesirable_weight": uw,
                          "weighted_ratio": round(dw * d / (uw * u), 4) if u and d else None}

    agree = [(r.kind == "conforming") == (s >= IN_CHARACTER) for r, s in judged.values()]
    report.judge_agreement = sum(agree) / len(agree) if agree else None
    for kind in ("conforming", "violating"):
        bins = [0] * 10
        for r, s in judged.values():
            if r.kind == kind:
                bins[min(9, int(s))] += 1
        report.histograms[kind] = bins

    report.paths = {"dpo": str(run.dataset("dpo")), "kto": str(run.dataset("kto"))}
    _write_dataset(run.dataset("dpo"), pairs, spec, report, "dpo")
    _write_dataset(run.dataset("kto"), kto, spec, report, "kto")
    write_atomic(run.build_file, json.dumps(asdict(report), indent=2) + "\n")
    return report


def _write_dataset(folder: DatasetFolder, splits: dict[str, list[dict]], spec: Spec, report: BuildReport, kind: str) -> None:
    texts = {split: "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows) for split, rows in splits.items()}
    for split, text in texts.items():
        write_atomic(folder.split(split), text)
    digest = hashlib.sha256("".join(texts[s] for s in sorted(texts)).encode("utf-8")).hexdigest()[:12]
    write_atomic(folder.card, _card(spec, report, kind, [s for s, rows in splits.items() if rows], digest))


def _bar(bins: list[int]) -> str:
    top = max(bins) or 1
    return "\n".join(f"    {i:>2}-{i + 1:<2} {'#' * round(20 * n / top):<20} {n}" for i, n in enumerate(bins))


def _card(spec: Spec, report: BuildReport, kind: str, splits: list[str], digest: str) -> str:
    """A dataset card: front matter that `datasets.load_dataset(folder)` reads, then the numbers. It lists
    only the splits that have rows (an empty split is an error there), and its config is named after a
    hash of the rows: datasets caches a local folder by its name and file patterns only, not the files'
    content, so without it load_dataset(folder) after a rebuild would return the previous build's rows."""
    files = "".join(f"  - split: {s}\n    path: {s}.jsonl\n" for s in (splits or ["train"]))
    front = (f"---\nconfigs:\n- config_name: rows-{digest}\n  data_files:\n{files}"
             f"tags: [persona, {'dpo' if kind == 'dpo' else 'kto'}, trl]\n---\n")
    me = spec.identity
    lines = [f"# {spec.name}: {'preference pairs (DPO / IPO)' if kind == 'dpo' else 'KTO thumbs-up/down rows'}", "",
             f"Made by persona for the identity **{me.name if me else spec.name}**"
             + (f" ({me.maker})" if me and me.maker else "") + f", spec `{spec.path}` (hash `{spec.spec_hash[:16]}`).", "",
             f"- generator models: {', '.join(report.generators)}",
             f"- judge: {report.judge}",
             f"- settings: {json.dumps(report.settings)}", ""]
    if kind == "dpo":
        lines += [f"- pairs: {report.pairs.get('train', 0)} train, {report.pairs.get('eval', 0)} eval "
                  "(the eval split holds prompts training never sees)",
                  f"- acceptance rate: {report.acceptance_rate:.1%} of {report.candidates} violating responses became a rejected example",
                  f"- dropped: {json.dumps(report.dropped)}",
                  *([f"- pairwise check: swap consistency {report.swap_consistency:.1%} (preferences kept only "
                     "when both orders agree)"] if report.swap_consistency is not None else []),
                  f"- length balance: {json.dumps(report.length)}", "",
                  "Columns: `prompt`, `chosen`, `rejected` (TRL conversational format), `id`, `prompt_id`, "
                  "`chosen_score`, `rejected_score`, `margin`, `rejected_target` (the trait or constraint the "
                  "rejected response breaks)."]
    else:
        w = report.kto_weights
        lines += [f"- rows: train {json.dumps(report.kto.get('train'))}, eval {json.dumps(report.kto.get('eval'))}",
                  f"- KTOConfig weights: desirable_weight={w.get('desirable_weight')}, "
                  f"undesirable_weight={w.get('undesirable_weight')} (weighted ratio {w.get('weighted_ratio')}; "
                  "TRL recommends 1 to 4/3)", "",
                  "Columns: `prompt`, `completion`, `label` (TRL unpaired preference format), `id`, `score`, `kind`."]
    lines += ["", f"Judge agreement with the intended kind (conforming >= 5, violating < 5): "
              + (f"{report.judge_agreement:.1%}" if report.judge_agreement is not None else "n/a")
              + f"; unjudged responses: {report.unjudged}.", "", "Overall scores of conforming responses:", "",
              _bar(report.histograms.get("conforming", [0] * 10)), "", "Overall scores of violating responses:", "",
              _bar(report.histograms.get("violating", [0] * 10)), ""]
    return front + "\n".join(lines)
