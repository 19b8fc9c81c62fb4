"""SFT runs are served with POST /generate (the Predictor over the sft task's inference hooks underneath)."""
import json

from fastapi.testclient import TestClient

from tunesmith import api
from tunesmith.serve.app import Limits, create_app


def test_generate_endpoint_answers_and_validates(tiny_models, tmp_path):
    rows = [{"instruction": f"say the colour number {i}", "input": "", "output": "red"} for i in range(32)]
    data = tmp_path / "qa.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    run = api.train(str(data), task="sft", model=str(tiny_models["llama"]), strategy="full", epochs=8, lr=1e-2,
                    bf16="off", batch_size=8, max_length=48, warmup_ratio=0.0, patience=0, max_new_tokens=12,
                    eval_generations=2, few_shot_k=0, out=str(tmp_path / "run"))
    with TestClient(create_app(run.path, Limits(max_new_tokens=16)), base_url="http://localhost") as c:
        r = c.post("/generate", json={"prompts": ["say the colour number 99", "say the colour number 7 " * 40],
                                      "max_new_tokens": 10})
        assert r.status_code == 200
        g = r.json()["generations"]
        # Whether a tiny model has learnt to stop after 32 steps varies with thread count and test order
        # (tests/sft checks stopping itself); here: it learnt the answer, and `stopped` tells the truth.
        assert g[0]["text"].startswith("red") and not g[0]["truncated"]
        assert g[0]["stopped"] == (len(g[0]["text"].split()) < 10)  # "red" is one token; limit 10
        assert g[1]["truncated"]  # longer than max_length: cut from the left and flagged
        assert c.post("/generate", json={"prompts": ["x"], "max_new_tokens": 99}).status_code == 422
        assert c.post("/predict", json={"texts": ["x"]}).json()["error"]["code"] == "not_found"
        assert c.get("/info").json()["task"] == "sft"
