"""Instruction data: formats, templates, masking, EOS, overflow, packing (tiny random decoders)."""
from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from tunesmith.errors import TunesmithError
from tunesmith.tasks.sft.data import (IGNORE, PLAIN_HEADERS, Conversation, encode, load_conversations, pack,
                                      render_prompt)
from tunesmith.tasks.sft.steps import collate_sft, response_loss, token_losses


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.parametrize("rows,fmt,prompt,response", [
    ([{"instruction": "Add", "input": "1 2", "output": "3"}], "alpaca", "Add\n\n1 2", "3"),
    ([{"instruction": "Why?", "context": "", "response": "Because", "category": "x"}], "dolly", "Why?", "Because"),
    ([{"prompt": "Hi", "completion": "Hello"}], "prompt_completion", "Hi", "Hello"),
    ([{"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "Q"},
                    {"role": "assistant", "content": "A"}]}], "messages", "Q", "A"),
])
def test_sft_formats_detected(tmp_path, rows, fmt, prompt, response):
    convs, found, _ = load_conversations(_jsonl(tmp_path / "d.jsonl", rows))
    assert found == fmt
    assert convs[0].prompt[-1]["content"] == prompt and convs[0].response == response


def test_sft_column_override_and_errors(tmp_path):
    p = tmp_path / "d.csv"
    pd.DataFrame({"question": ["q1", "q2", ""], "answer": ["a1", "", "a3"]}).to_csv(p, index=False)
    with pytest.raises(TunesmithError, match="cannot tell the instruction format"):
        load_conversations(p)
    convs, fmt, skipped = load_conversations(p, "question", "answer")
    assert fmt == "columns" and [c.row for c in convs] == [0] and skipped["empty_prompt_or_response"] == 2
    with pytest.raises(TunesmithError, match="no column 'nope'"):
        load_conversations(p, "nope", "answer")


def test_sft_plain_template_masks_prompt_and_ends_with_eos(tiny_models):
    tok = AutoTokenizer.from_pretrained(tiny_models["llama"])
    assert not tok.chat_template
    c = Conversation([{"role": "user", "content": "name a colour"}], "blue", 0)
    data, _ = encode(tok, [c], 64)
    ids, labels = data.ids[0], data.labels[0]
    p = render_prompt(tok, c.prompt)
    assert ids[0] == tok.bos_token_id and ids[:len(p)] == p
    assert tok.decode(p[1:]).replace(" ", "").endswith(PLAIN_HEADERS["assistant"].lower().replace(" ", "").strip())
    assert all(y == IGNORE for y in labels[:len(p)])
    assert labels[len(p):] == ids[len(p):] and ids[-1] == tok.eos_token_id
    full, _ = encode(tok, [c], 64, train_on_prompt=True)
    assert full.labels[0][0] == IGNORE and full.labels[0][1:] == full.ids[0][1:]


def test_sft_chat_template_used_when_present(tiny_models, tmp_path):
    tok = AutoTokenizer.from_pretrained(tiny_models["llama"])
    tok.chat_template = "{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}" \
                        "{% if add_generation_prompt %}<assistant>{% endif %}"
    ids = render_prompt(tok, [{"role": "user", "content": "hello"}])
    assert tok.decode(ids).replace(" ", "") == "<user>hello<assistant>"


def test_sft_overflow_counted_drop_and_truncate(tiny_models):
    tok = AutoTokenizer.from_pretrained(tiny_models["gpt2"])
    short = Conversation([{"role": "user", "content": "hi"}], "ok", 0)
    long_prompt = Conversation([{"role": "user", "content": "word " * 200}], "fine", 1)
    long_answer = Conversation([{"role": "user", "content": "hi"}], "word " * 200, 2)
    dropped, c = encode(tok, [short, long_prompt, long_answer], 32, "drop")
    assert dropped.rows == [0] and c == {"rows": 3, "over_max_length": 2, "dropped": 2, "truncated": 0}
    cut, c = encode(tok, [short, long_prompt, long_answer], 32, "truncate")
    assert cut.rows == [0, 1] and c["truncated"] == 1 and c["dropped"] == 1  # an answer is never cut
    x, y = cut.ids[1], cut.labels[1]
    assert len(x) == 32 and x[-1] == tok.eos_token_id
    resp = tok("fine", add_special_tokens=False)["input_ids"]
    assert x[-1 - len(resp):-1] == resp and y[-1 - len(resp):] == x[-1 - len(resp):]


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_sft_packed_loss_equals_unpacked(tiny_models, arch):
    tok = AutoTokenizer.from_pretrained(tiny_models[arch])
    model = AutoModelForCausalLM.from_pretrained(tiny_models[arch]).eval()
    convs = [Conversation([{"role": "user", "content": f"question {i} " * (i + 1)}], f"answer {i} " * (3 - i % 3), i)
             for i in range(6)]
    data, _ = encode(tok, convs, 64)
    packed = pack(data, 64)
    assert len(packed.units) < len(data)  # something was actually packed
    with torch.no_grad():
        a = response_loss(model, data, tok.pad_token_id, 2, False, torch.device("cpu"))["per_example"]
        b = collate_sft(packed, packed.units, tok.pad_token_id)
        loss, seg, _ = token_losses(model, b)
        per = torch.zeros(len(data), dtype=torch.float64).index_add_(0, seg, loss.double())
    torch.testing.assert_close(per, a, rtol=1e-4, atol=1e-4)
    # and the check can fail: without position restarts the examples see each other
    b["position_ids"] = torch.arange(b["input_ids"].shape[1]).expand_as(b["input_ids"])
    with torch.no_grad():
        loss2, seg2, _ = token_losses(model, b)
    per2 = torch.zeros(len(data), dtype=torch.float64).index_add_(0, seg2, loss2.double())
    assert not torch.allclose(per2, a, rtol=1e-4, atol=1e-4)


def test_sft_verdict_calls_a_win_only_outside_noise():
    from tunesmith.tasks.sft.run import verdict

    def gen(each):
        return {"n": len(each), "rouge_l": sum(each) / len(each), "rouge_l_each": each, "stop_rate": 1.0}

    def metrics(after, zero, few):
        return {"before": {"loss": 2.0, "perplexity": 7.4}, "after": {"loss": 1.5, "perplexity": 4.5,
                "generation": gen(after)}, "baselines": {"zero_shot": gen(zero), "few_shot_retrieval":
                {**gen(few), "k": 3}}}

    base = [0.2, 0.3, 0.25, 0.22, 0.28, 0.3, 0.21, 0.26]
    clear = verdict(metrics([x + 0.3 for x in base], base, base))
    assert clear.startswith("verdict: fine-tuning beat every prompting baseline")
    noisy = verdict(metrics([x + (0.05 if i % 2 else -0.05) for i, x in enumerate(base)], base, base))
    assert "no measurable difference" in noisy and "95% CI" in noisy
    lost = verdict(metrics(base, base, [x + 0.3 for x in base]))
    assert "did NOT beat the retrieval 3-shot base model" in lost
