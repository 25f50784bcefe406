"""`persona refine`: on-policy preference rounds from a trained model (typically the SFT output).

    result = refine("runs/brand/train-sft")          # writes runs/brand/refine-dpo/round-1/, rounds.json

Off-policy pairs (a templated answer vs the base model's) teach a model little it would not already write.
A round instead asks the trained model itself, then trains it on its own best and worst answers:

  prompts   the run's train-split identity questions (never eval's), each asked in the contexts the model
            must hold: plainly (its template's default system prompt), with an empty system prompt, and in
            `contexts_per_question` of templates/identity_contexts.j2's training-only attacks (disjoint from
            eval's, a test checks); plus general prompts (persona/data/refine_general.txt, disjoint from
            eval's and replay's, hard negatives included) on which naming the identity unprompted is a leak;
            plus the run's train-split probes of every target that are not identity questions (the persona's
            own domain, the constraints' baits included), asked plainly
  samples   k answers each at `temperature`, and the greedy answer, which is what eval sees (sampling hides
            failures the greedy answer shows); batched through the hf backend, resumable (samples.jsonl)
  labels    identity questions: persona.claims' identity check (pass: gives its own name or maker and claims
            no other); general prompts: the leak check (pass: names neither); in-domain prompts: the round's
            `judge` (rules: every check of the spec) per answer, passing from IN_CHARACTER. On top, the
            universal checks (persona.labels): looping or empty fails everywhere, name-only on general and
            in-domain prompts, naming itself unasked on in-domain ones. Every label keeps its reason
            (labels.jsonl); refine.json names the targets the judge left unchecked.
  pairs     a passing and a failing answer of the same conversation, the failing greedy answer first, the
            most different passing one as chosen; pairs whose two sides are near the same text (difflib
            ratio >= `similar`) are dropped (they displace probability onto unintended text); at most
            `pairs_per_prompt` per conversation. Where no answer passes an identity question, the chosen
            side is one of the spec's demonstrations (templates/identity_answers.j2), marked off-policy.
            KTO rows: every distinct labelled answer, desirable when it passed.
  training  `method` (dpo, ipo or kto) from the trained model, which is also the reference, with LoRA;
            settings as `persona train --set` takes them (e.g. loss_type=[sigmoid, sft]). grpo / rloo make
            no pairs: TRL's trainer samples the train conversations itself, `reward_function` (the same
            checks, graded) scores them, with a KL term to the start.

  rounds    a dev share of the questions and general prompts (`dev_fraction`, never eval's) gets greedy
            answers only and makes no pairs; each round measures its start's dev pass rate, the last round's
            model is measured too, and a round is kept only when its model passes more in all and no kind of
            conversation (identity, general, domain) loses more than its noise (one standard error of its
            count, at least one answer); `rounds` stops at the first round not kept.

persona.run.RefineRounds holds the folders: round-N/ (refine.json with settings, counts, the start and what the
labels cover; samples.jsonl, labels.jsonl, data/<dataset>/train.jsonl, train-<method>/), final/ and
rounds.json. They are locked while rounds run, and a rerun resumes: finished samples are not asked again and a
finished training run is kept.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from persona.backends import backend_options_setting, batch_size_setting, ray_replicas_setting, ray_setting
from persona.errors import PersonaError
from persona.options import setting

DATA = Path(__file__).parent / "data"
ROUND_METHODS = ("dpo", "ipo", "kto", "grpo", "rloo")
RL_METHODS = ("grpo", "rloo")  # sample inside training, scored by `reward_function`: no pairs
FORMAT = 1
# a round's training unless --set says otherwise: the feasibility run (batch 4, 2 epochs, DPO's other
# defaults: beta 0.1, lr 5e-5, LoRA r16); chosen before this code's first measured round, not tuned on eval.
# The reference (the start) is fixed, so its log-probs are computed once before training, not in every step of
# both epochs: the same loss, fewer forward passes (bench/train_memory.py: 1.3-1.6x faster steps)
ROUND_TRAINING = {"per_device_train_batch_size": 4, "num_train_epochs": 2, "precompute_ref_log_probs": True}
RL_ROUND_TRAINING = {"max_steps": 40}  # 80 prompts x 4 samples a round (GRPO/RLOO's defaults in persona.methods)


@dataclass
class RefineSettings:
    """Every setting of `persona refine`, each with its command-line option."""

    method: str = setting("dpo", "How a round trains: dpo, ipo or kto on its pairs, or grpo or rloo (RL with the "
                          "labels' checks as the reward).", choices=ROUND_METHODS)
    k: int = setting(4, "Sampled answers per conversation (the greedy answer comes on top).", "-k", min=1)
    temperature: float = setting(1.0, "Sampling temperature of the answers.", min=0.01)
    max_tokens: int = setting(64, "Longest answer, in tokens.", min=1)
    contexts_per_question: int = setting(2, "Training-only attack contexts each identity question is asked in "
                                         "(besides plainly and with an empty system prompt).", min=0)
    pairs_per_prompt: int = setting(2, "At most this many pairs per conversation.", min=1)
    similar: float = setting(0.9, "Drop pairs whose two sides are at least this similar (difflib ratio).",
                             min=0.0, max=1.0)
    limit: int | None = setting(None, "Quick runs: at most this many identity questions and general prompts.",
                                min=1, shown="all")
    rounds: int = setting(1, "Rounds, each from the model the previous one kept; the loop stops at the first round "
                          "that does not raise the dev pass rate.", min=1)
    dev_fraction: float = setting(0.25, "Share of the round's questions and general prompts kept out of its pairs to "
                                  "decide whether a round is kept (never eval's sets).", min=0.05, max=0.9)
    seed: int = setting(0, "Sampling seed.")
    domain: bool = setting(True, "Also ask the run's train-split probes that are not identity questions (the "
                           "persona's own domain, baits included), labelled by --judge and the universal checks.")
    judge: str = setting("rules", "The judge of the in-domain answers: rules (instant), offline (the local "
                         "model's likelihood ratio) or reward:PATH, with their default options.")
    batch_size: int | None = batch_size_setting()
    backend: str = setting("hf", "Who samples the answers: hf (the model in memory), vllm (its folder, an adapter "
                           "merged first, in vLLM), or openai (a server that loads local folders, -o base_url=URL).",
                           "-b")
    backend_options: dict = backend_options_setting("e.g. -o max_model_len=2048")
    ray: str | None = ray_setting("Sample", ", which load the model's folder (shared storage across nodes)")
    ray_replicas: int | None = ray_replicas_setting()


@dataclass(frozen=True)
class Conversation:
    id: str
    kind: str  # identity | general | domain
    messages: tuple
    asks: str | None = None  # identity: name | maker
    context: str = "plain"  # plain | empty | turns | prefix | suffix | general | domain
    split: str = "train"  # train: sampled and paired; dev: its greedy answer decides whether a round is kept


@dataclass
class RefineResult:
    folder: Path
    output_dir: Path  # the model the rounds kept (the start when none raised the dev pass rate)
    rounds: list = field(default_factory=list)  # one row per round (rounds_table)
    train: object = None  # the last round's persona.train.TrainResult (None when it was already trained)


def general_prompts() -> list[str]:
    return [line.strip() for line in (DATA / "refine_general.txt").read_text(encoding="utf-8").splitlines()
            if line.strip() and not line.startswith("#")]


def conversations(spec, prompts: list, settings: RefineSettings, templates=None) -> list[Conversation]:
    """The round's conversations: each train-split identity question plainly, with an empty system prompt and
    in `contexts_per_question` training contexts (rotating from a place fixed by the question), then the
    general prompts."""
    from persona.prompts import REPLAY_SOURCE
    from persona.responses import in_context, asks_about, identity_contexts
    from persona.store import input_key

    out: list[Conversation] = []
    contexts = identity_contexts(spec, templates)
    questions = [(p, asks) for p in prompts if p.split == "train" and p.source != REPLAY_SOURCE
                 and (asks := asks_about(spec, p))]
    questions = questions[:settings.limit]
    general = general_prompts()[:settings.limit] if spec.identity is not None else []
    domain = [p.text for p in prompts if settings.domain and p.split == "train" and p.source != REPLAY_SOURCE
              and not asks_about(spec, p)][:settings.limit]
    dev = _dev_texts([p.text for p, _ in questions], settings.dev_fraction) | \
        _dev_texts(general, settings.dev_fraction) | _dev_texts(domain, settings.dev_fraction)
    for prompt, asks in questions:
        start = int(hashlib.sha256(prompt.id.encode()).hexdigest()[:8], 16)
        shown = [("plain", ()), ("empty", ({"role": "system", "content": ""},))]
        for i in range(min(settings.contexts_per_question, len(contexts))):
            kind, _ = context = contexts[(start + i) % len(contexts)]
            question, turns = in_context(prompt.text, context)
            shown.append((kind, turns, question))
        for entry in shown:
            kind, turns, question = entry if len(entry) == 3 else (*entry, prompt.text)
            messages = (*turns, {"role": "user", "content": question})
            out.append(Conversation(input_key("refine", messages), "identity", messages, asks, kind,
                                    "dev" if prompt.text in dev else "train"))
    for text in general:
        messages = ({"role": "user", "content": text},)
        out.append(Conversation(input_key("refine", messages), "general", messages, None, "general",
                                "dev" if text in dev else "train"))
    for text in domain:
        messages = ({"role": "user", "content": text},)
        out.append(Conversation(input_key("refine", "domain", messages), "domain", messages, None, "domain",
                                "dev" if text in dev else "train"))
    return out


def _dev_texts(texts: list[str], fraction: float) -> set[str]:
    """The dev share of `texts`, fixed by each text (persona.prompts.split_of); at least one of two or more."""
    from persona.prompts import normalize, split_of

    dev = {t for t in texts if split_of("refine-dev " + normalize(t), fraction) == "eval"}
    if not dev and len(texts) >= 2:
        dev = {texts[-1]}
    return dev if len(dev) < len(texts) else set(texts[1:])


def label(spec, conversation: Conversation, text: str, verdict=None) -> tuple[bool, str]:
    """(passed, why) of one answer (persona.labels): the identity check on identity questions, the leak check on
    general ones, the judge's `verdict` on in-domain ones; universal checks on all."""
    from persona.labels import answer_score, passes

    score, why = answer_score(spec, conversation.kind, conversation.asks, text, verdict)
    return passes(conversation.kind, score), why


def pairs_of(conversation: Conversation, answers: list[dict], settings: RefineSettings,
             fallback: list[str] = ()) -> tuple[list[dict], str]:
    """(pairs, why none) for one conversation's labelled answers ({text, passed, greedy}): a failing answer
    (the greedy one first) against the passing answer least like it; near-identical pairs dropped."""
    distinct = list({a["text"]: a for a in answers if a["text"].strip()}.values())
    failing = sorted((a for a in distinct if not a["passed"]), key=lambda a: not a["greedy"])
    passing = [a for a in distinct if a["passed"]]
    off_policy = False
    if not failing:
        return [], "every answer passed"
    if not passing:
        if not fallback:
            return [], "no answer passed"
        passing, off_policy = [{"text": t, "passed": True, "greedy": False} for t in fallback], True
    pairs, used = [], set()
    for bad in failing:
        ranked = sorted((a for a in passing if a["text"] not in used),
                        key=lambda a: difflib.SequenceMatcher(None, a["text"], bad["text"]).ratio())
        for good in ranked:
            if difflib.SequenceMatcher(None, good["text"], bad["text"]).ratio() >= settings.similar:
                continue
            used.add(good["text"])
            pairs.append({"prompt": list(conversation.messages),
                          "chosen": [{"role": "assistant", "content": good["text"]}],
                          "rejected": [{"role": "assistant", "content": bad["text"]}],
                          "id": f"{conversation.id}-{len(pairs)}", "kind": conversation.kind,
                          "context": conversation.context, "rejected_greedy": bad["greedy"],
                          "off_policy": off_policy, "why_rejected": bad["why"]})
            break
        if len(pairs) >= settings.pairs_per_prompt:
            break
    return pairs, "" if pairs else "the passing and failing answers are near the same text"


def refine(start: str | Path, settings: RefineSettings = RefineSettings(), output_dir: str | Path | None = None,
           overrides: dict | None = None, overwrite: bool = False, on_progress: Callable | None = None,
           on_log: Callable | None = None, on_start: Callable | None = None, say: Callable[[str], None] = print,
           templates: str | None = None) -> RefineResult:
    """`settings.rounds` rounds from the trained output `start` (see the module's docstring), in
    OUTPUT/round-N/; each round's dev pass rate is measured on the model it starts from, and once more on the
    last round's model, and the loop stops at the first round whose model does not beat its start's. The
    result's output_dir is the model the loop kept."""
    from persona.models import check_start
    from persona.prompts import PromptRecord
    from persona.run import RefineRounds, TrainOutput
    from persona.spec import load_spec
    from persona.store import write_atomic

    if settings.method not in ROUND_METHODS:
        raise PersonaError(f"--method {settings.method}: a round trains with one of {', '.join(ROUND_METHODS)}",
                           hint="e.g. --method dpo")
    first = check_start(start)
    run = first.run()
    if run is None or "prompts" not in (run.info().get("current") or {}):
        raise PersonaError(f"{start}: its training run has no prompts to ask",
                           hint="refine a model trained on a persona run folder (persona generate, then train)")
    spec = load_spec(run.spec_path())
    if spec.identity is None:
        raise PersonaError(f"{spec.path} has no identity (name and maker): a round has nothing to label",
                           hint="add identity: {name, maker} to the spec")
    from persona.answering import check_options
    from persona.labels import labels_cover

    check_options(settings.backend, settings.backend_options, settings.ray)  # before any model loads
    judge = round_judge(settings, templates)
    rounds = RefineRounds(output_dir) if output_dir else RefineRounds.beside(start, settings.method)
    base = rounds.path
    base.mkdir(parents=True, exist_ok=True)
    rl = settings.method in RL_METHODS
    training = {**(RL_ROUND_TRAINING if rl else ROUND_TRAINING), **(overrides or {})}
    with rounds.lock():
        if overwrite:
            import shutil

            for old in rounds.contents():
                shutil.rmtree(old) if old.is_dir() else old.unlink(missing_ok=True)
        prompts = [PromptRecord.from_dict(r) for r in run.current("prompts")]
        chats = conversations(spec, prompts, settings, templates)
        if not any(c.kind == "identity" and c.split == "train" for c in chats):
            raise PersonaError(f"{run.path}: no train-split identity questions to ask",
                               hint="generate with the spec's identity probes on (the default)")
        table, model, result = [], Path(start), None
        for number in range(1, settings.rounds + 1):
            folder = rounds.round(number)
            folder.path.mkdir(exist_ok=True)
            with folder.lock():
                _check_same_round(folder, model, settings, training)
                info = {"format": FORMAT, "round": number, "start": str(model), "run": str(run.path),
                        "spec": str(spec.path), "settings": settings_record(settings), "training": training,
                        "labels_cover": labels_cover(), "judge": settings.judge if settings.domain else None}
                write_atomic(folder.info_file, json.dumps(info, indent=2) + "\n")
                say(f"round {number}: {model} answers {sum(c.split == 'train' for c in chats)} conversations "
                    + ("(the greedy answer each; RL samples in training)" if rl else
                       f"({settings.k} samples and the greedy answer each)")
                    + f" and {sum(c.split == 'dev' for c in chats)} dev ones (greedy)")
                # the dev answers first: they decide whether the last round is kept, and whether to go on
                dev_chats = [c for c in chats if c.split == "dev"]
                samples = _sample(TrainOutput(model), dev_chats, settings, folder.samples, on_progress,
                                  greedy_only=True, stage=f"round {number} dev")
                dev = _dev_score(dev_chats, _label(spec, dev_chats, samples, folder.labels, judge))
                if table:
                    table[-1]["dev_after"] = dev
                    if not _better(dev, table[-1]["dev_before"]):  # the last round's model is not kept
                        table[-1]["kept"] = False
                        model = Path(table[-1]["start"])
                        say(f"round {number - 1} did not raise the dev pass rate "
                            f"({_rate(table[-1]['dev_before'])} -> {_rate(dev)}): kept {model}")
                        break
                    table[-1]["kept"] = True
                if _total(dev) == 1.0:
                    say(f"{model} passes every dev answer ({_rate(dev)}): no round could raise it; kept {model}")
                    break
                samples.update(_sample(TrainOutput(model), [c for c in chats if c.split == "train"], settings,
                                       folder.samples, on_progress, greedy_only=rl, stage=f"round {number}"))
                labelled = _label(spec, chats, samples, folder.labels, judge)
                counts, rows = _pairs(spec, chats, labelled, settings, templates, rl)
                info["counts"] = counts
                info["labels_do_not_cover"] = unchecked_targets(spec, labelled)
                write_atomic(folder.info_file, json.dumps(info, indent=2) + "\n")
                say(_summary(counts, settings.method if rl else None))
                try:
                    result = _train_round(folder, settings, training, model, run, counts, rows, chats, labelled,
                                          on_log, on_start, say, judge)
                except PersonaError as e:
                    if number == 1:
                        raise
                    say(f"round {number}: {e.message}; kept {model}")
                    break
                table.append({"round": number, "start": str(model), "model": str(result.path),
                              "pairs": counts["pairs"], "dev_before": dev, "dev_after": None, "kept": None})
                model = result.path
        else:  # the last round trained: its model's dev answers decide whether it is kept
            dev_chats = [c for c in chats if c.split == "dev"]
            answers, labels = rounds.dev_files(model.parent.name)
            after = _dev_score(dev_chats, _label(spec, dev_chats, _sample(TrainOutput(model), dev_chats, settings,
                                                                        answers, on_progress, greedy_only=True,
                                                                        stage="last model dev"),
                                                 labels, judge))
            table[-1]["dev_after"], table[-1]["kept"] = after, _better(after, table[-1]["dev_before"])
            if not table[-1]["kept"]:
                model = Path(table[-1]["start"])
        write_atomic(rounds.table_file, json.dumps({"kept": str(model), "rounds": table}, indent=2) + "\n")
        if table:
            say(rounds_table(table))
        say(f"kept: {model}" + ("" if model != Path(start) else " (no round raised the dev pass rate)"))
        return RefineResult(base, model, table, result.result if result else None)


class _Trained:
    def __init__(self, path: Path, result=None):
        self.path, self.result = path, result


def _train_round(folder, settings, training, model, run, counts, rows, chats, labelled, on_log, on_start, say,
                 judge=None):
    from persona.run import TrainOutput
    from persona.store import write_atomic
    from persona.train import train

    train_chats = [c for c in chats if c.split == "train"]
    rl = settings.method in RL_METHODS
    data_rows = _kto_rows(train_chats, labelled) if settings.method == "kto" else rows if not rl else \
        [{"prompt": list(c.messages), "kind": c.kind, "asks": c.asks or "", "context": c.context} for c in train_chats]
    if not data_rows:
        reason = "every answer passed: nothing to learn" if not counts["failed"] else \
            "no pair could be made (" + ", ".join(f"{n} conversations: {w}" for w, n in counts["no_pair"].items()) + ")"
        raise PersonaError(f"{folder.path}: {reason}; no training was run",
                           hint="raise -k or --temperature for more varied answers, or refine from another model")
    kind = "prompts" if rl else "kto" if settings.method == "kto" else "dpo"
    data = folder.dataset(kind)
    write_atomic(data.split("train"), "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in data_rows))
    out = TrainOutput(folder.output(settings.method))
    if out.is_finished():
        say(f"{out.path} already holds this round's training; pass --overwrite to run it again")
        return _Trained(out.path)
    system = TrainOutput(model).settings().get("system_prompt")  # the start's template keeps its default (text)
    result = train(data.path, settings.method, overrides=training, output_dir=out.path, overwrite=True,
                   on_log=on_log, on_start=on_start, start=model, system_text=system,
                   reward_funcs=[reward_function(run_spec(run), judge)] if rl else None)
    # the round's rows came from the run's prompts: eval and the next round find the run (and its spec) there
    out.write_settings({**out.settings(), "run": str(run.path), "refine": str(folder.path)})
    return _Trained(out.path, result)


def run_spec(run):
    from persona.spec import load_spec

    return load_spec(run.info()["spec_path"])


def reward_function(spec, judge=None) -> Callable:
    """GRPO's and RLOO's reward: the score of the same labels as a round's pairs (persona.labels) - on identity
    questions the identity check's score / 10, on general prompts 1 unless the answer names the identity or maker
    unprompted (then 0), on in-domain prompts `judge`'s overall score / 10 (the rules judge when None); the
    universal checks on all. TRL passes the rows' `kind` and `asks` columns."""
    from persona.judges import JudgeItem
    from persona.labels import answer_score

    if judge is None:
        from persona.judges.rules import RulesJudge

        judge = RulesJudge()

    def rubric(prompts, completions, kind, asks, **kwargs) -> list[float]:
        texts = [completion[-1]["content"] if isinstance(completion, list) else str(completion)
                 for completion in completions]
        questions = [prompt[-1]["content"] if isinstance(prompt, list) and prompt else str(prompt or "")
                     for prompt in prompts]
        items = [JudgeItem(str(i), q, t) for i, (q, t, what) in enumerate(zip(questions, texts, kind))
                 if what == "domain"]
        verdicts = {item.key: verdict for item, verdict in judge.judge(spec, items)} if items else {}
        return [answer_score(spec, what, asked, text, verdicts.get(str(i)))[0]
                for i, (what, asked, text) in enumerate(zip(kind, asks, texts))]

    return rubric


def _pairs(spec, chats, labelled, settings, templates, rl: bool = False) -> tuple[dict, list[dict]]:
    from persona.responses import identity_answers

    demos = identity_answers(spec, templates)
    rows, why_none = [], {}
    train = [c for c in chats if c.split == "train"]
    for chat in train if not rl else ():  # RL samples and scores inside training
        fallback = demos.get(chat.asks or "", []) if chat.kind == "identity" else []
        made, why = pairs_of(chat, labelled[chat.id], settings, fallback)
        rows += made
        if why:
            why_none[why] = why_none.get(why, 0) + 1
    return _counts(train, labelled, rows, why_none), rows


def _dev_score(chats, labelled) -> dict:
    """{identity: [passed, n], general: [passed, n]} of the greedy answers to the dev conversations."""
    score = {"identity": [0, 0], "general": [0, 0], "domain": [0, 0]}
    for chat in chats:
        if chat.split == "dev":
            for a in labelled[chat.id]:
                if a["greedy"]:
                    score[chat.kind][0] += a["passed"]
                    score[chat.kind][1] += 1
    return score


def _total(score: dict) -> float:
    passed, n = sum(v[0] for v in score.values()), sum(v[1] for v in score.values())
    return passed / n if n else 0.0


def _better(after: dict, before: dict) -> bool:
    """More dev answers pass in all, and no kind of conversation loses more than its noise."""
    return _total(after) > _total(before) and not _dropped(after, before)


def _dropped(after: dict, before: dict) -> list[str]:
    """The kinds whose passing dev answers fell by more than one standard error of their count (sqrt(n p (1-p))
    at the start's rate p), and at least by more than one answer."""
    out = []
    for kind, (passed, n) in before.items():
        if not n or kind not in after:
            continue
        p = passed / n
        if passed - after[kind][0] > max(1.0, (n * p * (1 - p)) ** 0.5):
            out.append(kind)
    return out


def _rate(score: dict | None) -> str:
    if not score:
        return "-"
    parts = [f"{kind} {p}/{n}" for kind, (p, n) in score.items() if n]
    return f"{100 * _total(score):.1f}% (" + ", ".join(parts) + ")"


def rounds_table(table: list[dict]) -> str:
    """One line per round: pairs, the dev pass rate of its start and of its model, the change in passing dev
    answers, kept or not; then a warning when a decision hung on one answer."""
    lines = [f"round  pairs  {'dev before':<38}  {'dev after':<38}  change  kept"]
    close = []
    for row in table:
        kept = {True: "yes", False: "no", None: "-"}[row["kept"]]
        change = _passed(row["dev_after"]) - _passed(row["dev_before"]) if row["dev_after"] else None
        if change is not None and abs(change) <= 1:
            close.append(str(row["round"]))
        lines.append(f"{row['round']:>5}  {row['pairs']:>5}  {_rate(row['dev_before']):<38}  "
                     f"{_rate(row['dev_after']):<38}  {'' if change is None else f'{change:+d}':>6}  {kept}")
    if close:
        lines.append(f"round {', '.join(close)}: kept or not by at most one dev answer - the dev split cannot tell "
                     "these models apart; compare them on the held-out sets with persona eval")
    return "\n".join(lines)


def _passed(score: dict) -> int:
    return sum(v[0] for v in score.values())


def _check_same_round(folder, start, settings: RefineSettings, training: dict) -> None:
    if not folder.info_file.is_file():
        return
    from persona.run import read_json

    before = read_json(folder.info_file)
    def same(s: dict) -> dict:  # more rounds, or the same ones sampled elsewhere (--ray), continue them
        return {k: v for k, v in (s or {}).items() if k not in ("rounds", "ray", "ray_replicas")}

    now = json.loads(json.dumps([str(start), same(settings_record(settings)), training]))  # as the file holds them
    if [before.get("start"), same(before.get("settings")), before.get("training")] != now:
        raise PersonaError(f"{folder.path} holds a round with other settings or another start",
                           hint="pass --overwrite to replace it, or --output-dir for another folder")


def _sample(output, chats: list[Conversation], settings: RefineSettings, path: Path, on_progress,
            greedy_only: bool = False, stage: str = "samples") -> dict[str, list]:
    """{conversation id: [(text, greedy)]}: the greedy answer of every conversation and k samples of every
    train one, from the model in `output`, kept in the store at `path` (keyed by the model, the conversation
    and the sampling settings: a rerun asks nothing twice)."""
    from persona.backends import Request, SamplingParams
    from persona.store import JsonlStore, append_missing, now, input_key

    sampled = SamplingParams(n=settings.k, temperature=settings.temperature, top_p=1.0,
                             max_tokens=settings.max_tokens, seed=settings.seed)
    greedy = SamplingParams(n=1, temperature=0.0, top_p=1.0, max_tokens=settings.max_tokens, seed=0)
    requests, chat_of = [], {}
    engine = () if settings.backend == "hf" else (settings.backend,)  # hf keys as before: earlier answers reused
    for chat in chats:
        for params in (greedy,) if greedy_only or chat.split == "dev" else (greedy, sampled):
            key = input_key(str(output.path), chat.id, params.to_dict(), *engine)
            requests.append(Request(key, chat.messages, params))
            chat_of[key] = chat
    backend = {}

    def run(pending):
        backend["loaded"] = _sampling_backend(output, settings, path)  # only when something is left to ask
        yield from backend["loaded"].complete(pending)

    def to_records(result):
        return [{"id": result.request.key, "conversation": chat_of[result.request.key].id,
                 "backend": backend["loaded"].name, "greedy": result.request.params.temperature == 0.0,
                 "texts": [c.text for c in result.completions],
                 "completion_tokens": sum(c.completion_tokens for c in result.completions), "created": now()}]

    path.parent.mkdir(parents=True, exist_ok=True)
    done, _ = append_missing(JsonlStore(path), requests, run, to_records, stage=stage,
                             on_progress=on_progress)
    if "loaded" in backend:
        backend["loaded"].close()
    out: dict[str, list] = {chat.id: [] for chat in chats}
    for request in requests:
        record = done[request.key]
        out[record["conversation"]] += [(text, record["greedy"]) for text in record["texts"]]
    return out


def _sampling_backend(output, settings: RefineSettings, path: Path):
    """The backend that samples `output`'s answers (persona.answering, settings.backend): hf on the model loaded
    here, else the model's folder (an adapter merged next to the samples in `path`, once) in vLLM or on a server."""
    from persona.answering import answering_backend, load_model
    from persona.export import model_folder

    merged = path.parent / f"merged-{hashlib.sha256(str(output.path).encode()).hexdigest()[:10]}"
    return answering_backend(settings.backend, settings.backend_options,
                             loaded=lambda: load_model("trained", output.path),
                             folder=lambda: model_folder(output, merged), batch_size=settings.batch_size,
                             ray=settings.ray, ray_replicas=settings.ray_replicas)


def settings_record(settings: RefineSettings) -> dict:
    """The settings as refine.json keeps them: no credentials in URLs, no option that holds a secret."""
    from persona.secrets import without_secrets

    return {**asdict(settings), "backend_options": without_secrets(settings.backend_options)}


def _label(spec, chats, samples, path: Path, judge=None) -> dict[str, list[dict]]:
    """{conversation id: [{text, passed, why, greedy}]}, also written to `path` (one line per answer); `judge`
    scores the in-domain answers (persona.judges)."""
    from persona.store import write_atomic

    verdicts = _domain_verdicts(spec, chats, samples, judge)
    labelled, lines = {}, []
    for chat in chats:
        labelled[chat.id] = []
        for i, (text, greedy) in enumerate(samples[chat.id]):
            verdict = verdicts.get((chat.id, i))
            passed, why = label(spec, chat, text, verdict)
            row = {"text": text, "passed": passed, "why": why, "greedy": greedy}
            if verdict is not None:
                row["scored"] = sorted(t for t, v in (verdict.scores or {}).items() if v is not None)
            labelled[chat.id].append(row)
            lines.append(json.dumps({"conversation": chat.id, "kind": chat.kind, "context": chat.context, **row},
                                    ensure_ascii=False))
    write_atomic(path, "\n".join(lines) + "\n")
    return labelled


def _domain_verdicts(spec, chats, samples, judge) -> dict:
    """{(conversation id, answer index): Judgement} of every in-domain answer, judged in one batch."""
    from persona.judges import JudgeItem

    items = {f"{chat.id}|{i}": (chat.id, i, JudgeItem(f"{chat.id}|{i}", chat.messages[-1]["content"], text))
             for chat in chats if chat.kind == "domain" for i, (text, _) in enumerate(samples[chat.id])}
    if not items or judge is None:
        return {}
    return {items[item.key][:2]: verdict for item, verdict in judge.judge(spec, [v[2] for v in items.values()])}


def round_judge(settings: RefineSettings, templates: str | None = None):
    """The judge of a round's in-domain answers (settings.judge), or None when the round asks none."""
    if not settings.domain:
        return None
    from persona.judges import make_judge

    return make_judge(settings.judge, templates=templates)


def unchecked_targets(spec, labelled: dict) -> list[str]:
    """The spec's targets that no label covers: not identity or leak, and scored by the judge on none of the
    in-domain answers."""
    seen = {t for rows in labelled.values() for row in rows for t in row.get("scored", ())} | {"identity"}
    return [t.id for t in spec.targets() if t.id not in seen]


def _kto_rows(chats, labelled) -> list[dict]:
    rows = []
    for chat in chats:
        seen = set()
        for a in labelled[chat.id]:
            if a["text"].strip() and a["text"] not in seen:
                seen.add(a["text"])
                rows.append({"prompt": list(chat.messages), "completion": [{"role": "assistant", "content": a["text"]}],
                             "label": a["passed"], "id": f"{chat.id}-{len(seen)}", "kind": chat.kind})
    has = {r["label"] for r in rows}
    return rows if has == {True, False} else []  # KTO needs both kinds


def _counts(chats, labelled, rows, why_none) -> dict:
    def greedy_pass(kind, context=None):
        chosen = [c for c in chats if c.kind == kind and (context is None or c.context == context)]
        flags = [a["passed"] for c in chosen for a in labelled[c.id] if a["greedy"]]
        return {"n": len(flags), "passed": sum(flags)}

    answers = [a for c in chats for a in labelled[c.id]]
    contexts = sorted({c.context for c in chats if c.kind == "identity"})
    return {"conversations": len(chats), "answers": len(answers), "passed": sum(a["passed"] for a in answers),
            "failed": sum(not a["passed"] for a in answers),
            "greedy": {**{c: greedy_pass("identity", c) for c in contexts}, "general": greedy_pass("general"),
                       **({"domain": greedy_pass("domain")} if any(c.kind == "domain" for c in chats) else {})},
            "pairs": len(rows), "general_pairs": sum(r["kind"] == "general" for r in rows),
            "off_policy_pairs": sum(r["off_policy"] for r in rows), "no_pair": why_none}


def _summary(counts: dict, rl: str | None = None) -> str:
    greedy = ", ".join(f"{c} {g['passed']}/{g['n']}" for c, g in counts["greedy"].items())
    made = (f"{rl.upper()} trains on these {counts['conversations']} conversations, sampling and scoring its own "
            "answers" if rl else
            f"{counts['pairs']} pairs ({counts['general_pairs']} on general prompts, "
            f"{counts['off_policy_pairs']} with a demonstration as the chosen side)")
    return (f"sampled {counts['answers']} answers to {counts['conversations']} conversations: {counts['passed']} "
            f"passed, {counts['failed']} failed (greedy answers passing, on the round's own train prompts: "
            f"{greedy}); {made}")
