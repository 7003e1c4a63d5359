"""Chats and transcripts: how a prompt is shown to a model with a chat template, or without one.

Records keep every prompt as an HH-RLHF transcript (``Human: ...\\n\\nAssistant: ...`` turns
ending in ``\\n\\nAssistant:``, see ``records.render_turns``), the shape the tiny default learns.
A model whose tokenizer has a chat template was trained on its template instead, so the
transcript is read back into messages and rendered with it (``sequences.encode_prompt``).
"""

from __future__ import annotations

import re

from components.data.records import ASSISTANT, HUMAN, TURN_SEPARATOR, render_turns

Chat = list[dict[str, str]]

ROLES = {HUMAN: "user", ASSISTANT: "assistant"}
TURN = re.compile(rf"(?:^|{TURN_SEPARATOR})({HUMAN}|{ASSISTANT}):")
SYSTEM_LABEL = re.compile(r"^system:\s*", re.IGNORECASE)
_SENTINEL = "\x00alignpipe-response\x00"


def render_hh(chat: Chat) -> str:
    """The HH shape: the system message (a persona) as a first paragraph, then ``Human:``/``Assistant:`` turns."""
    system = [m["content"] for m in chat if m["role"] == "system"]
    turns = [(m["role"], m["content"]) for m in chat if m["role"] != "system"]
    return TURN_SEPARATOR.join([*system, render_turns(turns)])


def transcript_messages(transcript: str) -> Chat:
    """The messages of an HH transcript, the inverse of :func:`render_hh` and ``render_turns``.

    Text before the first turn is a system message (an optional ``system:`` label, as
    ``render_turns`` writes one, is dropped); the closing empty ``Assistant:`` is the generation
    prompt, not a message; text without any turn (a plain prompt) is one user message.
    Recovery is exact up to the whitespace around each turn, which ``render_turns`` strips, with
    two choices: consecutive turns of one role (3 rows of the bundled HH sample) are merged,
    joined by a blank line, because many templates insist that roles alternate; and a
    ``Human:``/``Assistant:`` label inside a turn's text after a blank line reads as a new turn,
    as it does in the HH data itself.
    """
    marks = list(TURN.finditer(transcript))
    if not marks:
        return [{"role": "user", "content": transcript.strip()}]
    messages: Chat = []
    preamble = SYSTEM_LABEL.sub("", transcript[: marks[0].start()].strip())
    if preamble:
        messages.append({"role": "system", "content": preamble})
    ends = [m.start() for m in marks[1:]] + [len(transcript)]
    for mark, end in zip(marks, ends):
        role, content = ROLES[mark.group(1)], transcript[mark.end() : end].strip()
        if messages and messages[-1]["role"] == role:
            messages[-1]["content"] += TURN_SEPARATOR + content
        else:
            messages.append({"role": role, "content": content})
    if messages[-1] == {"role": "assistant", "content": ""}:
        messages.pop()
    return messages


def template_ids(tokenizer, messages: Chat) -> list[int]:
    """``messages`` rendered by the tokenizer's chat template, ready for the assistant's answer.
    The template writes its own special tokens (a BOS among them, where the model has one)."""
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def templated_prompt_ids(tokenizer, messages: Chat, max_tokens: int) -> list[int]:
    """The chat's template rendering within ``max_tokens``, keeping the latest turns.

    Rather than cut the first tokens (the template's opening: BOS, headers, the system text),
    whole early turns are dropped, a user turn at a time, keeping a leading system message, so
    the model sees a well-formed chat. Only when the system message and the last user turn
    alone are too long are the first tokens cut, as the HH rendering always does.
    """
    system = messages[:1] if messages and messages[0]["role"] == "system" else []
    turns = messages[len(system):]
    starts = [i for i, message in enumerate(turns) if message["role"] == "user"] or [0]
    for start in starts:
        ids = template_ids(tokenizer, system + turns[start:])
        if len(ids) <= max_tokens:
            return ids
    return ids[-max_tokens:]


def end_of_turn_id(tokenizer) -> int:
    """The token that ends an assistant's answer: the one the chat template writes after an
    assistant message (``<|im_end|>``, ``<|eot_id|>``, ``<end_of_turn>``, or the end-of-sequence
    token), else the end-of-sequence token. Responses end with it, and sampling stops at it."""
    if not tokenizer.chat_template:
        return tokenizer.eos_token_id
    chat = [{"role": "user", "content": "?"}, {"role": "assistant", "content": _SENTINEL}]
    rendered = tokenizer.apply_chat_template(chat, tokenize=False)
    if _SENTINEL not in rendered:
        raise ValueError("the tokenizer's chat template does not write the assistant's message")
    marker = rendered.split(_SENTINEL, 1)[1].strip()
    if not marker:
        return tokenizer.eos_token_id
    ids = tokenizer(marker, add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        raise ValueError(f"the chat template ends an assistant turn with {marker!r}, {len(ids)} tokens; "
                         "answers need a single end-of-turn token to stop at (add it as a special token)")
    return ids[0]
