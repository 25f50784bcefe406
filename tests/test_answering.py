"""persona.answering: one home for answering as a base or trained model (eval's answers, refine's samples), and
one behaviour for an option the chosen backend does not take - an error naming it, before any model loads."""

from __future__ import annotations

import pytest
from persona.answering import answering_backend, check_options, load_model
from persona.errors import PersonaError


def test_an_option_the_backend_does_not_take_is_named():
    with pytest.raises(PersonaError) as e:
        check_options("openai", {"base_url": "http://127.0.0.1:9/v1", "colour": "red"})
    assert e.value.message == "backend 'openai' has no option 'colour'" and "base_url" in e.value.hint
    # hf answers with the model in memory: only what that takes (batch size, repetition penalty, dtype)
    assert set(check_options("hf", {"batch_size": 4})) == {"batch_size", "repetition_penalty", "dtype"}
    with pytest.raises(PersonaError, match="backend 'hf' has no option 'max_context'"):
        check_options("hf", {"max_context": 512})
    with pytest.raises(PersonaError, match="unknown backend 'vlm'") as e:
        check_options("vlm", {})
    assert "did you mean 'vllm'" in e.value.hint


def test_hf_answers_with_the_loaded_model_and_other_backends_load_its_folder(tiny_model_dir, tmp_path):
    lm, tokenizer, name = load_model("base", None, str(tiny_model_dir))
    backend = answering_backend("hf", {"batch_size": 3}, loaded=(lm, tokenizer, name), repetition_penalty=1.0)
    assert backend.lm is not None and backend.batch_size == 3 and backend.repetition_penalty == 1.0
    asked = []

    def folder():
        asked.append(1)
        return tiny_model_dir

    served = answering_backend("openai", {"model": "served-copy", "base_url": "http://127.0.0.1:9/v1",
                                          "api_key_env": "PATH"}, folder=folder)
    assert served.model == "served-copy" and asked == []  # a served copy: no folder made
    local = answering_backend("openai", {"base_url": "http://127.0.0.1:9/v1", "api_key_env": "PATH"}, folder=folder)
    assert local.model == str(tiny_model_dir) and asked == [1]
