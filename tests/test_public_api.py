"""Every name the package exports resolves to a documented object."""

import mrl_analysis


def test_exports_resolve_and_are_documented():
    for name in mrl_analysis.__all__:
        obj = getattr(mrl_analysis, name)
        assert obj.__doc__, f"mrl_analysis.{name} has no docstring"
