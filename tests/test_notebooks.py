"""The analysis notebooks run headlessly on their default inputs and write their figures."""

import pathlib

import nbclient
import nbformat
import pytest

ANALYSIS = pathlib.Path(__file__).parents[1] / "analysis"
NOTEBOOKS = {
    "pareto_grids.ipynb": ["fig3_pareto_grids"],
    "scaling_laws.ipynb": ["fig2_scaling_laws"],
    "paper_pareto.ipynb": ["fig4_paper_pareto", "table7_speedups"],
}


def with_parameters(notebook: nbformat.NotebookNode, **values) -> nbformat.NotebookNode:
    """Inserts a cell setting `values` after the cell tagged "parameters" (papermill's rule)."""
    index = next(
        i for i, cell in enumerate(notebook.cells) if "parameters" in cell.metadata.get("tags", [])
    )
    source = "\n".join(f"{key} = {value!r}" for key, value in values.items())
    notebook.cells.insert(index + 1, nbformat.v4.new_code_cell(source))
    return notebook


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(NOTEBOOKS))
def test_notebook_runs_and_writes_its_figures(name, tmp_path):
    notebook = with_parameters(
        nbformat.read(ANALYSIS / name, as_version=4), FIGURE_DIR=str(tmp_path)
    )
    client = nbclient.NotebookClient(
        notebook, timeout=120, kernel_name="python3", resources={"metadata": {"path": ANALYSIS}}
    )
    client.execute()
    for figure in NOTEBOOKS[name]:
        for suffix in ("png", "pdf"):
            assert (tmp_path / f"{figure}.{suffix}").stat().st_size > 1000


@pytest.mark.parametrize("name", sorted(NOTEBOOKS))
def test_committed_notebooks_have_no_outputs(name):
    notebook = nbformat.read(ANALYSIS / name, as_version=4)
    nbformat.validate(notebook)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert all(not cell.outputs and cell.execution_count is None for cell in code)
    assert any("parameters" in cell.metadata.get("tags", []) for cell in code)
