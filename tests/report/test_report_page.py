"""report.html renders in a real browser (headless Chromium) with every image and no console errors."""
import json
import re
import shutil
import subprocess

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

import tunesmith
from tunesmith.cli import app

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--enable-logging=stderr", "--v=0"]

CHECK = """<script>
window.__errs = [];
window.addEventListener('error', e => __errs.push(e.message || ('failed to load ' + (e.target.alt || e.target.tagName))), true);
const _ce = console.error; console.error = (...a) => { __errs.push(a.join(' ')); _ce(...a); };
window.addEventListener('load', () => {
  const imgs = [...document.images];
  const r = {images: imgs.length, bad: imgs.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.alt),
             errors: __errs, h2: [...document.querySelectorAll('h2')].map(h => h.textContent)};
  const d = document.createElement('pre'); d.id = 'check'; d.textContent = JSON.stringify(r); document.body.appendChild(d);
});
</script>"""


@pytest.fixture(scope="session")
def chromium():
    exe = shutil.which("chromium") or "/usr/bin/chromium"
    if not shutil.which(exe):
        subprocess.run(["apt-get", "update"], check=True, capture_output=True)
        subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", "chromium"], check=True,
                       capture_output=True, env={"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
    return exe


def browse(exe, url, profile, *extra):
    p = subprocess.run([exe, *FLAGS, f"--user-data-dir={profile}", *extra, url], capture_output=True, text=True,
                       timeout=120)
    return p.stdout, [l for l in p.stderr.splitlines() if ":CONSOLE" in l]


@pytest.fixture(scope="module")
def run_dir(tiny_models, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("report")
    rows = [{"text": f"my {w} problem {i}", "label": l, "region": ["eu", "us"][i % 2]}
            for i in range(40) for l, w in (("billing", "invoice"), ("shipping", "parcel"), ("login", "password"))]
    pd.DataFrame(rows).to_csv(tmp / "d.csv", index=False)
    run = tunesmith.train(str(tmp / "d.csv"), model=str(tiny_models["bert"]), epochs=2, lr=1e-3, batch_size=16,
                          val_fraction=0.35, slice_column="region", out=str(tmp / "run"))
    return run.path


def check_page(chromium, html, tmp_path) -> dict:
    """A tunesmith page in headless Chromium: self-contained, no console message as shipped, and, in an
    instrumented copy (scripts allowed, network still blocked), every image decoded and no error. Returns
    the copy's findings (h2 titles, image count)."""
    page = html.read_text()
    assert not re.search(r'(src|href)="(https?:)?//', page)  # self-contained
    # 1) the page as shipped: no console messages (a blocked request or a script error would log one)
    dom, console = browse(chromium, html.as_uri(), tmp_path / "p1", "--dump-dom")
    assert "Verdict." in dom and console == []
    # 2) an instrumented copy (scripts allowed, network still blocked) checks every image decoded
    csp = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
    assert csp in page
    copy = tmp_path / "checked.html"
    copy.write_text(page.replace(csp, csp + "; script-src 'unsafe-inline'").replace("<style>", CHECK + "<style>", 1))
    dom, console = browse(chromium, copy.as_uri(), tmp_path / "p2", "--dump-dom", "--virtual-time-budget=10000")
    check = json.loads(re.search(r'<pre id="check">(.*?)</pre>', dom).group(1).replace("&quot;", '"'))
    assert check["bad"] == [] and check["errors"] == [] and console == []
    return check


def test_report_renders_in_chromium(run_dir, chromium, tmp_path):
    if not (run_dir / "audit.json").exists():  # the audit module's format: checks with rows and a fix
        (run_dir / "audit.json").write_text(json.dumps({"rows": 86, "checks": [
            {"name": "near_duplicates", "severity": "warning", "count": 2, "rows": [3, 17], "fix": "drop one"}]}))
    res = CliRunner().invoke(app, ["report", str(run_dir)])
    assert res.exit_code == 0, res.output
    check = check_page(chromium, run_dir / "report.html", tmp_path)
    assert check["images"] >= 6
    assert {"Fine-tuned vs baselines (test set)", "Training", "Errors and calibration", "Knowledge retention",
            "Data audit", "Recipe"} <= set(check["h2"]) and any(h.startswith("Slices") for h in check["h2"])


def test_model_card_front_matter_and_sections(run_dir):
    text = (run_dir / "MODEL_CARD.md").read_text()
    assert text.startswith("---\n")
    meta = yaml.safe_load(text.split("---\n")[1])
    results = meta["model-index"][0]["results"][0]
    assert meta["pipeline_tag"] == "text-classification" and results["task"]["type"] == "text-classification"
    f1 = next(x for x in results["metrics"] if x["type"] == "macro_f1")
    assert f1["args"]["ci95"][0] <= f1["value"] <= f1["args"]["ci95"][1]
    for section in ("## Intended use", "## Training data", "## Evaluation", "## Limitations found", "sha256"):
        assert section in text
    assert "region" in text and "calibration" in text.lower()


def test_report_command_on_a_folder_that_is_no_run(tmp_path):
    from tunesmith.errors import TunesmithError
    from tunesmith.pipeline import write_report

    with pytest.raises(TunesmithError, match="not a tunesmith run folder"):
        write_report(tmp_path)
