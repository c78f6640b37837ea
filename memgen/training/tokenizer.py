"""A character-level tokenizer saved as a Hugging Face ``PreTrainedTokenizerFast``.

Every character is one token; memorized answers (``<mem-1ee18056>``) are single added tokens so
that the model can emit a memorized answer in one step, as in the paper.
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

PAD, EOS, UNK = "<pad>", "<eos>", "<unk>"


def build_char_tokenizer(texts: Iterable[str], extra_tokens: Iterable[str] = ()) -> (
        PreTrainedTokenizerFast):
    """A tokenizer whose vocabulary is every character in ``texts`` plus ``extra_tokens``."""
    extra = list(dict.fromkeys(extra_tokens))
    chars = sorted({ch for text in texts for ch in text})
    vocab = {tok: i for i, tok in enumerate([PAD, EOS, UNK, *chars])}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    backend.decoder = decoders.Fuse()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token=PAD, eos_token=EOS,
                                        unk_token=UNK, padding_side="left")
    tokenizer.add_tokens(extra)
    return tokenizer
