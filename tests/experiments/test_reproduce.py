"""experiments/reproduce.py: the smoke setting writes results.md with finite mean ± std tables and its PNGs; the
statistics helpers; finished runs are reused; the TRACE section renders compare_trace's per-seed numbers."""
import importlib.util
import math
import os
import re
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
MEAN_STD = re.compile(r"(-?\d+(?:\.\d+)?|nan) ± (\d+(?:\.\d+)?|nan)")


@pytest.fixture(scope="module")
def reproduce():
    spec = importlib.util.spec_from_file_location("reproduce", os.path.join(ROOT, "experiments", "reproduce.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules["reproduce"] = module  # dataclasses resolve string annotations through sys.modules
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def smoke_run(reproduce, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("reproduce")
    argv = ["--smoke", "--sections", "objectives,selection", "--methods", "GRPO,LPO-fwd", "--seeds", "2",
            "--steps", "1", "--out", str(tmp / "docs"), "--runs", str(tmp / "runs")]
    return reproduce.main(argv), argv, tmp


def _section(page, title_start):
    start = page.index(f"## {title_start}")
    end = page.find("\n## ", start + 3)
    return page[start:end if end > 0 else len(page)]


def test_smoke_page_has_finite_tables_and_plots(smoke_run):
    result, _, tmp = smoke_run
    page = open(result["page"]).read()
    assert "python experiments/reproduce.py --smoke" in page and "CPU cores" in page
    for title, rows in (("Objectives", ("| GRPO |", "| LPO-fwd |", "| LPO-fwd − GRPO |")),
                        ("Prompt selection", ("| Uniform |",))):
        body = _section(page, title)
        for row in rows:
            assert row in body, (title, row)
        values = MEAN_STD.findall(body)
        assert len(values) >= 4, body
        for mean, std in values:
            assert math.isfinite(float(mean)) and math.isfinite(float(std)) and float(std) >= 0, (mean, std)
    pngs = [p for paths in result["sections"].values() for p in paths]
    assert len(pngs) == 3
    for png in pngs:
        assert os.path.dirname(png) == str(tmp / "docs")
        data = open(png, "rb").read()
        assert data[:8] == PNG_MAGIC and len(data) > 2000, png
        assert f"]({os.path.basename(png)})" in page  # linked relative to the page


def test_rerun_reuses_finished_runs(reproduce, smoke_run, capsys):
    _, argv, _ = smoke_run
    capsys.readouterr()
    reproduce.main(argv)
    out = capsys.readouterr().out
    assert out.count("reused") == 4, out  # 2 seeds x (GRPO, LPO-fwd = Uniform selection): nothing retrained


def test_accuracy_at_rollouts_and_first_reaching(reproduce):
    curve = [(0, 0, 0.5), (2, 64, 0.6), (4, 128, 0.7)]
    assert reproduce.accuracy_at_rollouts(curve, 64) == pytest.approx(0.6)
    assert reproduce.accuracy_at_rollouts(curve, 96) == pytest.approx(0.65)
    assert math.isnan(reproduce.accuracy_at_rollouts(curve, 129))
    assert reproduce.first_reaching(curve, 0.6) == (2, 64)
    assert reproduce.first_reaching(curve, 0.71) is None


def test_mean_std_and_mean_curve(reproduce):
    assert reproduce.mean_std([1.0, 3.0]) == (2.0, pytest.approx(math.sqrt(2.0)))
    assert reproduce.mean_std([float("nan"), 2.0]) == (2.0, 0.0)
    assert all(math.isnan(x) for x in reproduce.mean_std([]))
    records = [{"curve": [(0, 0, 0.0), (2, 10, 1.0)]}, {"curve": [(0, 0, 0.0), (1, 5, 0.0), (2, 10, 0.5)]}]
    x, m, s = reproduce.mean_curve(records, 0)
    np.testing.assert_allclose(x, [0, 1, 2])
    np.testing.assert_allclose(m, [0.0, 0.25, 0.75])
    np.testing.assert_allclose(s, [0.0, 0.25, 0.25])


def test_trace_section_renders_per_seed_numbers(reproduce, tmp_path):
    fake = tmp_path / "compare_trace.py"
    fake.write_text(
        "def compare(seeds, smoke, out_dir, log=None):\n"
        "    rows = lambda c, a: [{'contrast_ratio': c + 0.1 * s, 'nonzero_adv_frac': 0.5, 'accuracy': a}\n"
        "                         for s in seeds]\n"
        "    per_seed = {'trace': rows(0.6, 0.4), 'tree_random': rows(0.4, 0.3), 'grpo_flat': rows(0.2, 0.3)}\n"
        "    return {'benchmark': 'trace', 'equalized': 'tokens', 'methods': {}, 'per_seed': per_seed, 'plot': None}\n")
    sec = reproduce.section_trace([0, 1], True, str(tmp_path), lambda m: None, path=str(fake))
    assert "| TRACE | 0.650 ± 0.071 | 0.500 ± 0.000 | 0.400 ± 0.000 |" in sec["table"]
    assert "| flat GRPO | 0.250 ± 0.071 |" in sec["table"]
    notes = reproduce.findings({"trace": sec})
    assert any("contrast_ratio difference +0.400" in n for n in notes), notes
    missing = reproduce.section_trace([0], True, str(tmp_path), lambda m: None, path=str(tmp_path / "absent.py"))
    assert missing["table"].startswith("Not run") and missing["pngs"] == []
