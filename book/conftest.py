"""Let ``pytest --nbval-lax`` execute the book's MyST Markdown chapters.

nbval only collects ``.ipynb`` files, and converting the chapters to
notebooks beside the ``.md`` sources breaks the book build, so this
collector reads each chapter with jupytext and hands the notebook to nbval.
"""

from unittest import mock

import jupytext
import nbval.plugin
import pytest


class MystNotebook(nbval.plugin.IPyNbFile):
    """An nbval notebook whose cells come from a jupytext MyST file."""

    def collect(self):
        notebook = jupytext.read(self.path)
        # nbval reads the file itself with nbformat.read; hand it the notebook
        # that jupytext parsed instead, for the duration of the collection
        with mock.patch.object(nbval.plugin.nbformat, "read", return_value=notebook):
            yield from super().collect()


def _is_myst_notebook(path) -> bool:
    with open(path, encoding="utf-8") as handle:
        head = handle.read(400)
    return head.startswith("---") and "format_name: myst" in head


def pytest_collect_file(file_path, parent):
    option = parent.config.option
    if not (option.nbval or option.nbval_lax) or file_path.suffix != ".md":
        return None
    if not _is_myst_notebook(file_path):
        return None
    return MystNotebook.from_parent(parent, path=file_path)


@pytest.hookimpl(tryfirst=True)
def pytest_ignore_collect(collection_path, config):
    # the built HTML and notebook checkpoints hold copies of the chapters
    parts = set(collection_path.parts)
    return True if parts & {"_build", ".ipynb_checkpoints"} else None
