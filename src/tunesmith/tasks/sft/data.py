"""Instruction data for supervised fine-tuning: format detection, prompt rendering, tokenization,
loss masks, overflow accounting and packing.

Every row becomes a conversation: `prompt` (role/content turns) and the `response` to learn.

Formats (column names, case-insensitive):
  alpaca   instruction, input (optional), output
  dolly    instruction, context (optional), response
  prompt   prompt, completion
  messages messages = list of {role, content}; the last assistant turn is the response
or any pair given with --prompt-column/--response-column.

Prompt rendering: the tokenizer's chat template when it has one; otherwise the plain template

  ### System:\n{system}\n\n          (only when there is a system turn)
  ### Instruction:\n{user turn}\n\n
  ### Response:\n{assistant turn}\n\n   (earlier turns of a conversation, few-shot examples)
  ### Instruction:\n{last user turn}\n\n
  ### Response:\n                      ← the model continues here

The response tokens are always followed by the tokenizer's EOS so the tuned model learns to stop.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

import pandas as pd

from tunesmith.data.io import read_table
from tunesmith.errors import TunesmithError

IGNORE = -100  # label of positions that carry no loss (prompt, padding)

FORMATS = {  # name → (prompt column, optional extra column, response column)
    "alpaca": ("instruction", "input", "output"),
    "dolly": ("instruction", "context", "response"),
    "prompt_completion": ("prompt", None, "completion"),
}
PLAIN_HEADERS = {"system": "### System:\n", "user": "### Instruction:\n", "assistant": "### Response:\n"}


@dataclass
class Conversation:
    prompt: list[dict]          # turns before the answer
    response: str
    row: int                    # 0-based data row in the source file


@dataclass
class SFTData:
    """Tokenized examples; `units` groups examples into training rows (one each, or packed)."""
    ids: list[list[int]]
    labels: list[list[int]]
    rows: list[int]
    units: list[list[int]] = field(default_factory=list)

    def __post_init__(self):
        if not self.units:
            self.units = [[i] for i in range(len(self.ids))]

    def __len__(self):
        return len(self.ids)

    def unit_lengths(self) -> list[int]:
        return [sum(len(self.ids[i]) for i in u) for u in self.units]


def _text(v) -> str:
    if v is None or (isinstance(v, float) and pd.isna(v)):
        return ""
    return str(v).strip()


def detect_format(frame: pd.DataFrame, path, prompt_column=None, response_column=None) -> tuple[str, dict]:
    """(format name, {role: actual column name}); explicit columns win over detection."""
    cols = {c.lower(): c for c in frame.columns}
    if prompt_column or response_column:
        if not (prompt_column and response_column):
            raise TunesmithError(f"{path}: pass both --prompt-column and --response-column")
        for c in (prompt_column, response_column):
            if c not in frame.columns:
                raise TunesmithError(f"{path}: no column '{c}'; columns are {', '.join(map(str, frame.columns))}")
        return "columns", {"prompt": prompt_column, "response": response_column}
    if "messages" in cols:
        return "messages", {"messages": cols["messages"]}
    for name, (p, extra, r) in FORMATS.items():
        if p in cols and r in cols:
            found = {"prompt": cols[p], "response": cols[r]}
            if extra and extra in cols:
                found["extra"] = cols[extra]
            return name, found
    raise TunesmithError(f"{path}: cannot tell the instruction format from columns "
                         f"{', '.join(map(str, frame.columns))}; expected instruction/input/output, "
                         f"instruction/context/response, prompt/completion or messages, "
                         f"or pass --prompt-column and --response-column")


def _messages(v, path, row) -> list[dict]:
    if isinstance(v, str):
        try:
            v = json.loads(v)
        except json.JSONDecodeError:
            raise TunesmithError(f"{path}: row {row}, column 'messages' is not a JSON list of turns") from None
    if not isinstance(v, (list, tuple)) or not all(isinstance(t, dict) and "role" in t and "content" in t for t in v):
        raise TunesmithError(f"{path}: row {row}, column 'messages' must be a list of {{role, content}} turns")
    return [{"role": str(t["role"]), "content": _text(t["content"])} for t in v]


def instruction_format(path, prompt_column=None, response_column=None) -> str | None:
    """The instruction format of a data file, or None when its columns are not one (`--task auto`)."""
    try:
        return detect_format(read_table(path), path, prompt_column, response_column)[0]
    except TunesmithError:
        return None


def load_conversations(path, prompt_column=None, response_column=None) -> tuple[list[Conversation], str, dict]:
    """Conversations of a file, its format, and counts of rows skipped for being empty."""
    frame = read_table(path)
    fmt, cols = detect_format(frame, path, prompt_column, response_column)
    convs, skipped = [], {"empty_prompt_or_response": 0, "no_assistant_turn": 0}
    for i, rec in enumerate(frame.to_dict("records")):
        if fmt == "messages":
            turns = _messages(rec[cols["messages"]], path, i)
            last = max((k for k, t in enumerate(turns) if t["role"] == "assistant"), default=None)
            if last is None or last == 0:
                skipped["no_assistant_turn"] += 1
                continue
            prompt, response = turns[:last], turns[last]["content"]
        else:
            text = _text(rec[cols["prompt"]])
            extra = _text(rec.get(cols.get("extra"))) if "extra" in cols else ""
            prompt = [{"role": "user", "content": f"{text}\n\n{extra}" if extra else text}]
            response = _text(rec[cols["response"]])
        if not response or not prompt[-1]["content"]:
            skipped["empty_prompt_or_response"] += 1
            continue
        convs.append(Conversation(prompt, response, i))
    if not convs:
        raise TunesmithError(f"{path}: no usable rows (every row lacks a prompt or a response)")
    return convs, fmt, skipped


def prompt_text(turns: list[dict]) -> str:
    """The last user turn: what retrieval compares and reports show."""
    return next((t["content"] for t in reversed(turns) if t["role"] == "user"), turns[-1]["content"])


def render_prompt(tok, turns: list[dict]) -> list[int]:
    """Token ids of the prompt, ending where the model should start answering."""
    if getattr(tok, "chat_template", None):
        text = tok.apply_chat_template(turns, tokenize=False, add_generation_prompt=True)
        return tok(text, add_special_tokens=False)["input_ids"]
    text = "".join(PLAIN_HEADERS.get(t["role"], f"### {t['role'].title()}:\n") + t["content"] + "\n\n"
                   for t in turns) + PLAIN_HEADERS["assistant"]
    ids = tok(text, add_special_tokens=False)["input_ids"]
    # BOS as the model saw it in pretraining; tokenizers whose BOS is EOS (GPT-2) gain nothing from it.
    if tok.bos_token_id is not None and tok.bos_token_id != tok.eos_token_id:
        ids = [tok.bos_token_id] + ids
    return ids


def response_ids(tok, response: str) -> list[int]:
    if tok.eos_token_id is None:
        raise TunesmithError("the tokenizer has no EOS token; the tuned model could never learn to stop. "
                             "Use a tokenizer with an eos_token")
    return tok(response, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]


def encode(tok, convs: list[Conversation], max_length: int, overflow: str = "drop",
           train_on_prompt: bool = False) -> tuple[SFTData, dict]:
    """Token ids and labels (prompt masked unless train_on_prompt); overflow counted, never silent."""
    ids, labels, rows = [], [], []
    counts = {"rows": len(convs), "over_max_length": 0, "dropped": 0, "truncated": 0}
    for c in convs:
        p, r = render_prompt(tok, c.prompt), response_ids(tok, c.response)
        if len(p) + len(r) > max_length:
            counts["over_max_length"] += 1
            keep = max_length - len(r)
            if overflow == "drop" or keep < 1:  # a response that cannot fit is never cut: drop the row
                counts["dropped"] += 1
                continue
            p = p[len(p) - keep:]  # cut from the prompt's start: the answer and the question's end stay
            counts["truncated"] += 1
        x = p + r
        y = (list(x) if train_on_prompt else [IGNORE] * len(p) + r)
        y[0] = IGNORE  # nothing predicts the first token; keeps packed and unpacked losses identical
        ids.append(x)
        labels.append(y)
        rows.append(c.row)
    return SFTData(ids, labels, rows), counts


def pack(data: SFTData, max_length: int) -> SFTData:
    """First-fit decreasing into rows of at most max_length tokens. Examples never cross rows; the
    collator restarts position ids per example, which keeps attention inside each example."""
    order = sorted(range(len(data)), key=lambda i: len(data.ids[i]), reverse=True)
    bins, room = [], []
    for i in order:
        n = len(data.ids[i])
        for b, left in enumerate(room):
            if n <= left:
                bins[b].append(i)
                room[b] -= n
                break
        else:
            bins.append([i])
            room.append(max_length - n)
    return SFTData(data.ids, data.labels, data.rows, bins)


def split(convs: list, fraction: float, seed: int) -> tuple[list, list]:
    """Random split (no labels to stratify by); the order of each part follows the file."""
    import numpy as np

    n_out = int(round(len(convs) * fraction))
    if fraction > 0 and len(convs) > 1:
        n_out = min(max(n_out, 1), len(convs) - 1)
    pick = set(np.random.default_rng(seed).permutation(len(convs))[:n_out].tolist())
    return [c for i, c in enumerate(convs) if i not in pick], [c for i, c in enumerate(convs) if i in pick]
