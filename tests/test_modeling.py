"""Models and token sequences, on tiny GPT-2, Llama and Qwen2 models saved locally (forgetting: test_forgetting.py)."""

import json
import math

import pytest
import torch
import torch.nn.functional as F

from components import stages
from components.modeling.models import decoder_blocks, load_model, load_tokenizer
from components.modeling.sequences import (
    Encoded, collate, encode, encode_prompt, encode_response, sample_responses, score, sequence_logps,
)
from components.params import load_params
from conftest import REPO_ROOT

PROMPT = "Human: What is the capital of France?\n\nAssistant:"


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    return load_tokenizer(tiny_model_dir)


def encoded(tokenizer, prompt=PROMPT, response="Paris is the capital of France."):
    return encode(tokenizer, prompt, response, max_prompt_tokens=64, max_response_tokens=32)


# --- summed response log-probs ---------------------------------------------------------------

@pytest.mark.parametrize("arch", ["gpt2", "llama", "qwen2"])
def test_sequence_logps_is_the_sum_of_response_token_logprobs(model_dirs, tokenizer, arch):
    model = load_model(model_dirs[arch])
    seq = encoded(tokenizer)
    ids = torch.tensor([seq.prompt_ids + seq.response_ids])
    with torch.no_grad():
        logps = F.log_softmax(model(input_ids=ids).logits[0].float(), dim=-1)
        total, count = sequence_logps(model, collate([seq], tokenizer.pad_token_id))
    n_prompt = len(seq.prompt_ids)
    expected = sum(logps[t - 1, ids[0, t]] for t in range(n_prompt, ids.shape[1]))
    assert count.tolist() == [len(seq.response_ids)]
    assert total.item() == pytest.approx(expected.item(), abs=1e-4)


def test_prompt_tokens_do_not_count(model_dirs, tokenizer):
    """Moving the first response token into the prompt drops exactly that token's log-prob."""
    model = load_model(model_dirs["gpt2"])
    seq = encoded(tokenizer)
    shifted = Encoded(seq.prompt_ids + seq.response_ids[:1], seq.response_ids[1:])
    with torch.no_grad():
        first = F.log_softmax(model(input_ids=torch.tensor([seq.prompt_ids])).logits[0, -1], -1)[seq.response_ids[0]]
    (full, shorter), counts = score(model, [seq, shifted], tokenizer.pad_token_id)
    assert counts.tolist() == [len(seq.response_ids), len(seq.response_ids) - 1]
    assert (full - shorter).item() == pytest.approx(first.item(), abs=1e-4)


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_padding_does_not_count(model_dirs, tokenizer, arch):
    model = load_model(model_dirs[arch])
    short = encoded(tokenizer, response="Paris.")
    long = encoded(tokenizer, prompt="Human: Tell me about France, its history and its capital.\n\nAssistant:",
                   response="France is a country in Europe; its capital is Paris, on the Seine.")
    assert len(short.prompt_ids + short.response_ids) < len(long.prompt_ids + long.response_ids)
    with torch.no_grad():
        alone, _ = sequence_logps(model, collate([short], tokenizer.pad_token_id))
        batched, _ = sequence_logps(model, collate([short, long], tokenizer.pad_token_id))
        other_pad, _ = sequence_logps(model, collate([short, long], pad_id=7))
    assert batched[0].item() == pytest.approx(alone[0].item(), abs=1e-4)
    assert torch.allclose(batched, other_pad, atol=1e-5)


# --- encoding --------------------------------------------------------------------------------

def test_prompt_keeps_its_last_tokens(tokenizer):
    prompt = "\n\n".join(f"Human: question {i}?\n\nAssistant: answer {i}." for i in range(10)) + "\n\nHuman: last?\n\nAssistant:"
    full = tokenizer(prompt)["input_ids"]
    assert len(full) > 8
    kept = encode_prompt(tokenizer, prompt, max_prompt_tokens=8)
    assert kept == full[-8:]
    assert tokenizer.decode(kept).endswith("Assistant:")
    assert encode_prompt(tokenizer, PROMPT, max_prompt_tokens=1000) == tokenizer(PROMPT)["input_ids"]


def test_response_ends_in_eos_only_when_not_truncated(tokenizer):
    eos = tokenizer.eos_token_id
    short = encode_response(tokenizer, "Paris.", max_response_tokens=32)
    assert short == tokenizer(" Paris.", add_special_tokens=False)["input_ids"] + [eos]

    text = "Mix flour, water, yeast and salt, knead, let it rise, then bake for forty minutes."
    full = tokenizer(" " + text, add_special_tokens=False)["input_ids"]
    assert len(full) > 6
    cut = encode_response(tokenizer, text, max_response_tokens=6)
    assert cut == full[:6] and eos not in cut

    pair = encode(tokenizer, PROMPT, text, max_prompt_tokens=4, max_response_tokens=6)
    assert pair.prompt_ids == tokenizer(PROMPT)["input_ids"][-4:] and pair.response_ids == cut


# --- sampling --------------------------------------------------------------------------------

def test_sample_responses_are_cut_after_the_first_eos(model_dirs, tokenizer):
    """A model whose next-token distribution is fixed, with P(eos) = 0.15 at every step."""
    model = load_model(model_dirs["gpt2"])
    eos, vocab = tokenizer.eos_token_id, len(tokenizer)
    with torch.no_grad():  # ln_f outputs its bias whatever the input; logits = wte @ bias (tied head)
        model.transformer.ln_f.weight.zero_()
        model.transformer.ln_f.bias.zero_()
        model.transformer.ln_f.bias[0] = math.log(0.15 / 0.85 * (vocab - 1))
        model.transformer.wte.weight.zero_()
        model.transformer.wte.weight[eos, 0] = 1.0
    prompts = [tokenizer(p)["input_ids"] for p in (PROMPT, "Human: hi\n\nAssistant:", "Human: Tell me a story.\n\nAssistant:")]
    torch.manual_seed(0)
    samples = sample_responses(model, prompts, k=6, max_new_tokens=8, eos_id=eos, pad_id=tokenizer.pad_token_id)
    assert [len(group) for group in samples] == [6, 6, 6]
    flat = [response for group in samples for response in group]
    for response in flat:
        assert 1 <= len(response) <= 8
        assert eos not in response[:-1]  # nothing after the first eos
    assert any(r[-1] == eos and len(r) < 8 for r in flat)  # some stopped early ...
    assert any(eos not in r for r in flat)  # ... and some ran to max_new_tokens


# --- local Hugging Face models ---------------------------------------------------------------

@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_local_hf_model_loads_and_becomes_the_reference(model_dirs, tmp_path, arch):
    model_dir = model_dirs[arch]
    assert (model_dir / "model.safetensors").exists() and not (model_dir / "pytorch_model.bin").exists()
    model, tokenizer = load_model(model_dir), load_tokenizer(model_dir)
    assert type(model).__name__.lower().startswith(arch) and not model.training
    assert tokenizer.pad_token_id is not None
    assert decoder_blocks(model) is model.model.layers and len(decoder_blocks(model)) == 2

    params = load_params(REPO_ROOT / "params.yaml", overrides={"reference.model": str(model_dir)})
    out_dir = tmp_path / "ref"
    summary = stages.build_reference(params, dataset_dir=tmp_path / "no-dataset-needed", out_dir=out_dir)
    assert json.loads((out_dir / stages.REFERENCE_POINTER).read_text())["model"] == str(model_dir)
    assert summary["vocab_size"] == len(tokenizer)
    assert stages.reference_location(out_dir) == str(model_dir)
    assert not list(out_dir.glob("*.safetensors"))  # recorded by location, not copied

    reference, ref_tokenizer = stages.load_reference(params, out_dir)
    sums, counts = score(reference, [encoded(ref_tokenizer)], ref_tokenizer.pad_token_id)
    assert torch.isfinite(sums).all() and counts.item() > 0


def test_sampling_past_the_position_table_fails_early_naming_the_setting(tiny_model_dir):
    from components.modeling.models import ContextLengthError, check_context

    model = load_model(tiny_model_dir)                  # 128 positions
    check_context(model, 64, 64, "cycles.anchors.max_new_tokens")
    with pytest.raises(ContextLengthError, match=r"cycles.anchors.max_new_tokens = 65: .* 129 positions, but the model has 128"):
        check_context(model, 64, 65, "cycles.anchors.max_new_tokens")
