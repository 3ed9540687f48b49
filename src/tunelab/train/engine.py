"""One inference engine for language models: greedy generation, log-probabilities of
continuations, choice scoring; batching and padding sides in one place.

Prompting (prompting.py), generation evaluation after fine-tuning (finetune.py, also for
peft models) and DPO's held-out scoring (preference.py) all run through :class:`Engine`.

- Decoder prompts are left-padded, so every row continues at the last position
  (generation) and every continuation ends there (scoring: only the last positions need
  logits). Seq2seq encoder inputs are right-padded, targets go to the decoder.
- Scores are ``(sum of token log-likelihoods, token count)`` per continuation; the
  caller decides between sum and mean.
- The model is switched to eval mode for each call and back afterwards, without
  gradients; ``autocast`` runs an fp32 model in bf16/fp16 on a GPU as the Trainer does.

torch and transformers are imported inside functions: the CLI imports this package.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from tunelab.errors import TrainingError

FAMILIES = ("decoder", "seq2seq")
Pair = tuple[list[int], list[int]]  # (prompt ids, continuation ids)
Score = tuple[float, int]  # (sum of the continuation's token log-likelihoods, its token count)


@dataclass
class Engine:
    """A model with its tokenizer, ready for inference; counts tokens and seconds spent."""

    model: Any
    tokenizer: Any
    family: str  # "decoder" | "seq2seq"
    device: Any  # where the model's inputs go
    batch_size: int = 8
    progress: bool = False
    max_positions: int | None = None  # a decoder's position limit, when known
    keep_logits: bool = False  # the decoder's forward takes logits_to_keep
    autocast: Any = None  # a torch dtype to autocast an fp32 model to (GPU), or None
    tokens: int = 0  # real (non-padding) tokens processed
    seconds: float = 0.0  # time spent in forward passes and generation

    @classmethod
    def for_model(
        cls,
        model,
        tokenizer,
        family: str,
        batch_size: int = 8,
        progress: bool = False,
        autocast: Any = None,
    ) -> Engine:
        """An engine over an already loaded model (plain transformers or peft), on the
        device of its weights."""
        import inspect

        if family not in FAMILIES:
            raise TrainingError(f"The LM engine runs decoder or seq2seq models, not {family}.")
        config = model.config
        limit = getattr(config, "max_position_embeddings", None) or getattr(
            config, "n_positions", None
        )
        # peft's forward passes extra keyword arguments on to the model it wraps.
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        return cls(
            model=model,
            tokenizer=tokenizer,
            family=family,
            device=next(model.parameters()).device,
            batch_size=max(int(batch_size), 1),
            progress=progress,
            max_positions=limit if family == "decoder" else None,
            keep_logits="logits_to_keep" in inspect.signature(base.forward).parameters,
            autocast=autocast,
        )

    # ------------------------------------------------------------ encoding

    def encode_prompt(self, text: str) -> list[int]:
        tok = self.tokenizer
        if self.family == "seq2seq":
            return tok(text, add_special_tokens=True)["input_ids"]
        # Chat templates that write the bos token themselves must not get a second one.
        starts_with_bos = tok.bos_token is not None and text.startswith(tok.bos_token)
        ids = tok(text, add_special_tokens=not starts_with_bos)["input_ids"]
        eos = tok.eos_token_id
        if ids and eos is not None and ids[-1] == eos and not text.endswith(tok.eos_token or ""):
            ids = ids[:-1]  # some decoders append eos to every input; a prompt goes on
        if not ids:  # a decoder needs one token to predict the first continuation token from
            ids = [tok.bos_token_id if tok.bos_token_id is not None else eos]
        return ids

    def encode_continuation(self, text: str) -> list[int]:
        # A seq2seq target ends with eos as in training; a decoder continuation does not.
        ids = self.tokenizer(text, add_special_tokens=self.family == "seq2seq")["input_ids"]
        if not ids:
            raise TrainingError(f"The answer {text!r} encodes to no tokens.")
        return ids

    # ------------------------------------------------------------ the public operations

    def generate(
        self,
        prompts: list[list[int]],
        max_new_tokens: int,
        desc: str = "generating",
        eos_token_id: int | list[int] | None = None,
        longest_first: bool = True,
    ) -> list[str]:
        """Greedy answers to tokenized prompts, decoded from the new tokens only.

        ``eos_token_id`` defaults to the model's generation config (else the tokenizer's).
        ``longest_first`` batches similar lengths together; False keeps the given order
        (batch composition can move the last bits of the logits, so each caller keeps the
        order its results were produced with).
        """
        from transformers import GenerationConfig

        tok = self.tokenizer
        defaults = self.model.generation_config
        if eos_token_id is None:
            eos_token_id = defaults.eos_token_id
            if eos_token_id is None:
                eos_token_id = tok.eos_token_id
        # Settings left unset here come from the model's own generation config.
        settings = GenerationConfig(
            max_new_tokens=max_new_tokens,
            do_sample=False,
            num_beams=1,
            pad_token_id=tok.pad_token_id,
            eos_token_id=eos_token_id,
            decoder_start_token_id=defaults.decoder_start_token_id,
        )
        out = [""] * len(prompts)
        for batch, new, mask in self._generated(prompts, settings, longest_first, desc):
            for row, i in enumerate(batch):
                out[i] = tok.decode(new[row], skip_special_tokens=True).strip()
            self.tokens += int(mask.sum()) + int((new != tok.pad_token_id).sum())
        return out

    def sample(
        self,
        prompts: list[list[int]],
        max_new_tokens: int,
        temperature: float = 1.0,
        seed: int = 0,
        desc: str = "sampling",
    ) -> list[list[int]]:
        """One sampled continuation per tokenized prompt (plain sampling at ``temperature``,
        no top-k or top-p), as token ids up to and including the first eos. Seeded: the
        same model, prompts and seed give the same samples."""
        import torch
        from transformers import GenerationConfig

        tok = self.tokenizer
        eos = self.model.generation_config.eos_token_id
        eos = tok.eos_token_id if eos is None else eos
        stops = set(eos if isinstance(eos, list) else [eos])
        settings = GenerationConfig(
            max_new_tokens=max_new_tokens,
            do_sample=True,
            temperature=temperature,
            top_k=0,
            top_p=1.0,
            num_beams=1,
            pad_token_id=tok.pad_token_id,
            eos_token_id=eos,
        )
        torch.manual_seed(seed)
        out: list[list[int]] = [[] for _ in prompts]
        for batch, new, mask in self._generated(prompts, settings, False, desc):
            for row, i in enumerate(batch):
                tokens = new[row].tolist()
                end = next((k + 1 for k, t in enumerate(tokens) if t in stops), len(tokens))
                out[i] = tokens[:end]
            self.tokens += int(mask.sum()) + sum(len(out[i]) for i in batch)
        return out

    def _generated(self, prompts: list[list[int]], settings, longest_first: bool, desc: str):
        """(prompt indices, new tokens, attention mask) per batch of ``model.generate``
        with ``settings``: decoder prompts left-padded, seq2seq inputs right-padded."""
        side = "right" if self.family == "seq2seq" else "left"
        with self._inference():
            for batch in self._batches(prompts, len, longest_first, desc):
                ids, mask = self.pad([prompts[i] for i in batch], side)
                generated = self.model.generate(
                    input_ids=ids.to(self.device),
                    attention_mask=mask.to(self.device),
                    generation_config=settings,
                ).cpu()
                yield batch, self._new_tokens(generated, ids), mask

    def logprobs(self, pairs: list[Pair], desc: str = "scoring") -> list[Score]:
        """(sum of token log-likelihoods, token count) of each continuation given its prompt."""
        # Longest first, so similar lengths share a batch and an out-of-memory shows early.
        out: list[Score] = [(0.0, 0)] * len(pairs)
        with self._inference():
            for batch in self._batches(pairs, lambda p: len(p[0]) + len(p[1]), True, desc):
                chunk = [pairs[i] for i in batch]
                if self.family == "seq2seq":
                    scores = self._seq2seq_logprobs(chunk)
                else:
                    scores = self._decoder_logprobs(chunk)
                for i, score in zip(batch, scores, strict=True):
                    out[i] = score
        return out

    def sequence_logprobs(
        self, sequences: list[tuple[list[int], int]], desc: str = "scoring"
    ) -> list[Score]:
        """Log-likelihood of each sequence's tokens from its start index on (the response),
        given the tokens before it; the response token count alongside."""
        # The first token has nothing before it to be predicted from.
        cuts = [max(start, 1) for _, start in sequences]
        pairs = [(seq[:cut], seq[cut:]) for (seq, _), cut in zip(sequences, cuts, strict=True)]
        return self.logprobs(pairs, desc)

    def choice_logprobs(
        self, prompts: list[list[int]], choices: list[list[int]], desc: str = "scoring"
    ) -> list[list[Score]]:
        """(sum of token log-likelihoods, token count) of every choice after every prompt.

        Each prompt is run once: a decoder continues it from the cached keys and values
        (one-token choices need no further pass at all), a seq2seq model reuses the
        encoder output. Same numbers as :meth:`logprobs` on all the pairs, ~k times cheaper.
        """
        out: list[list[Score]] = [[] for _ in prompts]
        with self._inference():
            for batch in self._batches(prompts, len, True, desc):
                chunk = [prompts[i] for i in batch]
                if self.family == "seq2seq":
                    scores = self._seq2seq_choices(chunk, choices)
                else:
                    scores = self._decoder_choices(chunk, choices)
                for i, row in zip(batch, scores, strict=True):
                    out[i] = row
        return out

    # ------------------------------------------------------------ batching and padding

    def pad(self, seqs: list[list[int]], side: str):
        """(input_ids, attention_mask) of token lists padded to the longest, on ``side``."""
        return pad(seqs, self.tokenizer.pad_token_id, side)

    def _left_padded(self, seqs: list[list[int]]):
        """Left-padded ids and mask, and the position of each real token (from 0)."""
        ids, mask = self.pad(seqs, "left")
        return ids, mask, (mask.cumsum(-1) - 1).clamp(min=0)

    def _batches(self, items: list, length, longest_first: bool, desc: str) -> Iterator[list[int]]:
        order = list(range(len(items)))
        if longest_first:
            order.sort(key=lambda i: -length(items[i]))
        batches = [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        if not self.progress:
            return iter(batches)
        from tqdm.auto import tqdm

        return iter(tqdm(batches, total=len(batches), desc=desc, leave=False))

    @contextlib.contextmanager
    def _inference(self):
        """Eval mode, no gradients, optional autocast; time counted; the mode restored."""
        import torch

        was_training = self.model.training
        self.model.eval()
        autocast = (
            torch.autocast(torch.device(self.device).type, dtype=self.autocast)
            if self.autocast is not None
            else contextlib.nullcontext()
        )
        started = time.perf_counter()
        try:
            with torch.no_grad(), autocast:
                yield
        finally:
            self.seconds += time.perf_counter() - started
            self.model.train(was_training)

    def _new_tokens(self, generated, ids):
        """The generated tokens after the prompt. A decoder returns prompt + answer, except
        peft prompt learning, which generates from embeddings and returns the answer only."""
        import torch

        width = ids.shape[1]
        if (
            self.family == "decoder"
            and generated.shape[1] >= width
            and torch.equal(generated[:, :width], ids)
        ):
            return generated[:, width:]
        return generated

    # ------------------------------------------------------------ decoder scoring

    def _decoder_logprobs(self, chunk: list[Pair]) -> list[Score]:
        import torch

        longest = max(len(cont) for _, cont in chunk)
        if longest == 0:
            return [(0.0, 0) for _ in chunk]
        seqs = [prompt + cont for prompt, cont in chunk]
        # Left padding: every continuation ends at the last position, so only the last
        # (longest continuation + 1) positions need logits (logits_to_keep).
        ids, mask, positions = self._left_padded(seqs)
        kwargs = {"logits_to_keep": longest + 1} if self.keep_logits else {}
        logits = self.model(
            input_ids=ids.to(self.device),
            attention_mask=mask.to(self.device),
            position_ids=positions.to(self.device),
            **kwargs,
        ).logits
        logits = logits[:, -(longest + 1) : -1].float()  # position t predicts token t + 1
        logp = torch.log_softmax(logits, dim=-1)
        targets = ids[:, -longest:].to(self.device)
        token_logp = logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1).cpu()
        self.tokens += int(mask.sum())
        return [
            (float(token_logp[row, longest - len(cont) :].sum()), len(cont))
            for row, (_, cont) in enumerate(chunk)
        ]

    def _decoder_choices(self, chunk: list[list[int]], choices) -> list[list[Score]]:
        import copy

        import torch

        ids, mask, positions = self._left_padded(chunk)
        rows = len(chunk)
        multi = any(len(c) > 1 for c in choices)
        kwargs = {"logits_to_keep": 1} if self.keep_logits else {}
        output = self.model(
            input_ids=ids.to(self.device),
            attention_mask=mask.to(self.device),
            position_ids=positions.to(self.device),
            use_cache=multi,
            **kwargs,
        )
        self.tokens += int(mask.sum())
        first = torch.log_softmax(output.logits[:, -1].float(), dim=-1).cpu()
        cache = output.past_key_values if multi else None
        lengths = mask.sum(-1, keepdim=True)
        totals = torch.zeros((rows, len(choices)))
        for j, cont in enumerate(choices):
            totals[:, j] = first[:, cont[0]]
            if len(cont) == 1:
                continue
            # Feed the choice's tokens but the last; each predicts the next one.
            step = torch.tensor([cont[:-1]]).repeat(rows, 1)
            extra = step.shape[1]
            croppable = getattr(cache, "is_croppable", True) and hasattr(cache, "crop")
            past = cache if croppable else copy.deepcopy(cache)
            logits = self.model(
                input_ids=step.to(self.device),
                attention_mask=torch.cat([mask, torch.ones((rows, extra), dtype=torch.long)], 1).to(
                    self.device
                ),
                position_ids=(lengths + torch.arange(extra)).to(self.device),
                past_key_values=past,
                use_cache=True,
            ).logits.float()
            logp = torch.log_softmax(logits, dim=-1).cpu()
            targets = torch.tensor([cont[1:]]).repeat(rows, 1).unsqueeze(-1)
            totals[:, j] += logp.gather(-1, targets).squeeze(-1).sum(-1)
            self.tokens += rows * extra
            if croppable:
                cache.crop(-extra)  # back to the bare prompt for the next choice
        return [[(float(totals[r, j]), len(c)) for j, c in enumerate(choices)] for r in range(rows)]

    # ------------------------------------------------------------ seq2seq scoring

    def _seq2seq_logprobs(self, chunk: list[Pair]) -> list[Score]:
        import torch

        ids, mask = self.pad([prompt for prompt, _ in chunk], "right")
        tgt_width = max(len(c) for _, c in chunk)
        labels = torch.full((len(chunk), tgt_width), -100, dtype=torch.long)
        for row, (_, cont) in enumerate(chunk):
            labels[row, : len(cont)] = torch.tensor(cont)
        logits = self.model(
            input_ids=ids.to(self.device),
            attention_mask=mask.to(self.device),
            labels=labels.to(self.device),
        ).logits.float()
        logp = torch.log_softmax(logits, dim=-1)
        valid = labels != -100
        token_logp = logp.gather(-1, labels.clamp(min=0).to(self.device).unsqueeze(-1))
        token_logp = token_logp.squeeze(-1).cpu() * valid
        self.tokens += int(mask.sum()) + int(valid.sum())
        return [(float(token_logp[row].sum()), len(cont)) for row, (_, cont) in enumerate(chunk)]

    def _seq2seq_choices(self, chunk: list[list[int]], choices) -> list[list[Score]]:
        import torch

        ids, mask = self.pad(chunk, "right")
        ids, mask = ids.to(self.device), mask.to(self.device)
        encoded = self.model.get_encoder()(input_ids=ids, attention_mask=mask)
        self.tokens += int(mask.sum())
        totals = torch.zeros((len(chunk), len(choices)))
        for j, cont in enumerate(choices):
            labels = torch.tensor([cont]).repeat(len(chunk), 1).to(self.device)
            logits = self.model(
                encoder_outputs=encoded, attention_mask=mask, labels=labels
            ).logits.float()
            logp = torch.log_softmax(logits, dim=-1)
            totals[:, j] = logp.gather(-1, labels.unsqueeze(-1)).squeeze(-1).sum(-1).cpu()
            self.tokens += labels.numel()
        return [
            [(float(totals[r, j]), len(c)) for j, c in enumerate(choices)]
            for r in range(len(chunk))
        ]


def load(
    resolved,
    device,
    batch_size: int,
    trust_remote_code: bool = False,
    progress: bool = False,
) -> Engine:
    """Load a decoder or seq2seq model (in the device's dtype) and its tokenizer, for
    inference only. ``resolved`` is a :class:`tunelab.models.ResolvedModel`, ``device``
    a :class:`tunelab.train.common.DeviceChoice`."""
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

    from tunelab import models

    tokenizer = models.load_tokenizer(resolved, trust_remote_code=trust_remote_code)
    auto = AutoModelForCausalLM if resolved.family == "decoder" else AutoModelForSeq2SeqLM
    model = auto.from_pretrained(
        str(resolved.path), dtype=device.torch_dtype, trust_remote_code=trust_remote_code
    )
    model.to(device.device)
    model.eval()
    engine = Engine.for_model(model, tokenizer, resolved.family, batch_size, progress)
    engine.device = device.device
    return engine


def pad(seqs: list[list[int]], pad_token_id: int, side: str = "right"):
    """(input_ids, attention_mask) tensors of token lists padded to the longest on ``side``
    ("left" or "right")."""
    import torch

    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for row, seq in enumerate(seqs):
        span = slice(width - len(seq), width) if side == "left" else slice(0, len(seq))
        ids[row, span] = torch.tensor(seq, dtype=torch.long)
        mask[row, span] = 1
    return ids, mask
