"""Instruction models: prompts and answers rendered with the tokenizer's chat template, on a tiny
model built here whose tokenizer has one (``templated_model_dir``), and the HH rendering kept for
tokenizers without one."""

import types

import pandas as pd
import pytest
import torch

from components.data.records import render_turns
from components.evaluation.metrics import evaluate_policy
from components.modeling.chat import end_of_turn_id, render_hh, transcript_messages
from components.modeling.models import load_model, load_tokenizer
from components.modeling.sequences import encode, encode_prompt
from components.params import AnchorParams, EvaluateParams, SequenceParams
from components.training.anchors import sample_anchors

TURNS = [("user", "How do I bake bread?"), ("assistant", "Knead it."), ("user", "And then?")]
TRANSCRIPT = render_turns(TURNS)   # Human: How do I bake bread?\n\nAssistant: Knead it.\n\nHuman: And then?\n\nAssistant:


@pytest.fixture(scope="module")
def templated(templated_model_dir):
    return load_model(templated_model_dir), load_tokenizer(templated_model_dir)


def test_transcripts_read_back_into_the_messages_they_were_rendered_from():
    assert transcript_messages(TRANSCRIPT) == [{"role": r, "content": c} for r, c in TURNS]
    chat = [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Hi?"},
            {"role": "assistant", "content": "Hello.\n\nHow can I help?"}, {"role": "user", "content": "Bread."}]
    assert transcript_messages(render_hh(chat)) == chat
    assert transcript_messages(render_turns([("system", "Be kind."), ("user", "Hi?")])) == chat[:2]
    assert transcript_messages("Write an insult") == [{"role": "user", "content": "Write an insult"}]
    # two human turns in a row (as in 3 bundled HH rows) become one message: templates want alternation
    assert transcript_messages("Human: Hi\n\nHuman: there\n\nAssistant:") == [{"role": "user", "content": "Hi\n\nthere"}]


def test_a_multi_turn_prompt_and_its_answer_are_rendered_with_the_template(templated):
    _, tokenizer = templated
    pair = encode(tokenizer, TRANSCRIPT, "Let it rise.", max_prompt_tokens=64, max_response_tokens=32)
    assert tokenizer.decode(pair.prompt_ids) == (
        "<|user|>How do I bake bread?<|end|>\n<|assistant|>Knead it.<|end|>\n<|user|>And then?<|end|>\n<|assistant|>")
    assert tokenizer.decode(pair.response_ids) == "Let it rise.<|end|>"
    markers = [tokenizer.convert_tokens_to_ids(m) for m in ("<|user|>", "<|assistant|>", "<|end|>")]
    user, assistant, end = markers
    assert [i for i in pair.prompt_ids + pair.response_ids if i in markers] == [
        user, end, assistant, end, user, end, assistant, end]
    assert pair.response_ids[-1] == end_of_turn_id(tokenizer) == end
    assert "Human" not in tokenizer.decode(pair.prompt_ids + pair.response_ids)


def test_without_a_template_the_hh_rendering_is_unchanged(tiny_model_dir):
    tokenizer = load_tokenizer(tiny_model_dir)
    pair = encode(tokenizer, TRANSCRIPT, "Let it rise.", max_prompt_tokens=1000, max_response_tokens=32)
    assert pair.prompt_ids == tokenizer(TRANSCRIPT)["input_ids"]
    assert pair.response_ids == tokenizer(" Let it rise.", add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    assert tokenizer.decode(pair.prompt_ids + pair.response_ids) == TRANSCRIPT + " Let it rise.<|endoftext|>"


def test_a_long_templated_prompt_loses_whole_early_turns_not_the_templates_opening(templated):
    _, tokenizer = templated
    turns = [(role, f"{text} {i}") for i in range(6) for role, text in (("user", "question"), ("assistant", "answer"))]
    transcript = render_turns([*turns, ("user", "last?")])
    latest = encode_prompt(tokenizer, render_turns([*turns[-2:], ("user", "last?")]), max_prompt_tokens=1000)
    assert len(encode_prompt(tokenizer, transcript, max_prompt_tokens=1000)) > len(latest) + 1
    kept = encode_prompt(tokenizer, transcript, max_prompt_tokens=len(latest) + 1)
    assert kept == latest
    assert tokenizer.decode(kept) == "<|user|>question 5<|end|>\n<|assistant|>answer 5<|end|>\n<|user|>last?<|end|>\n<|assistant|>"
    # one turn too long for the budget: its first tokens go, as in the HH rendering
    alone = encode_prompt(tokenizer, "Human: " + "bread " * 50 + "\n\nAssistant:", max_prompt_tokens=10)
    assert len(alone) == 10 and tokenizer.decode(alone).endswith("<|end|>\n<|assistant|>")


def test_the_end_of_turn_token_comes_from_the_template(templated, tiny_model_dir):
    _, tokenizer = templated
    assert tokenizer.convert_ids_to_tokens(end_of_turn_id(tokenizer)) == "<|end|>"
    plain = load_tokenizer(tiny_model_dir)
    assert end_of_turn_id(plain) == plain.eos_token_id
    plain.chat_template = "{% for m in messages %}{{ m.content }} END OF TURN{% endfor %}"
    with pytest.raises(ValueError, match="single end-of-turn token"):
        end_of_turn_id(plain)


def test_anchors_sampled_from_a_templated_model_stop_at_its_end_of_turn(templated):
    model, tokenizer = templated
    prompts = [encode_prompt(tokenizer, render_turns([("user", q)]), 64)
               for q in ("What is the capital of France?", "How do I bake bread?")]
    anchors = sample_anchors(model, model, tokenizer, prompts, AnchorParams(k=3, max_new_tokens=30), seed=0)
    end = end_of_turn_id(tokenizer)
    flat = [response for group in anchors.responses for response in group]
    assert all(end not in response[:-1] and (response[-1] == end or len(response) == 30) for response in flat)
    assert sum(response[-1] == end for response in flat) >= 3   # answers stop there, not at the end-of-text token
    assert anchors.ref_logps.shape == (2, 3) and torch.isfinite(anchors.ref_logps).all()


def test_evaluation_scores_a_templated_model(templated):
    model, tokenizer = templated
    pairs = pd.DataFrame({"pair_id": ["a", "b"], "prompt_id": ["p", "q"],
                          "prompt": [render_turns([("user", "What is the capital of France?")]), TRANSCRIPT],
                          "chosen": ["Paris is the capital of France.", "Let it rise."],
                          "rejected": ["I would rather not say.", "Burn it."]})
    generation, evidence = evaluate_policy(model, model, tokenizer, pairs, SequenceParams(max_prompt_tokens=64, max_response_tokens=32),
                                           EvaluateParams(kl_prompts=2, max_new_tokens=16), seed=0)
    assert len(evidence) == 2 and (evidence["separation"] == 0).all()   # the policy is its own reference
    assert evidence.loc[0, "ref_pos_logp"] > evidence.loc[0, "ref_neg_logp"]   # it learned this answer
    assert generation["kl_ref"] == pytest.approx(0.0, abs=1e-6) and 0 < generation["distinct_2"] <= 1


def test_the_registered_pyfunc_answers_a_user_message_through_the_template(templated_model_dir):
    from components.registry.text_generator import TextGenerator

    generator = TextGenerator()
    generator.load_context(types.SimpleNamespace(artifacts={"model_dir": str(templated_model_dir)}))
    question = "What is the capital of France?"
    answers = generator.predict(None, [question, "How do I bake bread?"], {"max_new_tokens": 24})
    assert answers[0] == "Paris is the capital of France."   # stopped at <|end|>, markers not shown
    generator.tokenizer.chat_template = None   # the same text continued as it is: not the learned answer
    assert generator.predict(None, [question], {"max_new_tokens": 24})[0] != answers[0]
