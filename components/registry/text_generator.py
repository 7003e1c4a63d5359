"""An MLflow pyfunc that generates text with a ``save_pretrained`` causal LM.

Logged as *models from code*: MLflow stores this file's source next to the model and runs it
at load time, so nothing of ours is pickled (never unpickle untrusted files). The file is
self-contained on purpose: it imports only mlflow, pandas, torch and transformers, never the
``components`` package, so a registered model loads in any environment with those installed.

The weights travel as the artifact ``model_dir`` (the ``save_pretrained`` folder, safetensors)
and are loaded without remote code. A personal adapter's version instead names its base model
version in ``model_config["base_model_uri"]`` (loaded through this same class, never copied)
and carries LoRA adapters (PEFT, safetensors) as artifacts, merged onto the base in the order
of ``model_config["adapters"]``: its deployer's first, then its own.
"""

import mlflow
import pandas as pd
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

DEFAULT_MAX_NEW_TOKENS = 48


def _prompts(model_input) -> list[str]:
    """Prompts from a list/array/Series of strings or a DataFrame ("prompt" column, else the first)."""
    if isinstance(model_input, pd.DataFrame):
        if model_input.shape[1] == 0:
            return []
        column = "prompt" if "prompt" in model_input.columns else model_input.columns[0]
        model_input = model_input[column]
    if isinstance(model_input, str):
        model_input = [model_input]
    return [str(prompt) for prompt in list(model_input)]


class TextGenerator(mlflow.pyfunc.PythonModel):
    """Answers each prompt; returns only the newly generated text.

    With a chat template (an instruction model), each prompt is one user message rendered by
    the template, and the answer stops at any end token the model's generation config names
    (an instruct model's end-of-turn); without one, the text is continued as it is (the tiny
    default reads HH transcripts, ``"Human: ...\n\nAssistant:"``). Inside the pipeline,
    ``components.modeling.sequences.encode_prompt`` renders prompts the same way; it is not
    imported here, to keep this file self-contained.
    """

    def load_context(self, context):
        config = getattr(context, "model_config", None) or {}
        if config.get("base_model_uri"):
            base = mlflow.pyfunc.load_model(config["base_model_uri"]).unwrap_python_model()
            self.tokenizer, self.model = base.tokenizer, base.model
        else:
            self._load(context.artifacts["model_dir"])
        for name in config.get("adapters", []):
            from peft import PeftModel   # only adapter versions need it

            self.model = PeftModel.from_pretrained(self.model, context.artifacts[name]).merge_and_unload().eval()

    def _load(self, model_dir: str) -> None:
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=False)
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        # Batched generation appends to the right, so pad (and truncate long prompts) on the left.
        self.tokenizer.padding_side = "left"
        self.tokenizer.truncation_side = "left"
        self.model = AutoModelForCausalLM.from_pretrained(model_dir, trust_remote_code=False).eval()

    # The hint is what MLflow hands over after enforcing the signature (a one-column string
    # DataFrame); it also keeps MLflow from inferring a schema from the hint.
    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> list[str]:
        params = params or {}
        prompts = _prompts(model_input)
        if not prompts:
            return []
        max_new_tokens = int(params.get("max_new_tokens") or DEFAULT_MAX_NEW_TOKENS)
        temperature = float(params.get("temperature") or 0.0)
        seed = params.get("seed")

        # Leave room for the continuation within the model's context window.
        limit = getattr(self.model.config, "max_position_embeddings", None)
        max_length = max(1, limit - max_new_tokens) if limit else None
        templated = bool(self.tokenizer.chat_template)
        if templated:
            prompts = [self.tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                                          add_generation_prompt=True) for prompt in prompts]
        batch = self.tokenizer(
            prompts,
            return_tensors="pt",
            padding=True,
            truncation=max_length is not None,
            max_length=max_length,
            add_special_tokens=not templated,   # the template writes its own
        )
        sampling = {"do_sample": True, "temperature": temperature} if temperature > 0 else {"do_sample": False}
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            if seed is not None:
                torch.manual_seed(int(seed))
            output = self.model.generate(
                **batch,
                max_new_tokens=max_new_tokens,
                pad_token_id=self.tokenizer.pad_token_id,
                eos_token_id=self._stop_ids(),
                **sampling,
            )
        new_tokens = output[:, batch["input_ids"].shape[1] :]
        return self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)

    def _stop_ids(self) -> list[int]:
        """The end-of-sequence token and those the generation config adds (an end-of-turn token)."""
        configured = self.model.generation_config.eos_token_id
        configured = configured if isinstance(configured, list) else [configured]
        return sorted({self.tokenizer.eos_token_id, *(i for i in configured if i is not None)})


mlflow.models.set_model(TextGenerator())
