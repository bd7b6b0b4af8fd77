"""The notebook runs end to end as committed (so it never rots): executed with nbclient in a fresh kernel, as
``jupyter nbconvert --to notebook --execute notebooks/benchmark.ipynb`` would. It must show the comparison with
its verdict column and every figure inline (the report's PNGs and its own plot)."""
import pytest

from helpers import ROOT


@pytest.mark.slow
def test_benchmark_notebook_executes():
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.read(ROOT / "notebooks" / "benchmark.ipynb", as_version=4)
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(ROOT / "notebooks")}})
    client.execute()
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    assert any("decode_ms_speedup__onnxruntime" in str(o.get("data", {})) for o in outputs)
    assert any("decode verdicts of onnxruntime" in str(o.get("text", "")) for o in outputs)
    pngs = sorted((ROOT / "outputs" / "notebook" / "report" / "plots").glob("*.png"))
    shown = [o for o in outputs if "image/png" in o.get("data", {})]
    assert pngs and len(shown) >= len(pngs) + 1  # every report figure and the notebook's own plot
