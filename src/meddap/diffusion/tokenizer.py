"""An offline CLIP tokenizer: a byte-level BPE vocabulary learnt from the prompt words.

The embedded small model's ``CLIPTokenizer`` is built here, without downloading CLIP's
vocabulary: every byte is a token, and merges spell each word of the prompt vocabulary as one
token, as in the real CLIP vocabulary. ``bytes_to_unicode`` is CLIP's own byte table, also used
to rebuild CLIP ViT-L/14's tokenizer offline (``meddap.diffusion.base_models``).
"""

from __future__ import annotations

from collections import Counter


def bytes_to_unicode() -> dict[int, str]:
    """The GPT-2/CLIP reversible byte -> printable-unicode table."""
    printable = (
        list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    )
    codes = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(code) for code in codes)))


def learn_bpe(words: list[str]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """A CLIP-style byte-level BPE vocabulary whose merges spell every word in ``words`` as one token.

    Every byte (alone and as a word end ``</w>``) is in the vocabulary, so any text tokenizes;
    the words of the prompt vocabulary become single tokens, as in the real CLIP vocabulary.
    """
    byte_chars = list(bytes_to_unicode().values())
    vocab_tokens = byte_chars + [char + "</w>" for char in byte_chars]
    sequences: Counter[tuple[str, ...]] = Counter()
    for word in words:
        symbols = [bytes_to_unicode()[b] for b in word.lower().encode("utf-8")]
        if symbols:
            sequences[tuple(symbols[:-1]) + (symbols[-1] + "</w>",)] += 1
    merges: list[tuple[str, str]] = []
    while True:
        pairs: Counter[tuple[str, str]] = Counter()
        for sequence, count in sequences.items():
            for pair in zip(sequence, sequence[1:]):
                pairs[pair] += count
        if not pairs:
            break
        best = max(pairs, key=lambda pair: (pairs[pair], pair))
        merges.append(best)
        vocab_tokens.append(best[0] + best[1])
        merged: Counter[tuple[str, ...]] = Counter()
        for sequence, count in sequences.items():
            out, i = [], 0
            while i < len(sequence):
                if i + 1 < len(sequence) and (sequence[i], sequence[i + 1]) == best:
                    out.append(sequence[i] + sequence[i + 1])
                    i += 2
                else:
                    out.append(sequence[i])
                    i += 1
            merged[tuple(out)] += count
        sequences = merged
    vocab_tokens += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {token: index for index, token in enumerate(dict.fromkeys(vocab_tokens))}
    return vocab, merges


def build_tokenizer(words: list[str], max_length: int = 77):
    from transformers import CLIPTokenizer

    vocab, merges = learn_bpe(words)
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=max_length)
