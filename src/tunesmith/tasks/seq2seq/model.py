"""Models that map text to text: an encoder-decoder checkpoint (T5, BART, Marian ...) as it is, or an
encoder (BERT-style, e.g. the built-in minilm) warm-started into a BERT2BERT encoder-decoder as Rothe et
al. 2020 ("Leveraging Pre-trained Checkpoints for Sequence Generation Tasks") do: the decoder starts from
the encoder's own weights, shared with it (tie_encoder_decoder; their best BERT2BERT variant on small data
halves the parameters), and only the cross-attention starts random."""
from __future__ import annotations

import logging
import warnings

from tunesmith.errors import TunesmithError


def kind(config) -> str:
    """"seq2seq" (an encoder-decoder), "encoder" (BERT-style: can be warm-started), or "decoder"."""
    from transformers.models.auto.modeling_auto import (MODEL_FOR_CAUSAL_LM_MAPPING_NAMES as CAUSAL,
                                                        MODEL_FOR_MASKED_LM_MAPPING_NAMES as MASKED)

    if getattr(config, "is_encoder_decoder", False):
        return "seq2seq"
    # an encoder with a masked-LM head that transformers can also run as a decoder with cross-attention
    if config.model_type in MASKED and config.model_type in CAUSAL:
        return "encoder"
    return "decoder"


def load(model_name: str):
    """(model, tokenizer, path) for --task seq2seq; a decoder-only model is one line pointing to sft."""
    import torch
    from transformers import AutoConfig, AutoModelForSeq2SeqLM

    from tunesmith.models.load import load_tokenizer
    from tunesmith.models.registry import check_hub, resolve

    path = resolve(model_name)
    check_hub(path)
    config = AutoConfig.from_pretrained(path)
    k = kind(config)
    tok = load_tokenizer(path)
    if k == "decoder":
        raise TunesmithError(f"model '{model_name}' ({config.model_type}) is a decoder only; --task seq2seq takes an "
                             f"encoder-decoder (T5, BART, Marian) or an encoder to warm-start (BERT-style, e.g. "
                             f"minilm). For a decoder, train the pairs with --task sft")
    if k == "seq2seq":
        try:
            model = AutoModelForSeq2SeqLM.from_pretrained(path, dtype=torch.float32)
        except ValueError as e:
            raise TunesmithError(f"model '{model_name}' ({config.model_type}) cannot generate text from text: "
                                 f"{str(e).splitlines()[0]}") from None
    else:
        model = warm_start(path, tok)
    gen = model.generation_config
    if config.is_encoder_decoder and model.config.decoder_start_token_id is None and gen.decoder_start_token_id is None:
        raise TunesmithError(f"model '{model_name}' has no decoder_start_token_id in its config; set it there")
    if gen.eos_token_id is None:
        raise TunesmithError(f"model '{model_name}' has no EOS token: it could never learn to stop")
    return model, tok, path


def warm_start(path: str, tok):
    """BERT2BERT from one encoder folder: decoder = the encoder's layers with causal self-attention and new
    cross-attention, weights tied. Decoding starts at [CLS] and ends at [SEP] (the tokenizer's own frame)."""
    from transformers import EncoderDecoderModel

    if tok.cls_token_id is None or tok.sep_token_id is None:
        raise TunesmithError(f"{path}: warm-starting an encoder needs a tokenizer with [CLS] and [SEP] tokens")
    prev = logging.getLogger("transformers").level
    logging.getLogger("transformers").setLevel(logging.ERROR)  # "cross-attention newly initialized" is expected
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = EncoderDecoderModel.from_encoder_decoder_pretrained(path, path, tie_encoder_decoder=True)
    finally:
        logging.getLogger("transformers").setLevel(prev)
    shared(model.encoder, model.decoder, tie=True)
    ids = {"decoder_start_token_id": tok.cls_token_id, "bos_token_id": tok.cls_token_id,
           "eos_token_id": tok.sep_token_id, "pad_token_id": tok.pad_token_id}
    for k, v in ids.items():
        setattr(model.config, k, v)
        setattr(model.generation_config, k, v)
    model.config.vocab_size = model.config.decoder.vocab_size
    # WordPiece decodes "don ' t" unless cleaned (BERT's own default, off in transformers 5); saved with the
    # tokenizer, so a plain decode of model/ reads the same text
    tok.clean_up_tokenization_spaces = tok.init_kwargs["clean_up_tokenization_spaces"] = True  # init_kwargs: saved
    return model


def start_id(model) -> int:
    """The token the decoder starts from (labels are shifted right behind it)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    sid = base.config.decoder_start_token_id
    return sid if sid is not None else base.generation_config.decoder_start_token_id


def shared(encoder, decoder, tie: bool) -> int:
    """tie: the decoder's base model takes the encoder's parameter of the same name and shape (all but its
    cross-attention). Untie (before save_pretrained: safetensors refuses shared tensors): copies. The
    decoder's LM head stays tied to its input embedding either way. Returns the parameters (un)tied.

    By hand: transformers 5 dropped EncoderDecoderModel's tie_encoder_decoder."""
    import torch

    enc = dict(encoder.named_parameters())
    ptrs = {p.data_ptr() for p in enc.values()}
    n = 0
    for name, mod in decoder.base_model.named_modules():
        for pn, p in list(mod.named_parameters(recurse=False)):
            full = f"{name}.{pn}" if name else pn
            if tie and full in enc and enc[full].shape == p.shape:
                setattr(mod, pn, enc[full])
                n += 1
            elif not tie and p.data_ptr() in ptrs:
                setattr(mod, pn, torch.nn.Parameter(p.detach().clone(), requires_grad=p.requires_grad))
                n += 1
    head = decoder.get_output_embeddings()
    if head is not None and getattr(decoder.config, "tie_word_embeddings", True):
        head.weight = decoder.get_input_embeddings().weight
    return n


def untie(model):
    """The model as save_pretrained can write it: a BERT2BERT's shared weights as equal copies."""
    if type(model).__name__ == "EncoderDecoderModel":
        shared(model.encoder, model.decoder, tie=False)
    return model


T5_FAMILY = ("t5", "mt5", "umt5", "longt5")  # config.model_type of the models whose activations overflow fp16


def precision(model_type: str, device_type: str, bf16: bool) -> tuple[str, str | None]:
    """(the compute precision, a line for the user or None). tunesmith computes in bf16 where the device does it
    fast (accel/precision.use_bf16) and in fp32 elsewhere; it has no fp16 path. A GPU without bf16 is where mixed
    precision usually means fp16, and T5-family models overflow there (feed-forward activations past fp16's 65504:
    inf, then a NaN loss), so for them the line says why it stays fp32."""
    if bf16:
        return "bf16", None
    if device_type == "cuda" and model_type in T5_FAMILY:
        return "fp32", (f"{model_type}: this GPU has no bf16, so training runs in fp32 (slower, twice the activation "
                        f"memory); not fp16: T5-family models overflow in fp16. A GPU with bf16 (Ampere or newer) "
                        f"runs it in bf16")
    return "fp32", None
