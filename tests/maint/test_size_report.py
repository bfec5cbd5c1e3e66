"""Stage A: ``maint/size_report.py``, the one way the shipped package's size is counted (issue 20's closing notes)."""

from maint import size_report


def test_each_line_is_counted_once_by_its_kind():
    source = '"""Module doc,\n\non three lines."""\n\nimport os  # a tail comment is code\n# a comment\n\n\n' \
             'class A:\n    """One line."""\n\n    def f(self):\n        return os.sep\n'
    counts = size_report.line_kinds(source)
    assert counts == {"code": 4, "doc": 4, "comment": 1, "blank": 4}
    assert sum(counts.values()) == len(source.splitlines())


def test_the_largest_functions_come_first_methods_included():
    sources = {"a.py": "def short():\n    pass\n", "b.py": "class K:\n    def long(self):\n        x = 1\n        return x\n"}
    assert size_report.largest_functions(sources) == [(3, "b.py:long"), (2, "a.py:short")]


def test_the_report_counts_every_shipped_module(capsys):
    assert size_report.main([]) == 0
    modules = len(list((size_report.ROOT / size_report.PACKAGE).rglob("*.py")))
    assert capsys.readouterr().out.startswith(f"{modules} modules, ")


def test_a_revision_git_cannot_read_is_one_line_and_exit_2(capsys):
    assert size_report.main(["no-such-revision-" + "x" * 100]) == 2
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "git cannot read 'no-such-revision-xxxxxxxxxxxxxxxxxxxxxxx'" in out
