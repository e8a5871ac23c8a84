"""The README's and the docs' Python examples run as written; their links point at files that exist."""

import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = [README] + sorted((ROOT / "docs").rglob("*.md"))
BLOCKS = {page: re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.S) for page in PAGES}
CASES = [(page, index) for page in PAGES for index in range(len(BLOCKS[page]))]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def _name(case) -> str:
    page, index = case
    return f"{page.relative_to(ROOT)}:{index}"


@pytest.fixture
def no_process_group_left():
    yield
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():  # the DMP example starts one, as torchrun would
        dist.destroy_process_group()


def test_readme_has_examples():
    assert len(BLOCKS[README]) >= 2
    assert "shard_model(" in "".join(BLOCKS[README]), "the README's model example runs under DMP"


@pytest.mark.parametrize("case", CASES, ids=[_name(c) for c in CASES])
def test_example_runs(case, no_process_group_left):
    page, index = case
    namespace = {}
    for number, block in enumerate(BLOCKS[page][: index + 1]):  # later blocks of a page may reuse earlier imports
        exec(compile(block, f"{page.relative_to(ROOT)} python block {number}", "exec"), namespace)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_point_at_files(page):
    """mkdocs --strict checks the docs' links; this checks the README's too (and every page's file part)."""
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    broken = []
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue
        path = (page.parent / target.split("#", 1)[0]).resolve()
        if not path.exists():
            broken.append(target)
    assert not broken, f"{page.relative_to(ROOT)} links to missing files: {broken}"
