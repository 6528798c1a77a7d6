"""A small byte-level BPE tokenizer trained on the task corpus, with EXAONE 4.0's special tokens."""
from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from .chat_template import CHAT_TEMPLATE, END_OF_TURN, ROLE_TOKENS, THINK_CLOSE, THINK_OPEN

PAD, UNK, BOS = "[PAD]", "[UNK]", "[BOS]"
SPECIAL_TOKENS = [PAD, UNK, BOS, END_OF_TURN, *ROLE_TOKENS]


def train_tokenizer(corpus: Iterable[str], vocab_size: int = 768, numbers: str = "whole") -> PreTrainedTokenizerFast:
    """Byte-level BPE. `numbers="whole"`: a run of digits is a word of its own, so BPE makes each number
    of the corpus one token (while the vocabulary lasts) and a worked step's result is one prediction
    rather than one per digit. `"digits"`: one token per digit."""
    tok = Tokenizer(models.BPE(unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=numbers == "digits"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer=trainer)
    # Think tags are ordinary (non-special) added tokens: decoded text must keep them.
    tok.add_tokens([THINK_OPEN, THINK_CLOSE])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=END_OF_TURN,
        pad_token=PAD,
        unk_token=UNK,
        additional_special_tokens=list(ROLE_TOKENS),
        model_max_length=1024,
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast
