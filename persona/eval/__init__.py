"""`persona eval`: does the trained model hold its identity, and what did it cost? Base vs trained, side by side.

    metrics = evaluate("runs/aster/train-sft", "identities/aster.yaml")     # writes runs/aster/train-sft/eval/

Both models answer the same prompts with the same settings (greedy decoding), each in its own deployment:
its chat template's default when a conversation has no system message (the base's may name another identity,
SmolLM2's does; a persona-trained model's injects persona's default), and, for the identity questions, also
with an explicit empty system prompt, where only the weights can say who it is. Measurements:

  identity     held-out who-are-you / who-made-you paraphrases shipped with persona (never trained on): the
               share of answers that give the right name (or maker, asked who made it) and the share that
               claim another (ChatGPT, OpenAI, Meta, Hugging Face, ...), in both contexts; rules-based, exact
  robustness   the same questions under attack: a bank of 8 break-character suffixes (one per question in
               turn), an earlier turn in which the assistant agreed it was ChatGPT, several prefilled turns in
               which it spoke as Llama by Meta, an injected instruction in the user's message
  leak         held-out general questions: the share of answers that mention the name or maker unprompted
  adherence    the held-out probe prompts of the run (the eval split, never trained on): the judge's mean
               score per target and overall, the share in character (keeps every machine-checked rule), and
               the win rate of trained vs base; answers may run as long as the spec's length checks allow
  retention    perplexity on a held-out general text and accuracy on 40 general multiple-choice questions
               (log-likelihood of each choice), both shipped with persona

Every number is a row (persona.metrics.MetricRow: name, group, base, trained, unit, sample size), listed in
METRICS; the CLI's table, the model card and the report read the rows, and `verdict` says in words what
changed. The base model's work is done once per base model and settings: its answers and scores are kept
in the run folder (the eval folder without a run) and reused by every later eval, which then never loads
it. Answers are appended as they come, so an interrupted eval resumes where it stopped.

Precision: both models answer and are scored in persona.precision's dtype for the device (bf16 on a CPU with AMX
or a GPU that supports it, else fp32; bf16 moved the scores by far less than their noise, see persona.precision);
`EvalSettings.dtype` (--dtype) sets it. metrics.json records which ("precision"), and answers and scores made in
another dtype than fp32 are kept apart from fp32 ones.
"""

from __future__ import annotations

from persona.eval.answers import answer
from persona.eval.evaluation import baseline_prompt, base_key, evaluate
from persona.eval.questions import (ATTACKS, CONTEXTS, DATA, EvalItem, attack_bank, build_items, data_lines,
                                    general_questions, held_out_prompts, identity_questions, probe_max_tokens)
from persona.eval.retention import general_qa_accuracy, pad_id, perplexity, perplexity_and_tokens, retention_scores
from persona.eval.rows import METRICS, Metric, mentions, metric_rows_of, origin_claim
from persona.eval.settings import BASELINES, EvalSettings

__all__ = ["ATTACKS", "BASELINES", "CONTEXTS", "DATA", "METRICS", "EvalItem", "EvalSettings", "Metric", "answer",
           "attack_bank", "base_key", "baseline_prompt", "build_items", "data_lines", "evaluate", "general_qa_accuracy",
           "general_questions", "held_out_prompts", "identity_questions", "mentions", "metric_rows_of", "origin_claim",
           "pad_id", "perplexity", "perplexity_and_tokens", "probe_max_tokens", "retention_scores"]
