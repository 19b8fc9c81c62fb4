"""One inference path: a run folder loaded once → encode → batched forward → records with the run's
calibrated temperature. `tunesmith predict` and `evaluate`, `serve`, export parity, the merge sweep and
`generate`/`chat` all go through it.

What differs per task is the task's inference hooks (tasks/base.py): load_inference_model, from_run,
read_inputs, encode_inputs, outputs, records (tasks/classification/inference.py, tasks/sft/inference.py).
The settings come from one place, model/tunesmith.json (run.inference_settings); the device from
accel.run_device and bf16 from the run's --bf16 setting through accel.precision.use_bf16, as in training.
"""
from __future__ import annotations

from tunesmith.run import Run, inference_settings, open_run

# Rows per forward pass, wherever a Predictor runs. inference_batches sorts rows by length, so a batch of
# 128 short texts is still a small matrix: measured 8% faster than 64 on CPU (MiniLM, 2 cores); at 512
# tokens its activations stay far inside a GPU's memory. (Generation batches fewer: tasks/sft/inference.py.)
BATCH_SIZE = 128


def bf16_for(setting: str, device) -> bool:
    """bf16 where the device computes it fast, unless the run's setting is off: the same rule as training."""
    from tunesmith.accel.precision import use_bf16

    return use_bf16(setting, device)


class Predictor:
    """A model with its tokenizer, task and settings, ready to answer. `Predictor.load(run)` for a run
    folder; the constructor for a model already in memory (the merge sweep scores each merged point)."""

    def __init__(self, task, model, tok, *, max_length: int, temperature: float = 1.0, bf16: bool = False,
                 device=None, settings: dict | None = None, run: Run | None = None):
        import torch

        from tunesmith.accel import run_device

        self.task, self.tok, self.run, self.bf16 = task, tok, run, bf16
        self.max_length, self.temperature = int(max_length), float(temperature)
        self.device = torch.device(device) if device is not None else run_device()
        self.model = model.to(self.device).eval()
        self.settings = {**(settings or {}), "max_length": self.max_length, "temperature": self.temperature}

    @classmethod
    def load(cls, run, *, model=None, tok=None, device=None, bf16: bool | None = None) -> "Predictor":
        """The run's model/ (a Run or its folder) with its settings. `model` and `tok`: ones already loaded;
        `device` and `bf16`: instead of the run's (export parity compares in fp32 on the CPU)."""
        import torch

        from tunesmith.accel import run_device
        from tunesmith.tasks import get_task_class

        run = run if isinstance(run, Run) else open_run(run)
        s = inference_settings(run)
        task_cls = get_task_class(s["task"])
        if model is None:
            model, tok = task_cls.load_inference_model(run.model_dir)
        device = torch.device(device) if device is not None else run_device()
        return cls(task_cls.from_run(run, model.config), model, tok, max_length=s["max_length"],
                   temperature=s["temperature"], bf16=bf16_for(s["bf16"], device) if bf16 is None else bf16,
                   device=device, settings=s, run=run)

    def with_model(self, model) -> "Predictor":
        """The same task, tokenizer and settings with another model (export: the copy read back from disk)."""
        return Predictor(self.task, model, self.tok, max_length=self.max_length, temperature=self.temperature,
                         bf16=self.bf16, device=self.device, settings=self.settings, run=self.run)

    # ---- the path: encode → forward → records ---------------------------------------------------------------
    def encode(self, items, with_cut: bool = True) -> tuple[list, list[bool]]:
        """Token ids (cut to max_length as the task cuts) and which items were cut. Knowing which were cut
        may cost a second tokenization of the long ones: only the server's records report it."""
        return self.task.encode_inputs(self.tok, list(items), self.max_length, with_cut=with_cut)

    def forward(self, ids, **options):
        """The task's raw outputs (classifiers: logits) of encoded items, in input order. `options`: the
        task's forward settings (sft: max_new_tokens); None or absent takes the run's."""
        opts = {**self.task.options(self.settings), **{k: v for k, v in options.items() if v is not None}}
        return self.task.outputs(self.model, self.tok, ids, BATCH_SIZE, self.bf16, self.device, **opts)

    def outputs(self, items, **options):
        return self.forward(self.encode(items, with_cut=False)[0], **options)

    def records(self, items, *, with_cut: bool = True, **options) -> list[dict]:
        """One dict per item (classifiers: label, labels, score, scores; sft: text, tokens, stopped), with
        `truncated`: the item was longer than the model reads and was cut (False for all without with_cut)."""
        ids, cut = self.encode(items, with_cut)
        recs = self.task.records(self.forward(ids, **options), self.temperature)
        return [{**r, "truncated": c} for r, c in zip(recs, cut)]

    __call__ = records

    # ---- what the API and the server ask -------------------------------------------------------------------
    def _recipe(self, key):
        return self.run.recipe.get(key) if self.run is not None else None

    def predict(self, data, text_column: str | None = None):
        """The input table (a data file, or a list) with the task's prediction columns added."""
        frame, items = self.task.read_inputs(data, text_column or self._recipe("text_column"))
        for name, values in self.task.columns(self.records(items, with_cut=False)).items():
            frame[name] = values
        return frame

    def evaluate(self, data, text_column: str | None = None, label_column: str | None = None) -> dict:
        """Metrics (and loss) on a labelled file."""
        items, targets = self.task.read_labelled(data, text_column or self._recipe("text_column"),
                                                 label_column or self._recipe("label_column"))
        return self.task.score(self.outputs(items), targets)

    def info(self) -> dict:
        """The task, its labels and the settings a client sees; `metrics`: the run's held-out ones."""
        m = self.run.metrics if self.run is not None else {}
        return {**self.task.info(), "max_length": self.max_length,
                **{k: self.settings[k] for k in self.task.public_settings},
                "metrics": {k: m[k] for k in self.task.public_metrics if k in m}}
