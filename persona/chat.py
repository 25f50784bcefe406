"""`persona chat`: talk to a trained output in the terminal, under the chat template training saved (so it
gets the default system prompt it was trained with), the answer streamed as it is generated.

    session = ChatSession.load("runs/brand/train-sft")
    for piece in session.reply("Who are you?"):   # text as it is generated; the turn is kept as history
        print(piece, end="")
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Iterator


class ChatSession:
    def __init__(self, lm, tokenizer, system: str | None = None, max_tokens: int = 256, temperature: float = 0.0,
                 repetition_penalty: float = 1.1, seed: int = 0):
        self.lm, self.tokenizer = lm, tokenizer
        self.system, self.max_tokens, self.temperature = system, max_tokens, temperature
        self.repetition_penalty, self.seed = repetition_penalty, seed
        self.history: list[dict] = []

    @classmethod
    def load(cls, path: str | Path, base: str | None = None, **settings) -> "ChatSession":
        from persona.models import load_trained

        lm, tokenizer = load_trained(path, "causal", base)
        if hasattr(lm, "merge_and_unload"):
            lm = lm.merge_and_unload()  # plain weights generate faster than an adapter
        return cls(lm.eval(), tokenizer, **settings)

    def reset(self) -> None:
        self.history = []

    def messages(self, text: str) -> list[dict]:
        system = [] if self.system is None else [{"role": "system", "content": self.system}]
        return system + self.history + [{"role": "user", "content": text}]

    def reply(self, text: str) -> Iterator[str]:
        """The answer to `text` after the turns so far, piece by piece as it is generated (greedy at temperature
        0, else sampled with the session's seed); the turn joins the history once the answer is complete."""
        import torch
        from transformers import TextIteratorStreamer

        messages = self.messages(text)
        ids = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                                 return_dict=True)
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        sampling = ({"do_sample": True, "temperature": self.temperature} if self.temperature > 0
                    else {"do_sample": False, "temperature": None, "top_p": None, "top_k": None})
        failure: list[BaseException] = []

        def generate() -> None:
            try:
                torch.manual_seed(self.seed)
                with torch.inference_mode():
                    self.lm.generate(**ids, max_new_tokens=self.max_tokens, streamer=streamer,
                                     repetition_penalty=self.repetition_penalty,
                                     pad_token_id=self.tokenizer.pad_token_id, **sampling)
            except BaseException as e:  # shown to the caller, not lost in the thread
                failure.append(e)
                streamer.end()

        worker = threading.Thread(target=generate, daemon=True)
        worker.start()
        pieces = []
        for piece in streamer:
            pieces.append(piece)
            yield piece
        worker.join()
        if failure:
            raise failure[0]
        self.history += [{"role": "user", "content": text}, {"role": "assistant", "content": "".join(pieces).strip()}]

    def converse(self, lines, write, say=lambda text: None) -> None:
        """A conversation from `lines` (the user's, e.g. read from the terminal; it ends with them or at /exit or
        /quit): each answer streamed to `write` as it is generated, /reset forgets the conversation (`say` tells)."""
        for line in lines:
            text = line.strip()
            if text in ("/exit", "/quit"):
                return
            if text == "/reset":
                self.reset()
                say("(conversation forgotten)")
            elif text:
                for piece in self.reply(text):
                    write(piece)
                write("\n")

